//! Tests of the SQLite backend beyond the contract.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use glass_store::{Op, Revision, SqliteOptions, Store, StoreError, Txn, WatchStream};

use super::{open, open_with};

const WAIT: Duration = Duration::from_secs(10);

async fn next_batch(watch: &mut WatchStream) -> Vec<glass_store::Event> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Ok(batch))) => batch,
        other => panic!("expected a watch batch, got {other:?}"),
    }
}

/// Revisions of batches until `last`.
async fn revisions_until(watch: &mut WatchStream, last: Revision) -> Vec<Revision> {
    let mut revs = Vec::new();
    loop {
        let batch = next_batch(watch).await;
        let rev = batch[0].revision();
        assert!(batch.iter().all(|e| e.revision() == rev));
        revs.push(rev);
        if rev >= last {
            return revs;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let (rev, b) = {
        let store = open(&path);
        store.put(b"a", b"1", None).await.expect("put");
        let pair = Txn::new()
            .and_then(Op::put("b", "2", None))
            .and_then(Op::put("c", "3", None));
        store.txn(pair).await.expect("txn");
        store.delete(b"a").await.expect("delete");
        let b = store.get(b"b").await.expect("get").expect("b");
        let rev = store.revision().await.expect("revision");
        store.close().await;
        assert!(matches!(store.get(b"b").await, Err(StoreError::Closed)));
        (rev, b)
    };
    assert_eq!(rev, 3);

    let store = open(&path);
    assert_eq!(store.revision().await.expect("revision"), rev);
    assert_eq!(store.get(b"b").await.expect("get"), Some(b));
    assert!(store.get(b"a").await.expect("get").is_none());
    let (kvs, range_rev) = store.range(b"").await.expect("range");
    assert_eq!(kvs.len(), 2);
    assert_eq!(range_rev, rev);
    assert_eq!(store.put(b"d", b"4", None).await.expect("put"), rev + 1);
    let mut watch = store.watch(b"", 1).await.expect("watch");
    assert_eq!(revisions_until(&mut watch, rev + 1).await, vec![1, 2, 3, 4]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_reopen_with_a_fresh_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let lease = {
        let store = open(&path);
        let lease = store
            .lease_grant(Duration::from_secs(2))
            .await
            .expect("grant");
        store.put(b"k", b"v", Some(lease)).await.expect("put");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        store.close().await;
        lease
    };
    let reopened = Instant::now();
    let store = open(&path);
    assert_eq!(store.stats().leases, 1);
    // The original deadline passes during this sleep; the fresh TTL does not.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        store.get(b"k").await.expect("get").is_some(),
        "fresh TTL after reopen"
    );
    let other = store
        .lease_grant(Duration::from_secs(30))
        .await
        .expect("grant");
    assert_ne!(other, lease, "lease ids are not reused");

    let deadline = reopened + WAIT;
    while store.get(b"k").await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "lease never expired after reopen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.elapsed() >= Duration::from_millis(1900));
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.close().await;

    // The revoke was persisted: the lease does not come back.
    let store = open(&path);
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store
        .lease_keep_alive(other)
        .await
        .expect("the other lease survives");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() {
    const PUTS: usize = 2000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db"));
    let before = store.stats();
    let started = Instant::now();
    let tasks: Vec<_> = (0..PUTS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.put(format!("g/{i}").as_bytes(), b"x", None).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("put");
    }
    let elapsed = started.elapsed();
    let after = store.stats();
    let commits = after.commits - before.commits;
    assert_eq!(after.write_requests - before.write_requests, PUTS as u64);
    assert_eq!(after.revision - before.revision, PUTS as Revision);
    assert!(
        commits < (PUTS / 4) as u64,
        "{commits} commits for {PUTS} puts"
    );
    eprintln!("{PUTS} concurrent puts: {commits} commits in {elapsed:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_does_not_poison_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db"));
    let revoked = store
        .lease_grant(Duration::from_secs(30))
        .await
        .expect("grant");
    store.lease_revoke(revoked).await.expect("revoke");
    let r0 = store.revision().await.expect("revision");
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let lease = (i % 2 == 1).then_some(revoked);
                let txn = Txn::new()
                    .and_then(Op::put(format!("p/{i}/a"), "x", None))
                    .and_then(Op::put(format!("p/{i}/b"), "x", lease));
                (i, store.txn(txn).await)
            })
        })
        .collect();
    for task in tasks {
        let (i, result) = task.await.expect("task");
        if i % 2 == 1 {
            assert!(
                matches!(result, Err(StoreError::LeaseNotFound(_))),
                "{i}: {result:?}"
            );
        } else {
            result.expect("a good txn succeeds");
        }
    }
    assert_eq!(store.revision().await.expect("revision"), r0 + 200);
    let (kvs, _) = store.range(b"p/").await.expect("range");
    assert_eq!(kvs.len(), 400);
    assert!(kvs.iter().all(|kv| {
        let i: usize = std::str::from_utf8(&kv.key[2..])
            .expect("utf8")
            .split('/')
            .next()
            .expect("i")
            .parse()
            .expect("number");
        i.is_multiple_of(2)
    }));
    let mut watch = store.watch(b"p/", r0 + 1).await.expect("watch");
    let revs = revisions_until(&mut watch, r0 + 200).await;
    assert_eq!(revs, (r0 + 1..=r0 + 200).collect::<Vec<_>>());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_keeps_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SqliteOptions {
        history_retention: 10,
        ..SqliteOptions::default()
    };
    let store = open_with(&dir.path().join("store.db"), opts);
    for i in 0..100 {
        store
            .put(format!("k/{i}").as_bytes(), b"x", None)
            .await
            .expect("put");
    }
    // Compaction runs on the writer after a batch is answered; an empty
    // txn through the writer waits for it.
    store.txn(Txn::new()).await.expect("barrier");
    let stats = store.stats();
    assert_eq!(stats.revision, 100);
    assert!(
        stats.compacted > 80,
        "compacted only to {}",
        stats.compacted
    );
    assert!(
        stats.revision - stats.compacted + 1 >= 10,
        "keeps at least the retention"
    );
    assert!(matches!(
        store.watch(b"k/", 1).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut watch = store.watch(b"k/", stats.compacted).await.expect("watch");
    let revs = revisions_until(&mut watch, 100).await;
    assert_eq!(revs, (stats.compacted..=100).collect::<Vec<_>>());
    assert_eq!(store.range(b"k/").await.expect("range").0.len(), 100);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_rereads_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SqliteOptions {
        watch_buffer: 2,
        ..SqliteOptions::default()
    };
    let store = open_with(&dir.path().join("store.db"), opts);
    let mut watch = store.watch(b"", 0).await.expect("watch");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..40 {
                    store
                        .put(format!("l/{t}/{i}").as_bytes(), b"x", None)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let last = store.revision().await.expect("revision");
    assert_eq!(last, 320);
    let revs = revisions_until(&mut watch, last).await;
    assert_eq!(revs, (1..=last).collect::<Vec<_>>());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers() {
    const WATCHERS: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db"));
    let mut watches = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        let prefix = if i % 2 == 0 { "w/" } else { "w/odd/" };
        watches.push(store.watch(prefix.as_bytes(), 0).await.expect("watch"));
    }
    let started = Instant::now();
    for i in 0..5 {
        let txn = Txn::new()
            .and_then(Op::put(format!("w/{i}"), "x", None))
            .and_then(Op::put(format!("w/odd/{i}"), "x", None));
        store.txn(txn).await.expect("txn");
    }
    let readers: Vec<_> = watches
        .into_iter()
        .enumerate()
        .map(|(i, mut watch)| {
            tokio::spawn(async move {
                for _ in 0..5 {
                    let batch = next_batch(&mut watch).await;
                    assert_eq!(batch.len(), if i % 2 == 0 { 2 } else { 1 });
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.expect("reader");
    }
    eprintln!("{WATCHERS} watchers x 5 txns in {:?}", started.elapsed());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_calls_and_ends_watches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db"));
    let mut watch = store.watch(b"", 0).await.expect("watch");
    store.put(b"k", b"v", None).await.expect("put");
    next_batch(&mut watch).await;
    store.close().await;
    let end = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("watch ends");
    assert!(matches!(end, Some(Err(StoreError::Closed))), "{end:?}");
    assert!(
        tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("end")
            .is_none()
    );
    assert!(matches!(
        store.put(b"k", b"v", None).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.revision().await, Err(StoreError::Closed)));
    assert!(matches!(store.watch(b"", 0).await, Err(StoreError::Closed)));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db"));
    assert!(matches!(
        store.lease_grant(Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.watch(b"", -1).await,
        Err(StoreError::Invalid(_))
    ));
    let txn = Txn::new().and_then(Op::delete(""));
    assert!(matches!(store.txn(txn).await, Err(StoreError::Invalid(_))));
    // Watches far in the future are allowed; they wait.
    let mut watch = store.watch(b"", 3).await.expect("future watch");
    for i in 0..3 {
        store
            .put(format!("k{i}").as_bytes(), b"x", None)
            .await
            .expect("put");
    }
    assert_eq!(next_batch(&mut watch).await[0].revision(), 3);
    store.close().await;
}

#[test]
fn open_outside_a_runtime_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let result =
        glass_store::SqliteStore::open(&dir.path().join("store.db"), SqliteOptions::default());
    assert!(matches!(result, Err(StoreError::Invalid(_))));
}
