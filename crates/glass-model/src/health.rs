//! Health checks as users declare them, and the health an instance has.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{HumanDuration, ModelError, parse_duration, validate_label};

/// The health of an instance, from best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The check succeeds; the instance gets traffic.
    Passing,
    /// The check answers but reports trouble (HTTP 429); traffic only where configured.
    Warning,
    /// The check fails or has not succeeded yet; no traffic.
    Critical,
}

impl HealthStatus {
    /// The lowercase name used in JSON, filters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }
}

/// The last known health of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Current status.
    pub status: HealthStatus,
    /// What the last check said (an HTTP status line, an error, ...).
    pub output: String,
    /// When the status last changed, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET http://<address>:<port><path>`: 2xx passing, 429 warning, else critical.
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Name of the instance port to probe.
        port: String,
    },
    /// A TCP connect to the port: connected is passing.
    Tcp {
        /// Name of the instance port to probe.
        port: String,
    },
    /// `grpc.health.v1.Health/Check` for `service` ("" is the whole server).
    Grpc {
        /// The gRPC service name to ask about.
        service: String,
        /// Name of the instance port to probe.
        port: String,
    },
    /// The instance reports itself: a heartbeat within every `ttl` keeps it passing.
    Ttl {
        /// How long a heartbeat keeps the instance passing.
        ttl: Duration,
    },
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// What is probed.
    pub kind: CheckKind,
    /// Time between probes (not used by TTL checks).
    pub interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// Remove the instance once it has been critical this long.
    pub deregister_critical_after: Option<Duration>,
}

/// A check exactly as a user writes it; exactly one of `http`, `tcp`,
/// `grpc` and `ttl` names its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// HTTP path to `GET`, e.g. `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `true` for a TCP connect check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<bool>,
    /// gRPC health service name to check ("" for the whole server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// TTL of a heartbeat check, e.g. `"10s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Instance port to probe; defaults to the only port, or the one named like the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Time between probes (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Probe timeout (default `2s`, at most the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Deregister after being critical this long, e.g. `"1m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_after: Option<String>,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl CheckSpec {
    /// Validates a raw check against the instance's port names.
    pub fn from_raw<'a>(
        raw: &RawCheck,
        ports: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Self, ModelError> {
        let kinds = [
            raw.http.is_some(),
            raw.tcp.is_some(),
            raw.grpc.is_some(),
            raw.ttl.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ModelError::invalid(
                "check",
                "name exactly one kind: \"http\", \"tcp\", \"grpc\" or \"ttl\"",
            ));
        }
        let field_duration = |name: &str, value: &Option<String>, default: Duration| {
            value
                .as_deref()
                .map(|v| parse_duration(&format!("check.{name}"), v))
                .transpose()
                .map(|d| d.unwrap_or(default))
        };
        let interval = field_duration("interval", &raw.interval, DEFAULT_INTERVAL)?;
        if interval < MIN_INTERVAL {
            return Err(ModelError::invalid(
                "check.interval",
                "must be at least 100ms",
            ));
        }
        let timeout = field_duration("timeout", &raw.timeout, DEFAULT_TIMEOUT.min(interval))?;
        if timeout.is_zero() || timeout > interval {
            return Err(ModelError::invalid(
                "check.timeout",
                "must be more than 0 and at most the interval",
            ));
        }
        let deregister_critical_after = raw
            .deregister_critical_after
            .as_deref()
            .map(|v| parse_duration("check.deregister_critical_after", v))
            .transpose()?;
        let port = |default: &str| resolve_port(raw.port.as_deref(), default, ports.clone());
        let kind = if let Some(path) = &raw.http {
            if !path.starts_with('/') || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
                return Err(ModelError::invalid(
                    "check.http",
                    format!("{path:?} must be a path starting with '/' without spaces"),
                ));
            }
            CheckKind::Http {
                path: path.clone(),
                port: port("http")?,
            }
        } else if let Some(tcp) = raw.tcp {
            if !tcp {
                return Err(ModelError::invalid(
                    "check.tcp",
                    "must be true (or left out)",
                ));
            }
            CheckKind::Tcp { port: port("tcp")? }
        } else if let Some(service) = &raw.grpc {
            CheckKind::Grpc {
                service: service.clone(),
                port: port("grpc")?,
            }
        } else {
            let ttl = parse_duration("check.ttl", raw.ttl.as_deref().unwrap_or_default())?;
            if ttl < MIN_INTERVAL {
                return Err(ModelError::invalid("check.ttl", "must be at least 100ms"));
            }
            if raw.port.is_some() {
                return Err(ModelError::invalid(
                    "check.port",
                    "a ttl check probes no port",
                ));
            }
            CheckKind::Ttl { ttl }
        };
        Ok(CheckSpec {
            kind,
            interval,
            timeout,
            deregister_critical_after,
        })
    }

    /// The check in the form a user writes it.
    pub fn to_raw(&self) -> RawCheck {
        let d = |d: Duration| Some(text(HumanDuration(d)));
        let mut raw = RawCheck {
            interval: d(self.interval),
            timeout: d(self.timeout),
            deregister_critical_after: self.deregister_critical_after.and_then(d),
            ..RawCheck::default()
        };
        match &self.kind {
            CheckKind::Http { path, port } => {
                raw.http = Some(path.clone());
                raw.port = Some(port.clone());
            }
            CheckKind::Tcp { port } => {
                raw.tcp = Some(true);
                raw.port = Some(port.clone());
            }
            CheckKind::Grpc { service, port } => {
                raw.grpc = Some(service.clone());
                raw.port = Some(port.clone());
            }
            CheckKind::Ttl { ttl } => {
                raw.ttl = d(*ttl);
                raw.interval = None;
                raw.timeout = None;
            }
        }
        raw
    }
}

