//! The index of the current snapshot, rebuilt at most once per snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use glass_snapshot::{Snapshot, SnapshotHandle};

use crate::config::{DnsConfig, Domain};
use crate::index::DnsIndex;

/// An index together with the snapshot it was built from.
#[derive(Debug)]
pub(crate) struct Indexed {
    snapshot: Arc<Snapshot>,
    pub(crate) index: DnsIndex,
}

/// Hands out the index of the current snapshot. Readers never lock: the
/// first query after a publication builds the new index (so does the
/// server's warm-up task, usually first), and everyone else swaps to it.
#[derive(Debug)]
pub(crate) struct IndexCache {
    snapshots: SnapshotHandle,
    config: DnsConfig,
    domain: Domain,
    ns_addr: Option<IpAddr>,
    current: ArcSwap<Indexed>,
}

impl IndexCache {
    pub(crate) fn new(
        snapshots: SnapshotHandle,
        config: DnsConfig,
        domain: Domain,
        ns_addr: Option<IpAddr>,
    ) -> Self {
        let snapshot = snapshots.load();
        let index = DnsIndex::build_with(&snapshot, &config, domain.clone(), ns_addr);
        let current = ArcSwap::from_pointee(Indexed { snapshot, index });
        IndexCache {
            snapshots,
            config,
            domain,
            ns_addr,
            current,
        }
    }

    /// The index of the snapshot that is current now.
    pub(crate) fn get(&self) -> Arc<Indexed> {
        let snapshot = self.snapshots.load();
        let cached = self.current.load_full();
        if Arc::ptr_eq(&cached.snapshot, &snapshot) {
            return cached;
        }
        // Two threads may race to build the same index; both results are
        // equal, so the extra work is the only cost.
        let index =
            DnsIndex::build_with(&snapshot, &self.config, self.domain.clone(), self.ns_addr);
        let fresh = Arc::new(Indexed { snapshot, index });
        self.current.store(fresh.clone());
        fresh
    }

    pub(crate) fn snapshots(&self) -> &SnapshotHandle {
        &self.snapshots
    }
}
