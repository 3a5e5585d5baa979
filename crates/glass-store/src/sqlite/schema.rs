//! The SQLite schema, connection settings and the state loaded at open.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::db_err;
use crate::{LeaseId, Result, Revision, StoreError};

/// Tables: the current key/values, the history of events (for watch
/// replay), leases, and a few counters.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key BLOB NOT NULL PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS history (
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER NOT NULL PRIMARY KEY,
    ttl_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES
    ('schema_version', 1), ('revision', 0), ('compacted', 0), ('next_lease', 1);
";

/// `history.kind` of a put.
pub(super) const KIND_PUT: i64 = 0;
/// `history.kind` of a delete.
pub(super) const KIND_DELETE: i64 = 1;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer needs to know at open.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) revision: Revision,
    pub(super) compacted: Revision,
    pub(super) next_lease: LeaseId,
    /// `(id, ttl_ms)` of every persisted lease.
    pub(super) leases: Vec<(LeaseId, i64)>,
}

/// Opens the write connection: WAL, `synchronous=FULL`, schema created.
pub(super) fn open_write(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "sqlite: cannot switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    // FULL: every commit fsyncs the WAL, so an acknowledged write survives
    // a crash or power loss.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
        .map_err(db_err)?;
    conn.execute_batch(SCHEMA).map_err(db_err)?;
    Ok(conn)
}

/// Opens a read connection to an existing store file.
pub(super) fn open_read(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.execute_batch("PRAGMA query_only = ON;")
        .map_err(db_err)?;
    Ok(conn)
}

/// Reads one counter of the `meta` table.
pub(super) fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
}

/// Sets one counter of the `meta` table.
pub(super) fn set_meta(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}

/// Loads the counters and the leases.
pub(super) fn load(conn: &Connection) -> Result<Loaded> {
    let load = || -> rusqlite::Result<Loaded> {
        let mut stmt = conn.prepare("SELECT id, ttl_ms FROM leases ORDER BY id")?;
        let leases = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Loaded {
            revision: meta(conn, "revision")?,
            compacted: meta(conn, "compacted")?,
            next_lease: meta(conn, "next_lease")?,
            leases,
        })
    };
    load().map_err(db_err)
}
