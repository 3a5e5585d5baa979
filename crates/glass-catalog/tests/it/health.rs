//! Health checks: HTTP, TCP, gRPC and TTL against real servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use glass_catalog::HealthChecker;
use glass_model::HealthStatus::{Critical, Passing, Warning};
use serde_json::json;

use crate::{fixture, registration, status, wait_status};

/// An HTTP server whose `/healthz` answers the status in `code`
/// (0 = never answer).
async fn health_server(code: Arc<AtomicU16>) -> u16 {
    async fn healthz(State(code): State<Arc<AtomicU16>>) -> StatusCode {
        let c = code.load(Ordering::SeqCst);
        if c == 0 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        StatusCode::from_u16(c.max(200)).unwrap()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(code);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn http_check_follows_the_endpoint() {
    let f = fixture().await;
    let checker = HealthChecker::spawn(f.catalog.clone(), None);
    let code = Arc::new(AtomicU16::new(200));
    let port = health_server(code.clone()).await;
    let interval = Duration::from_millis(300);
    let timeout = Duration::from_millis(100);
    let check = json!({"http": "/healthz", "interval": "300ms", "timeout": "100ms"});
    f.catalog
        .register(&registration("h1", port, check), "api", None)
        .await
        .unwrap();
    wait_status(&f.catalog, "h1", Some(Passing), Duration::from_secs(2)).await;

    // Critical within interval + timeout, plus the health write reaching the
    // snapshot: a few ms here, but a durable write on a loaded two-core CI
    // machine running the other tests in parallel has taken over 200 ms, so
    // the slack is generous. The measured times are printed.
    let bound = interval + timeout + Duration::from_millis(600);
    code.store(500, Ordering::SeqCst);
    let took = wait_status(&f.catalog, "h1", Some(Critical), bound).await;
    eprintln!("500 -> critical after {took:?} (interval {interval:?} + timeout {timeout:?})");
    let output = f
        .catalog
        .snapshots()
        .load()
        .member(&crate::key("h1"))
        .unwrap()
        .health
        .output
        .clone();
    assert!(output.contains("HTTP 500"), "{output}");

    code.store(200, Ordering::SeqCst);
    wait_status(&f.catalog, "h1", Some(Passing), bound).await;
    code.store(429, Ordering::SeqCst);
    wait_status(&f.catalog, "h1", Some(Warning), bound).await;

    // An endpoint that never answers is critical once the timeout passes.
    code.store(200, Ordering::SeqCst);
    wait_status(&f.catalog, "h1", Some(Passing), bound).await;
    code.store(0, Ordering::SeqCst);
    let took = wait_status(&f.catalog, "h1", Some(Critical), bound).await;
    eprintln!("hang -> critical after {took:?}");
    checker.abort();
}

#[tokio::test]
async fn tcp_check_sees_a_closed_port() {
    let f = fixture().await;
    let checker = HealthChecker::spawn(f.catalog.clone(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let check = json!({"tcp": true, "interval": "200ms", "timeout": "100ms"});
    f.catalog
        .register(&registration("t1", port, check), "api", None)
        .await
        .unwrap();
    wait_status(&f.catalog, "t1", Some(Passing), Duration::from_secs(2)).await;
    drop(listener);
    wait_status(&f.catalog, "t1", Some(Critical), Duration::from_millis(800)).await;
    checker.abort();
}

#[tokio::test]
async fn grpc_check_reads_the_health_service() {
    use tonic_health::ServingStatus;
    let f = fixture().await;
    let checker = HealthChecker::spawn(f.catalog.clone(), None);
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("users", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let check = json!({"grpc": "users", "interval": "200ms", "timeout": "150ms"});
    f.catalog
        .register(&registration("g1", port, check), "api", None)
        .await
        .unwrap();
    wait_status(&f.catalog, "g1", Some(Passing), Duration::from_secs(3)).await;
    reporter
        .set_service_status("users", ServingStatus::NotServing)
        .await;
    wait_status(&f.catalog, "g1", Some(Critical), Duration::from_millis(950)).await;
    reporter
        .set_service_status("users", ServingStatus::Serving)
        .await;
    wait_status(&f.catalog, "g1", Some(Passing), Duration::from_millis(950)).await;
    checker.abort();
}

#[tokio::test]
async fn ttl_check_goes_critical_without_heartbeats_and_is_deregistered() {
    let f = fixture().await;
    let checker = HealthChecker::spawn(f.catalog.clone(), None);
    let check = json!({"ttl": "300ms", "deregister_critical_after": "600ms"});
    f.catalog
        .register(&registration("ttl1", 1, check), "api", None)
        .await
        .unwrap();
    assert_eq!(
        status(&f.catalog, "ttl1"),
        Some(Critical),
        "critical until the first heartbeat"
    );
    // Heartbeats well within the TTL keep it passing past several TTLs.
    for _ in 0..8 {
        f.catalog.heartbeat(&crate::key("ttl1")).await.unwrap();
        assert_eq!(status(&f.catalog, "ttl1"), Some(Passing));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = wait_status(
        &f.catalog,
        "ttl1",
        Some(Critical),
        Duration::from_millis(700),
    )
    .await;
    eprintln!("ttl 300ms: critical {took:?} after the last heartbeat");
    assert!(
        took >= Duration::from_millis(150),
        "not before the ttl ran out ({took:?})"
    );
    let gone = wait_status(&f.catalog, "ttl1", None, Duration::from_secs(2)).await;
    eprintln!("deregistered {gone:?} after turning critical (deregister_critical_after 600ms)");
    checker.abort();
}
