//! Configuration in two stages: the raw TOML file (unknown keys refused,
//! spans kept for messages) merged under flags and `GLASS_*` variables,
//! then validated into a typed [`Config`] that binds nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use glass_model::validate_label;
use serde::Deserialize;
use toml::Spanned;

use crate::cli::ServeArgs;

/// A configuration error, already formatted as `file:line:key: message`
/// (or `--flag: message`). The binary exits 64 on it.
#[derive(Debug)]
pub(crate) struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<Spanned<PathBuf>>,
    api_addr: Option<Spanned<String>>,
    dns_addr: Option<Spanned<String>>,
    gateway_addr: Option<Spanned<String>>,
    gateway: Option<RawGateway>,
    dns_domain: Option<Spanned<String>>,
    zone: Option<Spanned<String>>,
    node_name: Option<Spanned<String>>,
    providers_dir: Option<Spanned<PathBuf>>,
    dev: Option<bool>,
    log_level: Option<String>,
    log_json: Option<bool>,
    dns: Option<RawDns>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    tls_addr: Option<Spanned<String>>,
    tls_dir: Option<PathBuf>,
    trusted_proxies: Option<Spanned<Vec<String>>>,
    access_log: Option<String>,
    header_read_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<u64>,
    max_requests_per_endpoint: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    ttl: Option<Spanned<u32>>,
    negative_ttl: Option<Spanned<u32>>,
    allow_warning: Option<bool>,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) source: Option<PathBuf>,
    pub(crate) data_dir: PathBuf,
    pub(crate) api_addr: SocketAddr,
    pub(crate) dns_addr: SocketAddr,
    pub(crate) gateway: glass_gateway::GatewayConfig,
    pub(crate) dns_domain: String,
    pub(crate) dns_ttl: u32,
    pub(crate) dns_negative_ttl: u32,
    pub(crate) dns_allow_warning: bool,
    pub(crate) zone: String,
    pub(crate) node_name: String,
    pub(crate) providers_dir: Option<PathBuf>,
    pub(crate) dev: bool,
    pub(crate) log_level: String,
    pub(crate) log_json: bool,
}

/// Where a value came from, for error messages.
struct Origin<'a> {
    file: Option<(&'a Path, &'a str)>,
}

impl Origin<'_> {
    /// `file:line:key: message` for a file value, `--flag: message` otherwise.
    fn error(
        &self,
        key: &str,
        span: Option<std::ops::Range<usize>>,
        message: impl std::fmt::Display,
    ) -> ConfigError {
        match (self.file, span) {
            (Some((path, text)), Some(span)) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                ConfigError(format!("{}:{line}:{key}: {message}", path.display()))
            }
            _ => ConfigError(format!(
                "--{} (GLASS_{}): {message}",
                key.replace('_', "-"),
                key.to_uppercase()
            )),
        }
    }
}

/// Takes the flag/variable when given, else the file's value with its span.
fn pick<T: Clone>(
    flag: Option<T>,
    file: Option<Spanned<T>>,
) -> Option<(T, Option<std::ops::Range<usize>>)> {
    match (flag, file) {
        (Some(v), _) => Some((v, None)),
        (None, Some(s)) => Some((s.get_ref().clone(), Some(s.span()))),
        (None, None) => None,
    }
}

