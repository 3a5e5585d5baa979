//! The embedded backend: SQLite in WAL mode with group commit.
