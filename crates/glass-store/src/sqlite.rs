//! The embedded backend: SQLite in WAL mode with group commit.
//!
//! Layout of the moving parts:
//!
//! * one **writer thread** ([`writer`]) owns the only write connection.
//!   Every write (transactions, lease grants and revokes, compaction)
//!   reaches it over a channel with a oneshot for the reply. It drains
//!   whatever is queued (up to [`SqliteOptions::max_batch`]), applies each
//!   request inside its own savepoint of ONE SQLite transaction (so a
//!   failing request does not poison the others), commits once (one
//!   fsync, `synchronous=FULL`), then answers every caller and broadcasts
//!   the committed events to watchers;
//! * **reads** run on a small pool of read connections ([`read`]) inside
//!   `spawn_blocking`, never on tokio worker threads;
//! * **watches** ([`watch`]) replay the `history` table and then follow
//!   the live broadcast, deduplicating by revision; a watcher that lags
//!   behind the broadcast goes back to the history table;
//! * **leases** ([`lease`]) are persisted on grant and revoke only;
//!   keep-alives move an in-memory deadline and an expiry task revokes
//!   leases whose deadline passed. After a restart every lease gets a
//!   fresh full TTL.

mod lease;
mod read;
mod schema;
mod watch;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::time::Instant;

use crate::{
    KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResponse, WatchStream,
};

use lease::LeaseEntry;
use read::ReadPool;
use writer::{WriteMsg, Writer};

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How many revisions of history are kept for watches before the
    /// store compacts older ones automatically (default 100 000; 0 =
    /// never compact automatically).
    pub history_retention: u64,
    /// The most write requests committed together in one SQLite
    /// transaction (default 1024).
    pub max_batch: usize,
    /// How many committed batches the live broadcast buffers for watchers
    /// (default 1024); a watcher further behind re-reads the history table.
    pub watch_buffer: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            history_retention: 100_000,
            max_batch: 1024,
            watch_buffer: 1024,
        }
    }
}

/// Counters of a [`SqliteStore`], for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// SQLite transactions committed by the writer (each is one WAL fsync).
    pub commits: u64,
    /// Write requests (transactions, lease grants and revokes,
    /// compactions, automatic ones included) the writer has processed.
    pub write_requests: u64,
    /// The current store revision.
    pub revision: Revision,
    /// The compaction point: history before it is gone.
    pub compacted: Revision,
    /// Leases currently alive.
    pub leases: usize,
}

