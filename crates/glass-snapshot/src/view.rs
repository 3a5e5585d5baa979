//! What a snapshot holds and the queries readers run on it.

use std::sync::Arc;

use glass_model::{Health, HealthStatus, Instance, InstanceKey, Revision, Route, ServiceAddr};
use imbl::OrdMap;
use serde::Serialize;
use utoipa::ToSchema;

/// One instance with its current health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Member {
    /// The registered instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// Its health.
    pub health: Health,
}

impl Member {
    /// Whether the instance should get traffic (`warning` counts when `allow_warning`).
    pub fn is_healthy(&self, allow_warning: bool) -> bool {
        match self.health.status {
            HealthStatus::Passing => true,
            HealthStatus::Warning => allow_warning,
            HealthStatus::Critical => false,
        }
    }
}

/// `(product, env, job)`: the members of one job, by id.
pub(crate) type JobKey = (String, String, String);

/// An immutable view of the catalog at one store revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store revision this snapshot reflects.
    pub revision: Revision,
    pub(crate) members: OrdMap<InstanceKey, Arc<Member>>,
    pub(crate) checked: OrdMap<InstanceKey, Arc<Member>>,
    pub(crate) jobs: OrdMap<JobKey, OrdMap<String, Arc<Member>>>,
    pub(crate) routes: OrdMap<String, Arc<Route>>,
}

/// Filters for listing instances; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// Product.
    pub product: Option<String>,
    /// Environment.
    pub env: Option<String>,
    /// Job.
    pub job: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Has a port with this name.
    pub port: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// Only passing instances (`Some(true)`), only not passing (`Some(false)`).
    pub healthy: Option<bool>,
}

impl InstanceFilter {
    /// Whether `member` passes the filter.
    pub fn matches(&self, member: &Member) -> bool {
        let i = &member.instance;
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.product, &i.product)
            && eq(&self.env, &i.env)
            && eq(&self.job, &i.job)
            && eq(&self.zone, &i.zone)
            && self.port.as_deref().is_none_or(|p| i.ports.contains_key(p))
            && self
                .tag
                .as_deref()
                .is_none_or(|t| i.tags.iter().any(|have| have == t))
            && self.healthy.is_none_or(|h| member.is_healthy(false) == h)
    }
}

/// One service address with its instance counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServiceSummary {
    /// `<port>.<job>.<env>.<product>.<zone>`.
    pub address: String,
    /// Instances passing their checks.
    pub healthy: usize,
    /// All instances.
    pub total: usize,
}

impl Snapshot {
    /// Number of instances.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The instances that have a health check.
    pub fn checked_members(&self) -> impl Iterator<Item = &Arc<Member>> + '_ {
        self.checked.values()
    }

    /// Whether the checked instances are the very same as in `other`
    /// (cheap: compares the persistent maps' roots).
    pub fn same_checked(&self, other: &Snapshot) -> bool {
        self.checked.ptr_eq(&other.checked)
    }

    /// Every route, by name.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> + '_ {
        self.routes.values()
    }

    /// One route by name.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// The members of one job (all zones, healthy or not), by id.
    pub fn job_members<'a>(
        &'a self,
        product: &str,
        env: &str,
        job: &str,
    ) -> impl Iterator<Item = &'a Arc<Member>> + 'a {
        let key = (product.to_owned(), env.to_owned(), job.to_owned());
        self.jobs.get(&key).into_iter().flat_map(|m| m.values())
    }

    /// One instance by key.
    pub fn member(&self, key: &InstanceKey) -> Option<&Arc<Member>> {
        self.members.get(key)
    }

    /// Every instance whose id is `id`, across all jobs.
    pub fn members_with_id<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Member>> + 'a {
        self.members
            .iter()
            .filter(move |(k, _)| k.id == id)
            .map(|(_, m)| m)
    }

    /// Instances matching `filter`, in key order. Narrows by job first when it can.
    pub fn members<'a>(
        &'a self,
        filter: &'a InstanceFilter,
    ) -> Box<dyn Iterator<Item = &'a Arc<Member>> + 'a> {
        match (&filter.product, &filter.env, &filter.job) {
            (Some(p), Some(e), Some(j)) => {
                let key = (p.clone(), e.clone(), j.clone());
                Box::new(
                    self.jobs
                        .get(&key)
                        .into_iter()
                        .flat_map(|m| m.values())
                        .filter(move |m| filter.matches(m)),
                )
            }
            // A job name alone: walk the jobs, not every instance.
            (_, _, Some(j)) => Box::new(
                self.jobs
                    .iter()
                    .filter(move |(k, _)| k.2 == *j)
                    .flat_map(|(_, m)| m.values())
                    .filter(move |m| filter.matches(m)),
            ),
            _ => Box::new(self.members.values().filter(move |m| filter.matches(m))),
        }
    }

    /// The instances behind a service address (all zones when the address
    /// has none), healthy or not, in id order.
    pub fn service<'a>(
        &'a self,
        addr: &'a ServiceAddr,
    ) -> impl Iterator<Item = &'a Arc<Member>> + 'a {
        let key = (addr.product.clone(), addr.env.clone(), addr.job.clone());
        self.jobs
            .get(&key)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |m| {
                m.instance.ports.contains_key(&addr.port)
                    && addr.zone.as_deref().is_none_or(|z| z == m.instance.zone)
            })
    }

    /// Every service address (one per port name and zone) with counts, sorted.
    pub fn services(&self) -> Vec<ServiceSummary> {
        let mut out: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for member in self.members.values() {
            let i = &member.instance;
            for port in i.ports.keys() {
                let address = format!("{port}.{}.{}.{}.{}", i.job, i.env, i.product, i.zone);
                let entry = out.entry(address).or_default();
                entry.1 += 1;
                if member.is_healthy(false) {
                    entry.0 += 1;
                }
            }
        }
        out.into_iter()
            .map(|(address, (healthy, total))| ServiceSummary {
                address,
                healthy,
                total,
            })
            .collect()
    }
}
