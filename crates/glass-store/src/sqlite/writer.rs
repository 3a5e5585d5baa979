//! The writer thread: every write goes through it, many requests per
//! SQLite transaction (group commit), one savepoint per request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use super::lease::{self, LeaseEntry};
use super::read::prefix_end;
use super::schema::{self, KIND_DELETE, KIND_PUT, Loaded};
use super::{Shared, SqliteOptions, db_err, lock};
use crate::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, Result, Revision, StoreError, Txn,
    TxnResponse,
};

/// The events of one committed transaction.
#[derive(Debug)]
pub(super) struct Committed {
    /// Its revision.
    pub(super) revision: Revision,
    /// Its events, in op order.
    pub(super) events: Vec<Event>,
}

/// What one group commit publishes to watchers.
pub(super) type LiveBatch = Arc<Vec<Committed>>;

/// A request to the writer thread.
pub(super) enum WriteMsg {
    /// A transaction.
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResponse>>,
    },
    /// Persist a new lease; its deadline counts from `granted_at`, read
    /// from the caller's runtime clock.
    LeaseGrant {
        ttl: Duration,
        granted_at: Instant,
        reply: oneshot::Sender<Result<LeaseId>>,
    },
    /// Delete a lease and its keys (explicit revoke or expiry).
    LeaseRevoke {
        id: LeaseId,
        reply: oneshot::Sender<Result<Revision>>,
    },
    /// Forget history before a revision.
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Finish the current batch and exit.
    Shutdown,
}

/// A processed request waiting for its batch to commit.
enum Done {
    Txn(oneshot::Sender<Result<TxnResponse>>, Result<TxnResponse>),
    Grant(
        oneshot::Sender<Result<LeaseId>>,
        Result<LeaseId>,
        Duration,
        Instant,
    ),
    Revoke(oneshot::Sender<Result<Revision>>, Result<Revision>, LeaseId),
    Compact(oneshot::Sender<Result<()>>, Result<()>),
}

impl Done {
    /// Replaces a success with `err` (the batch did not commit).
    fn fail(self, err: &StoreError) -> Done {
        match self {
            Done::Txn(tx, r) => Done::Txn(tx, r.and(Err(err.clone()))),
            Done::Grant(tx, r, ttl, at) => Done::Grant(tx, r.and(Err(err.clone())), ttl, at),
            Done::Revoke(tx, r, id) => Done::Revoke(tx, r.and(Err(err.clone())), id),
            Done::Compact(tx, r) => Done::Compact(tx, r.and(Err(err.clone()))),
        }
    }

    /// Sends the reply; a caller that went away does not matter.
    fn reply(self) {
        let delivered = match self {
            Done::Txn(tx, r) => tx.send(r).is_ok(),
            Done::Grant(tx, r, ..) => tx.send(r).is_ok(),
            Done::Revoke(tx, r, _) => tx.send(r).is_ok(),
            Done::Compact(tx, r) => tx.send(r).is_ok(),
        };
        if !delivered {
            tracing::trace!("write caller went away before the reply");
        }
    }
}

/// The counters a batch may move, saved to roll back a failed commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    revision: Revision,
    compacted: Revision,
    next_lease: LeaseId,
}

