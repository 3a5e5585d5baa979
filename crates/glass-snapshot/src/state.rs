//! The mutable side: applies catalog changes and publishes snapshots.

use std::sync::Arc;

use glass_model::{Health, HealthStatus, Instance, InstanceKey, Revision, Route};
use imbl::OrdMap;

use crate::view::{JobKey, Member, Snapshot};

/// Catalog contents being assembled from store events. Cloning the
/// persistent maps into a [`Snapshot`] is cheap, so a new snapshot can be
/// published after every batch of changes.
#[derive(Debug, Default, Clone)]
pub struct SnapshotState {
    revision: Revision,
    /// Stored health records (instances without one use [`initial_health`]).
    health: OrdMap<InstanceKey, Health>,
    members: OrdMap<InstanceKey, Arc<Member>>,
    /// The members that have a health check, for the checkers.
    checked: OrdMap<InstanceKey, Arc<Member>>,
    jobs: OrdMap<JobKey, OrdMap<String, Arc<Member>>>,
    routes: OrdMap<String, Arc<Route>>,
}

/// The health of an instance that has no stored health record yet.
fn initial_health(instance: &Instance) -> Health {
    match instance.check {
        None => Health {
            status: HealthStatus::Passing,
            output: "no check".into(),
            since_ms: 0,
        },
        Some(_) => Health {
            status: HealthStatus::Critical,
            output: "not checked yet".into(),
            since_ms: 0,
        },
    }
}

impl SnapshotState {
    /// Records that everything up to `revision` has been applied.
    pub fn set_revision(&mut self, revision: Revision) {
        self.revision = self.revision.max(revision);
    }

    /// An instance was registered or changed.
    pub fn put_instance(&mut self, instance: Instance) {
        let key = instance.key();
        self.refresh(&key, Some(instance));
    }

    /// An instance was removed.
    pub fn remove_instance(&mut self, key: &InstanceKey) {
        self.refresh(key, None);
    }

    /// An instance's health changed.
    pub fn put_health(&mut self, key: InstanceKey, health: Health) {
        self.health.insert(key.clone(), health);
        let instance = self.members.get(&key).map(|m| m.instance.clone());
        if instance.is_some() {
            self.refresh(&key, instance);
        }
    }

    /// An instance's health record was removed.
    pub fn remove_health(&mut self, key: &InstanceKey) {
        self.health.remove(key);
        let instance = self.members.get(key).map(|m| m.instance.clone());
        if instance.is_some() {
            self.refresh(key, instance);
        }
    }

    /// A route was created or replaced.
    pub fn put_route(&mut self, route: Route) {
        self.routes.insert(route.spec.name.clone(), Arc::new(route));
    }

    /// A route was deleted.
    pub fn remove_route(&mut self, name: &str) {
        self.routes.remove(name);
    }

    /// The instance stored under `key`, if any.
    pub fn instance(&self, key: &InstanceKey) -> Option<&Instance> {
        self.members.get(key).map(|m| &m.instance)
    }

    fn refresh(&mut self, key: &InstanceKey, instance: Option<Instance>) {
        let job_key = (key.product.clone(), key.env.clone(), key.job.clone());
        match instance {
            Some(instance) => {
                let health = self
                    .health
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| initial_health(&instance));
                let checked = instance.check.is_some();
                let member = Arc::new(Member { instance, health });
                if checked {
                    self.checked.insert(key.clone(), member.clone());
                } else {
                    self.checked.remove(key);
                }
                self.members.insert(key.clone(), member.clone());
                self.jobs
                    .entry(job_key)
                    .or_default()
                    .insert(key.id.clone(), member);
            }
            None => {
                self.members.remove(key);
                self.checked.remove(key);
                if let Some(job) = self.jobs.get_mut(&job_key) {
                    job.remove(&key.id);
                    if job.is_empty() {
                        self.jobs.remove(&job_key);
                    }
                }
            }
        }
    }

    /// An immutable snapshot of the current state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            members: self.members.clone(),
            checked: self.checked.clone(),
            jobs: self.jobs.clone(),
            routes: self.routes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceFilter;
    use glass_model::{Registration, ServiceAddr};

    fn instance(id: &str, zone: &str, check: bool) -> Instance {
        let json = format!(
            r#"{{"id":"{id}","product":"shop","env":"prod","job":"users","zone":"{zone}",
               "address":"10.0.0.1","ports":{{"http":80}} {} }}"#,
            if check {
                r#","check":{"ttl":"5s"}"#
            } else {
                ""
            }
        );
        let reg: Registration = serde_json::from_str(&json).unwrap();
        reg.validate("local", || unreachable!(), "api").unwrap()
    }

    #[test]
    fn health_and_services_follow_changes() {
        let mut state = SnapshotState::default();
        state.put_instance(instance("a", "eu1", false));
        state.put_instance(instance("b", "eu2", true));
        state.set_revision(2);
        let snap = state.snapshot();
        assert_eq!(snap.revision, 2);
        let summaries = snap.services();
        assert_eq!(summaries.len(), 2);
        assert_eq!(
            (summaries[1].healthy, summaries[1].total),
            (0, 1),
            "ttl check starts critical"
        );

        let b = instance("b", "eu2", true).key();
        state.put_health(
            b.clone(),
            Health {
                status: HealthStatus::Passing,
                output: String::new(),
                since_ms: 1,
            },
        );
        let all: ServiceAddr = "http.users.prod.shop".parse().unwrap();
        let snap2 = state.snapshot();
        assert_eq!(
            snap2.service(&all).filter(|m| m.is_healthy(false)).count(),
            2
        );
        assert_eq!(
            snap.service(&all).filter(|m| m.is_healthy(false)).count(),
            1,
            "old snapshot unchanged"
        );

        state.remove_instance(&b);
        let snap3 = state.snapshot();
        let eu2: ServiceAddr = "http.users.prod.shop.eu2".parse().unwrap();
        assert_eq!(snap3.service(&eu2).count(), 0);
        let filter = InstanceFilter {
            zone: Some("eu1".into()),
            ..Default::default()
        };
        assert_eq!(snap3.members(&filter).count(), 1);
    }
}
