//! Pooled upstream clients (HTTP/1.1 keep-alive, h2c), one per protocol
//! and connect timeout, shared by every route that needs the same.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use glass_model::UpstreamProtocol;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;

/// A pooled client.
pub(crate) type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Idle pooled connections per upstream address.
const MAX_IDLE_PER_HOST: usize = 256;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Clients by (HTTP/2?, connect timeout); only route-table builds lock it.
#[derive(Default)]
pub(crate) struct Clients {
    by_kind: Mutex<HashMap<(bool, Duration), UpstreamClient>>,
}

impl Clients {
    /// The client for a protocol and connect timeout.
    pub(crate) fn get(
        &self,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
    ) -> UpstreamClient {
        let h2 = protocol != UpstreamProtocol::Http1;
        let mut map = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((h2, connect_timeout))
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_keepalive(Some(Duration::from_secs(60)));
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                    .http1_writev(false)
                    .http2_only(h2);
                if h2 {
                    builder
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .http2_keep_alive_while_idle(true)
                        .http2_adaptive_window(true);
                }
                builder.build(connector)
            })
            .clone()
    }
}
