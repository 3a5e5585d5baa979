//! What the gateway is told at start; every limit here is documented in
//! `docs/gateway.md`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Gateway settings; the defaults are the documented ones.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Cleartext listener: HTTP/1.1 and h2c (prior knowledge).
    pub addr: SocketAddr,
    /// TLS listener (ALPN h2 / http/1.1), when certificates are configured.
    pub tls_addr: Option<SocketAddr>,
    /// Directory of `<name>.crt` + `<name>.key` PEM pairs, chosen by SNI; reloaded on change.
    pub tls_dir: Option<PathBuf>,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// This node's zone: its instances are preferred.
    pub local_zone: String,
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers (431 beyond).
    pub max_headers: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// Concurrent requests one upstream endpoint may have before the breaker answers 503.
    pub max_requests_per_endpoint: u32,
    /// How long a shutdown waits for open requests and connections.
    pub drain_timeout: Duration,
    /// Where access logs go: `None` off, `Some("-")` stdout, else a file.
    pub access_log: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls_addr: None,
            tls_dir: None,
            trusted_proxies: Vec::new(),
            local_zone: "local".into(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024 * 1024,
            max_requests_per_endpoint: 1024,
            drain_timeout: Duration::from_secs(30),
            access_log: Some(PathBuf::from("-")),
        }
    }
}

impl GatewayConfig {
    /// Whether forwarding headers from `peer` are trusted.
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}
