//! The head of a bodiless request as sent to an HTTP/1.1 upstream, encoded
//! in one pass from the client's head: its fields as they came, except
//! hop-by-hop ones, untrusted forwarding ones and those the route's edits
//! replace; then forwarding, request id, trace context and the edits' own.
//! Both servers use it (the own HTTP/1.1 server with the bytes received,
//! hyper's with its `HeaderMap`), so the policy is written once for the
//! gateway's own upstream path; hyper's client path applies the same
//! rules to a `HeaderMap` (`headers`), and a test compares the two.

use http::header::{self, HeaderValue};
use http::{Method, request};

use crate::h1_serve::field;
use crate::headers;
use crate::proxy::{self, Conn, Exchange, Shared};
use crate::table::RouteEntry;

/// A client request's head, as the encoder reads it.
pub(crate) trait ClientHead {
    fn method(&self) -> &Method;
    /// The path and query as received.
    fn target(&self) -> &str;
    /// Every field as (name, value), in order.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
    /// The host the client named, and whether it came as a `Host` field
    /// (HTTP/2 names it in `:authority`, which becomes one).
    fn host(&self) -> (&[u8], bool);
    /// The client's `x-request-id`, if it is kept (the first, if sane).
    fn request_id(&self) -> Option<HeaderValue>;
    /// The client's `traceparent`, if it is propagated (the first, if valid).
    fn traceparent(&self) -> Option<HeaderValue>;
    fn has_content_length(&self) -> bool;
}

/// A request hyper parsed.
pub(crate) struct MapHead<'a> {
    pub(crate) parts: &'a request::Parts,
}

impl ClientHead for MapHead<'_> {
    fn method(&self) -> &Method {
        &self.parts.method
    }

    fn target(&self) -> &str {
        self.parts.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn host(&self) -> (&[u8], bool) {
        match self.parts.uri.authority() {
            Some(a) => (
                a.as_str().as_bytes(),
                self.parts.headers.contains_key(header::HOST),
            ),
            None => (
                self.parts
                    .headers
                    .get(header::HOST)
                    .map_or(&b""[..], HeaderValue::as_bytes),
                true,
            ),
        }
    }

    fn request_id(&self) -> Option<HeaderValue> {
        let first = self.parts.headers.get(&headers::X_REQUEST_ID).cloned();
        first.filter(|v| headers::sane_request_id(v.as_bytes()))
    }

    fn traceparent(&self) -> Option<HeaderValue> {
        let first = self.parts.headers.get(&headers::TRACEPARENT).cloned();
        first.filter(|v| headers::propagated_traceparent(v.as_bytes()))
    }

    fn has_content_length(&self) -> bool {
        self.parts.headers.contains_key(header::CONTENT_LENGTH)
    }
}

/// Writes the head for `request` into `out`, and the request id and
/// `traceparent` sent into `exchange`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    request: &impl ClientHead,
    entry: &RouteEntry,
    shared: &Shared,
    conn: &Conn,
    exchange: &mut Exchange,
) {
    let spec = &entry.route.spec;
    let strip = spec
        .strip_prefix
        .then_some(spec.matcher.path_prefix.as_deref())
        .flatten();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    match strip {
        None => out.extend_from_slice(request.target().as_bytes()),
        Some(_) => out.extend_from_slice(proxy::rewrite_path(request.target(), strip).as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    exchange.request_id = request.request_id().unwrap_or_else(headers::new_request_id);
    let client_trace = request.traceparent();
    let propagated = client_trace.is_some();
    exchange.trace = client_trace.unwrap_or_else(headers::new_traceparent);

    let trusted = shared.config.trusts(conn.peer.ip());
    let mut prior_xff: Vec<u8> = Vec::new();
    let mut prior_forwarded: Vec<u8> = Vec::new();
    let (mut has_proto, mut has_forwarded_host) = (false, false);
    let (host, host_field) = request.host();
    for (name, value) in request.fields() {
        let is = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        if headers::is_hop_by_hop(name)
            || is(&headers::X_REQUEST_ID)
            || is(&headers::TRACEPARENT)
            || (!propagated && name.eq_ignore_ascii_case(b"tracestate"))
        {
            continue;
        }
        if is(&headers::X_FORWARDED_FOR) || is(&headers::FORWARDED) {
            if trusted {
                let list = if is(&headers::FORWARDED) {
                    &mut prior_forwarded
                } else {
                    &mut prior_xff
                };
                list.extend_from_slice(value);
                list.extend_from_slice(b", ");
            }
            continue;
        }
        if is(&headers::X_FORWARDED_PROTO) || is(&headers::X_FORWARDED_HOST) {
            if !trusted {
                continue;
            }
            has_proto |= is(&headers::X_FORWARDED_PROTO);
            has_forwarded_host |= is(&headers::X_FORWARDED_HOST);
        }
        if entry.request_edits.drops(name) {
            continue;
        }
        field(out, name, value);
    }
    if !host_field && !host.is_empty() {
        field(out, b"host", host);
    }

    // Forwarding fields: a trusted proxy's values first, then this hop's.
    let forwarding = &conn.forwarding;
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(&prior_xff);
    out.extend_from_slice(forwarding.xff.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !has_proto {
        field(out, b"x-forwarded-proto", forwarding.proto.as_bytes());
    }
    if !has_forwarded_host && !host.is_empty() {
        field(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"forwarded: ");
    out.extend_from_slice(&prior_forwarded);
    out.extend_from_slice(forwarding.params.as_bytes());
    if !host.is_empty() && headers::forwarded_host_ok(host) {
        out.extend_from_slice(b";host=");
        out.extend_from_slice(host);
    }
    out.extend_from_slice(b"\r\n");

    field(out, b"x-request-id", exchange.request_id.as_bytes());
    field(out, b"traceparent", exchange.trace.as_bytes());
    for (name, value) in entry.request_edits.added() {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // Some servers want a length on methods that usually carry a body.
    if !request.has_content_length()
        && matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        )
    {
        field(out, b"content-length", b"0");
    }
    out.extend_from_slice(b"\r\n");
}
