//! Long-lived streams under default settings: a WebSocket and a bidi gRPC
//! stream stay up for 3 minutes while a slowloris client is cut off.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::grpc::{bidi_round, grpc_backend, open_bidi};
use crate::support::*;
use crate::websocket::{next, ws_backend, ws_connect};

const LIFETIME: Duration = Duration::from_secs(180);
const EVERY: Duration = Duration::from_secs(5);

#[tokio::test]
#[ignore = "runs 3 minutes"]
async fn streams_outlive_minutes_while_slowloris_is_cut() {
    let ws_b = ws_backend().await;
    let grpc_b = grpc_backend().await;
    // Default settings, only loopback and no access log.
    let defaults = glass_gateway::GatewayConfig::default();
    let header_read_timeout = defaults.header_read_timeout;
    let mut g = Glass::start_with(glass_gateway::GatewayConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        access_log: None,
        ..defaults
    })
    .await;
    g.route(static_route(
        "ws",
        &[ws_b.addr],
        json!({"match": {"path_prefix": "/ws"}}),
    ))
    .route(static_route(
        "grpc",
        &[grpc_b.addr],
        json!({"match": {"path_prefix": "/grpc.reflection.v1.ServerReflection"}, "protocol": "grpc"}),
    ))
    .publish()
    .await;

    let addr = g.addr;
    let slowloris = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for i in 0..600 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if s.write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return started.elapsed();
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
            {
                return started.elapsed();
            }
        }
        panic!("slowloris never cut");
    });

    let mut ws = ws_connect(g.addr, "ws://x.test/ws").await;
    let channel = crate::grpc::channel(&g).await;
    let (tx, mut rx) = open_bidi(channel).await;
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < LIFETIME {
        ws.send(Message::text(format!("tick {n}"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(format!("tick {n}")));
        bidi_round(&tx, &mut rx).await;
        n += 1;
        tokio::time::sleep(EVERY).await;
    }
    assert!(n >= 30);
    let cut = slowloris.await.unwrap();
    assert!(
        cut <= header_read_timeout + Duration::from_secs(2),
        "slowloris cut after {cut:?}"
    );
    ws.close(None).await.unwrap();
    let _ = ws.next().await;
    drop(tx);
    g.stop().await;
}
