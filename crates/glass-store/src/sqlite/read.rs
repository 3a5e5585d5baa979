//! Read connections and the queries that run on them.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row};

use super::schema::{self, KIND_DELETE};
use super::{db_err, lock};
use crate::{Event, EventKind, KeyValue, Result, Revision, StoreError};

/// Idle read connections kept for reuse.
const MAX_IDLE: usize = 8;

/// A small pool of read connections, used from blocking threads only.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection (opening one if none is idle).
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = lock(&self.idle).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => schema::open_read(&self.path)?,
        };
        let result = f(&mut conn);
        // A connection left inside a transaction by an error is not reused.
        if conn.is_autocommit() {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

/// The first key after every key starting with `prefix`, or `None` when
/// no such bound exists (empty prefix, or only 0xff bytes).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

const KV_COLUMNS: &str = "key, value, create_rev, mod_rev, version, lease";

fn kv_from_row(r: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: Bytes::from(r.get::<_, Vec<u8>>(0)?),
        value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
        version: r.get(4)?,
        lease: r.get(5)?,
    })
}

/// One key.
pub(super) fn get(conn: &mut Connection, key: &[u8]) -> Result<Option<KeyValue>> {
    let sql = format!("SELECT {KV_COLUMNS} FROM kv WHERE key = ?1");
    let run = || {
        conn.prepare_cached(&sql)?
            .query_row([key], kv_from_row)
            .optional()
    };
    run().map_err(db_err)
}

/// Every key under `prefix` and the revision, from one snapshot.
pub(super) fn range(conn: &mut Connection, prefix: &[u8]) -> Result<(Vec<KeyValue>, Revision)> {
    let mut run = || -> rusqlite::Result<(Vec<KeyValue>, Revision)> {
        let tx = conn.transaction()?;
        let revision = schema::meta(&tx, "revision")?;
        let kvs = match prefix_end(prefix) {
            Some(end) => {
                let sql = format!(
                    "SELECT {KV_COLUMNS} FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key"
                );
                let mut stmt = tx.prepare_cached(&sql)?;
                stmt.query_map(rusqlite::params![prefix, end], kv_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
            None => {
                let sql = format!("SELECT {KV_COLUMNS} FROM kv WHERE key >= ?1 ORDER BY key");
                let mut stmt = tx.prepare_cached(&sql)?;
                stmt.query_map([prefix], kv_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        tx.finish()?;
        Ok((kvs, revision))
    };
    run().map_err(db_err)
}

/// A page of history for a watcher.
#[derive(Debug, Default)]
pub(super) struct HistoryPage {
    /// Events grouped by transaction, in revision order.
    pub(super) txns: Vec<(Revision, Vec<Event>)>,
    /// Whether the page reaches the end of the history (as of `revision`).
    pub(super) complete: bool,
    /// The store revision of the snapshot the page was read from.
    pub(super) revision: Revision,
}

const HISTORY_COLUMNS: &str = "rev, kind, key, value, create_rev, version, lease";

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<(Revision, Event)> {
    let rev: Revision = r.get(0)?;
    let kind = if r.get::<_, i64>(1)? == KIND_DELETE {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    let kv = KeyValue {
        key: Bytes::from(r.get::<_, Vec<u8>>(2)?),
        value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
        create_revision: r.get(4)?,
        mod_revision: rev,
        version: r.get(5)?,
        lease: r.get(6)?,
    };
    Ok((rev, Event { kind, kv }))
}

/// Reads up to about `limit` events under `prefix` with revision >=
/// `from`, whole transactions only. Fails with [`StoreError::Compacted`]
/// when `from` is below the compaction point.
pub(super) fn history_page(
    conn: &mut Connection,
    prefix: &[u8],
    from: Revision,
    limit: usize,
) -> Result<HistoryPage> {
    let end = prefix_end(prefix);
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut run = || -> rusqlite::Result<Result<HistoryPage>> {
        let tx = conn.transaction()?;
        let revision = schema::meta(&tx, "revision")?;
        let compacted = schema::meta(&tx, "compacted")?;
        if from < compacted {
            return Ok(Err(StoreError::Compacted {
                requested: from,
                oldest: compacted,
            }));
        }
        let range_sql = if end.is_some() {
            "AND key >= ?2 AND key < ?3"
        } else {
            "AND key >= ?2"
        };
        let query = |sql: String, first: Revision, limit: i64| -> rusqlite::Result<Vec<_>> {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = match &end {
                Some(end) => {
                    stmt.query_map(rusqlite::params![first, prefix, end, limit], event_from_row)?
                }
                None => stmt.query_map(rusqlite::params![first, prefix, limit], event_from_row)?,
            };
            rows.collect()
        };
        let limit_param = if end.is_some() { "?4" } else { "?3" };
        let rows = query(
            format!(
                "SELECT {HISTORY_COLUMNS} FROM history WHERE rev >= ?1 {range_sql} \
                 ORDER BY rev, seq LIMIT {limit_param}"
            ),
            from,
            limit_sql,
        )?;
        let complete = rows.len() < limit;
        let mut txns = group(rows);
        if !complete {
            // The last transaction may be cut; read it whole when it is
            // the only one, else leave it for the next page.
            let last = txns.last().map(|(rev, _)| *rev);
            if txns.len() > 1 {
                txns.pop();
            } else if let Some(rev) = last {
                let rows = query(
                    format!(
                        "SELECT {HISTORY_COLUMNS} FROM history WHERE rev = ?1 {range_sql} \
                         ORDER BY seq LIMIT {limit_param}"
                    ),
                    rev,
                    -1,
                )?;
                txns = group(rows);
            }
        }
        tx.finish()?;
        Ok(Ok(HistoryPage {
            txns,
            complete,
            revision,
        }))
    };
    run().map_err(db_err)?
}

/// Groups events (in revision order) by revision.
fn group(rows: Vec<(Revision, Event)>) -> Vec<(Revision, Vec<Event>)> {
    let mut txns: Vec<(Revision, Vec<Event>)> = Vec::new();
    for (rev, event) in rows {
        match txns.last_mut() {
            Some((last, events)) if *last == rev => events.push(event),
            _ => txns.push((rev, vec![event])),
        }
    }
    txns
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
