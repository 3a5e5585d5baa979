//! The store contract suite.
//!
//! Every case is written against `Arc<dyn Store>` only, so each backend
//! (the embedded SQLite one, a future etcd one) runs the very same tests:
//! call [`run_all`] with a factory of fresh, empty stores, or call the
//! cases one by one. A case panics when the backend breaks the contract.
//!
//! The cases assume nothing about the starting revision of an empty store
//! (etcd starts at 1, SQLite at 0): they work with the revisions the store
//! returns. They need a tokio runtime with time enabled and take a few
//! seconds in all (the lease cases wait for real TTLs).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, WatchStream,
};

/// How long a case waits for something that must happen.
const WAIT: Duration = Duration::from_secs(10);

/// How long a case waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(200);

/// Runs every case, each on a fresh store from `new_store`.
pub async fn run_all<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    macro_rules! case {
        ($($name:ident),* $(,)?) => {$(
            tracing::info!(case = stringify!($name), "store contract case");
            $name(new_store().await).await;
        )*};
    }
    case!(
        put_get,
        range_prefix,
        delete,
        revision_per_txn,
        cas_mod_revision,
        create_if_absent,
        compare_value,
        delete_prefix,
        watch_replay_then_live,
        watch_no_gaps_under_concurrent_writes,
        watch_from_zero_sees_only_new,
        watch_future_revision,
        watch_prefix_filter,
        watch_compacted,
        lease_grant_keep_alive_revoke,
        lease_keep_alive_extends,
        lease_expiry_deletes_keys,
        put_with_revoked_lease_fails,
        concurrent_writers,
        model_random_ops,
    );
}

// ---------------------------------------------------------------- helpers

/// The next batch of a watch; panics on timeout, error or end.
async fn next_batch(watch: &mut WatchStream) -> Vec<Event> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch batch within {WAIT:?}"),
    }
}

