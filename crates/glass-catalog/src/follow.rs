//! The follower: store watch → [`SnapshotState`] → published snapshots.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use glass_model::{Health, Instance, RouteSpec};
use glass_snapshot::{SnapshotHandle, SnapshotState};
use glass_store::{Event, EventKind, KeyValue, Store, StoreError};

use crate::CatalogError;
use crate::keys::{self, Decoded};

/// Loads the catalog, publishes the first snapshot, then follows the
/// store's watch in a background task.
pub(crate) async fn start(
    store: Arc<dyn Store>,
    snapshots: SnapshotHandle,
) -> Result<tokio::task::JoinHandle<()>, CatalogError> {
    let (state, revision) = load(&*store).await?;
    snapshots.publish(state.snapshot());
    Ok(tokio::spawn(async move {
        let mut state = state;
        let mut revision = revision;
        loop {
            match follow(&*store, &snapshots, &mut state, revision).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "Catalog watch ended; reloading");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match load(&*store).await {
                        Ok((fresh, rev)) => {
                            state = fresh;
                            revision = rev;
                            snapshots.publish(state.snapshot());
                        }
                        Err(err) => tracing::warn!(error = %err, "Catalog reload failed; retrying"),
                    }
                }
            }
        }
    }))
}

async fn load(store: &dyn Store) -> Result<(SnapshotState, i64), StoreError> {
    let (kvs, revision) = store.range(keys::ROOT.as_bytes()).await?;
    let mut state = SnapshotState::default();
    for kv in kvs {
        apply_put(&mut state, &kv);
    }
    state.set_revision(revision);
    Ok((state, revision))
}

/// Applies watch batches until the stream ends; an error means "reload".
async fn follow(
    store: &dyn Store,
    snapshots: &SnapshotHandle,
    state: &mut SnapshotState,
    revision: i64,
) -> Result<(), StoreError> {
    let mut stream = store.watch(keys::ROOT.as_bytes(), revision + 1).await?;
    while let Some(batch) = stream.next().await {
        apply(state, &batch?);
        // Coalesce whatever else is already waiting into one publication.
        while let Some(Some(more)) = stream.next().now_or_never() {
            apply(state, &more?);
        }
        snapshots.publish(state.snapshot());
    }
    Err(StoreError::Closed)
}

fn apply(state: &mut SnapshotState, events: &[Event]) {
    for event in events {
        match event.kind {
            EventKind::Put => apply_put(state, &event.kv),
            EventKind::Delete => match keys::decode(&event.kv.key) {
                Some(Decoded::Instance(key)) => state.remove_instance(&key),
                Some(Decoded::Health(key)) => state.remove_health(&key),
                Some(Decoded::Route(name)) => state.remove_route(&name),
                None => {}
            },
        }
        state.set_revision(event.revision());
    }
}

fn apply_put(state: &mut SnapshotState, kv: &KeyValue) {
    match keys::decode(&kv.key) {
        Some(Decoded::Instance(key)) => match serde_json::from_slice::<Instance>(&kv.value) {
            Ok(instance) => state.put_instance(instance),
            Err(err) => tracing::warn!(%key, error = %err, "Skipping unreadable instance record"),
        },
        Some(Decoded::Health(key)) => match serde_json::from_slice::<Health>(&kv.value) {
            Ok(health) => state.put_health(key, health),
            Err(err) => tracing::warn!(%key, error = %err, "Skipping unreadable health record"),
        },
        Some(Decoded::Route(name)) => {
            let route = serde_json::from_slice::<RouteSpec>(&kv.value)
                .map_err(|e| e.to_string())
                .and_then(|spec| spec.validate().map_err(|e| e.to_string()));
            match route {
                Ok(route) => state.put_route(route),
                Err(err) => tracing::warn!(%name, error = %err, "Skipping unreadable route record"),
            }
        }
        None => {}
    }
}
