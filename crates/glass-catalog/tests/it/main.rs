//! Catalog integration tests: health checks against real servers, the file
//! provider, on a real embedded store.

mod file_provider;
mod health;

use std::sync::Arc;
use std::time::Duration;

use glass_catalog::Catalog;
use glass_model::{HealthStatus, InstanceKey, Registration};
use glass_store::{SqliteOptions, SqliteStore, Store};

pub(crate) struct Fixture {
    pub(crate) catalog: Arc<Catalog>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        SqliteStore::open(&dir.path().join("store.db"), SqliteOptions::default()).unwrap();
    let catalog = Catalog::new(store, "eu1");
    catalog.start().await.unwrap();
    Fixture { catalog, _dir: dir }
}

pub(crate) fn registration(id: &str, port: u16, check: serde_json::Value) -> Registration {
    serde_json::from_value(serde_json::json!({
        "id": id, "product": "shop", "env": "prod", "job": "users-api",
        "address": "127.0.0.1", "ports": {"http": port}, "check": check,
    }))
    .unwrap()
}

pub(crate) fn key(id: &str) -> InstanceKey {
    InstanceKey {
        product: "shop".into(),
        env: "prod".into(),
        job: "users-api".into(),
        id: id.into(),
    }
}

/// The instance's status, or `None` once it is gone.
pub(crate) fn status(catalog: &Catalog, id: &str) -> Option<HealthStatus> {
    catalog
        .snapshots()
        .load()
        .member(&key(id))
        .map(|m| m.health.status)
}

/// Waits (at most `limit`) until `id`'s status is `want`; returns how long it took.
pub(crate) async fn wait_status(
    catalog: &Catalog,
    id: &str,
    want: Option<HealthStatus>,
    limit: Duration,
) -> Duration {
    let started = tokio::time::Instant::now();
    while status(catalog, id) != want {
        assert!(
            started.elapsed() < limit,
            "{id} did not become {want:?} within {limit:?} (is {:?})",
            status(catalog, id)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}
