//! glass-api
