//! WebSocket upgrades tunnelled through the gateway to an echo backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

/// A WebSocket echo backend: echoes text and binary, answers pings, and
/// echoes the close frame.
pub(crate) async fn ws_backend() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = accept_each(l, move |s| {
        counter.fetch_add(1, Relaxed);
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    // tungstenite queued the echoed close; flush it.
                    let _ = ws.flush().await;
                } else if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        }
    });
    Backend::from_parts(addr, hits, task)
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket client connected through the gateway.
pub(crate) async fn ws_connect(gateway: std::net::SocketAddr, url: &str) -> Ws {
    let s = TcpStream::connect(gateway).await.unwrap();
    let (ws, resp) = tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, s))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

pub(crate) async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a message in time")
        .expect("stream open")
        .expect("message")
}

#[tokio::test]
async fn websocket_echo_both_ways_with_ping_and_close() {
    let b = ws_backend().await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "ws",
        &[b.addr],
        json!({"match": {"path_prefix": "/ws"}}),
    ))
    .publish()
    .await;
    let mut ws = ws_connect(g.addr, "ws://chat.test/ws/room").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1u8, 2, 3]));
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
    ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Pong(b"p1".to_vec().into()));
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Normal);
            assert_eq!(f.reason, "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // After the close handshake the stream ends (no hang).
    let end = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("ends");
    assert!(end.is_none() || end.is_some_and(|r| r.is_err()));

    // Several sockets at once, then plain HTTP still works.
    let mut many = Vec::new();
    for i in 0..5 {
        let mut ws = ws_connect(g.addr, "ws://chat.test/ws").await;
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        many.push(ws);
    }
    for (i, ws) in many.iter_mut().enumerate() {
        assert_eq!(next(ws).await, Message::text(format!("m{i}")));
    }
    g.stop().await;
}

#[tokio::test]
async fn server_initiated_close_reaches_the_client() {
    // A backend that closes right after the handshake with 1001.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        ws.send(Message::text("welcome")).await.unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "going".into(),
        }))
        .await
        .unwrap();
        // Wait for the client's close reply.
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    });
    let mut g = Glass::start().await;
    g.route(static_route("ws", &[addr], json!({})))
        .publish()
        .await;
    let mut ws = ws_connect(g.addr, "ws://chat.test/").await;
    assert_eq!(next(&mut ws).await, Message::text("welcome"));
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close, got {other:?}"),
    }
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap();
    g.stop().await;
}

#[tokio::test]
async fn shutdown_drains_then_closes_open_tunnels() {
    let b = ws_backend().await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "ws",
        &[b.addr],
        json!({"match": {"path_prefix": "/ws"}}),
    ))
    .publish()
    .await;
    let mut ws = ws_connect(g.addr, "ws://chat.test/ws/room").await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("before"));
    // The tunnel is still open when shutdown starts: the gateway waits for
    // it up to the drain timeout (1 s here), then closes it.
    let started = std::time::Instant::now();
    g.stop().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "the drain waited for the tunnel: {waited:?}"
    );
    let end = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("the tunnel is closed, not left hanging");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)) | Ok(Message::Binary(_)))),
        "{end:?}"
    );
}
