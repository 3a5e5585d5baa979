//! Health checking: one task per checked instance, started and stopped as
//! the snapshot changes; each writes only status *changes* to the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glass_model::{CheckKind, CheckSpec, Health, HealthStatus, Instance, InstanceKey};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::catalog::now_ms;
use crate::{Catalog, CatalogError, probe};

/// How often the set of checked instances is reconciled with the snapshot
/// at most; bounds the cost of heavy registration traffic.
const RECONCILE_EVERY: Duration = Duration::from_millis(50);

/// Runs the health checks of the instances this node is responsible for.
pub struct HealthChecker {
    catalog: Arc<Catalog>,
    zone: Option<String>,
    http: reqwest::Client,
    tasks: HashMap<InstanceKey, (Instance, JoinHandle<()>)>,
}

impl HealthChecker {
    /// Checks instances in `zone` (every instance when `None`). Runs until aborted.
    pub fn spawn(catalog: Arc<Catalog>, zone: Option<String>) -> JoinHandle<()> {
        let http = reqwest::Client::builder()
            .user_agent("glass-health-check")
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client always builds");
        let checker = HealthChecker {
            catalog,
            zone,
            http,
            tasks: HashMap::new(),
        };
        tokio::spawn(checker.run())
    }

    async fn run(mut self) {
        let mut changes = self.catalog.snapshots().subscribe();
        let mut last: Option<std::sync::Arc<glass_snapshot::Snapshot>> = None;
        loop {
            let snapshot = self.catalog.snapshots().load();
            // Registrations without checks do not concern the checkers.
            if last.as_ref().is_none_or(|l| !l.same_checked(&snapshot)) {
                self.reconcile(&snapshot);
                last = Some(snapshot);
            }
            if changes.changed().await.is_err() {
                break;
            }
            tokio::time::sleep(RECONCILE_EVERY).await;
        }
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
    }

    /// Starts checks for new or changed instances, stops those of removed ones.
    fn reconcile(&mut self, snapshot: &glass_snapshot::Snapshot) {
        let mut wanted: HashMap<InstanceKey, Instance> = HashMap::new();
        for member in snapshot.checked_members() {
            let i = &member.instance;
            if i.check.is_some() && self.zone.as_deref().is_none_or(|z| z == i.zone) {
                wanted.insert(i.key(), i.clone());
            }
        }
        self.tasks.retain(|key, (instance, task)| {
            let keep = wanted.get(key) == Some(instance) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, instance) in wanted {
            if !self.tasks.contains_key(&key) {
                let check = Check {
                    catalog: self.catalog.clone(),
                    http: self.http.clone(),
                    key: key.clone(),
                    instance: instance.clone(),
                };
                self.tasks
                    .insert(key, (instance, tokio::spawn(check.run())));
            }
        }
    }
}

/// The check of one instance.
struct Check {
    catalog: Arc<Catalog>,
    http: reqwest::Client,
    key: InstanceKey,
    instance: Instance,
}

impl Check {
    fn spec(&self) -> &CheckSpec {
        self.instance
            .check
            .as_ref()
            .expect("only checked instances get a Check")
    }

    fn port(&self, name: &str) -> SocketAddr {
        let port = self.instance.ports.get(name).copied().unwrap_or_default();
        SocketAddr::new(self.instance.address, port)
    }

    fn current_status(&self) -> Option<HealthStatus> {
        self.catalog
            .snapshots()
            .load()
            .member(&self.key)
            .map(|m| m.health.status)
    }

    async fn run(self) {
        let spec = self.spec().clone();
        let started = Instant::now();
        let mut critical_since = match self.current_status() {
            Some(HealthStatus::Critical) => Some(started),
            _ => None,
        };
        let tick = match spec.kind {
            CheckKind::Ttl { ttl } => {
                (ttl / 4).clamp(Duration::from_millis(25), Duration::from_secs(1))
            }
            _ => spec.interval,
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(outcome) = self.probe(started).await else {
                continue;
            };
            let status = outcome.0;
            critical_since = match status {
                HealthStatus::Critical => critical_since.or(Some(Instant::now())),
                _ => None,
            };
            if self.current_status() != Some(status) {
                tracing::info!(instance = %self.key, status = status.as_str(), output = %outcome.1, "Health changed");
                let health = Health {
                    status,
                    output: outcome.1,
                    since_ms: now_ms(),
                };
                match self.catalog.set_health(&self.key, &health).await {
                    Err(CatalogError::NotFound(_)) => return,
                    Err(err) => {
                        tracing::warn!(instance = %self.key, error = %err, "Could not record health")
                    }
                    Ok(_) => {}
                }
            }
            if let (Some(since), Some(after)) = (critical_since, spec.deregister_critical_after)
                && since.elapsed() >= after
            {
                tracing::info!(instance = %self.key, after = ?after, "Deregistering instance critical for too long");
                match self.catalog.deregister(&self.key).await {
                    Ok(_) | Err(CatalogError::NotFound(_)) => return,
                    Err(err) => {
                        tracing::warn!(instance = %self.key, error = %err, "Could not deregister")
                    }
                }
            }
        }
    }

    /// Probes once; `None` when a TTL check has nothing to say yet.
    async fn probe(&self, started: Instant) -> Option<probe::Outcome> {
        let spec = self.spec();
        Some(match &spec.kind {
            CheckKind::Http { path, port } => {
                probe::http(&self.http, self.port(port), path, spec.timeout).await
            }
            CheckKind::Tcp { port } => probe::tcp(self.port(port), spec.timeout).await,
            CheckKind::Grpc { service, port } => {
                probe::grpc(self.port(port), service, spec.timeout).await
            }
            CheckKind::Ttl { ttl } => {
                // A passing instance found at start gets one TTL of grace: its
                // heartbeats may have gone to a node that restarted.
                let last = self.catalog.last_heartbeat(&self.key);
                let reference = match (last, self.current_status()) {
                    (Some(at), _) => at,
                    (None, Some(HealthStatus::Passing)) => started,
                    (None, _) => return Some((HealthStatus::Critical, "no heartbeat yet".into())),
                };
                if reference.elapsed() < *ttl {
                    return None;
                }
                (
                    HealthStatus::Critical,
                    format!("no heartbeat within the ttl of {ttl:?}"),
                )
            }
        })
    }
}
