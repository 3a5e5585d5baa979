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

/// Hands out the index of the current snapshot. Readers never lock and
/// never build: the server's rebuilder builds each new index off the
/// query path and swaps it in.
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

    /// The newest index built. Queries never build: between a
    /// publication and the rebuilder's next run they see the previous
    /// index (at most [`IndexCache::rebuild`]'s interval old).
    pub(crate) fn get(&self) -> Arc<Indexed> {
        self.current.load_full()
    }

    /// Builds the index of the current snapshot if it is not the cached
    /// one; returns whether it built.
    pub(crate) fn rebuild(&self) -> bool {
        let snapshot = self.snapshots.load();
        if Arc::ptr_eq(&self.current.load().snapshot, &snapshot) {
            return false;
        }
        let index =
            DnsIndex::build_with(&snapshot, &self.config, self.domain.clone(), self.ns_addr);
        // The previous index is dropped here, on the rebuilder's thread,
        // not on whichever query held it last.
        let _previous = self.current.swap(Arc::new(Indexed { snapshot, index }));
        true
    }

    pub(crate) fn snapshots(&self) -> &SnapshotHandle {
        &self.snapshots
    }
}