fn text(d: HumanDuration) -> String {
    serde_json::to_value(d)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn resolve_port<'a>(
    named: Option<&str>,
    default: &str,
    mut ports: impl Iterator<Item = &'a str> + Clone,
) -> Result<String, ModelError> {
    if let Some(name) = named {
        validate_label("check.port", name)?;
        return match ports.any(|p| p == name) {
            true => Ok(name.to_owned()),
            false => Err(ModelError::invalid(
                "check.port",
                format!("the instance has no port named {name:?}"),
            )),
        };
    }
    let all: Vec<&str> = ports.collect();
    match all.as_slice() {
        [only] => Ok((*only).to_owned()),
        _ if all.contains(&default) => Ok(default.to_owned()),
        _ => Err(ModelError::invalid(
            "check.port",
            "the instance has several ports; say which one to probe",
        )),
    }
}

impl Serialize for CheckSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(s)
    }
}

impl<'de> Deserialize<'de> for CheckSpec {
    /// Reads a check that was validated before it was stored; the port
    /// names were checked then, so any port name is accepted here.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawCheck::deserialize(d)?;
        let port = raw.port.clone();
        let ports: Vec<&str> = port.as_deref().into_iter().collect();
        CheckSpec::from_raw(&raw, ports.iter().copied()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, ports: &[&str]) -> Result<CheckSpec, String> {
        let raw: RawCheck = serde_json::from_str(json).map_err(|e| e.to_string())?;
        CheckSpec::from_raw(&raw, ports.iter().copied()).map_err(|e| e.to_string())
    }

    #[test]
    fn http_check_defaults_to_http_port() {
        let c = parse(
            r#"{"http":"/healthz","interval":"5s","timeout":"1s"}"#,
            &["http", "grpc"],
        )
        .unwrap();
        assert_eq!(
            c.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                port: "http".into()
            }
        );
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(1));
    }

    #[test]
    fn rejects_bad_checks() {
        for (json, ports) in [
            (r#"{}"#, &["http"][..]),
            (r#"{"http":"/a","ttl":"5s"}"#, &["http"]),
            (r#"{"http":"healthz"}"#, &["http"]),
            (r#"{"http":"/a","port":"nope"}"#, &["http"]),
            (r#"{"tcp":true}"#, &["a", "b"]),
            (r#"{"ttl":"5"}"#, &[]),
            (r#"{"http":"/a","interval":"1s","timeout":"2s"}"#, &["http"]),
            (r#"{"http":"/a","bogus":1}"#, &["http"]),
        ] {
            assert!(parse(json, ports).is_err(), "{json} should be refused");
        }
    }

    #[test]
    fn stored_form_round_trips() {
        let c = parse(
            r#"{"grpc":"","port":"grpc","deregister_critical_after":"1m"}"#,
            &["grpc"],
        )
        .unwrap();
        let back: CheckSpec = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let t = parse(r#"{"ttl":"10s"}"#, &["http"]).unwrap();
        let back: CheckSpec = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
