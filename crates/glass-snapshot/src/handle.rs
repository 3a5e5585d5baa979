//! Where readers get the current snapshot, and learn that it changed.

use std::sync::Arc;

use arc_swap::ArcSwap;
use glass_model::Revision;
use tokio::sync::watch;

use crate::Snapshot;

/// Shares the current snapshot: readers `load` it without locks; the
/// catalog `publish`es new ones. Waiters learn of every publication.
#[derive(Debug, Clone)]
pub struct SnapshotHandle {
    current: Arc<ArcSwap<Snapshot>>,
    changed: watch::Sender<Revision>,
}

impl Default for SnapshotHandle {
    fn default() -> Self {
        SnapshotHandle {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            changed: watch::Sender::new(0),
        }
    }
}

impl SnapshotHandle {
    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `snapshot` the current one and wakes waiters.
    pub fn publish(&self, snapshot: Snapshot) {
        let revision = snapshot.revision;
        self.current.store(Arc::new(snapshot));
        self.changed.send_replace(revision);
    }

    /// A receiver that is notified on every publication.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.changed.subscribe()
    }
}
