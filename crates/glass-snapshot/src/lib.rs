//! glass-snapshot