/// The writer: owns the write connection.
pub(super) struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WriteMsg>,
    live: broadcast::Sender<LiveBatch>,
    max_batch: usize,
    retention: u64,
    counters: Counters,
    /// A savepoint could not be released or rolled back: the whole batch
    /// must be abandoned.
    broken: Option<StoreError>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<WriteMsg>,
        live: broadcast::Sender<LiveBatch>,
        opts: &SqliteOptions,
        loaded: &Loaded,
    ) -> Self {
        Writer {
            conn,
            shared,
            rx,
            live,
            max_batch: opts.max_batch.max(1),
            retention: opts.history_retention,
            counters: Counters {
                revision: loaded.revision,
                compacted: loaded.compacted,
                next_lease: loaded.next_lease.max(1),
            },
            broken: None,
        }
    }

    /// The thread body: batch, commit, reply, publish; until shutdown.
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            let before = batch.len();
            batch.retain(|m| !matches!(m, WriteMsg::Shutdown));
            let shutdown = batch.len() != before;
            if !batch.is_empty() {
                self.commit_batch(std::mem::take(&mut batch));
                batch = Vec::with_capacity(self.max_batch);
            }
            if shutdown {
                break;
            }
            self.auto_compact();
        }
        tracing::debug!(revision = self.counters.revision, "sqlite writer stopped");
    }

    /// Applies `msgs` in one SQLite transaction and answers them.
    fn commit_batch(&mut self, msgs: Vec<WriteMsg>) {
        let requests = msgs.len();
        let saved = self.counters;
        self.broken = None;
        if !self.conn.is_autocommit() {
            // A failed rollback left a transaction open; nothing in it was acknowledged.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let err = db_err(e);
            for msg in msgs {
                fail_msg(msg, &err);
            }
            return;
        }

        let mut done = Vec::with_capacity(requests);
        let mut committed = Vec::new();
        for msg in msgs {
            match msg {
                WriteMsg::Txn { txn, reply } => {
                    let r = self.savepoint(|w| w.apply_txn(&txn));
                    let r = r.map(|(resp, events)| {
                        committed.extend(events);
                        resp
                    });
                    done.push(Done::Txn(reply, r));
                }
                WriteMsg::LeaseGrant {
                    ttl,
                    granted_at,
                    reply,
                } => {
                    let r = self.savepoint(|w| w.apply_grant(ttl));
                    done.push(Done::Grant(reply, r, ttl, granted_at));
                }
                WriteMsg::LeaseRevoke { id, reply } => {
                    let r = self.savepoint(|w| w.apply_revoke(id));
                    let r = r.map(|(rev, events)| {
                        committed.extend(events);
                        rev
                    });
                    done.push(Done::Revoke(reply, r, id));
                }
                WriteMsg::Compact { revision, reply } => {
                    let r = self.savepoint(|w| w.apply_compact(revision));
                    done.push(Done::Compact(reply, r));
                }
                WriteMsg::Shutdown => {}
            }
        }

        let result = match self.broken.take() {
            Some(err) => Err(err),
            None => self.finish_commit(saved),
        };
        if let Err(err) = result {
            // Rolling back may fail if SQLite already did; either way nothing is kept.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.counters = saved;
            tracing::warn!(error = %err, requests, "sqlite write batch failed");
            for d in done {
                d.fail(&err).reply();
            }
            return;
        }

        let shared = &self.shared;
        shared.commits.fetch_add(1, Ordering::Relaxed);
        shared
            .write_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
        shared
            .compacted
            .store(self.counters.compacted, Ordering::Release);
        shared
            .revision
            .store(self.counters.revision, Ordering::Release);
        let mut granted = false;
        {
            let mut leases = lock(&shared.leases);
            for d in &done {
                match d {
                    Done::Grant(_, Ok(id), ttl, granted_at) => {
                        leases.insert(*id, LeaseEntry::new(*ttl, *granted_at));
                        granted = true;
                    }
                    Done::Revoke(_, Ok(_) | Err(StoreError::LeaseNotFound(_)), id) => {
                        leases.remove(id);
                    }
                    _ => {}
                }
            }
        }
        if granted {
            shared.expiry_wake.notify_one();
        }
        let txns = committed.len();
        if !committed.is_empty() {
            // No receivers is fine.
            let _ = self.live.send(Arc::new(committed));
        }
        tracing::debug!(
            requests,
            txns,
            revision = self.counters.revision,
            "sqlite batch committed"
        );
        for d in done {
            d.reply();
        }
    }

    /// Persists the counters and commits.
    fn finish_commit(&mut self, saved: Counters) -> Result<()> {
        if self.counters.revision != saved.revision {
            schema::set_meta(&self.conn, "revision", self.counters.revision).map_err(db_err)?;
        }
        if self.counters.next_lease != saved.next_lease {
            schema::set_meta(&self.conn, "next_lease", self.counters.next_lease).map_err(db_err)?;
        }
        self.conn.execute_batch("COMMIT").map_err(db_err)
    }

    /// Runs one request inside a savepoint: on error its changes (and the
    /// counters) are rolled back and the rest of the batch goes on.
    fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if let Some(err) = &self.broken {
            return Err(err.clone());
        }
        if let Err(e) = self.conn.execute_batch("SAVEPOINT req") {
            return Err(db_err(e));
        }
        let saved = self.counters;
        match f(self) {
            Ok(v) => match self.conn.execute_batch("RELEASE req") {
                Ok(()) => Ok(v),
                Err(e) => {
                    let err = db_err(e);
                    self.broken = Some(err.clone());
                    Err(err)
                }
            },
            Err(err) => {
                self.counters = saved;
                if let Err(e) = self.conn.execute_batch("ROLLBACK TO req; RELEASE req") {
                    self.broken = Some(db_err(e));
                }
                Err(err)
            }
        }
    }

    /// Applies a transaction; returns the response and its events.
    fn apply_txn(&mut self, txn: &Txn) -> Result<(TxnResponse, Option<Committed>)> {
        validate(txn)?;
        let mut succeeded = true;
        for cmp in &txn.compares {
            if !self.holds(cmp)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let rev = self.counters.revision + 1;
        let mut events = Vec::new();
        let mut deleted = 0;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let lease = lease.unwrap_or(0);
                    if lease != 0 && !self.lease_accepts_keys(lease)? {
                        return Err(StoreError::LeaseNotFound(lease));
                    }
                    events.push(self.put(key, value, lease, rev)?);
                }
                Op::Delete { key } => {
                    if let Some(event) = self.delete(key, rev)? {
                        events.push(event);
                        deleted += 1;
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let removed = self.delete_prefix(prefix, rev)?;
                    deleted += removed.len();
                    events.extend(removed);
                }
            }
        }
        let committed = self.record(rev, events)?;
        let resp = TxnResponse {
            succeeded,
            revision: self.counters.revision,
            deleted,
        };
        Ok((resp, committed))
    }

    /// Writes the events of a transaction to the history and moves the
    /// revision, unless it changed nothing.
    fn record(&mut self, rev: Revision, events: Vec<Event>) -> Result<Option<Committed>> {
        if events.is_empty() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO history (rev, seq, kind, key, value, create_rev, version, lease) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(db_err)?;
        for (seq, e) in events.iter().enumerate() {
            let kind = match e.kind {
                EventKind::Put => KIND_PUT,
                EventKind::Delete => KIND_DELETE,
            };
            stmt.execute(params![
                rev,
                seq as i64,
                kind,
                e.kv.key.as_ref(),
                e.kv.value.as_ref(),
                e.kv.create_revision,
                e.kv.version,
                e.kv.lease
            ])
            .map_err(db_err)?;
        }
        self.counters.revision = rev;
        Ok(Some(Committed {
            revision: rev,
            events,
        }))
    }

    fn holds(&self, cmp: &Compare) -> Result<bool> {
        match cmp {
            Compare::ModRevision(key, rev) => {
                let current: Option<Revision> = self
                    .conn
                    .prepare_cached("SELECT mod_rev FROM kv WHERE key = ?1")
                    .and_then(|mut s| s.query_row([key.as_ref()], |r| r.get(0)).optional())
                    .map_err(db_err)?;
                Ok(current.unwrap_or(0) == *rev)
            }
            Compare::Value(key, value) => {
                let current: Option<Vec<u8>> = self
                    .conn
                    .prepare_cached("SELECT value FROM kv WHERE key = ?1")
                    .and_then(|mut s| s.query_row([key.as_ref()], |r| r.get(0)).optional())
                    .map_err(db_err)?;
                Ok(current.is_some_and(|v| v == value.as_ref()))
            }
        }
    }

    /// A lease accepts keys while it is in the table (which reflects
    /// revokes earlier in this batch) and is not overdue.
    fn lease_accepts_keys(&self, lease: LeaseId) -> Result<bool> {
        let in_table = self
            .conn
            .prepare_cached("SELECT 1 FROM leases WHERE id = ?1")
            .and_then(|mut s| s.exists([lease]))
            .map_err(db_err)?;
        Ok(in_table && lease::accepts_keys(&self.shared, lease))
    }

    fn put(&mut self, key: &Bytes, value: &Bytes, lease: LeaseId, rev: Revision) -> Result<Event> {
        let previous: Option<(Revision, i64)> = self
            .conn
            .prepare_cached("SELECT create_rev, version FROM kv WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([key.as_ref()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db_err)?;
        let (create_revision, version) = match previous {
            Some((create, version)) => (create, version + 1),
            None => (rev, 1),
        };
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version, lease) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.as_ref(),
                    value.as_ref(),
                    create_revision,
                    rev,
                    version,
                    lease
                ])
            })
            .map_err(db_err)?;
        Ok(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision,
                mod_revision: rev,
                version,
                lease,
            },
        })
    }

    fn delete(&mut self, key: &Bytes, rev: Revision) -> Result<Option<Event>> {
        let create: Option<Revision> = self
            .conn
            .prepare_cached("DELETE FROM kv WHERE key = ?1 RETURNING create_rev")
            .and_then(|mut s| s.query_row([key.as_ref()], |r| r.get(0)).optional())
            .map_err(db_err)?;
        Ok(create.map(|create| delete_event(key.clone(), create, rev)))
    }

    fn delete_prefix(&mut self, prefix: &[u8], rev: Revision) -> Result<Vec<Event>> {
        let mut keys: Vec<(Vec<u8>, Revision)> = match prefix_end(prefix) {
            Some(end) => self
                .conn
                .prepare_cached(
                    "DELETE FROM kv WHERE key >= ?1 AND key < ?2 RETURNING key, create_rev",
                )
                .and_then(|mut s| {
                    s.query_map(params![prefix, end], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                }),
            None => self
                .conn
                .prepare_cached("DELETE FROM kv WHERE key >= ?1 RETURNING key, create_rev")
                .and_then(|mut s| {
                    s.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                }),
        }
        .map_err(db_err)?;
        keys.sort_unstable();
        Ok(keys
            .into_iter()
            .map(|(key, create)| delete_event(Bytes::from(key), create, rev))
            .collect())
    }

    fn apply_grant(&mut self, ttl: Duration) -> Result<LeaseId> {
        let id = self.counters.next_lease;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached("INSERT INTO leases (id, ttl_ms) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![id, ttl_ms]))
            .map_err(db_err)?;
        self.counters.next_lease = id + 1;
        Ok(id)
    }

    fn apply_revoke(&mut self, id: LeaseId) -> Result<(Revision, Option<Committed>)> {
        let removed = self
            .conn
            .prepare_cached("DELETE FROM leases WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(db_err)?;
        if removed == 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        let rev = self.counters.revision + 1;
        let mut keys: Vec<(Vec<u8>, Revision)> = self
            .conn
            .prepare_cached(
                "DELETE FROM kv WHERE lease = ?1 AND lease != 0 RETURNING key, create_rev",
            )
            .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(db_err)?;
        keys.sort_unstable();
        let events = keys
            .into_iter()
            .map(|(key, create)| delete_event(Bytes::from(key), create, rev))
            .collect();
        let committed = self.record(rev, events)?;
        Ok((self.counters.revision, committed))
    }

    fn apply_compact(&mut self, revision: Revision) -> Result<()> {
        if revision > self.counters.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.counters.revision,
            });
        }
        if revision <= self.counters.compacted {
            return Ok(());
        }
        self.conn
            .prepare_cached("DELETE FROM history WHERE rev < ?1")
            .and_then(|mut s| s.execute([revision]))
            .map_err(db_err)?;
        schema::set_meta(&self.conn, "compacted", revision).map_err(db_err)?;
        self.counters.compacted = revision;
        Ok(())
    }

    /// Compacts the history down to `history_retention` revisions, in
    /// steps of a tenth of it, so it happens now and then, not per write.
    fn auto_compact(&mut self) {
        if self.retention == 0 {
            return;
        }
        let keep = i64::try_from(self.retention).unwrap_or(i64::MAX);
        let target = self.counters.revision.saturating_sub(keep) + 1;
        let step = (keep / 10).max(1);
        if target - self.counters.compacted < step {
            return;
        }
        let (tx, mut rx) = oneshot::channel();
        self.commit_batch(vec![WriteMsg::Compact {
            revision: target,
            reply: tx,
        }]);
        // commit_batch has replied already.
        match rx.try_recv() {
            Ok(Ok(())) => tracing::debug!(compacted = target, "sqlite history compacted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sqlite automatic compaction failed"),
            Err(_) => {}
        }
    }
}

