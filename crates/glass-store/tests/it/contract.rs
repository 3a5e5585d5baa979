//! The store contract suite against the SQLite backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use glass_store::{Store, contract};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = AtomicUsize::new(0);
    contract::run_all(|| {
        let path = dir.path().join(format!(
            "store-{}.db",
            counter.fetch_add(1, Ordering::Relaxed)
        ));
        async move {
            let store: Arc<dyn Store> = super::open(&path);
            store
        }
    })
    .await;
}