impl Config {
    /// Reads the config file (if any), merges flags and variables over it, validates.
    pub(crate) fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let default_file = PathBuf::from("glass.toml");
        let path = args
            .config
            .clone()
            .or_else(|| default_file.exists().then_some(default_file));
        let text = match &path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", p.display())))?,
            None => String::new(),
        };
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            let p = path.as_deref().unwrap_or(Path::new("glass.toml"));
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError(format!("{}:{line}: {}", p.display(), e.message().trim()))
        })?;
        let origin = Origin {
            file: path.as_deref().map(|p| (p, text.as_str())),
        };
        Self::validate(args, raw, &origin, path.clone())
    }

    fn validate(
        args: &ServeArgs,
        raw: RawConfig,
        origin: &Origin<'_>,
        source: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let addr = |key: &str,
                    flag: &Option<String>,
                    file: Option<Spanned<String>>,
                    default: &str| {
            let (text, span) = pick(flag.clone(), file).unwrap_or((default.to_owned(), None));
            text.parse::<SocketAddr>()
                .map_err(|_| origin.error(key, span, format!("{text:?} is not an address; write IP:PORT, e.g. 127.0.0.1:8500 (port 0 picks a free port)")))
        };
        let api_addr = addr("api_addr", &args.api_addr, raw.api_addr, "127.0.0.1:8500")?;
        let dns_addr = addr("dns_addr", &args.dns_addr, raw.dns_addr, "127.0.0.1:8600")?;
        let gateway_addr = addr(
            "gateway_addr",
            &args.gateway_addr,
            raw.gateway_addr,
            "0.0.0.0:8080",
        )?;
        let raw_gateway = raw.gateway.unwrap_or_default();
        let tls_addr = match pick(args.gateway_tls_addr.clone(), raw_gateway.tls_addr.clone()) {
            Some((text, span)) => Some(text.parse::<SocketAddr>().map_err(|_| {
                origin.error(
                    "gateway.tls_addr",
                    span,
                    format!("{text:?} is not an address; write IP:PORT"),
                )
            })?),
            None => None,
        };
        let (zone, span) = pick(args.zone.clone(), raw.zone).unwrap_or(("local".into(), None));
        validate_label("zone", &zone).map_err(|e| origin.error("zone", span.clone(), e))?;
        if zone == "any" {
            return Err(origin.error(
                "zone",
                span,
                "\"any\" is reserved for queries across all zones",
            ));
        }
        let (domain, span) =
            pick(args.dns_domain.clone(), raw.dns_domain).unwrap_or(("glass.".into(), None));
        let dns_domain =
            normalize_domain(&domain).map_err(|e| origin.error("dns_domain", span, e))?;
        let node_name = match pick(args.node_name.clone(), raw.node_name) {
            Some((name, span)) => {
                validate_label("node_name", &name)
                    .map_err(|e| origin.error("node_name", span, e))?;
                name
            }
            None => default_node_name(),
        };
        let dns = raw.dns.unwrap_or_default();
        let gateway = gateway_config(args, raw_gateway, origin, gateway_addr, tls_addr, &zone)?;
        let ttl = |key: &str, value: Option<Spanned<u32>>, default: u32| match value {
            Some(v) if *v.get_ref() > 86_400 => {
                Err(origin.error(key, Some(v.span()), "at most 86400 seconds"))
            }
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        };
        Ok(Config {
            source,
            data_dir: pick(args.data_dir.clone(), raw.data_dir)
                .map(|v| v.0)
                .unwrap_or_else(|| "glass-data".into()),
            api_addr,
            dns_addr,
            gateway,
            dns_domain,
            dns_ttl: ttl("dns.ttl", dns.ttl, 5)?,
            dns_negative_ttl: ttl("dns.negative_ttl", dns.negative_ttl, 5)?,
            dns_allow_warning: dns.allow_warning.unwrap_or(false),
            zone,
            node_name,
            providers_dir: pick(args.providers_dir.clone(), raw.providers_dir).map(|v| v.0),
            dev: args.dev || raw.dev.unwrap_or(false),
            log_level: args
                .log_level
                .clone()
                .or(raw.log_level)
                .unwrap_or_else(|| "info".into()),
            log_json: args.log_json || raw.log_json.unwrap_or(false),
        })
    }

    /// The config file's name, or "defaults" when there was none.
    pub(crate) fn source_name(&self) -> String {
        self.source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration (no file)".into())
    }
}

