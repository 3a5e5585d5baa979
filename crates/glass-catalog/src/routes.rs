//! Route writes: create or replace, delete, and declarative apply.

use glass_model::{Revision, RouteSpec};
use glass_store::{Compare, Op, Txn};
use serde::Serialize;

use crate::{Catalog, CatalogError, keys};

/// What applying a route file did (or would do) to one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteChange {
    /// The route did not exist.
    Created,
    /// The route existed with another spec.
    Updated,
    /// The route existed as given.
    Unchanged,
    /// The route was not in the file and `prune` was set.
    Deleted,
}

/// The outcome of [`Catalog::apply_routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Per route, in name order.
    pub changes: Vec<(String, RouteChange)>,
    /// Store revision after the apply (unchanged for a dry run or no change).
    pub revision: Revision,
    /// Whether nothing was written because it was a dry run.
    pub dry_run: bool,
}

fn encode(spec: &RouteSpec) -> Vec<u8> {
    serde_json::to_vec(spec).expect("route specs always serialize")
}

impl Catalog {
    /// Creates or replaces a route; returns whether it changed and the revision.
    pub async fn put_route(
        &self,
        spec: &RouteSpec,
    ) -> Result<(RouteChange, Revision), CatalogError> {
        let report = self
            .apply_routes(std::slice::from_ref(spec), false, false)
            .await?;
        Ok((report.changes[0].1, report.revision))
    }

    /// Creates a route that must not exist yet.
    pub async fn create_route(&self, spec: &RouteSpec) -> Result<Revision, CatalogError> {
        spec.validate()?;
        let key = keys::route(&spec.name);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone().into(), 0))
            .and_then(Op::put(&key, encode(spec), None));
        let resp = self.store().txn(txn).await?;
        if !resp.succeeded {
            return Err(CatalogError::Conflict(format!(
                "route {:?} exists; use PUT to replace it",
                spec.name
            )));
        }
        self.wait_for(resp.revision).await;
        Ok(resp.revision)
    }

    /// Deletes a route.
    pub async fn delete_route(&self, name: &str) -> Result<Revision, CatalogError> {
        let key = keys::route(name);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone().into(), 0))
            .or_else(Op::delete(&key));
        let resp = self.store().txn(txn).await?;
        if resp.succeeded {
            return Err(CatalogError::NotFound(format!("no route {name:?}")));
        }
        self.wait_for(resp.revision).await;
        Ok(resp.revision)
    }

    /// Makes the given routes exist as written, in one transaction; with
    /// `prune`, deletes every other route. Validates everything first: one
    /// bad route changes nothing.
    pub async fn apply_routes(
        &self,
        specs: &[RouteSpec],
        prune: bool,
        dry_run: bool,
    ) -> Result<ApplyReport, CatalogError> {
        let mut names = std::collections::BTreeSet::new();
        for spec in specs {
            spec.validate().map_err(|e| match CatalogError::from(e) {
                CatalogError::Invalid { field, reason } => CatalogError::Invalid {
                    field: format!("route {:?}: {field}", spec.name),
                    reason,
                },
                other => other,
            })?;
            if !names.insert(spec.name.clone()) {
                return Err(CatalogError::Invalid {
                    field: "routes".into(),
                    reason: format!("route {:?} is listed twice", spec.name),
                });
            }
        }
        let snapshot = self.snapshots().load();
        let mut txn = Txn::new();
        let mut changes = Vec::new();
        for spec in specs {
            let change = match snapshot.route(&spec.name) {
                None => RouteChange::Created,
                Some(r) if r.spec == *spec => RouteChange::Unchanged,
                Some(_) => RouteChange::Updated,
            };
            if change != RouteChange::Unchanged {
                txn = txn.and_then(Op::put(keys::route(&spec.name), encode(spec), None));
            }
            changes.push((spec.name.clone(), change));
        }
        if prune {
            for route in snapshot.routes().filter(|r| !names.contains(&r.spec.name)) {
                txn = txn.and_then(Op::delete(keys::route(&route.spec.name)));
                changes.push((route.spec.name.clone(), RouteChange::Deleted));
            }
        }
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        let writes = changes.iter().any(|(_, c)| *c != RouteChange::Unchanged);
        if dry_run || !writes {
            return Ok(ApplyReport {
                changes,
                revision: snapshot.revision,
                dry_run,
            });
        }
        let revision = self.store().txn(txn).await?.revision;
        self.wait_for(revision).await;
        Ok(ApplyReport {
            changes,
            revision,
            dry_run,
        })
    }
}