/// Asserts that no batch arrives for a short while.
async fn assert_quiet(watch: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, watch.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// Collects batches until one reaches revision `last`.
async fn collect_until(watch: &mut WatchStream, last: Revision) -> Vec<Vec<Event>> {
    let mut batches = Vec::new();
    loop {
        let batch = next_batch(watch).await;
        let rev = batch
            .last()
            .map(Event::revision)
            .expect("batches are never empty");
        batches.push(batch);
        if rev >= last {
            return batches;
        }
    }
}

/// Asserts batches are well-formed: non-empty, one revision each, strictly
/// increasing across batches.
fn assert_batches_ordered(batches: &[Vec<Event>]) {
    let mut previous = 0;
    for batch in batches {
        let rev = batch
            .first()
            .map(Event::revision)
            .expect("batches are never empty");
        assert!(
            batch.iter().all(|e| e.revision() == rev),
            "one transaction per batch: {batch:?}"
        );
        assert!(
            rev > previous,
            "revisions must increase: {previous} then {rev}"
        );
        previous = rev;
    }
}

/// `(kind, key)` of each event.
fn summary(batch: &[Event]) -> Vec<(EventKind, Bytes)> {
    batch.iter().map(|e| (e.kind, e.kv.key.clone())).collect()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn must_get(store: &Arc<dyn Store>, key: &str) -> KeyValue {
    store
        .get(key.as_bytes())
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("{key} missing"))
}

async fn keys(store: &Arc<dyn Store>, prefix: &str) -> Vec<Bytes> {
    let (kvs, _) = store.range(prefix.as_bytes()).await.expect("range");
    kvs.into_iter().map(|kv| kv.key).collect()
}

// ------------------------------------------------------------------ cases

/// Put and get: values, versions, create and mod revisions; empty keys
/// are rejected.
pub async fn put_get(store: Arc<dyn Store>) {
    let r1 = store.put(b"k", b"v1", None).await.expect("put");
    let kv = must_get(&store, "k").await;
    assert_eq!(kv.key, b("k"));
    assert_eq!(kv.value, b("v1"));
    assert_eq!(
        (kv.version, kv.create_revision, kv.mod_revision, kv.lease),
        (1, r1, r1, 0)
    );

    let r2 = store.put(b"k", b"v2", None).await.expect("put");
    assert_eq!(r2, r1 + 1);
    let kv = must_get(&store, "k").await;
    assert_eq!(kv.value, b("v2"));
    assert_eq!(
        (kv.version, kv.create_revision, kv.mod_revision),
        (2, r1, r2)
    );

    store
        .put(b"empty", b"", None)
        .await
        .expect("put an empty value");
    assert_eq!(must_get(&store, "empty").await.value, Bytes::new());

    assert!(store.get(b"missing").await.expect("get").is_none());
    let rev = store.revision().await.expect("revision");
    assert_eq!(rev, r2 + 1);
    assert!(matches!(
        store.put(b"", b"x", None).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(store.get(b"").await, Err(StoreError::Invalid(_))));
    assert_eq!(store.revision().await.expect("revision"), rev);
}

/// Range returns the keys under a prefix, in key order, and nothing else.
pub async fn range_prefix(store: Arc<dyn Store>) {
    for key in ["a/2", "a/1", "ab", "a/3", "b/1", "a"] {
        store
            .put(key.as_bytes(), key.as_bytes(), None)
            .await
            .expect("put");
    }
    store.put(b"\xff\x01", b"x", None).await.expect("put");
    store.put(b"\xff\xff\x02", b"x", None).await.expect("put");

    let (kvs, rev) = store.range(b"a/").await.expect("range");
    let got: Vec<Bytes> = kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(got, vec![b("a/1"), b("a/2"), b("a/3")]);
    assert!(kvs.iter().all(|kv| kv.value == kv.key));
    assert_eq!(rev, store.revision().await.expect("revision"));

    let all = keys(&store, "").await;
    let expected: Vec<Bytes> = ["a", "a/1", "a/2", "a/3", "ab", "b/1"]
        .into_iter()
        .map(b)
        .chain([
            Bytes::from_static(b"\xff\x01"),
            Bytes::from_static(b"\xff\xff\x02"),
        ])
        .collect();
    assert_eq!(all, expected);
    assert!(keys(&store, "zz").await.is_empty());
    let (ff, _) = store.range(b"\xff").await.expect("range");
    assert_eq!(ff.len(), 2);
    let (ffff, _) = store.range(b"\xff\xff").await.expect("range");
    assert_eq!(ffff.len(), 1);
}

/// Delete removes a key and moves the revision; deleting a missing key
/// changes nothing; a re-created key starts over at version 1.
pub async fn delete(store: Arc<dyn Store>) {
    let r1 = store.put(b"k", b"v", None).await.expect("put");
    let (existed, r2) = store.delete(b"k").await.expect("delete");
    assert!(existed);
    assert_eq!(r2, r1 + 1);
    assert!(store.get(b"k").await.expect("get").is_none());

    let (existed, r3) = store.delete(b"k").await.expect("delete");
    assert!(!existed);
    assert_eq!(r3, r2, "deleting a missing key does not move the revision");

    let r4 = store.put(b"k", b"again", None).await.expect("put");
    let kv = must_get(&store, "k").await;
    assert_eq!(
        (kv.version, kv.create_revision, kv.mod_revision),
        (1, r4, r4)
    );
}

/// The revision grows by one per transaction that changes something, and
/// not at all for one that changes nothing.
pub async fn revision_per_txn(store: Arc<dyn Store>) {
    let r0 = store.revision().await.expect("revision");
    let txn = Txn::new()
        .and_then(Op::put("a", "1", None))
        .and_then(Op::put("b", "2", None))
        .and_then(Op::delete("missing"));
    let resp = store.txn(txn).await.expect("txn");
    assert!(resp.succeeded);
    assert_eq!(resp.revision, r0 + 1);
    assert_eq!(resp.deleted, 0);
    assert_eq!(must_get(&store, "a").await.mod_revision, r0 + 1);
    assert_eq!(must_get(&store, "b").await.mod_revision, r0 + 1);

    let resp = store.txn(Txn::new()).await.expect("empty txn");
    assert!(resp.succeeded);
    assert_eq!(resp.revision, r0 + 1);

    let resp = store
        .txn(Txn::new().and_then(Op::delete("missing")))
        .await
        .expect("txn");
    assert_eq!((resp.revision, resp.deleted), (r0 + 1, 0));

    let resp = store
        .txn(
            Txn::new()
                .when(Compare::ModRevision(b("a"), 12345))
                .and_then(Op::put("a", "x", None)),
        )
        .await
        .expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, r0 + 1);
    assert_eq!(store.revision().await.expect("revision"), r0 + 1);
    assert_eq!(must_get(&store, "a").await.value, b("1"));
}

/// Compare-and-swap on `mod_revision`: success runs `success`, failure runs `failure`.
pub async fn cas_mod_revision(store: Arc<dyn Store>) {
    let r1 = store.put(b"k", b"v1", None).await.expect("put");
    let cas = |expected: Revision, value: &str| {
        Txn::new()
            .when(Compare::ModRevision(b("k"), expected))
            .and_then(Op::put("k", value, None))
            .or_else(Op::put("conflict", value, None))
    };
    let resp = store.txn(cas(r1, "v2")).await.expect("txn");
    assert!(resp.succeeded);
    assert_eq!(resp.revision, r1 + 1);
    assert_eq!(must_get(&store, "k").await.value, b("v2"));
    assert!(store.get(b"conflict").await.expect("get").is_none());

    let resp = store.txn(cas(r1, "v3")).await.expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, r1 + 2, "the failure ops changed something");
    assert_eq!(must_get(&store, "k").await.value, b("v2"));
    assert_eq!(must_get(&store, "conflict").await.value, b("v3"));
}

