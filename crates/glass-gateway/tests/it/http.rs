//! Plain HTTP proxying: routing, rewriting, forwarding headers, errors.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn h2c_client_reaches_h1_backend_by_host_and_path() {
    let users = http_backend("users").await;
    let orders = http_backend("orders").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "users",
        &[users.addr],
        json!({"match": {"host": "api.example.com", "path_prefix": "/v1/users"},
               "strip_prefix": true,
               "request_headers": {"add": {"x-added": "yes"}, "remove": ["x-secret"]},
               "response_headers": {"add": {"x-served-by": "glass"}, "remove": ["x-backend-internal"]}}),
    ))
    .route(static_route(
        "orders",
        &[orders.addr],
        json!({"match": {"host": "*.example.com", "path_prefix": "/"}}),
    ))
    .publish()
    .await;

    let mut c = h2(g.addr).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let got = send2(
        &mut c,
        get("http://api.example.com/v1/users/7?x=1")
            .header("x-secret", "s")
            .header("te", "trailers")
            .header("traceparent", tp)
            .header("x-forwarded-for", "6.6.6.6")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["backend"], "users");
    assert_eq!(seen["path"], "/7?x=1", "strip_prefix");
    assert_eq!(seen["version"], "HTTP/1.1", "h1 upstream");
    let h = &seen["headers"];
    assert_eq!(h["x-added"], "yes");
    assert!(h.get("x-secret").is_none(), "removed header: {h}");
    assert_eq!(h["host"], "api.example.com");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "untrusted XFF replaced");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(
        h["forwarded"],
        "for=127.0.0.1;proto=http;host=api.example.com"
    );
    assert_eq!(h["traceparent"], tp, "traceparent propagated");
    let rid = h["x-request-id"].as_str().expect("request id generated");
    assert_eq!(rid.len(), 32);
    assert_eq!(got.headers["x-request-id"], rid, "request id returned");
    assert_eq!(got.headers["x-served-by"], "glass");
    assert!(got.headers.get("keep-alive").is_none(), "hop-by-hop");
    assert!(
        got.headers.get("x-drop-me").is_none(),
        "named by Connection"
    );

    // A wildcard host and a client request id that is kept.
    let got = send2(
        &mut c,
        get("http://shop.example.com/anything")
            .header("x-request-id", "client-id-1")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = got.json();
    assert_eq!(seen["backend"], "orders");
    assert_eq!(seen["path"], "/anything");
    assert_eq!(seen["headers"]["x-request-id"], "client-id-1");
    assert_eq!(got.headers["x-request-id"], "client-id-1");
    assert!(
        seen["headers"]["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-") && t.len() == 55),
        "trace started"
    );
    g.stop().await;
}

#[tokio::test]
async fn invalid_traceparent_starts_a_new_trace() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    for bad in [
        "garbage",
        "00-abc",
        "",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ] {
        let mut c = h1(g.addr).await;
        let got = send1(
            &mut c,
            get("/")
                .header("host", "x.test")
                .header("traceparent", bad)
                .header("tracestate", "vendor=1")
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200, "traceparent {bad:?}");
        let h = &got.json()["headers"];
        let tp = h["traceparent"].as_str().unwrap();
        assert!(tp.starts_with("00-") && tp.len() == 55 && tp != bad, "{tp}");
        assert!(h.get("tracestate").is_none(), "stale tracestate dropped");
    }
    g.stop().await;
}

#[tokio::test]
async fn h1_client_hop_by_hop_and_body() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    let mut c = h1(g.addr).await;
    let got = send1(
        &mut c,
        http::Request::post("/upload")
            .header("host", "x.test")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("te", "gzip")
            .body(body(vec![b'a'; 100_000]))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["body_len"], 100_000);
    assert_eq!(seen["method"], "POST");
    let h = seen["headers"].as_object().unwrap();
    for gone in ["x-private", "keep-alive", "proxy-authorization", "te"] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
    }
    // The same connection keeps working.
    let again = send1(
        &mut c,
        get("/again")
            .header("host", "x.test")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(again.status, 200);
    g.stop().await;
}

#[tokio::test]
async fn h2_upstream_route() {
    let b = http_backend("b2").await;
    let mut g = Glass::start().await;
    g.route(static_route("h2", &[b.addr], json!({"protocol": "http2"})))
        .publish()
        .await;
    let got = get1(g.addr, "x.test", "/h2").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    g.stop().await;
}

#[tokio::test]
async fn no_route_is_404_problem_json() {
    let mut g = Glass::start().await;
    g.route(static_route(
        "only",
        &[closed_port().await],
        json!({"match": {"host": "only.test"}}),
    ))
    .publish()
    .await;
    for got in [get1(g.addr, "other.test", "/x").await, {
        let mut c = h2(g.addr).await;
        send2(&mut c, get("http://other.test/x").body(empty()).unwrap()).await
    }] {
        assert_eq!(got.status, 404);
        assert_eq!(got.headers["content-type"], "application/problem+json");
        let p = got.json();
        assert_eq!(p["status"], 404);
        assert!(p["detail"].as_str().unwrap().contains("no route"));
    }
    g.stop().await;
}

#[tokio::test]
async fn no_healthy_instance_is_503_naming_the_route() {
    let b = http_backend("sick").await;
    let mut g = Glass::start().await;
    g.route(service_route("users-v1", json!({})))
        .instance("i1", "http", b.addr, 1)
        .critical("i1")
        .publish()
        .await;
    let started = std::time::Instant::now();
    let got = get1(g.addr, "x.test", "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.headers["content-type"], "application/problem+json");
    let p = got.json();
    assert!(p["detail"].as_str().unwrap().contains("users-v1"), "{p}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(b.hits(), 0);

    // Healthy again: served.
    g.instance("i1", "http", b.addr, 1).publish().await;
    let got = get1(g.addr, "x.test", "/").await;
    assert_eq!(got.status, 200);
    g.stop().await;
}

#[tokio::test]
async fn access_log_lines_are_json() {
    let b = http_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut g = Glass::start_with(glass_gateway::GatewayConfig {
        access_log: Some(log.clone()),
        ..config()
    })
    .await;
    g.route(static_route("logged", &[b.addr], json!({})))
        .publish()
        .await;
    let got = get1(g.addr, "x.test", "/logged").await;
    assert_eq!(got.status, 200);
    let rid = got.headers["x-request-id"].to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(&rid)) {
            break l.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["route"], "logged");
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/logged");
    assert_eq!(v["upstream"], b.addr.to_string());
    assert!(v["bytes_sent"].as_u64().unwrap() > 0);
    g.stop().await;
}
