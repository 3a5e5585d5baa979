//! The gateway data plane.
//!
//! The life of a request, in phases: `listen` accepts (TCP or TLS with
//! ALPN); `h1_serve` serves HTTP/1.1 requests without a body
//! from the bytes received and hands any other HTTP/1.1 request to
//! hyper's server; `h2_serve` serves HTTP/2 (h2c and TLS) itself, with
//! `hpack` for header compression → `proxy` matches a route in the
//! current [`table::RouteTable`] (built from the catalog snapshot, swapped
//! atomically) → `balance` picks a healthy endpoint → `h1` (bodiless
//! HTTP/1.1 requests, on the gateway's own pool) or `upstream` (hyper's
//! client: bodies, h2c, WebSocket tunnels) forwards over a pooled connection with
//! stream-aware timeouts, retries and outlier ejection → the response
//! streams back through a body that enforces the idle timeout, counts
//! bytes and writes the access log. Every failure becomes a response in
//! one place, [`error::rescue`]. The gateway never touches the store or
//! the catalog: it reads snapshots only.

mod access_log;
mod balance;
mod body;
mod config;
mod endpoint;
mod error;
mod h1;
mod h1_serve;
mod h2_serve;
mod headers;
mod hpack;
mod listen;
mod metrics;
mod proxy;
mod retry;
mod table;
mod tls;
mod upstream;
mod upstream_head;
mod websocket;

pub use config::GatewayConfig;
pub use listen::Gateway;
pub use metrics::GatewayMetrics;