/// `Compare::ModRevision(key, 0)` holds only while the key does not exist.
pub async fn create_if_absent(store: Arc<dyn Store>) {
    let create = |value: &str| {
        Txn::new()
            .when(Compare::ModRevision(b("k"), 0))
            .and_then(Op::put("k", value, None))
    };
    assert!(store.txn(create("first")).await.expect("txn").succeeded);
    let resp = store.txn(create("second")).await.expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(must_get(&store, "k").await.value, b("first"));
    store.delete(b"k").await.expect("delete");
    assert!(store.txn(create("third")).await.expect("txn").succeeded);
    assert_eq!(must_get(&store, "k").await.value, b("third"));
}

/// `Compare::Value` holds when the value is equal; never for a missing key.
pub async fn compare_value(store: Arc<dyn Store>) {
    store.put(b"k", b"a", None).await.expect("put");
    let swap = |from: &str, to: &str| {
        Txn::new()
            .when(Compare::Value(b("k"), b(from)))
            .and_then(Op::put("k", to, None))
    };
    assert!(store.txn(swap("a", "b")).await.expect("txn").succeeded);
    assert!(!store.txn(swap("a", "c")).await.expect("txn").succeeded);
    assert_eq!(must_get(&store, "k").await.value, b("b"));
    let missing = Txn::new().when(Compare::Value(b("missing"), Bytes::new()));
    assert!(!store.txn(missing).await.expect("txn").succeeded);
}

/// `DeletePrefix` deletes exactly the keys under the prefix, in one revision.
pub async fn delete_prefix(store: Arc<dyn Store>) {
    for key in ["p/1", "p/2", "p/3", "p", "q/1"] {
        store.put(key.as_bytes(), b"x", None).await.expect("put");
    }
    let r0 = store.revision().await.expect("revision");
    let mut watch = store.watch(b"", 0).await.expect("watch");
    let resp = store
        .txn(Txn::new().and_then(Op::DeletePrefix { prefix: b("p/") }))
        .await
        .expect("txn");
    assert_eq!((resp.revision, resp.deleted), (r0 + 1, 3));
    assert!(keys(&store, "p/").await.is_empty());
    assert_eq!(keys(&store, "").await, vec![b("p"), b("q/1")]);

    let batch = next_batch(&mut watch).await;
    assert_eq!(
        summary(&batch),
        vec![
            (EventKind::Delete, b("p/1")),
            (EventKind::Delete, b("p/2")),
            (EventKind::Delete, b("p/3"))
        ]
    );
    assert!(
        batch
            .iter()
            .all(|e| e.revision() == r0 + 1 && e.kv.value.is_empty())
    );

    let resp = store
        .txn(Txn::new().and_then(Op::DeletePrefix { prefix: b("p/") }))
        .await
        .expect("txn");
    assert_eq!((resp.revision, resp.deleted), (r0 + 1, 0));
}

