//! Hostile and malformed input over raw TCP: each gets the right 4xx or a
//! closed connection, never reaches the upstream when it smuggles, and
//! the gateway keeps serving others.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Body limit in these tests.
const MAX_BODY: u64 = 1 << 20;

async fn gateway() -> (Glass, Backend) {
    let b = http_backend("b").await;
    let mut g = Glass::start_with(glass_gateway::GatewayConfig {
        max_body_bytes: MAX_BODY,
        ..config()
    })
    .await;
    g.route(static_route("r", &[b.addr], json!({})))
        .publish()
        .await;
    (g, b)
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Acceptable statuses of the first response.
    statuses: &'static [u16],
    /// A closed connection without any response is acceptable too.
    may_close: bool,
    /// The upstream must not see it.
    blocked: bool,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, statuses: &'static [u16]) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        statuses,
        may_close: false,
        blocked: true,
    }
}

impl Case {
    fn or_close(mut self) -> Self {
        self.may_close = true;
        self
    }

    fn may_reach_upstream(mut self) -> Self {
        self.blocked = false;
        self
    }
}

fn cases() -> Vec<Case> {
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "u".repeat(100 * 1024)
    );
    let mut chunked_over =
        String::from("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = "z".repeat(64 * 1024);
    for _ in 0..((MAX_BODY as usize / chunk.len()) + 4) {
        chunked_over.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked_over.push_str("0\r\n\r\n");
    vec![
        case(
            "content-length and transfer-encoding",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            &[400],
        ),
        case(
            "transfer-encoding then content-length",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
            &[400],
        ),
        case(
            "two different content-lengths",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
            &[400],
        ),
        case(
            "content-length list",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nhello",
            &[400],
        ),
        case(
            "content-length not a number",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            &[400],
        ),
        case(
            "negative content-length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            &[400],
        ),
        case(
            "content-length with a plus sign",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
            &[400],
        ),
        case(
            "transfer-encoding not ending in chunked",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        case(
            "unknown transfer-encoding",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            &[400, 501],
        ),
        case(
            "bad chunk size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            &[400],
        )
        .or_close()
        .may_reach_upstream(),
        case(
            "chunk larger than its size line",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
            &[400],
        )
        .or_close()
        .may_reach_upstream(),
        case("chunked body over the limit", chunked_over, &[413])
            .or_close()
            .may_reach_upstream(),
        case(
            "content-length over the limit",
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1),
            &[413],
        ),
        case(
            "content-length over the limit with expect",
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999999\r\n\r\n",
            &[413],
        ),
        case("header section over 64 KiB", big_header, &[431]).or_close(),
        case("more than 100 headers", many, &[431]).or_close(),
        case("request target over the limit", long_uri, &[414, 431, 400]).or_close(),
        case(
            "invalid method token",
            "GE(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            &[400],
        )
        .or_close(),
        case(
            "invalid header name",
            "GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
            &[400],
        )
        .or_close(),
        case(
            "space before the colon",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            &[400],
        )
        .or_close(),
        case(
            "NUL in a header value",
            &b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"[..],
            &[400],
        )
        .or_close(),
        case(
            "obsolete line folding",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
            &[400],
        )
        .or_close(),
        case(
            "request line garbage",
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
            &[400],
        )
        .or_close(),
        case("HTTP/0.9 request", "GET /\r\n\r\n", &[400]).or_close(),
        case(
            "unsupported HTTP version",
            "GET / HTTP/1.7\r\nHost: x\r\n\r\n",
            &[400, 505],
        )
        .or_close(),
        case(
            "space in the request target",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            &[400],
        )
        .or_close(),
        case("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", &[400]),
        case(
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            &[400],
        ),
        case(
            "websocket upgrade without a key",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &[400],
        ),
        case(
            "websocket upgrade with a body",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello",
            &[400],
        ),
        case(
            "CONNECT tunnel request",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            &[400, 405],
        ),
        case(
            "h2 preface then garbage",
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
            &[],
        )
        .or_close(),
    ]
}

#[tokio::test]
async fn hostile_requests_get_4xx_or_closed() {
    let (g, b) = gateway().await;
    assert!(cases().len() >= 20);
    let mut failures = Vec::new();
    for c in cases() {
        let before = b.hits();
        let (out, closed) = raw(g.addr, &c.bytes, Duration::from_secs(3)).await;
        let status = status_of(&out);
        let ok = match status {
            Some(s) if c.statuses.contains(&s) => true,
            Some(_) => false,
            None => c.may_close && closed,
        };
        if !ok {
            failures.push(format!(
                "{}: got {status:?} (closed: {closed}): {:?}",
                c.name,
                out.chars().take(300).collect::<String>()
            ));
        }
        if c.blocked && b.hits() != before {
            failures.push(format!("{}: reached the upstream", c.name));
        }
        // The gateway still serves others.
        let fine = get1(g.addr, "x.test", "/after").await;
        assert_eq!(fine.status, 200, "after {}", c.name);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    g.stop().await;
}

#[tokio::test]
async fn body_longer_than_declared_is_not_a_second_request() {
    let (g, b) = gateway().await;
    let (out, _) = raw(
        g.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status_of(&out), Some(200), "{out}");
    // The tail is parsed as a request of its own on the client connection,
    // never glued onto the upstream request.
    let smuggled_in_body = out.contains("\"body_len\":5");
    assert!(smuggled_in_body, "{out}");
    let _ = b;
    g.stop().await;
}

#[tokio::test]
async fn slowloris_is_cut_within_the_header_read_timeout() {
    let (g, _b) = gateway().await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut cut = None;
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(format!("X-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = Some(started.elapsed());
            break;
        }
        // A closed socket shows on read too.
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), {
            use tokio::io::AsyncReadExt;
            s.read(&mut buf)
        })
        .await
        {
            let _ = n;
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the slowloris connection was never cut");
    assert!(cut < Duration::from_secs(2), "cut after {cut:?}");
    // Others are served meanwhile and after.
    assert_eq!(get1(g.addr, "x.test", "/").await.status, 200);
    g.stop().await;
}

#[tokio::test]
async fn h2_oversized_headers_are_refused() {
    let (g, _b) = gateway().await;
    let mut c = h2(g.addr).await;
    c.ready().await.unwrap();
    let r = c
        .send_request(
            get("http://x.test/")
                .header("x-big", "a".repeat(100 * 1024))
                .body(empty())
                .unwrap(),
        )
        .await;
    // Either an error status, or the stream or connection is refused.
    if let Ok(resp) = r {
        assert!(resp.status() == 431 || resp.status() == 400, "{resp:?}");
    }
    let mut c = h2(g.addr).await;
    let ok = send2(&mut c, get("http://x.test/").body(empty()).unwrap()).await;
    assert_eq!(ok.status, 200);
    g.stop().await;
}
