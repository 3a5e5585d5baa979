//! glass-catalog
