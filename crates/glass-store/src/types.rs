//! The values that cross the [`Store`](crate::Store) boundary.

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::StoreError;

/// A store revision (see `glass_model::Revision`).
pub type Revision = i64;

/// A lease id; never 0.
pub type LeaseId = i64;

/// A key with its value and revisions, as in etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value (empty for delete events).
    pub value: Bytes,
    /// Revision of the transaction that created the key.
    pub create_revision: Revision,
    /// Revision of the transaction that last changed (or deleted) the key.
    pub mod_revision: Revision,
    /// Number of puts since the key was created (0 after a delete).
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

/// One change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted (explicitly or by lease expiry).
    Delete,
}

/// A change to one key; `kv.mod_revision` is the revision of the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for deletes: key, revisions, empty value).
    pub kv: KeyValue,
}

impl Event {
    /// The revision of the transaction that made this change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A watch: batches of events in revision order. All events of one
/// transaction come in one batch. The stream ends with an error item if
/// the watch cannot continue (compaction overtook a slow watcher, the
/// store closed).
pub type WatchStream = BoxStream<'static, Result<Vec<Event>, StoreError>>;

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// Holds when the key's `mod_revision` equals the given one (0 = the key does not exist).
    ModRevision(Bytes, Revision),
    /// Holds when the key's value equals the given bytes (false if missing).
    Value(Bytes, Bytes),
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key.
    Put {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
        /// Lease to attach, if any.
        lease: Option<LeaseId>,
    },
    /// Delete one key.
    Delete {
        /// Key.
        key: Bytes,
    },
    /// Delete every key starting with the prefix.
    DeletePrefix {
        /// Prefix.
        prefix: Bytes,
    },
}

impl Op {
    /// A put.
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: Option<LeaseId>) -> Op {
        Op::Put {
            key: Bytes::copy_from_slice(key.as_ref()),
            value: Bytes::copy_from_slice(value.as_ref()),
            lease,
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl AsRef<[u8]>) -> Op {
        Op::Delete {
            key: Bytes::copy_from_slice(key.as_ref()),
        }
    }
}

/// A transaction: if every compare holds, `success` runs, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Ops run when the conditions hold.
    pub success: Vec<Op>,
    /// Ops run otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction (always succeeds, changes nothing).
    pub fn new() -> Self {
        Txn::default()
    }

    /// Adds a condition.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an op to run when the conditions hold.
    pub fn and_then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }

    /// Adds an op to run when a condition fails.
    pub fn or_else(mut self, op: Op) -> Self {
        self.failure.push(op);
        self
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (so `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// How many keys the ops deleted.
    pub deleted: usize,
}
