//! Routes: which requests the gateway sends where, and how.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ModelError, parse_duration, validate_label};

/// A route exactly as a user writes it (`POST /api/v1/routes`, `glass apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique name (a DNS label).
    pub name: String,
    /// Which requests the route takes.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Where they go.
    pub target: RouteTarget,
    /// Load-balancing policy: `round_robin` (default), `weighted`,
    /// `least_request` or `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<String>,
    /// With `lb = "hash"`: `header:<name>`, `cookie:<name>`, `client_ip`,
    /// or `sticky_cookie` (the gateway issues a cookie naming the instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Remove the matched `path_prefix` before forwarding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    /// Headers added to / removed from the request sent upstream.
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub request_headers: HeaderEdits,
    /// Headers added to / removed from the response sent back.
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub response_headers: HeaderEdits,
    /// Timeouts (each optional; see [`Timeouts`] for the defaults).
    #[serde(default, skip_serializing_if = "RawTimeouts::is_empty")]
    pub timeouts: RawTimeouts,
    /// Extra attempts on connect failures and idempotent requests (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Upstream protocol: `http1` (default), `http2` (h2c), or `grpc` (h2c, gRPC errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Which requests a route takes; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// `api.example.com` (exact) or `*.example.com` (any one or more labels in front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path starts with this, on a segment boundary (`/v1` takes `/v1` and `/v1/x`, not `/v10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The path is exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// One of these methods (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// These headers have exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Where a route sends requests: a catalog service or fixed addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// Product of the target job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Env of the target job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The target job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Port name (default `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Fixed upstream addresses (`IP:PORT`) instead of a catalog service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// Header changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Set these headers (replacing any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Timeouts as written (`"5s"`); all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Connecting to an upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// From sending the request to the upstream's response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// No bytes in either direction (streams, WebSockets, bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// The whole exchange; off by default so streams are never cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
}

impl RawTimeouts {
    /// Whether no timeout is set.
    pub fn is_empty(&self) -> bool {
        *self == RawTimeouts::default()
    }
}

/// Load-balancing policy of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    /// Each healthy instance in turn.
    RoundRobin,
    /// In proportion to `meta.weight`, smoothly interleaved.
    Weighted,
    /// The less busy of two random instances.
    LeastRequest,
    /// Consistent hashing on a request key.
    Hash(HashOn),
}

/// What a hash policy hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value (lowercase name).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
    /// A cookie the gateway issues naming the chosen instance.
    StickyCookie,
}

/// Validated timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect (default 5 s).
    pub connect: Duration,
    /// Response head (default 60 s).
    pub header: Duration,
    /// Idle in both directions (default 15 min).
    pub idle: Duration,
    /// Whole exchange (default none).
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            header: Duration::from_secs(60),
            idle: Duration::from_secs(900),
            total: None,
        }
    }
}

/// The upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 over cleartext (prior knowledge).
    Http2,
    /// gRPC: HTTP/2, errors answered as gRPC statuses.
    Grpc,
}

/// Where a validated route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Healthy instances of a catalog job's port.
    Service {
        /// Product.
        product: String,
        /// Env.
        env: String,
        /// Job.
        job: String,
        /// Port name.
        port: String,
    },
    /// Fixed addresses.
    Static(Vec<SocketAddr>),
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The spec it was validated from (what the API returns and stores).
    pub spec: RouteSpec,
    /// Lowercase host; `*.x` wildcard kept as written.
    pub host: Option<String>,
    /// Target.
    pub target: Target,
    /// Load balancing.
    pub lb: LbPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Extra attempts.
    pub retries: u32,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn check_path(field: &str, path: &str) -> Result<(), ModelError> {
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err(ModelError::invalid(
            field,
            format!("{path:?} must start with '/' and hold no spaces, '?' or '#'"),
        ));
    }
    Ok(())
}

fn check_headers(field: &str, edits: &HeaderEdits) -> Result<(), ModelError> {
    for (name, value) in &edits.add {
        if !is_header_name(name) || !is_header_value(value) {
            return Err(ModelError::invalid(
                format!("{field}.add"),
                format!("{name:?}: not a valid header name and value"),
            ));
        }
    }
    if let Some(bad) = edits.remove.iter().find(|n| !is_header_name(n)) {
        return Err(ModelError::invalid(
            format!("{field}.remove"),
            format!("{bad:?} is not a header name"),
        ));
    }
    Ok(())
}