/// A watch from an old revision replays history, then follows live
/// changes: in order, no gaps, no duplicates, one batch per transaction.
pub async fn watch_replay_then_live(store: Arc<dyn Store>) {
    let mut expected: Vec<(Revision, Vec<(EventKind, Bytes)>)> = Vec::new();
    let put = |k: &str| (EventKind::Put, b(k));
    let del = |k: &str| (EventKind::Delete, b(k));

    let start = store.put(b"w/0", b"0", None).await.expect("put");
    expected.push((start, vec![put("w/0")]));
    for k in ["w/1", "w/2"] {
        expected.push((
            store.put(k.as_bytes(), b"x", None).await.expect("put"),
            vec![put(k)],
        ));
    }
    store.put(b"other", b"x", None).await.expect("put");
    let pair = Txn::new()
        .and_then(Op::put("w/3", "x", None))
        .and_then(Op::put("w/4", "x", None));
    expected.push((
        store.txn(pair).await.expect("txn").revision,
        vec![put("w/3"), put("w/4")],
    ));

    let mut watch = store.watch(b"w/", start).await.expect("watch");
    let replayed = collect_until(&mut watch, expected[expected.len() - 1].0).await;

    let pair = Txn::new()
        .and_then(Op::put("w/5", "x", None))
        .and_then(Op::delete("w/0"));
    expected.push((
        store.txn(pair).await.expect("txn").revision,
        vec![put("w/5"), del("w/0")],
    ));
    expected.push((
        store.put(b"w/6", b"x", None).await.expect("put"),
        vec![put("w/6")],
    ));
    let live = collect_until(&mut watch, expected[expected.len() - 1].0).await;

    let batches: Vec<Vec<Event>> = replayed.into_iter().chain(live).collect();
    assert_batches_ordered(&batches);
    let got: Vec<(Revision, Vec<(EventKind, Bytes)>)> = batches
        .iter()
        .map(|batch| (batch[0].revision(), summary(batch)))
        .collect();
    assert_eq!(got, expected);
    let w6 = &batches[batches.len() - 1][0];
    assert_eq!(w6.kv.value, b("x"));
    assert_eq!(w6.kv.version, 1);
    assert_quiet(&mut watch).await;
}

/// A watch started from an old revision while writers run sees every
/// revision exactly once, in order.
pub async fn watch_no_gaps_under_concurrent_writes(store: Arc<dyn Store>) {
    let first = store.put(b"g/start", b"x", None).await.expect("put");
    for i in 0..50 {
        store
            .put(format!("g/{i}").as_bytes(), b"x", None)
            .await
            .expect("put");
    }
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..50 {
                    store
                        .put(format!("g/{t}/{i}").as_bytes(), b"x", None)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    let mut watch = store.watch(b"g/", first).await.expect("watch");
    for w in writers {
        w.await.expect("writer task");
    }
    let last = store.revision().await.expect("revision");
    let batches = collect_until(&mut watch, last).await;
    assert_batches_ordered(&batches);
    let revisions: Vec<Revision> = batches.iter().map(|b| b[0].revision()).collect();
    let expected: Vec<Revision> = (first..=last).collect();
    assert_eq!(revisions, expected, "every revision once, in order");
    assert!(batches.iter().all(|b| b.len() == 1));
}

/// A watch from 0 sees only changes made after it started.
pub async fn watch_from_zero_sees_only_new(store: Arc<dyn Store>) {
    store.put(b"n/old", b"x", None).await.expect("put");
    let mut watch = store.watch(b"n/", 0).await.expect("watch");
    let rev = store.put(b"n/new", b"x", None).await.expect("put");
    let batch = next_batch(&mut watch).await;
    assert_eq!(summary(&batch), vec![(EventKind::Put, b("n/new"))]);
    assert_eq!(batch[0].revision(), rev);
    assert_quiet(&mut watch).await;
}

/// A watch from a revision not reached yet starts there.
pub async fn watch_future_revision(store: Arc<dyn Store>) {
    let current = store.put(b"f/0", b"x", None).await.expect("put");
    let mut watch = store
        .watch(b"f/", current + 2)
        .await
        .expect("watch from a future revision");
    for i in 1..=3 {
        store
            .put(format!("f/{i}").as_bytes(), b"x", None)
            .await
            .expect("put");
    }
    let first = next_batch(&mut watch).await;
    assert_eq!(summary(&first), vec![(EventKind::Put, b("f/2"))]);
    assert_eq!(first[0].revision(), current + 2);
    let second = next_batch(&mut watch).await;
    assert_eq!(second[0].revision(), current + 3);
}

/// A watch sees only keys under its prefix; transactions touching other
/// keys only yield no batch, mixed ones yield only the matching events.
pub async fn watch_prefix_filter(store: Arc<dyn Store>) {
    let mut watch = store.watch(b"x/", 0).await.expect("watch");
    store.put(b"y/1", b"x", None).await.expect("put");
    store.put(b"x", b"x", None).await.expect("put");
    let mixed = Txn::new()
        .and_then(Op::put("y/2", "x", None))
        .and_then(Op::put("x/1", "x", None));
    let r1 = store.txn(mixed).await.expect("txn").revision;
    let r2 = store.put(b"x/2", b"x", None).await.expect("put");
    let first = next_batch(&mut watch).await;
    assert_eq!(summary(&first), vec![(EventKind::Put, b("x/1"))]);
    assert_eq!(first[0].revision(), r1);
    let second = next_batch(&mut watch).await;
    assert_eq!(summary(&second), vec![(EventKind::Put, b("x/2"))]);
    assert_eq!(second[0].revision(), r2);
    assert_quiet(&mut watch).await;
}

/// A watch from below the compaction point fails with `Compacted`; from
/// the compaction point on it works; compacting the future fails.
pub async fn watch_compacted(store: Arc<dyn Store>) {
    let r1 = store.put(b"c/1", b"x", None).await.expect("put");
    store.put(b"c/2", b"x", None).await.expect("put");
    let r3 = store.put(b"c/3", b"x", None).await.expect("put");
    store.compact(r3).await.expect("compact");
    match store.watch(b"c/", r1).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, r1),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    let mut watch = store
        .watch(b"c/", r3)
        .await
        .expect("watch from the compaction point");
    let batch = next_batch(&mut watch).await;
    assert_eq!(summary(&batch), vec![(EventKind::Put, b("c/3"))]);
    assert!(matches!(
        store.compact(r3 + 100).await,
        Err(StoreError::FutureRevision { .. })
    ));
    // Data is untouched by compaction.
    assert_eq!(keys(&store, "c/").await.len(), 3);
}

