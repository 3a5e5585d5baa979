//! Wires the DNS server into the node: config, metrics, lifecycle.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use glass_api::{ApiState, MetricsSource};
use glass_catalog::Catalog;
use glass_dns::{DnsConfig, DnsMetrics, DnsServer};

use crate::config::Config;

/// A running DNS server.
pub(crate) struct RunningDns {
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

struct DnsMetricsSource(Arc<DnsMetrics>);

impl MetricsSource for DnsMetricsSource {
    fn encode(&self, out: &mut String) {
        self.0.encode_prometheus(out);
    }
}

/// Binds UDP and TCP on `config.dns_addr` and serves from the catalog snapshot.
pub(crate) async fn start(
    config: &Config,
    catalog: &Catalog,
    state: &ApiState,
) -> anyhow::Result<RunningDns> {
    let dns_config = DnsConfig {
        domain: config.dns_domain.clone(),
        ttl: config.dns_ttl,
        negative_ttl: config.dns_negative_ttl,
        allow_warning: config.dns_allow_warning,
        local_zone: config.zone.clone(),
    };
    let metrics = Arc::new(DnsMetrics::new());
    state
        .metrics
        .add_source(Arc::new(DnsMetricsSource(metrics.clone())));
    let server = DnsServer::bind(
        config.dns_addr,
        dns_config,
        catalog.snapshots().clone(),
        metrics,
    )
    .with_context(|| format!("cannot serve DNS on {} (--dns-addr)", config.dns_addr))?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Ok(RunningDns { addr, stop, task })
}

impl RunningDns {
    /// Stops serving and waits for the server's tasks to end.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(err)) => tracing::warn!(error = %err, "The DNS server failed"),
            Err(err) => tracing::warn!(error = %err, "The DNS server task failed"),
            Ok(Ok(())) => {}
        }
    }
}
