//! kill -9 durability: a child process (this test binary re-executed in
//! "writer mode") writes two-key transactions concurrently and prints each
//! acknowledged one; the parent SIGKILLs it mid-stream, reopens the store
//! and checks that every acknowledged transaction is there, whole.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glass_store::{Op, Store, Txn};

/// The environment variable that switches the child into writer mode.
const CHILD_ENV: &str = "GLASS_STORE_KILL9_DB";
/// Acknowledged transactions the parent waits for before the kill.
const KILL_AFTER: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "durability::kill9_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("child stdout");

    let reader = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        let mut killed = false;
        let started = Instant::now();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.strip_prefix("ACK ") {
                acked.push(i.parse::<usize>().expect("ack number"));
            }
            if !killed && (acked.len() >= KILL_AFTER || started.elapsed() > Duration::from_secs(60))
            {
                child.kill().expect("SIGKILL the writer");
                killed = true;
            }
        }
        // The pipe is drained: everything the writer acknowledged is in `acked`.
        let status = child.wait().expect("wait for the writer");
        (acked, status)
    });
    let (acked, status) = reader.await.expect("reader");
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status:?}"
    );
    assert!(
        acked.len() >= KILL_AFTER,
        "only {} acknowledged writes",
        acked.len()
    );

    let store = super::open(&path);
    for i in &acked {
        for half in ["a", "b"] {
            let key = format!("d/{i:06}/{half}");
            assert!(
                store.get(key.as_bytes()).await.expect("get").is_some(),
                "acknowledged {key} lost"
            );
        }
    }
    // No half-written transaction: every txn has both keys or neither.
    let (kvs, rev) = store.range(b"d/").await.expect("range");
    let mut a = 0;
    for pair in kvs.chunks(2) {
        let [x, y] = pair else {
            panic!("odd number of keys: {:?}", pair[0].key)
        };
        assert_eq!(
            x.key[..x.key.len() - 1],
            y.key[..y.key.len() - 1],
            "a txn's keys come in pairs"
        );
        assert_eq!(x.mod_revision, y.mod_revision);
        a += 1;
    }
    assert_eq!(rev, a as i64, "one revision per transaction");
    assert!(a >= acked.len());
    eprintln!(
        "kill -9: {} transactions acknowledged, {a} on disk after reopen",
        acked.len()
    );
    // And the store keeps working.
    store
        .put(b"after", b"x", None)
        .await
        .expect("write after the crash");
    store.close().await;
}

/// Writer mode of [`acknowledged_writes_survive_kill_9`]; does nothing
/// unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of acknowledged_writes_survive_kill_9"]
async fn kill9_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store: Arc<dyn Store> = super::open(std::path::Path::new(&path));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 1_000_000 {
                        return;
                    }
                    let txn = Txn::new()
                        .and_then(Op::put(format!("d/{i:06}/a"), "x", None))
                        .and_then(Op::put(format!("d/{i:06}/b"), "x", None));
                    store.txn(txn).await.expect("txn");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {i}").expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
}