/// Lease grant, keep-alive and revoke; revoke deletes the lease's keys
/// (with delete events, in one transaction) and nothing else.
pub async fn lease_grant_keep_alive_revoke(store: Arc<dyn Store>) {
    let lease = store
        .lease_grant(Duration::from_secs(30))
        .await
        .expect("grant");
    assert_ne!(lease, 0);
    store
        .put(b"l/a", b"x", Some(lease))
        .await
        .expect("put with lease");
    store
        .put(b"l/b", b"x", Some(lease))
        .await
        .expect("put with lease");
    store.put(b"l/c", b"x", None).await.expect("put");
    assert_eq!(must_get(&store, "l/a").await.lease, lease);
    assert_eq!(must_get(&store, "l/c").await.lease, 0);
    let ttl = store.lease_keep_alive(lease).await.expect("keep alive");
    assert!(!ttl.is_zero());

    let mut watch = store.watch(b"l/", 0).await.expect("watch");
    let rev = store.lease_revoke(lease).await.expect("revoke");
    assert_eq!(keys(&store, "l/").await, vec![b("l/c")]);
    let batch = next_batch(&mut watch).await;
    assert_eq!(
        summary(&batch),
        vec![(EventKind::Delete, b("l/a")), (EventKind::Delete, b("l/b"))]
    );
    assert_eq!(batch[0].revision(), rev);

    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        store.lease_revoke(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        store.lease_keep_alive(987_654_321).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

/// Keep-alives keep a lease (and its keys) alive past its TTL.
pub async fn lease_keep_alive_extends(store: Arc<dyn Store>) {
    let lease = store
        .lease_grant(Duration::from_secs(2))
        .await
        .expect("grant");
    store
        .put(b"ka/k", b"x", Some(lease))
        .await
        .expect("put with lease");
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.lease_keep_alive(lease).await.expect("keep alive");
    }
    assert_eq!(must_get(&store, "ka/k").await.lease, lease);
    store.lease_revoke(lease).await.expect("revoke");
}

/// An expired lease's keys are deleted, with delete events.
pub async fn lease_expiry_deletes_keys(store: Arc<dyn Store>) {
    let lease = store
        .lease_grant(Duration::from_secs(1))
        .await
        .expect("grant");
    store
        .put(b"e/k", b"x", Some(lease))
        .await
        .expect("put with lease");
    store.put(b"e/keep", b"x", None).await.expect("put");
    let mut watch = store.watch(b"e/", 0).await.expect("watch");
    let batch = next_batch(&mut watch).await;
    assert_eq!(summary(&batch), vec![(EventKind::Delete, b("e/k"))]);
    assert!(store.get(b"e/k").await.expect("get").is_none());
    assert_eq!(keys(&store, "e/").await, vec![b("e/keep")]);
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

/// A put with a revoked or unknown lease fails and its whole transaction
/// changes nothing.
pub async fn put_with_revoked_lease_fails(store: Arc<dyn Store>) {
    let lease = store
        .lease_grant(Duration::from_secs(30))
        .await
        .expect("grant");
    store.lease_revoke(lease).await.expect("revoke");
    let r0 = store.revision().await.expect("revision");
    let txn = Txn::new()
        .and_then(Op::put("r/plain", "x", None))
        .and_then(Op::put("r/leased", "x", Some(lease)));
    assert!(matches!(store.txn(txn).await, Err(StoreError::LeaseNotFound(l)) if l == lease));
    assert!(matches!(
        store.put(b"r/unknown", b"x", Some(987_654_321)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert_eq!(store.revision().await.expect("revision"), r0);
    assert!(keys(&store, "r/").await.is_empty());
}

/// 64 concurrent writers × 50 puts all land, each with its own revision.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    const TASKS: usize = 64;
    const PUTS: usize = 50;
    let r0 = store.revision().await.expect("revision");
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut revs = Vec::with_capacity(PUTS);
                for i in 0..PUTS {
                    let key = format!("cw/{t:02}/{i:02}");
                    revs.push(
                        store
                            .put(key.as_bytes(), key.as_bytes(), None)
                            .await
                            .expect("put"),
                    );
                }
                revs
            })
        })
        .collect();
    let mut revs = Vec::with_capacity(TASKS * PUTS);
    for task in tasks {
        let task_revs = task.await.expect("writer task");
        assert!(
            task_revs.windows(2).all(|w| w[0] < w[1]),
            "a writer sees its revisions grow"
        );
        revs.extend(task_revs);
    }
    revs.sort_unstable();
    let total = (TASKS * PUTS) as Revision;
    let expected: Vec<Revision> = (r0 + 1..=r0 + total).collect();
    assert_eq!(revs, expected, "distinct, contiguous revisions");
    assert_eq!(store.revision().await.expect("revision"), r0 + total);
    let (kvs, _) = store.range(b"cw/").await.expect("range");
    assert_eq!(kvs.len(), TASKS * PUTS);
    assert!(kvs.iter().all(|kv| kv.value == kv.key && kv.version == 1));
}