/// A delete event: the key, its create revision, the revision of the delete.
fn delete_event(key: Bytes, create_revision: Revision, rev: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key,
            value: Bytes::new(),
            create_revision,
            mod_revision: rev,
            version: 0,
            lease: 0,
        },
    }
}

/// Rejects empty keys anywhere in the transaction.
fn validate(txn: &Txn) -> Result<()> {
    let empty = |key: &Bytes| key.is_empty();
    let bad_cmp = txn.compares.iter().any(|c| match c {
        Compare::ModRevision(key, _) | Compare::Value(key, _) => empty(key),
    });
    let bad_op = txn.success.iter().chain(&txn.failure).any(|op| match op {
        Op::Put { key, .. } | Op::Delete { key } => empty(key),
        Op::DeletePrefix { .. } => false,
    });
    if bad_cmp || bad_op {
        Err(StoreError::Invalid("empty key".into()))
    } else {
        Ok(())
    }
}

/// Answers a request that never ran.
fn fail_msg(msg: WriteMsg, err: &StoreError) {
    // A caller that went away does not matter.
    match msg {
        WriteMsg::Txn { reply, .. } => drop(reply.send(Err(err.clone()))),
        WriteMsg::LeaseGrant { reply, .. } => drop(reply.send(Err(err.clone()))),
        WriteMsg::LeaseRevoke { reply, .. } => drop(reply.send(Err(err.clone()))),
        WriteMsg::Compact { reply, .. } => drop(reply.send(Err(err.clone()))),
        WriteMsg::Shutdown => {}
    }
}
