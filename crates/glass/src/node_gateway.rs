//! Wires the gateway into the node: binding, metrics, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use glass_api::{ApiState, MetricsSource};
use glass_catalog::Catalog;
use glass_gateway::{Gateway, GatewayMetrics};

use crate::config::Config;

/// A running gateway.
pub(crate) struct RunningGateway {
    pub(crate) addr: SocketAddr,
    pub(crate) tls_addr: Option<SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

struct GatewayMetricsSource(GatewayMetrics);

impl MetricsSource for GatewayMetricsSource {
    fn encode(&self, out: &mut String) {
        self.0.encode(out);
    }
}

/// Binds the gateway listeners and serves from the catalog snapshot.
pub(crate) fn start(
    config: &Config,
    catalog: &Catalog,
    state: &ApiState,
) -> anyhow::Result<RunningGateway> {
    let gateway =
        Gateway::bind(config.gateway.clone(), catalog.snapshots().clone()).with_context(|| {
            format!(
                "cannot start the gateway on {} (--gateway-addr)",
                config.gateway.addr
            )
        })?;
    let addr = gateway.local_addr()?;
    let tls_addr = gateway.tls_local_addr();
    state
        .metrics
        .add_source(Arc::new(GatewayMetricsSource(gateway.metrics())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gateway.run(async move {
        let _ = stopped.await;
    }));
    Ok(RunningGateway {
        addr,
        tls_addr,
        stop,
        task,
    })
}

impl RunningGateway {
    /// Stops accepting and drains open connections (bounded by the drain timeout).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(err)) => tracing::warn!(error = %err, "The gateway failed"),
            Err(err) => tracing::warn!(error = %err, "The gateway task failed"),
            Ok(Ok(())) => {}
        }
    }
}