/// State shared by the store handle, the writer thread, the expiry task
/// and the watch streams.
struct Shared {
    /// Set by `close`/drop; every call then fails with [`StoreError::Closed`].
    closed: AtomicBool,
    /// Requests to the writer thread.
    write_tx: mpsc::Sender<WriteMsg>,
    /// The live broadcast, taken out on close so watch streams end.
    live: Mutex<Option<broadcast::Sender<writer::LiveBatch>>>,
    /// Read connections.
    reads: ReadPool,
    /// The last committed revision.
    revision: AtomicI64,
    /// The compaction point.
    compacted: AtomicI64,
    /// Deadlines of live leases (keep-alives touch only this map).
    leases: Mutex<HashMap<LeaseId, LeaseEntry>>,
    /// Wakes the expiry task (new lease, or a lease found overdue).
    expiry_wake: Notify,
    /// See [`SqliteStats::commits`].
    commits: AtomicU64,
    /// See [`SqliteStats::write_requests`].
    write_requests: AtomicU64,
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Sends one request to the writer thread and waits for its reply.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteMsg,
    ) -> Result<T> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.write_tx
            .send(make(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        self.check_open()?;
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || shared.reads.with(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Stops the writer thread and ends watch streams; idempotent.
    fn shut_down(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.live).take();
        // The writer may already be gone; nothing to do then.
        let _ = self.write_tx.send(WriteMsg::Shutdown);
    }
}

/// Locks a mutex, ignoring poisoning (every critical section leaves the
/// data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps a SQLite failure to [`StoreError::Unavailable`].
fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

/// The embedded [`Store`]: one SQLite file in WAL mode, written by one
/// thread with group commit. Open with [`SqliteStore::open`]; hold it as
/// `Arc<dyn Store>`. Only one process may open a file at a time.
///
/// Choices where the trait leaves room:
/// * an empty store is at revision 0; the first write gets revision 1;
/// * a watch from a revision beyond the current one is allowed and starts
///   there once it is reached (as in etcd); it never fails with
///   [`StoreError::FutureRevision`];
/// * `compact(r)` keeps the history at `r` and later; `r` beyond the
///   current revision fails with [`StoreError::FutureRevision`]; `r` at or
///   below the compaction point is a no-op;
/// * `DeletePrefix` with an empty prefix deletes every key (as `range(b"")`
///   reads every key);
/// * a lease revoke (or expiry) that deletes no key does not move the revision.
pub struct SqliteStore {
    shared: Arc<Shared>,
    path: PathBuf,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    expiry: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the SQLite file at `path`,
    /// starts its writer thread and its lease-expiry task. Must be called
    /// from within a tokio runtime (the expiry task runs on it); it does
    /// blocking file I/O, so call it at startup, not on a hot path.
    ///
    /// Leases persisted by an earlier run get a fresh full TTL.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<Arc<SqliteStore>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Invalid("SqliteStore::open must be called within a tokio runtime".into())
        })?;
        let conn = schema::open_write(path)?;
        let state = schema::load(&conn)?;

        let now = Instant::now();
        let leases: HashMap<LeaseId, LeaseEntry> = state
            .leases
            .iter()
            .map(|&(id, ttl_ms)| (id, LeaseEntry::new(ttl_from_ms(ttl_ms), now)))
            .collect();

        let (write_tx, write_rx) = mpsc::channel();
        let (live_tx, _) = broadcast::channel(opts.watch_buffer.max(1));
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            write_tx,
            live: Mutex::new(Some(live_tx.clone())),
            reads: ReadPool::new(path.to_path_buf()),
            revision: AtomicI64::new(state.revision),
            compacted: AtomicI64::new(state.compacted),
            leases: Mutex::new(leases),
            expiry_wake: Notify::new(),
            commits: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
        });

        let writer = Writer::new(conn, Arc::clone(&shared), write_rx, live_tx, &opts, &state);
        let writer = std::thread::Builder::new()
            .name("glass-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        let expiry = runtime.spawn(lease::expiry_loop(Arc::clone(&shared)));

        tracing::debug!(
            path = %path.display(),
            revision = state.revision,
            compacted = state.compacted,
            leases = state.leases.len(),
            "sqlite store opened"
        );
        Ok(Arc::new(SqliteStore {
            shared,
            path: path.to_path_buf(),
            writer: Mutex::new(Some(writer)),
            expiry: Mutex::new(Some(expiry)),
        }))
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current counters.
    pub fn stats(&self) -> SqliteStats {
        let s = &self.shared;
        SqliteStats {
            commits: s.commits.load(Ordering::Relaxed),
            write_requests: s.write_requests.load(Ordering::Relaxed),
            revision: s.revision.load(Ordering::Acquire),
            compacted: s.compacted.load(Ordering::Acquire),
            leases: lock(&s.leases).values().filter(|e| !e.revoking).count(),
        }
    }

    /// Stops the background work: the writer finishes the batch it is
    /// committing, later calls fail with [`StoreError::Closed`], watch
    /// streams end with that error. Waits for the writer thread to exit.
    /// Dropping the store does the same without waiting.
    pub async fn close(&self) {
        self.shared.shut_down();
        if let Some(expiry) = lock(&self.expiry).take() {
            expiry.abort();
        }
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            // A panic of the writer has already been reported by the panic hook.
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shared.shut_down();
        if let Some(expiry) = lock(&self.expiry).take() {
            expiry.abort();
        }
    }
}

/// A TTL stored in milliseconds.
fn ttl_from_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(1).max(1))
}

/// Rejects empty keys.
fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        Err(StoreError::Invalid("empty key".into()))
    } else {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let key = key.to_vec();
        self.shared.read(move |conn| read::get(conn, &key)).await
    }

    async fn range(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_vec();
        self.shared
            .read(move |conn| read::range(conn, &prefix))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.shared.check_open()?;
        // Leases whose deadline passed but which the expiry task has not
        // revoked yet must not take new keys: mark them now.
        let leases = txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                Op::Put { lease: Some(l), .. } if *l != 0 => Some(*l),
                _ => None,
            });
        lease::mark_overdue(&self.shared, leases);
        self.shared
            .write(|reply| WriteMsg::Txn { txn, reply })
            .await
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream> {
        self.shared.check_open()?;
        watch::watch(
            Arc::clone(&self.shared),
            Bytes::copy_from_slice(prefix),
            from,
        )
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        let ttl_ms = i64::try_from(ttl.as_millis().max(1))
            .map_err(|_| StoreError::Invalid("lease TTL too large".into()))?;
        let ttl = ttl_from_ms(ttl_ms);
        self.shared
            .write(|reply| WriteMsg::LeaseGrant {
                ttl,
                granted_at: Instant::now(),
                reply,
            })
            .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.shared.check_open()?;
        lease::keep_alive(&self.shared, lease)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<Revision> {
        self.shared
            .write(|reply| WriteMsg::LeaseRevoke { id: lease, reply })
            .await
    }

    async fn revision(&self) -> Result<Revision> {
        self.shared.check_open()?;
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.shared
            .write(|reply| WriteMsg::Compact { revision, reply })
            .await
    }
}
