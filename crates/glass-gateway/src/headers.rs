//! Header handling on the way through: hop-by-hop removal, forwarding
//! headers, request id and W3C trace context.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Read access to a request's header fields, whether hyper parsed them
/// into a [`HeaderMap`] or the gateway's own HTTP/1.1 server left them as
/// the bytes it received: routing and balancing read both the same way.
pub(crate) trait Fields {
    /// Every value of `name` (lowercase), in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]>;

    /// The first value of `name` (lowercase).
    fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl Fields for HeaderMap {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

/// Whether `name` is a hop-by-hop header (any case). By length first:
/// this runs for every field of every request and response.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |n: &[u8]| n.eq_ignore_ascii_case(name);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Whether a client's `x-request-id` is kept: short, printable ASCII.
pub(crate) fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic)
}

/// A new request id: 32 random hex digits.
pub(crate) fn new_request_id() -> HeaderValue {
    id_value(b"00000000000000000000000000000000", &[(0, 32)])
}

/// A new `traceparent` starting a trace: `00-<trace id>-<parent id>-01`.
pub(crate) fn new_traceparent() -> HeaderValue {
    id_value(
        b"00-00000000000000000000000000000000-0000000000000000-01",
        &[(3, 35), (36, 52)],
    )
}

/// Bytes per block that ids are cut from.
const ID_BLOCK: usize = 16 * 1024;

/// `template` with random hex in the `hex` spans (start, end), cut from a
/// per-thread block: one allocation per few hundred requests instead of
/// one per id.
fn id_value(template: &[u8], hex: &[(usize, usize)]) -> HeaderValue {
    thread_local! {
        static BLOCK: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    BLOCK.with(|block| {
        let mut block = block.borrow_mut();
        if block.capacity() < template.len() {
            *block = bytes::BytesMut::with_capacity(ID_BLOCK);
        }
        block.extend_from_slice(template);
        for &(start, end) in hex {
            fill_hex(&mut block[start..end]);
        }
        HeaderValue::from_maybe_shared(block.split().freeze()).expect("hex is a valid value")
    })
}

/// Whether a client's `traceparent` is propagated as it is.
pub(crate) fn propagated_traceparent(v: &[u8]) -> bool {
    std::str::from_utf8(v)
        .ok()
        .and_then(valid_traceparent)
        .is_some()
}

/// Removes hop-by-hop headers and those the `Connection` header names.
/// `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for WebSocket
/// handshakes; `keep_te_trailers` keeps `TE: trailers` (gRPC needs it).
pub(crate) fn strip_hop_by_hop(
    headers: &mut HeaderMap,
    keep_upgrade: bool,
    keep_te_trailers: bool,
) {
    // Most messages carry none: one pass over the names (no hashing)
    // instead of a removal per hop-by-hop name.
    if !headers.keys().any(|k| is_hop_by_hop(k.as_str().as_bytes())) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(&name);
        }
    }
    let te_trailers = keep_te_trailers
        && headers
            .get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// What a connection's client contributes to forwarding headers, made
/// once per connection rather than per request.
#[derive(Debug)]
pub(crate) struct Forwarding {
    /// The client address as `X-Forwarded-For` wants it.
    pub(crate) xff: HeaderValue,
    /// `for=…;proto=…` for `Forwarded` (RFC 7239).
    pub(crate) params: String,
    pub(crate) proto: &'static str,
}