/// A small deterministic PRNG (xorshift64*), so the model test needs no
/// dependency and fails reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A transaction in the model's event log: its revision and `(kind, key, value)` per event.
type LoggedTxn = (Revision, Vec<(EventKind, Bytes, Bytes)>);

/// The reference model: the key/values and the event log.
struct Model {
    kvs: BTreeMap<Bytes, KeyValue>,
    revision: Revision,
    log: Vec<LoggedTxn>,
}

impl Model {
    /// Applies ops the way the contract says; returns how many keys were deleted.
    fn apply(&mut self, ops: &[Op]) -> usize {
        let rev = self.revision + 1;
        let mut events = Vec::new();
        let mut deleted = 0;
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    let (create_revision, version) = match self.kvs.get(key) {
                        Some(kv) => (kv.create_revision, kv.version + 1),
                        None => (rev, 1),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: rev,
                        version,
                        lease: 0,
                    };
                    self.kvs.insert(key.clone(), kv);
                    events.push((EventKind::Put, key.clone(), value.clone()));
                }
                Op::Delete { key } => {
                    if self.kvs.remove(key).is_some() {
                        deleted += 1;
                        events.push((EventKind::Delete, key.clone(), Bytes::new()));
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let doomed: Vec<Bytes> = self
                        .kvs
                        .keys()
                        .filter(|k| k.starts_with(prefix))
                        .cloned()
                        .collect();
                    for key in doomed {
                        self.kvs.remove(&key);
                        deleted += 1;
                        events.push((EventKind::Delete, key, Bytes::new()));
                    }
                }
            }
        }
        if !events.is_empty() {
            self.revision = rev;
            self.log.push((rev, events));
        }
        deleted
    }

    fn range(&self, prefix: &[u8]) -> Vec<KeyValue> {
        self.kvs
            .values()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Random operations against a `BTreeMap` model: every result, every
/// read, and the replayed history must match.
pub async fn model_random_ops(store: Arc<dyn Store>) {
    const STEPS: usize = 400;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = store.revision().await.expect("revision");
    let mut model = Model {
        kvs: BTreeMap::new(),
        revision: start,
        log: Vec::new(),
    };
    let prefixes = ["m/a/", "m/b/", "m/c/"];
    let random_key = |rng: &mut Rng| b(&format!("{}{}", prefixes[rng.below(3)], rng.below(5)));

    for step in 0..STEPS {
        let key = random_key(&mut rng);
        let value = b(&format!("v{step}"));
        let (txn, cond) = match rng.below(10) {
            0..=3 => (
                Txn::new().and_then(Op::Put {
                    key: key.clone(),
                    value,
                    lease: None,
                }),
                None,
            ),
            4 | 5 => (Txn::new().and_then(Op::Delete { key: key.clone() }), None),
            6 => {
                let prefix = b(prefixes[rng.below(3)]);
                (Txn::new().and_then(Op::DeletePrefix { prefix }), None)
            }
            7 => {
                let current = model.kvs.get(&key).map_or(0, |kv| kv.mod_revision);
                let expected = if rng.below(2) == 0 {
                    current
                } else {
                    current + 1
                };
                let txn = Txn::new()
                    .when(Compare::ModRevision(key.clone(), expected))
                    .and_then(Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                        lease: None,
                    })
                    .or_else(Op::Put {
                        key: random_key(&mut rng),
                        value,
                        lease: None,
                    });
                (txn, Some(expected == current))
            }
            8 => {
                let current = model.kvs.get(&key).map(|kv| kv.value.clone());
                let expected = match (&current, rng.below(2)) {
                    (Some(v), 0) => v.clone(),
                    _ => b("nope"),
                };
                let holds = current.as_ref() == Some(&expected);
                let other = random_key(&mut rng);
                let txn = Txn::new()
                    .when(Compare::Value(key.clone(), expected))
                    .and_then(Op::Delete { key: key.clone() })
                    .or_else(Op::Delete { key: other });
                (txn, Some(holds))
            }
            _ => {
                let prefix = prefixes[rng.below(3)];
                let (kvs, rev) = store.range(prefix.as_bytes()).await.expect("range");
                assert_eq!(
                    kvs,
                    model.range(prefix.as_bytes()),
                    "step {step}: range {prefix}"
                );
                assert_eq!(rev, model.revision, "step {step}: range revision");
                continue;
            }
        };
        let succeeded = cond.unwrap_or(true);
        let ops = if succeeded {
            txn.success.clone()
        } else {
            txn.failure.clone()
        };
        let resp = store.txn(txn).await.expect("txn");
        let deleted = model.apply(&ops);
        assert_eq!(resp.succeeded, succeeded, "step {step}: succeeded");
        assert_eq!(resp.revision, model.revision, "step {step}: revision");
        assert_eq!(resp.deleted, deleted, "step {step}: deleted");

        let probe = random_key(&mut rng);
        let got = store.get(&probe).await.expect("get");
        assert_eq!(
            got.as_ref(),
            model.kvs.get(&probe),
            "step {step}: get {probe:?}"
        );
    }
    let (kvs, rev) = store.range(b"m/").await.expect("range");
    assert_eq!(kvs, model.range(b"m/"));
    assert_eq!(rev, model.revision);

    // The history replays exactly the model's event log.
    let Some(&(last, _)) = model.log.last() else {
        return;
    };
    let mut watch = store.watch(b"m/", start + 1).await.expect("watch");
    let batches = collect_until(&mut watch, last).await;
    let got: Vec<LoggedTxn> = batches
        .iter()
        .map(|batch| {
            let events = batch
                .iter()
                .map(|e| (e.kind, e.kv.key.clone(), e.kv.value.clone()))
                .collect();
            (batch[0].revision(), events)
        })
        .collect();
    assert_eq!(got, model.log);
}