impl RouteSpec {
    /// Validates the spec.
    pub fn validate(&self) -> Result<Route, ModelError> {
        validate_label("name", &self.name)?;
        let host = self
            .matcher
            .host
            .as_deref()
            .map(validate_host)
            .transpose()?;
        if let Some(p) = &self.matcher.path_prefix {
            check_path("match.path_prefix", p)?;
        }
        if let Some(p) = &self.matcher.path {
            check_path("match.path", p)?;
        }
        if self.matcher.path.is_some() && self.matcher.path_prefix.is_some() {
            return Err(ModelError::invalid(
                "match",
                "give path or path_prefix, not both",
            ));
        }
        if let Some(m) = self
            .matcher
            .methods
            .iter()
            .find(|m| !METHODS.contains(&m.as_str()))
        {
            return Err(ModelError::invalid(
                "match.methods",
                format!("{m:?} is not an HTTP method (use uppercase: GET, POST, ...)"),
            ));
        }
        for (name, value) in &self.matcher.headers {
            if !is_header_name(name) || !is_header_value(value) {
                return Err(ModelError::invalid(
                    "match.headers",
                    format!("{name:?}: not a valid header name and value"),
                ));
            }
        }
        if self.strip_prefix && self.matcher.path_prefix.is_none() {
            return Err(ModelError::invalid(
                "strip_prefix",
                "needs match.path_prefix",
            ));
        }
        check_headers("request_headers", &self.request_headers)?;
        check_headers("response_headers", &self.response_headers)?;
        let target = self.validate_target()?;
        let lb = self.validate_lb()?;
        let timeouts = self.validate_timeouts()?;
        let retries = self.retries.unwrap_or(2);
        if retries > 10 {
            return Err(ModelError::invalid("retries", "at most 10"));
        }
        let protocol = match self.protocol.as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some("grpc") => UpstreamProtocol::Grpc,
            Some(other) => {
                return Err(ModelError::invalid(
                    "protocol",
                    format!("{other:?}: use http1, http2 or grpc"),
                ));
            }
        };
        Ok(Route {
            spec: self.clone(),
            host,
            target,
            lb,
            timeouts,
            retries,
            protocol,
        })
    }

    fn validate_target(&self) -> Result<Target, ModelError> {
        let t = &self.target;
        let service = [&t.product, &t.env, &t.job]
            .iter()
            .filter(|f| f.is_some())
            .count();
        match (service, t.addresses.is_empty()) {
            (3, true) => {
                let port = t.port.clone().unwrap_or_else(|| "http".into());
                for (field, value) in [
                    ("target.product", &t.product),
                    ("target.env", &t.env),
                    ("target.job", &t.job),
                ] {
                    validate_label(field, value.as_deref().unwrap_or_default())?;
                }
                validate_label("target.port", &port)?;
                Ok(Target::Service {
                    product: t.product.clone().unwrap_or_default(),
                    env: t.env.clone().unwrap_or_default(),
                    job: t.job.clone().unwrap_or_default(),
                    port,
                })
            }
            (0, false) if t.port.is_none() => {
                let addrs = t
                    .addresses
                    .iter()
                    .map(|a| {
                        a.parse::<SocketAddr>().map_err(|_| {
                            ModelError::invalid("target.addresses", format!("{a:?} is not IP:PORT"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Target::Static(addrs))
            }
            _ => Err(ModelError::invalid(
                "target",
                "give product, env and job (and optionally port), or addresses: [\"IP:PORT\", ...]",
            )),
        }
    }

    fn validate_lb(&self) -> Result<LbPolicy, ModelError> {
        let lb = match self.lb.as_deref() {
            None | Some("round_robin") => LbPolicy::RoundRobin,
            Some("weighted") => LbPolicy::Weighted,
            Some("least_request") => LbPolicy::LeastRequest,
            Some("hash") => {
                let on = self
                    .hash_on
                    .as_deref()
                    .ok_or_else(|| ModelError::invalid("hash_on", "lb = \"hash\" needs hash_on"))?;
                let hash = if let Some(h) = on.strip_prefix("header:") {
                    if !is_header_name(h) {
                        return Err(ModelError::invalid(
                            "hash_on",
                            format!("{h:?} is not a header name"),
                        ));
                    }
                    HashOn::Header(h.to_ascii_lowercase())
                } else if let Some(c) = on.strip_prefix("cookie:") {
                    if c.is_empty() || !is_header_name(c) {
                        return Err(ModelError::invalid(
                            "hash_on",
                            format!("{c:?} is not a cookie name"),
                        ));
                    }
                    HashOn::Cookie(c.to_owned())
                } else if on == "client_ip" {
                    HashOn::ClientIp
                } else if on == "sticky_cookie" {
                    HashOn::StickyCookie
                } else {
                    return Err(ModelError::invalid(
                        "hash_on",
                        format!(
                            "{on:?}: use header:<name>, cookie:<name>, client_ip or sticky_cookie"
                        ),
                    ));
                };
                return Ok(LbPolicy::Hash(hash));
            }
            Some(other) => {
                return Err(ModelError::invalid(
                    "lb",
                    format!("{other:?}: use round_robin, weighted, least_request or hash"),
                ));
            }
        };
        if self.hash_on.is_some() {
            return Err(ModelError::invalid("hash_on", "only with lb = \"hash\""));
        }
        Ok(lb)
    }

    fn validate_timeouts(&self) -> Result<Timeouts, ModelError> {
        let mut t = Timeouts::default();
        let raw = &self.timeouts;
        let get = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(|v| parse_duration(&format!("timeouts.{field}"), v))
                .transpose()
        };
        if let Some(d) = get("connect", &raw.connect)? {
            t.connect = d;
        }
        if let Some(d) = get("header", &raw.header)? {
            t.header = d;
        }
        if let Some(d) = get("idle", &raw.idle)? {
            t.idle = d;
        }
        t.total = get("total", &raw.total)?;
        for (field, d) in [
            ("connect", Some(t.connect)),
            ("header", Some(t.header)),
            ("idle", Some(t.idle)),
            ("total", t.total),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(ModelError::invalid(
                    format!("timeouts.{field}"),
                    "must be more than 0",
                ));
            }
        }
        Ok(t)
    }
}

fn validate_host(host: &str) -> Result<String, ModelError> {
    let lower = host.to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    if rest.is_empty() {
        return Err(ModelError::invalid("match.host", "empty host"));
    }
    for label in rest.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ModelError::invalid(
                "match.host",
                format!("{host:?} is not a host name (or *.domain)"),
            ));
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Result<Route, String> {
        let spec: RouteSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn brief_route_is_valid() {
        let r = route(r#"{"name": "users-v1", "match": {"host": "api.example.com", "path_prefix": "/v1/users"},
            "target": {"product": "shop", "env": "prod", "job": "users-api", "port": "http"},
            "lb": "least_request", "strip_prefix": false}"#)
        .unwrap();
        assert_eq!(r.lb, LbPolicy::LeastRequest);
        assert_eq!(r.timeouts, Timeouts::default());
        let back: RouteSpec =
            serde_json::from_str(&serde_json::to_string(&r.spec).unwrap()).unwrap();
        assert_eq!(back, r.spec);
    }

    #[test]
    fn refuses_bad_routes() {
        for json in [
            r#"{"name": "Bad", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}}"#,
            r#"{"name": "a", "match": {"host": "a b"}, "target": {"addresses": ["127.0.0.1:80"]}}"#,
            r#"{"name": "a", "match": {"path_prefix": "v1"}, "target": {"addresses": ["127.0.0.1:80"]}}"#,
            r#"{"name": "a", "match": {"methods": ["get"]}, "target": {"addresses": ["127.0.0.1:80"]}}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["localhost:80"]}}"#,
            r#"{"name": "a", "match": {}, "target": {"product": "p", "env": "e"}}"#,
            r#"{"name": "a", "match": {}, "target": {}}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "lb": "random"}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "lb": "hash"}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "lb": "hash", "hash_on": "body"}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "strip_prefix": true}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "timeouts": {"idle": "0s"}}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "protocol": "h3"}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "request_headers": {"add": {"x y": "1"}}}"#,
            r#"{"name": "a", "match": {}, "target": {"addresses": ["127.0.0.1:80"]}, "extra": 1}"#,
        ] {
            assert!(route(json).is_err(), "{json} should be refused");
        }
    }
}
