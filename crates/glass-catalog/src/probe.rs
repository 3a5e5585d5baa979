//! One probe of one instance: HTTP, TCP or gRPC health.

use std::net::SocketAddr;
use std::time::Duration;

use glass_model::HealthStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The result of one probe.
pub(crate) type Outcome = (HealthStatus, String);

/// `GET http://addr/path`: 2xx passing, 429 warning, anything else critical.
pub(crate) async fn http(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Outcome {
    let url = format!("http://{addr}{path}");
    match client.get(&url).timeout(timeout).send().await {
        Ok(resp) => {
            let code = resp.status();
            let status = match code.as_u16() {
                200..=299 => HealthStatus::Passing,
                429 => HealthStatus::Warning,
                _ => HealthStatus::Critical,
            };
            (status, format!("GET {url}: HTTP {code}"))
        }
        Err(err) if err.is_timeout() => (
            HealthStatus::Critical,
            format!("GET {url}: no answer within {timeout:?}"),
        ),
        Err(err) => (
            HealthStatus::Critical,
            format!("GET {url}: {}", error_chain(&err)),
        ),
    }
}

/// A TCP connect: connected is passing.
pub(crate) async fn tcp(addr: SocketAddr, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (HealthStatus::Passing, format!("TCP connect {addr}: ok")),
        Ok(Err(err)) => (HealthStatus::Critical, format!("TCP connect {addr}: {err}")),
        Err(_) => (
            HealthStatus::Critical,
            format!("TCP connect {addr}: no answer within {timeout:?}"),
        ),
    }
}

/// `grpc.health.v1.Health/Check`: SERVING is passing.
pub(crate) async fn grpc(addr: SocketAddr, service: &str, timeout: Duration) -> Outcome {
    let check = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let resp = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok::<_, String>(resp.into_inner().status())
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(ServingStatus::Serving)) => (
            HealthStatus::Passing,
            format!("gRPC health {addr} {service:?}: SERVING"),
        ),
        Ok(Ok(other)) => (
            HealthStatus::Critical,
            format!("gRPC health {addr} {service:?}: {}", other.as_str_name()),
        ),
        Ok(Err(err)) => (
            HealthStatus::Critical,
            format!("gRPC health {addr} {service:?}: {err}"),
        ),
        Err(_) => (
            HealthStatus::Critical,
            format!("gRPC health {addr}: no answer within {timeout:?}"),
        ),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
