//! Upstream faults: each ends in a bounded, correct response; bad
//! instances are ejected and traffic moves to healthy ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::json;

use crate::support::*;

fn ejections(g: &Glass, route: &str, addr: std::net::SocketAddr) -> f64 {
    g.metric(&format!(
        "glass_gateway_upstream_ejections_total{{route=\"{route}\",upstream=\"{addr}\"}}"
    ))
    .unwrap_or(-1.0)
}

/// Sends `n` GETs one after another; returns status counts and backends.
async fn burst(g: &Glass, n: usize) -> (HashMap<u16, usize>, HashMap<String, usize>) {
    let mut statuses = HashMap::new();
    let mut backends = HashMap::new();
    let mut c = h2(g.addr).await;
    for _ in 0..n {
        let got = send2(&mut c, get("http://x.test/").body(empty()).unwrap()).await;
        *statuses.entry(got.status.as_u16()).or_default() += 1;
        *backends.entry(got.backend()).or_default() += 1;
    }
    (statuses, backends)
}

#[tokio::test]
async fn upstream_killed_mid_request() {
    let victim = http_backend("victim").await;
    let mut g = Glass::start().await;
    g.route(static_route("r", &[victim.addr], json!({"retries": 0})))
        .publish()
        .await;
    let addr = g.addr;
    let call = tokio::spawn(async move { get1(addr, "x.test", "/sleep/5000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    victim.kill();
    let got = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.headers["content-type"], "application/problem+json");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A response that dies mid-body: the client sees a broken body, fast.
    let dying = faulty_backend(Fault::DieMidBody).await;
    g.route(static_route("r", &[dying.addr], json!({})))
        .publish()
        .await;
    let mut c = h1(g.addr).await;
    c.ready().await.unwrap();
    let resp = tokio::time::timeout(
        PATIENCE,
        c.send_request(get("/").header("host", "x.test").body(empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .expect("the body ends, not hangs");
    assert!(body.is_err(), "a truncated body must not look complete");

    // Killed with a healthy peer: the idempotent request is retried there.
    let victim = http_backend("victim").await;
    let good = http_backend("good").await;
    g.route(static_route("r", &[victim.addr, good.addr], json!({})))
        .publish()
        .await;
    let mut calls = Vec::new();
    for _ in 0..4 {
        calls.push(tokio::spawn(async move {
            get1(addr, "x.test", "/sleep/1000").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill();
    for call in calls {
        let got = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.backend(), "good");
    }
    g.stop().await;
}

#[tokio::test]
async fn silent_upstream_hits_the_header_timeout_and_is_ejected() {
    let silent = faulty_backend(Fault::Silent).await;
    let good = http_backend("good").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "r",
        &[silent.addr],
        json!({"timeouts": {"header": "300ms"}}),
    ))
    .publish()
    .await;
    let started = Instant::now();
    let got = get1(g.addr, "x.test", "/").await;
    let took = started.elapsed();
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(got.json()["detail"].as_str().unwrap().contains("header"));
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // Beside a good instance: a few timeouts at most, then only the good one.
    g.route(static_route(
        "r",
        &[silent.addr, good.addr],
        json!({"timeouts": {"header": "300ms"}}),
    ))
    .publish()
    .await;
    let (statuses, _) = burst(&g, 30).await;
    assert!(
        statuses.get(&504).copied().unwrap_or(0) <= 5,
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 2, "only 200 and 504: {statuses:?}");
    assert!(ejections(&g, "r", silent.addr) >= 1.0);
    let (statuses, backends) = burst(&g, 10).await;
    assert_eq!(statuses, HashMap::from([(200, 10)]));
    assert_eq!(backends, HashMap::from([("good".to_owned(), 10)]));
    g.stop().await;
}

#[tokio::test]
async fn resetting_upstream_is_retried_and_ejected() {
    let reset = faulty_backend(Fault::Reset).await;
    let good = http_backend("good").await;
    let mut g = Glass::start().await;
    g.route(static_route("r", &[reset.addr], json!({})))
        .publish()
        .await;
    let started = Instant::now();
    let got = get1(g.addr, "x.test", "/").await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert!(started.elapsed() < Duration::from_secs(2));

    g.route(static_route("r", &[reset.addr, good.addr], json!({})))
        .publish()
        .await;
    let (statuses, _) = burst(&g, 30).await;
    assert_eq!(statuses, HashMap::from([(200, 30)]), "retried elsewhere");
    assert!(
        ejections(&g, "r", reset.addr) >= 1.0,
        "{}",
        g.metrics_text()
    );
    let before = reset.hits();
    let (_, backends) = burst(&g, 10).await;
    assert_eq!(backends, HashMap::from([("good".to_owned(), 10)]));
    assert_eq!(reset.hits(), before, "an ejected instance gets no traffic");
    g.stop().await;
}

#[tokio::test]
async fn upstream_503s_are_retried_and_ejected() {
    let bad = status_backend("bad", 503).await;
    let good = http_backend("good").await;
    let mut g = Glass::start().await;
    g.route(static_route("r", &[bad.addr], json!({})))
        .publish()
        .await;
    // Alone: the 503 is the answer (after bounded retries).
    let got = get1(g.addr, "x.test", "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.backend(), "bad");

    g.route(static_route("r", &[bad.addr, good.addr], json!({})))
        .publish()
        .await;
    let (statuses, _) = burst(&g, 30).await;
    assert_eq!(statuses, HashMap::from([(200, 30)]), "retried elsewhere");
    assert!(ejections(&g, "r", bad.addr) >= 1.0);
    let before = bad.hits();
    let (_, backends) = burst(&g, 10).await;
    assert_eq!(backends, HashMap::from([("good".to_owned(), 10)]));
    assert_eq!(bad.hits(), before);
    g.stop().await;
}

#[tokio::test]
async fn closed_port_is_502_quickly_and_moves_on() {
    let good = http_backend("good").await;
    let dead = closed_port().await;
    let mut g = Glass::start().await;
    g.route(static_route("r", &[dead], json!({})))
        .publish()
        .await;
    let started = Instant::now();
    let got = get1(g.addr, "x.test", "/").await;
    assert_eq!(got.status, 502);
    assert!(got.json()["detail"].as_str().unwrap().contains("connect"));
    assert!(started.elapsed() < Duration::from_secs(2));
    g.route(static_route("r", &[dead, good.addr], json!({})))
        .publish()
        .await;
    let (statuses, _) = burst(&g, 20).await;
    assert_eq!(statuses, HashMap::from([(200, 20)]));
    g.stop().await;
}

#[tokio::test]
async fn live_updates_under_load_fail_nothing() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let c = http_backend("c").await;
    let mut g = Glass::start().await;
    g.route(service_route(
        "main",
        json!({"match": {"path_prefix": "/"}}),
    ))
    .instance("a", "http", a.addr, 1)
    .publish()
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), g.addr);
        tasks.spawn(async move {
            let mut conn = h1(addr).await;
            let deadline = Instant::now() + Duration::from_secs(15);
            while !stop.load(Relaxed) && Instant::now() < deadline {
                let path = if i % 2 == 0 { "/main" } else { "/new/x" };
                conn.ready().await.unwrap();
                let r = conn
                    .send_request(get(path).header("host", "x.test").body(empty()).unwrap())
                    .await;
                match r {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                        ok.fetch_add(1, Relaxed);
                    }
                    Ok(resp) => {
                        let _ = resp.into_body().collect().await;
                        failed.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Relaxed);
                        conn = h1(addr).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A more specific route appears: `/new` still goes to the same job (no
    // failure either way), then instances come and go.
    g.route(service_route(
        "new",
        json!({"match": {"path_prefix": "/new"}, "strip_prefix": true}),
    ))
    .publish()
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.instance("b", "http", b.addr, 1).publish().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.instance("c", "http", c.addr, 1).publish().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (ok, failed) = (ok.load(Relaxed), failed.load(Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 500, "{ok}");
    assert!(b.hits() > 0 && c.hits() > 0, "new instances got traffic");
    g.stop().await;
}
