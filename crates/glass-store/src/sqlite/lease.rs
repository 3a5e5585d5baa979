//! Lease deadlines: kept in memory only (keep-alives never touch the
//! disk), enforced by an expiry task that revokes overdue leases through
//! the writer.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::writer::WriteMsg;
use super::{Shared, lock};
use crate::{LeaseId, Result, StoreError};

/// How long the expiry task sleeps at most between checks.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How long to wait before retrying a revoke that failed.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The in-memory state of one live lease.
#[derive(Debug, Clone)]
pub(super) struct LeaseEntry {
    /// The TTL it was granted with.
    pub(super) ttl: Duration,
    /// When it expires unless kept alive.
    pub(super) deadline: Instant,
    /// Overdue; the expiry task is revoking it. It accepts no keys and no
    /// keep-alives any more.
    pub(super) revoking: bool,
}

impl LeaseEntry {
    /// A lease that expires `ttl` after `now`.
    pub(super) fn new(ttl: Duration, now: Instant) -> Self {
        LeaseEntry {
            ttl,
            deadline: now + ttl,
            revoking: false,
        }
    }
}

/// Whether the writer may attach keys to `lease` (the caller also checks
/// the `leases` table, which reflects revokes earlier in the same batch).
pub(super) fn accepts_keys(shared: &Shared, lease: LeaseId) -> bool {
    lock(&shared.leases)
        .get(&lease)
        .is_some_and(|e| !e.revoking)
}

/// Marks the given leases as revoking when their deadline has passed, and
/// wakes the expiry task if it found any.
pub(super) fn mark_overdue(shared: &Shared, leases: impl Iterator<Item = LeaseId>) {
    let now = Instant::now();
    let mut found = false;
    {
        let mut map = lock(&shared.leases);
        for id in leases {
            if let Some(entry) = map.get_mut(&id)
                && !entry.revoking
                && entry.deadline <= now
            {
                entry.revoking = true;
                found = true;
            }
        }
    }
    if found {
        shared.expiry_wake.notify_one();
    }
}

/// Renews a lease in memory; returns its TTL.
pub(super) fn keep_alive(shared: &Shared, lease: LeaseId) -> Result<Duration> {
    let now = Instant::now();
    let mut map = lock(&shared.leases);
    let entry = map
        .get_mut(&lease)
        .ok_or(StoreError::LeaseNotFound(lease))?;
    if entry.revoking {
        return Err(StoreError::LeaseNotFound(lease));
    }
    if entry.deadline <= now {
        entry.revoking = true;
        drop(map);
        shared.expiry_wake.notify_one();
        return Err(StoreError::LeaseNotFound(lease));
    }
    entry.deadline = now + entry.ttl;
    Ok(entry.ttl)
}

/// Revokes overdue leases, forever (aborted on close).
pub(super) async fn expiry_loop(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next = now + MAX_SLEEP;
        {
            let mut map = lock(&shared.leases);
            for (id, entry) in map.iter_mut() {
                if entry.revoking || entry.deadline <= now {
                    entry.revoking = true;
                    due.push(*id);
                } else {
                    next = next.min(entry.deadline);
                }
            }
        }

        let mut failed = false;
        let mut pending = Vec::with_capacity(due.len());
        for id in due {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if shared
                .write_tx
                .send(WriteMsg::LeaseRevoke { id, reply: tx })
                .is_err()
            {
                return;
            }
            pending.push((id, rx));
        }
        for (id, rx) in pending {
            match rx.await {
                Ok(Ok(_)) | Ok(Err(StoreError::LeaseNotFound(_))) => {
                    tracing::debug!(lease = id, "lease expired");
                    // The writer removes it from the map on commit; a lease
                    // unknown to the table must not linger here either.
                    lock(&shared.leases).remove(&id);
                }
                Ok(Err(StoreError::Closed)) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; will retry");
                    failed = true;
                }
            }
        }
        if failed {
            next = next.min(Instant::now() + RETRY_DELAY);
        }

        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.expiry_wake.notified() => {}
        }
    }
}
