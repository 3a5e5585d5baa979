//! Stream-aware timeouts: slow uploads and slow responses that keep
//! moving are not cut by the header timeout; an idle one is.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn slow_upload_outlives_the_header_timeout() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "r",
        &[b.addr],
        json!({"timeouts": {"header": "300ms", "idle": "2s"}}),
    ))
    .publish()
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = tx
                .send(Ok(http_body::Frame::data(Bytes::from_static(
                    &[b'u'; 1000],
                ))))
                .await;
        }
    });
    let upload = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let mut c = h1(g.addr).await;
    let got = send1(
        &mut c,
        http::Request::post("/upload")
            .header("host", "x.test")
            .body(upload)
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["body_len"], 8000);
    g.stop().await;
}

#[tokio::test]
async fn slow_response_stream_outlives_the_header_timeout() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "r",
        &[b.addr],
        json!({"timeouts": {"header": "300ms", "idle": "1s"}}),
    ))
    .publish()
    .await;
    let got = get1(g.addr, "x.test", "/drip/200").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "chunk0;chunk1;chunk2;chunk3;chunk4;");
    g.stop().await;
}

#[tokio::test]
async fn idle_response_stream_is_cut() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "r",
        &[b.addr],
        json!({"timeouts": {"idle": "300ms"}}),
    ))
    .publish()
    .await;
    let mut c = h1(g.addr).await;
    c.ready().await.unwrap();
    let resp = c
        .send_request(
            get("/drip/2000")
                .header("host", "x.test")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .expect("cut, not hung");
    assert!(body.is_err(), "an idle stream ends in an error");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    g.stop().await;
}

#[tokio::test]
async fn total_timeout_cuts_a_moving_stream() {
    let b = http_backend("b").await;
    let mut g = Glass::start().await;
    g.route(static_route(
        "r",
        &[b.addr],
        json!({"timeouts": {"idle": "2s", "total": "500ms"}}),
    ))
    .publish()
    .await;
    let mut c = h1(g.addr).await;
    c.ready().await.unwrap();
    let started = Instant::now();
    let resp = c
        .send_request(
            get("/drip/200")
                .header("host", "x.test")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the head comes before the deadline");
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .expect("cut, not hung");
    assert!(
        body.is_err(),
        "a stream past its total timeout ends in an error"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(900),
        "{took:?}"
    );
    g.stop().await;
}