/// The gateway part of the configuration.
fn gateway_config(
    args: &ServeArgs,
    raw: RawGateway,
    origin: &Origin<'_>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    zone: &str,
) -> Result<glass_gateway::GatewayConfig, ConfigError> {
    let defaults = glass_gateway::GatewayConfig::default();
    let tls_dir = args.tls_dir.clone().or(raw.tls_dir);
    if tls_addr.is_some() != tls_dir.is_some() {
        return Err(origin.error(
            "gateway.tls_addr",
            None,
            "TLS needs both gateway_tls_addr and tls_dir",
        ));
    }
    let mut trusted_proxies = Vec::new();
    if let Some(list) = raw.trusted_proxies {
        let span = list.span();
        for text in list.into_inner() {
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    origin.error(
                        "gateway.trusted_proxies",
                        Some(span.clone()),
                        format!("{text:?} is not an IP or CIDR"),
                    )
                })?;
            trusted_proxies.push(net);
        }
    }
    let duration =
        |key: &str, value: Option<Spanned<String>>, default: std::time::Duration| match value {
            Some(v) => glass_model::parse_duration(key, v.get_ref())
                .map_err(|e| origin.error(key, Some(v.span()), e)),
            None => Ok(default),
        };
    let access_log = match args.access_log.clone().or(raw.access_log).as_deref() {
        Some("off") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => defaults.access_log.clone(),
    };
    Ok(glass_gateway::GatewayConfig {
        addr,
        tls_addr,
        tls_dir,
        trusted_proxies,
        local_zone: zone.to_owned(),
        header_read_timeout: duration(
            "gateway.header_read_timeout",
            raw.header_read_timeout,
            defaults.header_read_timeout,
        )?,
        drain_timeout: duration(
            "gateway.drain_timeout",
            raw.drain_timeout,
            defaults.drain_timeout,
        )?,
        max_header_bytes: raw.max_header_bytes.unwrap_or(defaults.max_header_bytes),
        max_headers: raw.max_headers.unwrap_or(defaults.max_headers),
        max_body_bytes: raw.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        max_requests_per_endpoint: raw
            .max_requests_per_endpoint
            .unwrap_or(defaults.max_requests_per_endpoint),
        access_log,
    })
}

/// `Glass` / `glass.` / `svc.example.com` → lowercase with a trailing dot.
fn normalize_domain(domain: &str) -> Result<String, String> {
    let lower = domain.trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() {
        return Err("the DNS domain must not be empty (and the root is not allowed)".into());
    }
    for label in lower.split('.') {
        validate_label("dns_domain", label).map_err(|e| e.to_string())?;
    }
    Ok(format!("{lower}."))
}

/// The host name made DNS-safe, or `node` when there is none.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let label: String = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_owned();
    if label.is_empty() {
        "node".into()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, args: ServeArgs) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("glass.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&ServeArgs {
            config: Some(path),
            ..args
        })
        .map_err(|e| {
            e.to_string().replace(
                &dir.path().join("glass.toml").display().to_string(),
                "glass.toml",
            )
        })
    }

    fn check_err(toml: &str, expected: &str) {
        let err = load(toml, ServeArgs::default()).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{err:?} should start with {expected:?}"
        );
    }

    #[test]
    fn config_errors_name_file_line_and_key() {
        check_err(
            "zone = \"eu1\"\napi_addr = \"nope\"\n",
            "glass.toml:2:api_addr: \"nope\" is not an address",
        );
        check_err("\n\nbogus = 1\n", "glass.toml:3: unknown field `bogus`");
        check_err("zone = \"EU\"\n", "glass.toml:1:zone: zone:");
        check_err("zone = \"any\"\n", "glass.toml:1:zone:");
        check_err("dns_domain = \"a..b\"\n", "glass.toml:1:dns_domain:");
        check_err("[dns]\nttl = 100000\n", "glass.toml:2:dns.ttl: at most");
        check_err("dev = \"yes\"\n", "glass.toml:1: invalid type");
        check_err("zone = \n", "glass.toml:1:");
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = ServeArgs {
            zone: Some("eu2".into()),
            ..ServeArgs::default()
        };
        let c = load("zone = \"eu1\"\ndns_domain = \"Svc.Example\"\n", args).unwrap();
        assert_eq!(c.zone, "eu2");
        assert_eq!(c.dns_domain, "svc.example.");
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:8500");
        let err = Config::load(&ServeArgs {
            api_addr: Some("x".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("--api-addr (GLASS_API_ADDR): "),
            "{err}"
        );
    }
}
