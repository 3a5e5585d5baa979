//! A revisioned key/value store with the semantics of etcd's v3 API.
//!
//! Callers see only the [`Store`] trait: ordered keys, ranges by prefix,
//! transactions that compare `mod_revision`s, a global revision that grows
//! by one per transaction that changes something, watches that replay
//! history and then follow live changes, and leases. The embedded backend
//! is [`SqliteStore`]; a cluster backend (etcd) implements the same trait
//! and runs the same `contract` suite (feature `contract`).

mod error;
mod sqlite;
mod types;

#[cfg(any(test, feature = "contract"))]
pub mod contract;

pub use error::StoreError;
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStore};
pub use types::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, Revision, Txn, TxnResponse, WatchStream,
};

use std::time::Duration;

/// The result type of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A revisioned key/value store. Every method is safe to call from many
/// tasks at once; a returned `Ok` for a write means the write is durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of one key, or `None`.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>>;

    /// All keys starting with `prefix`, in key order, and the store
    /// revision they were read at.
    async fn range(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, Revision)>;

    /// Sets `key` to `value`, attached to `lease` if given; returns the new revision.
    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        let txn = Txn::new().and_then(Op::put(key, value, lease));
        Ok(self.txn(txn).await?.revision)
    }

    /// Deletes `key`; returns whether it existed and the store revision after.
    async fn delete(&self, key: &[u8]) -> Result<(bool, Revision)> {
        let resp = self.txn(Txn::new().and_then(Op::delete(key))).await?;
        Ok((resp.deleted > 0, resp.revision))
    }

    /// Runs a transaction atomically: when every compare holds, the
    /// `success` ops run, otherwise the `failure` ops. A transaction that
    /// changes nothing does not move the revision.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Streams every change to keys under `prefix` with revision >=
    /// `from` (0 = only changes after now), in order, each once. A
    /// `from` below the compaction point fails with
    /// [`StoreError::Compacted`].
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream>;

    /// Grants a lease that expires after `ttl` unless kept alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease to its full TTL; returns that TTL. Fails with
    /// [`StoreError::LeaseNotFound`] once it has expired or been revoked.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Revokes a lease now, deleting its keys; returns the revision after.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<Revision>;

    /// The current store revision.
    async fn revision(&self) -> Result<Revision>;

    /// Forgets history before `revision`; later watches from below it fail.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
