//! Every gateway failure, and the one place it becomes a response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or misbehaved.
    Upstream,
    /// Nothing could be routed or picked.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No route matches the request.
    NoRoute,
    /// The route has no healthy endpoint.
    NoEndpoint,
    /// Every endpoint is at its concurrency limit.
    CircuitOpen,
    /// Connecting to the upstream failed.
    Connect(String),
    /// The upstream did not answer in time.
    Timeout(&'static str),
    /// The upstream broke the exchange (reset, bad response).
    Upstream(String),
    /// The request is malformed or not allowed.
    BadRequest(String),
    /// The body is larger than allowed.
    TooLarge(u64),
}

/// A gateway failure: who failed, what, and whether a retry is safe.
#[derive(Debug, Clone)]
pub(crate) struct GatewayError {
    pub(crate) kind: Kind,
    pub(crate) side: Side,
    /// The request may be sent again to another endpoint.
    pub(crate) retryable: bool,
}

impl GatewayError {
    pub(crate) fn new(kind: Kind, side: Side, retryable: bool) -> Self {
        GatewayError {
            kind,
            side,
            retryable,
        }
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::NoEndpoint | Kind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Connect(_) | Kind::Upstream(_) => StatusCode::BAD_GATEWAY,
            Kind::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Kind::BadRequest(_) => StatusCode::BAD_REQUEST,
            Kind::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The gRPC status code for the same failure.
    fn grpc_status(&self) -> u8 {
        match self.kind {
            Kind::NoRoute => 12, // UNIMPLEMENTED
            Kind::NoEndpoint | Kind::CircuitOpen | Kind::Connect(_) | Kind::Upstream(_) => 14, // UNAVAILABLE
            Kind::Timeout(_) => 4,    // DEADLINE_EXCEEDED
            Kind::BadRequest(_) => 3, // INVALID_ARGUMENT
            Kind::TooLarge(_) => 8,   // RESOURCE_EXHAUSTED
        }
    }

    pub(crate) fn detail(&self, route: Option<&str>) -> String {
        let on = route.map(|r| format!("route {r:?}: ")).unwrap_or_default();
        match &self.kind {
            Kind::NoRoute => "no route matches this request".into(),
            Kind::NoEndpoint => format!("{on}no healthy instance to send the request to"),
            Kind::CircuitOpen => format!("{on}every instance is at its concurrency limit"),
            Kind::Connect(e) => format!("{on}cannot connect to the upstream: {e}"),
            Kind::Timeout(what) => {
                format!("{on}the upstream did not answer within the {what} timeout")
            }
            Kind::Upstream(e) => format!("{on}the upstream failed: {e}"),
            Kind::BadRequest(e) => e.clone(),
            Kind::TooLarge(max) => format!("the request body is larger than {max} bytes"),
        }
    }
}

/// Turns an error into the response the client gets: problem+json, or a
/// trailers-only gRPC status for gRPC requests. Client errors close the connection.
pub(crate) fn rescue(err: &GatewayError, route: Option<&str>, grpc: bool) -> Response<ProxyBody> {
    let detail = err.detail(route);
    let mut resp = if grpc {
        let mut r = Response::new(ProxyBody::empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(i32::from(err.grpc_status())),
        );
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&detail)) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let status = err.status();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut r = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    };
    if err.side == Side::Downstream {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
