//! Registration, deregistration, heartbeats and health writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glass_model::{CheckKind, Health, HealthStatus, Instance, InstanceKey, Registration, Revision};
use glass_snapshot::SnapshotHandle;
use glass_store::{Compare, LeaseId, Op, Store, Txn};
use tokio::time::Instant;

use crate::event::{self, EventStream};
use crate::{CatalogError, keys};

/// How long a write waits for its change to reach this node's snapshot
/// before it answers anyway (the write itself is already durable).
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// The catalog of one node: validates writes, turns them into store
/// transactions, and shares the snapshot its follower keeps current.
pub struct Catalog {
    store: Arc<dyn Store>,
    zone: String,
    snapshots: SnapshotHandle,
    heartbeats: Mutex<HashMap<InstanceKey, Instant>>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The instance's key (its id included).
    pub key: InstanceKey,
    /// The store revision that holds the registration.
    pub revision: Revision,
    /// False when an identical registration already existed (nothing was written).
    pub changed: bool,
}

/// Milliseconds since the Unix epoch, for `Health::since_ms`.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new instance id: `i-` and 12 random hex digits (DNS-safe).
fn new_id() -> String {
    format!("i-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("catalog records always serialize")
}

impl Catalog {
    /// A catalog over `store` for a node in `zone`. Call
    /// [`Catalog::start`] to load the snapshot and follow changes.
    pub fn new(store: Arc<dyn Store>, zone: impl Into<String>) -> Arc<Self> {
        Arc::new(Catalog {
            store,
            zone: zone.into(),
            snapshots: SnapshotHandle::default(),
            heartbeats: Mutex::new(HashMap::new()),
        })
    }

    /// The node's zone (the default zone of registrations).
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Where readers get the current snapshot.
    pub fn snapshots(&self) -> &SnapshotHandle {
        &self.snapshots
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Validates and stores a registration from `source` (`api`, `file:<name>`, ...).
    pub async fn register(
        &self,
        registration: &Registration,
        source: &str,
        lease: Option<LeaseId>,
    ) -> Result<Registered, CatalogError> {
        let instance = registration.validate(&self.zone, new_id, source)?;
        self.put_instance(instance, lease).await
    }

    /// Stores a validated instance. Re-registering an identical instance
    /// writes nothing. A changed check resets the instance's health.
    pub async fn put_instance(
        &self,
        instance: Instance,
        lease: Option<LeaseId>,
    ) -> Result<Registered, CatalogError> {
        let key = instance.key();
        let current = self.snapshots.load();
        let existing = current.member(&key);
        if lease.is_none() && existing.is_some_and(|m| m.instance == instance) {
            return Ok(Registered {
                key,
                revision: current.revision,
                changed: false,
            });
        }
        let mut txn = Txn::new().and_then(Op::put(keys::instance(&key), encode(&instance), lease));
        if existing.is_some_and(|m| m.instance.check != instance.check) {
            txn = txn.and_then(Op::delete(keys::health(&key)));
            self.lock_heartbeats().remove(&key);
        }
        let revision = self.store.txn(txn).await?.revision;
        self.wait_for(revision).await;
        Ok(Registered {
            key,
            revision,
            changed: true,
        })
    }

    /// Removes an instance and its health record.
    pub async fn deregister(&self, key: &InstanceKey) -> Result<Revision, CatalogError> {
        let txn = Txn::new()
            .when(Compare::ModRevision(keys::instance(key).into(), 0))
            .or_else(Op::delete(keys::instance(key)))
            .or_else(Op::delete(keys::health(key)));
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            return Err(CatalogError::NotFound(format!("no instance {key}")));
        }
        self.lock_heartbeats().remove(key);
        self.wait_for(resp.revision).await;
        Ok(resp.revision)
    }

    /// Finds the one instance with `id`. Ids are unique within a job, so
    /// the same id in two jobs is a conflict the caller must narrow down.
    pub fn resolve(&self, id: &str) -> Result<InstanceKey, CatalogError> {
        let snapshot = self.snapshots.load();
        let mut found = snapshot.members_with_id(id).map(|m| m.instance.key());
        match (found.next(), found.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(CatalogError::NotFound(format!(
                "no instance with id {id:?}"
            ))),
            (Some(a), Some(b)) => Err(CatalogError::Conflict(format!(
                "id {id:?} is used by several jobs ({a}, {b}, ...); add ?product=&env=&job= to say which"
            ))),
        }
    }

    /// Records a heartbeat for a TTL-checked instance and marks it passing.
    pub async fn heartbeat(&self, key: &InstanceKey) -> Result<Revision, CatalogError> {
        let snapshot = self.snapshots.load();
        let member = snapshot
            .member(key)
            .ok_or_else(|| CatalogError::NotFound(format!("no instance {key}")))?;
        if !matches!(
            member.instance.check.as_ref().map(|c| &c.kind),
            Some(CheckKind::Ttl { .. })
        ) {
            return Err(CatalogError::Invalid {
                field: "check".into(),
                reason: format!(
                    "instance {key} has no ttl check; heartbeats are only for ttl checks"
                ),
            });
        }
        self.lock_heartbeats().insert(key.clone(), Instant::now());
        if member.health.status == HealthStatus::Passing {
            return Ok(snapshot.revision);
        }
        let health = Health {
            status: HealthStatus::Passing,
            output: "heartbeat received".into(),
            since_ms: now_ms(),
        };
        self.set_health(key, &health).await
    }

    /// When the last heartbeat of `key` arrived at this node.
    pub fn last_heartbeat(&self, key: &InstanceKey) -> Option<Instant> {
        self.lock_heartbeats().get(key).copied()
    }

    fn lock_heartbeats(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Instant>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.heartbeats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the health of an instance if the instance still exists.
    pub async fn set_health(
        &self,
        key: &InstanceKey,
        health: &Health,
    ) -> Result<Revision, CatalogError> {
        let txn = Txn::new()
            .when(Compare::ModRevision(keys::instance(key).into(), 0))
            .or_else(Op::put(keys::health(key), encode(health), None));
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            return Err(CatalogError::NotFound(format!("no instance {key}")));
        }
        self.wait_for(resp.revision).await;
        Ok(resp.revision)
    }

    /// Makes the instances registered by `source` exactly `desired`, in one
    /// transaction; returns (added or changed, removed, revision).
    pub async fn replace_source(
        &self,
        source: &str,
        desired: Vec<Instance>,
    ) -> Result<(usize, usize, Revision), CatalogError> {
        let snapshot = self.snapshots.load();
        let mut txn = Txn::new();
        let mut wanted = std::collections::HashSet::new();
        let mut changed = 0;
        for instance in desired {
            let key = instance.key();
            let existing = snapshot.member(&key);
            if let Some(m) = existing.filter(|m| m.instance.source != source) {
                return Err(CatalogError::Conflict(format!(
                    "instance {key} is already registered by {:?}",
                    m.instance.source
                )));
            }
            if !wanted.insert(key.clone()) {
                return Err(CatalogError::Invalid {
                    field: "id".into(),
                    reason: format!("instance {key} is listed twice"),
                });
            }
            if existing.is_none_or(|m| m.instance != instance) {
                if existing.is_some_and(|m| m.instance.check != instance.check) {
                    txn = txn.and_then(Op::delete(keys::health(&key)));
                }
                txn = txn.and_then(Op::put(keys::instance(&key), encode(&instance), None));
                changed += 1;
            }
        }
        let mut removed = 0;
        for member in snapshot.members(&Default::default()) {
            let key = member.instance.key();
            if member.instance.source == source && !wanted.contains(&key) {
                txn = txn
                    .and_then(Op::delete(keys::instance(&key)))
                    .and_then(Op::delete(keys::health(&key)));
                removed += 1;
            }
        }
        if changed + removed == 0 {
            return Ok((0, 0, snapshot.revision));
        }
        let revision = self.store.txn(txn).await?.revision;
        self.wait_for(revision).await;
        Ok((changed, removed, revision))
    }

    /// Waits (bounded) until this node's snapshot includes `revision`, so a
    /// client that wrote and then reads sees its write.
    pub async fn wait_for(&self, revision: Revision) {
        let mut changes = self.snapshots.subscribe();
        let reached = changes.wait_for(|seen| *seen >= revision);
        let _ = tokio::time::timeout(READ_YOUR_WRITES_WAIT, reached).await;
    }

    /// Streams catalog changes from `from` (0 = from now) as typed events.
    pub async fn watch(&self, from: Revision) -> Result<EventStream, CatalogError> {
        let stream = self.store.watch(keys::ROOT.as_bytes(), from).await?;
        Ok(event::decode_stream(stream))
    }

    /// Loads the snapshot from the store and starts the follower that
    /// keeps it current; returns once the first snapshot is published.
    pub async fn start(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, CatalogError> {
        crate::follow::start(self.store.clone(), self.snapshots.clone()).await
    }
}