impl Forwarding {
    pub(crate) fn new(client: IpAddr, tls: bool) -> Self {
        let proto = if tls { "https" } else { "http" };
        let params = match client {
            IpAddr::V4(ip) => format!("for={ip};proto={proto}"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto={proto}"),
        };
        let xff = HeaderValue::from_str(&client.to_string()).expect("an address is a valid value");
        Forwarding { xff, params, proto }
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `Forwarded`. A trusted peer's
/// values are extended; anyone else's are replaced.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    client: &Forwarding,
    trusted: bool,
    host: Option<&HeaderValue>,
) {
    if !trusted {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let xff = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prior) => {
            let mut v = Vec::with_capacity(prior.len() + 2 + client.xff.len());
            v.extend_from_slice(prior);
            v.extend_from_slice(b", ");
            v.extend_from_slice(client.xff.as_bytes());
            owned_value(v)
        }
        None => Some(client.xff.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    }
    let prior = headers.get(&FORWARDED).map(HeaderValue::as_bytes);
    let mut forwarded = Vec::with_capacity(
        prior.map_or(0, |p| p.len() + 2) + client.params.len() + host.map_or(0, |h| h.len() + 6),
    );
    if let Some(prior) = prior {
        forwarded.extend_from_slice(prior);
        forwarded.extend_from_slice(b", ");
    }
    forwarded.extend_from_slice(client.params.as_bytes());
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        if forwarded_host_ok(host.as_bytes()) {
            forwarded.extend_from_slice(b";host=");
            forwarded.extend_from_slice(host.as_bytes());
        }
    }
    if let Some(v) = owned_value(forwarded) {
        headers.insert(FORWARDED.clone(), v);
    }
}

/// Whether a host goes into `Forwarded` as `host=…`: one that is not a
/// plain token would need quoting, and is left out.
pub(crate) fn forwarded_host_ok(host: &[u8]) -> bool {
    host.iter()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(b))
}

/// A header value that takes `bytes` without copying them again.
fn owned_value(bytes: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes)).ok()
}

/// Random lowercase hex digits into `out` from a fast per-thread
/// generator: request and trace ids must be unique, not secret.
fn fill_hex(out: &mut [u8]) {
    use rand::{Rng, SeedableRng};
    thread_local! {
        static RNG: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_os_rng());
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        for pair in out.chunks_mut(16) {
            let mut word: u64 = rng.random();
            for digit in pair {
                *digit = HEX[(word & 0xf) as usize];
                word >>= 4;
            }
        }
    });
}

/// Keeps a sane client `x-request-id` or sets a new one; returns it.
pub(crate) fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && sane_request_id(v.as_bytes())
    {
        return v.clone();
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// Propagates a valid W3C `traceparent` unchanged, or starts a new trace;
/// returns the `traceparent` sent upstream (see [`trace_id`]).
pub(crate) fn trace_context(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&TRACEPARENT)
        && propagated_traceparent(v.as_bytes())
    {
        return v.clone();
    }
    headers.remove("tracestate");
    let value = new_traceparent();
    headers.insert(TRACEPARENT.clone(), value.clone());
    value
}

/// The trace id of a `traceparent` that [`trace_context`] returned.
pub(crate) fn trace_id(traceparent: &HeaderValue) -> &str {
    traceparent
        .to_str()
        .ok()
        .and_then(|v| v.get(3..35))
        .unwrap_or("")
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
fn valid_traceparent(v: &str) -> Option<&str> {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    ok.then(|| parts[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-kept"], "1");
        // A hop-by-hop header alone (no Connection) still goes; a message
        // without any is left as it is.
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        let client = Forwarding::new("10.0.0.9".parse().unwrap(), false);
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(&mut h, &client, false, Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.9;proto=http;host=api.example.com"
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        let client = Forwarding::new("::1".parse().unwrap(), true);
        set_forwarded(&mut h, &client, true, None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, ::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
    }

    #[test]
    fn trace_context_is_kept_or_started() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().unwrap());
        assert_eq!(
            trace_id(&trace_context(&mut h)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(h["traceparent"], tp);
        let mut h = HeaderMap::new();
        h.insert("traceparent", "garbage".parse().unwrap());
        let sent = trace_context(&mut h);
        let id = trace_id(&sent);
        assert_eq!(id.len(), 32);
        assert!(
            valid_traceparent(sent.to_str().unwrap()).is_some(),
            "{sent:?}"
        );
        assert!(
            h["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{id}-"))
        );
    }
}
