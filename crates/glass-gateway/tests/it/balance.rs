//! Load balancing through the gateway: round robin, weights, stickiness.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::support::*;

async fn three(g: &mut Glass, weights: [u32; 3]) -> Vec<Backend> {
    let mut out = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let b = http_backend(&format!("i{i}")).await;
        g.instance(&format!("i{i}"), "http", b.addr, *w);
        out.push(b);
    }
    out
}

#[tokio::test]
async fn round_robin_takes_turns() {
    let mut g = Glass::start().await;
    let _b = three(&mut g, [1, 1, 1]).await;
    g.route(service_route("rr", json!({}))).publish().await;
    let mut c = h2(g.addr).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let got = send2(&mut c, get("http://x.test/").body(empty()).unwrap()).await;
        assert_eq!(got.status, 200);
        *counts.entry(got.backend()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 10), "{counts:?}");
    g.stop().await;
}

#[tokio::test]
async fn weighted_split_is_within_five_percent() {
    let mut g = Glass::start().await;
    let _b = three(&mut g, [1, 3, 6]).await;
    g.route(service_route("w", json!({"lb": "weighted"})))
        .publish()
        .await;
    let c = h2(g.addr).await;
    const TOTAL: usize = 10_000;
    const WORKERS: usize = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let mut c = c.clone();
        tasks.spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..TOTAL / WORKERS {
                let got = send2(&mut c, get("http://x.test/").body(empty()).unwrap()).await;
                assert_eq!(got.status, 200);
                *counts.entry(got.backend()).or_default() += 1;
            }
            counts
        });
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(part) = tasks.join_next().await {
        for (k, v) in part.unwrap() {
            *counts.entry(k).or_default() += v;
        }
    }
    let total: usize = counts.values().sum();
    assert_eq!(total, TOTAL);
    for (name, weight) in [("i0", 0.1), ("i1", 0.3), ("i2", 0.6)] {
        let share = counts[name] as f64 / total as f64;
        assert!(
            (share - weight).abs() <= weight * 0.05,
            "{name}: {share:.4} vs {weight} ({counts:?})"
        );
    }
    g.stop().await;
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_on_one_instance() {
    let mut g = Glass::start().await;
    let backends = three(&mut g, [1, 1, 1]).await;
    g.route(service_route(
        "app",
        json!({"lb": "hash", "hash_on": "sticky_cookie"}),
    ))
    .publish()
    .await;
    let mut c = h1(g.addr).await;
    let first = send1(
        &mut c,
        get("/").header("host", "x.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(first.status, 200);
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("glass-sticky-app="), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(pair, format!("glass-sticky-app={}", first.backend()));
    for _ in 0..20 {
        let got = send1(
            &mut c,
            get("/")
                .header("host", "x.test")
                .header("cookie", format!("other=1; {pair}"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(got.backend(), first.backend());
        assert!(got.headers.get("set-cookie").is_none(), "cookie re-issued");
    }
    // Different clients without a cookie still spread.
    let mut seen = HashSet::new();
    for _ in 0..9 {
        seen.insert(get1(g.addr, "x.test", "/").await.backend());
    }
    assert_eq!(seen.len(), 3);
    // The pinned instance goes away: the client moves and gets a new cookie.
    let pinned = first.backend();
    g.critical(&pinned).publish().await;
    let moved = send1(
        &mut c,
        get("/")
            .header("host", "x.test")
            .header("cookie", pair.clone())
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), pinned);
    assert!(moved.headers.contains_key("set-cookie"));
    drop(backends);
    g.stop().await;
}

#[tokio::test]
async fn header_hash_is_sticky_per_user() {
    let mut g = Glass::start().await;
    let _b = three(&mut g, [1, 1, 1]).await;
    g.route(service_route(
        "users",
        json!({"lb": "hash", "hash_on": "header:x-user"}),
    ))
    .publish()
    .await;
    let mut c = h2(g.addr).await;
    let mut used = HashSet::new();
    for user in 0..30 {
        let mut seen = HashSet::new();
        for _ in 0..5 {
            let got = send2(
                &mut c,
                get("http://x.test/")
                    .header("x-user", format!("user-{user}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
            seen.insert(got.backend());
        }
        assert_eq!(seen.len(), 1, "user-{user} moved: {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() >= 2, "{used:?}");
    g.stop().await;
}
