//! The gateway's own HTTP/1.1 server (bodiless requests) and its hand-over
//! to hyper's: same forwarded fields either way, pipelining, framing of
//! every kind of upstream body.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// The fields a client sends on both requests below.
const CLIENT_FIELDS: [(&str, &str); 10] = [
    ("host", "x.test"),
    ("connection", "keep-alive"),
    ("keep-alive", "timeout=5"),
    ("x-secret", "s"),
    ("x-kept", "k"),
    ("x-forwarded-for", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6"),
    ("x-request-id", "abc-123"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("tracestate", "vendor=1"),
];

/// What the echo backend saw, from one raw response.
fn echoed(out: &str) -> serde_json::Value {
    let body = out.find("\r\n\r\n").map_or("", |at| &out[at + 4..]);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn both_servers_forward_the_same_fields() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "all",
        &[b.addr],
        json!({
            "request_headers": {"add": {"x-added": "yes", "x-kept": "replaced"}, "remove": ["x-secret"]},
            "response_headers": {"add": {"x-served-by": "glass"}, "remove": ["x-backend"]},
        }),
    ))
    .publish()
    .await;
    let mut c = h1(g.addr).await;
    // A GET without a body stays on the gateway's own server; a POST with
    // one goes to hyper's. Upstream, and back at the client, they must
    // look alike.
    let mut seen = Vec::new();
    let mut answered = Vec::new();
    for (method, payload) in [("GET", ""), ("POST", "x")] {
        let mut req = http::Request::builder().method(method).uri("/same");
        for (name, value) in CLIENT_FIELDS {
            req = req.header(name, value);
        }
        let got = send1(&mut c, req.body(body(payload)).unwrap()).await;
        assert_eq!(got.status, 200, "{method}: {}", got.text());
        let mut fields = got.json()["headers"].as_object().unwrap().clone();
        fields.remove("content-length");
        seen.push(fields);
        let mut back = got.headers.clone();
        back.remove("content-length");
        back.remove("date");
        answered.push(back);
    }
    assert_eq!(seen[0], seen[1], "GET and POST were forwarded differently");
    assert_eq!(
        answered[0], answered[1],
        "GET and POST were answered differently"
    );
    let back = &answered[0];
    assert_eq!(back["x-request-id"], "abc-123");
    assert_eq!(back["x-served-by"], "glass");
    for gone in ["x-backend", "keep-alive", "x-drop-me", "connection"] {
        assert!(back.get(gone).is_none(), "{gone} passed back: {back:?}");
    }
    let f = &seen[0];
    assert_eq!(f["x-forwarded-for"], "127.0.0.1", "untrusted XFF replaced");
    assert_eq!(f["forwarded"], "for=127.0.0.1;proto=http;host=x.test");
    assert_eq!(f["x-forwarded-proto"], "http");
    assert_eq!(f["x-forwarded-host"], "x.test");
    assert_eq!(f["x-request-id"], "abc-123");
    assert_eq!(f["tracestate"], "vendor=1");
    assert_eq!(f["x-added"], "yes");
    assert_eq!(f["x-kept"], "replaced");
    for gone in ["x-secret", "keep-alive", "connection"] {
        assert!(!f.contains_key(gone), "{gone} forwarded: {f:?}");
    }
    g.stop().await;
}

#[tokio::test]
async fn trusted_forwarding_fields_are_extended_on_the_own_server() {
    let b = http_backend("b").await;
    let mut g = Glass::start_with(glass_gateway::GatewayConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..config()
    })
    .await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    let (out, _) = raw(
        g.addr,
        b"GET /t HTTP/1.1\r\nHost: x.test\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\
          X-Forwarded-Proto: https\r\nForwarded: for=1.1.1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&out), Some(200), "{out}");
    let seen = echoed(&out);
    let f = &seen["headers"];
    assert_eq!(f["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 127.0.0.1");
    assert_eq!(
        f["x-forwarded-proto"], "https",
        "a trusted proxy's proto is kept"
    );
    assert_eq!(
        f["forwarded"],
        "for=1.1.1.1, for=127.0.0.1;proto=http;host=x.test"
    );
    g.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    // Two bodiless requests (own server), one with a body (hyper from
    // there on), one more; all in one write.
    let (out, closed) = raw(
        g.addr,
        b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /p2 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /p3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /p4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "Connection: close was not honoured: {out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 4, "{out}");
    let at = |p: &str| {
        out.find(&format!("\"path\":\"{p}\""))
            .unwrap_or_else(|| panic!("{p} missing: {out}"))
    };
    assert!(at("/p1") < at("/p3") && at("/p3") < at("/p4"), "{out}");
    assert!(
        !out.contains("\"path\":\"/p2\""),
        "a HEAD answer carried a body: {out}"
    );
    assert!(out.contains("\"body_len\":5"), "{out}");
    g.stop().await;
}

#[tokio::test]
async fn a_bodiless_post_is_sent_with_a_zero_length() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    // No Content-Length and no body: the own server sends it, and says so
    // (some upstreams want a length on POST).
    let (out, _) = raw(
        g.addr,
        b"POST /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&out), Some(200), "{out}");
    let seen = echoed(&out);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["headers"]["content-length"], "0", "{seen}");
    g.stop().await;
}

/// An upstream that answers `/chunked` chunked with a trailer (keeping the
/// connection) and anything else with a body delimited by its close.
async fn framing_backend() -> Backend {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = accept_each(l, |mut s| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            if head.starts_with("GET /chunked ") {
                let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                               5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";
                if s.write_all(answer).await.is_err() {
                    return;
                }
            } else {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
                return;
            }
        }
    });
    Backend::from_parts(addr, Default::default(), task)
}

#[tokio::test]
async fn chunked_and_close_delimited_bodies_reach_the_client_whole() {
    let b = framing_backend().await;
    let mut g = Glass::start().await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    let (out, closed) = raw(
        g.addr,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "{out}");
    let (first, second) = out
        .split_once("HTTP/1.1 200 OK\r\n")
        .and_then(|(_, rest)| rest.split_once("HTTP/1.1 200 OK\r\n"))
        .unwrap_or_else(|| panic!("two responses expected: {out:?}"));
    assert!(
        first.contains("transfer-encoding: chunked\r\n"),
        "{first:?}"
    );
    assert!(
        first.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"),
        "chunks and trailer passed on: {first:?}"
    );
    assert!(
        second.contains("transfer-encoding: chunked\r\n"),
        "{second:?}"
    );
    assert!(second.contains("connection: close\r\n"), "{second:?}");
    assert!(
        second.ends_with("\r\n\r\nb\r\nuntil close\r\n0\r\n\r\n"),
        "a close-delimited body is sent chunked, whole: {second:?}"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_target_hyper_refuses_is_refused_on_the_own_server_too() {
    // A raw upstream that counts every request head it is sent (whatever
    // the target) and answers each with a 200.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = heads.clone();
    let task = accept_each(l, move |mut s| {
        let seen = seen.clone();
        async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if s.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    });
    let b = Backend::from_parts(addr, Default::default(), task);
    let mut g = Glass::start().await;
    g.route(static_route("all", &[b.addr], json!({})))
        .publish()
        .await;
    // httparse admits these request targets; the `http` crate, and so
    // hyper's server, does not.
    for target in ["/a<b", "/a>b", "/a`b"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (out, _) = raw(g.addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(status_of(&out), Some(400), "{target}: {out}");
    }
    let fine = get1(g.addr, "x", "/fine").await;
    assert_eq!(fine.status, 200);
    assert_eq!(
        heads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "only the valid request reached the upstream"
    );
    g.stop().await;
}
