//! Header handling on the way through: hop-by-hop removal, forwarding
//! headers, request id and W3C trace context.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Removes hop-by-hop headers and those the `Connection` header names.
/// `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for WebSocket
/// handshakes; `keep_te_trailers` keeps `TE: trailers` (gRPC needs it).
pub(crate) fn strip_hop_by_hop(
    headers: &mut HeaderMap,
    keep_upgrade: bool,
    keep_te_trailers: bool,
) {
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

/// Sets `X-Forwarded-For/-Proto/-Host` and `Forwarded`. A trusted peer's
/// values are extended; anyone else's are replaced.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    trusted: bool,
    tls: bool,
    host: Option<&str>,
) {
    let proto = if tls { "https" } else { "http" };
    let for_value = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
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
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.to_string(),
    };
    set(headers, &X_FORWARDED_FOR, &xff);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    let mut forwarded = format!("for={for_value};proto={proto}");
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            set(headers, &X_FORWARDED_HOST, host);
        }
        if host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            forwarded.push_str(";host=");
            forwarded.push_str(host);
        }
    }
    let forwarded = match headers.get(&FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {forwarded}"),
        None => forwarded,
    };
    set(headers, &FORWARDED, &forwarded);
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

/// `bytes` random bytes as lowercase hex, in one allocation.
fn random_hex(bytes: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes * 2);
    let mut word = 0u64;
    for i in 0..bytes {
        if i % 8 == 0 {
            word = rand::random::<u64>();
        }
        let b = (word >> ((i % 8) * 8)) as u8;
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Keeps a sane client `x-request-id` or sets a new one; returns it.
pub(crate) fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let id = HeaderValue::from_str(&random_hex(16)).expect("hex is a valid header value");
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// Propagates a valid W3C `traceparent` unchanged, or starts a new trace;
/// returns the trace id for the access log.
pub(crate) fn trace_context(headers: &mut HeaderMap) -> String {
    if let Some(v) = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok())
        && let Some(trace_id) = valid_traceparent(v)
    {
        return trace_id.to_owned();
    }
    headers.remove("tracestate");
    let trace_id = random_hex(16);
    let value = format!("00-{trace_id}-{}-01", random_hex(8));
    headers.insert(
        TRACEPARENT.clone(),
        HeaderValue::from_str(&value).expect("hex is a valid header value"),
    );
    trace_id
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
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        set_forwarded(
            &mut h,
            "10.0.0.9".parse().unwrap(),
            false,
            false,
            Some("api.example.com"),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.9;proto=http;host=api.example.com"
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        set_forwarded(&mut h, "::1".parse().unwrap(), true, true, None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, ::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
    }

    #[test]
    fn trace_context_is_kept_or_started() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().unwrap());
        assert_eq!(trace_context(&mut h), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["traceparent"], tp);
        let mut h = HeaderMap::new();
        h.insert("traceparent", "garbage".parse().unwrap());
        let id = trace_context(&mut h);
        assert_eq!(id.len(), 32);
        assert!(
            h["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{id}-"))
        );
    }
}
