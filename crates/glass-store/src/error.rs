//! What can go wrong in a store call.

use crate::{LeaseId, Revision};

/// A store error; the variants say what a caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The watch asked for history that compaction removed; re-read with
    /// `range` and watch from the revision it returns.
    #[error("revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still kept.
        oldest: Revision,
    },
    /// The revision asked for is beyond the current one.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The lease expired, was revoked, or never existed.
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// The request is malformed (empty key, zero TTL, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend failed (disk, database, network); the write may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
}
