//! Integration tests of glass-store: the contract suite against
//! [`SqliteStore`](glass_store::SqliteStore), and SQLite-specific tests
//! (reopen, leases across restarts, group commit, kill -9 durability).

mod contract;
mod durability;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use glass_store::{SqliteOptions, SqliteStore};

/// Opens a store file with default options.
fn open(path: &Path) -> Arc<SqliteStore> {
    open_with(path, SqliteOptions::default())
}

/// Opens a store file.
fn open_with(path: &Path, opts: SqliteOptions) -> Arc<SqliteStore> {
    SqliteStore::open(path, opts).expect("open the store")
}
