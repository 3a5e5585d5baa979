//! Gateway metrics: plain atomics on the hot path, encoded as OpenMetrics
//! text on scrape. Labels are route names and endpoint addresses only.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::table::RouteTable;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Per-route counters; they survive route-table rebuilds.
#[derive(Debug, Default)]
pub(crate) struct RouteMetrics {
    /// Responses by status class 1xx..5xx.
    classes: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl RouteMetrics {
    /// Records one response: its status and the time to its head.
    pub(crate) fn observe(&self, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.classes[class].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }
}

/// Gateway-wide metrics and the scrape encoder.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Arc<ArcSwap<RouteTable>>,
    pub(crate) connections: AtomicI64,
    pub(crate) unrouted: AtomicU64,
    pub(crate) log_dropped: AtomicU64,
}

impl GatewayMetrics {
    pub(crate) fn new(table: Arc<ArcSwap<RouteTable>>) -> Self {
        GatewayMetrics {
            inner: Arc::new(Inner {
                table,
                connections: AtomicI64::new(0),
                unrouted: AtomicU64::new(0),
                log_dropped: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.inner.connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.inner.connections.fetch_sub(1, Relaxed);
    }

    pub(crate) fn unrouted(&self) {
        self.inner.unrouted.fetch_add(1, Relaxed);
    }

    pub(crate) fn log_dropped(&self) {
        self.inner.log_dropped.fetch_add(1, Relaxed);
    }

    /// Appends the gateway's metrics to `out` (OpenMetrics text, no `# EOF`).
    pub fn encode(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = self.write(out);
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let inner = &self.inner;
        let table = inner.table.load();
        writeln!(
            out,
            "# HELP glass_gateway_connections Open client connections.\n# TYPE glass_gateway_connections gauge"
        )?;
        writeln!(
            out,
            "glass_gateway_connections {}",
            inner.connections.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glass_gateway_unrouted Requests no route matched.\n# TYPE glass_gateway_unrouted counter"
        )?;
        writeln!(
            out,
            "glass_gateway_unrouted_total {}",
            inner.unrouted.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glass_gateway_access_log_dropped Access log lines dropped because the writer fell behind.\n# TYPE glass_gateway_access_log_dropped counter"
        )?;
        writeln!(
            out,
            "glass_gateway_access_log_dropped_total {}",
            inner.log_dropped.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glass_gateway_requests Responses by route and status class.\n# TYPE glass_gateway_requests counter"
        )?;
        for e in &table.entries {
            for (i, c) in e.metrics.classes.iter().enumerate() {
                writeln!(
                    out,
                    "glass_gateway_requests_total{{route=\"{}\",class=\"{}xx\"}} {}",
                    e.name,
                    i + 1,
                    c.load(Relaxed)
                )?;
            }
        }
        writeln!(
            out,
            "# HELP glass_gateway_request_duration_seconds Time to the response head, by route.\n# TYPE glass_gateway_request_duration_seconds histogram"
        )?;
        for e in &table.entries {
            let m = &e.metrics;
            let mut cumulative = 0;
            for (le, b) in BUCKETS.iter().zip(&m.buckets) {
                cumulative += b.load(Relaxed);
                writeln!(
                    out,
                    "glass_gateway_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                    e.name
                )?;
            }
            let count = m.count.load(Relaxed);
            writeln!(
                out,
                "glass_gateway_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
                e.name
            )?;
            writeln!(
                out,
                "glass_gateway_request_duration_seconds_count{{route=\"{}\"}} {count}",
                e.name
            )?;
            writeln!(
                out,
                "glass_gateway_request_duration_seconds_sum{{route=\"{}\"}} {}",
                e.name,
                m.sum_us.load(Relaxed) as f64 / 1e6
            )?;
        }
        writeln!(
            out,
            "# HELP glass_gateway_retries Retried upstream attempts by route.\n# TYPE glass_gateway_retries counter"
        )?;
        for e in &table.entries {
            writeln!(
                out,
                "glass_gateway_retries_total{{route=\"{}\"}} {}",
                e.name,
                e.metrics.retries.load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP glass_gateway_upstream_requests Requests sent to an upstream endpoint.\n# TYPE glass_gateway_upstream_requests counter"
        )?;
        for (e, ep) in table.endpoints() {
            writeln!(
                out,
                "glass_gateway_upstream_requests_total{{route=\"{}\",upstream=\"{}\"}} {}",
                e.name,
                ep.addr,
                ep.state.requests.load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP glass_gateway_upstream_errors Failed upstream attempts (connect errors, resets, 5xx).\n# TYPE glass_gateway_upstream_errors counter"
        )?;
        for (e, ep) in table.endpoints() {
            writeln!(
                out,
                "glass_gateway_upstream_errors_total{{route=\"{}\",upstream=\"{}\"}} {}",
                e.name,
                ep.addr,
                ep.state.errors.load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP glass_gateway_upstream_ejections Outlier ejections of an upstream endpoint.\n# TYPE glass_gateway_upstream_ejections counter"
        )?;
        for (e, ep) in table.endpoints() {
            writeln!(
                out,
                "glass_gateway_upstream_ejections_total{{route=\"{}\",upstream=\"{}\"}} {}",
                e.name,
                ep.addr,
                ep.state.ejections_total.load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP glass_gateway_upstream_active Requests in flight to an upstream endpoint.\n# TYPE glass_gateway_upstream_active gauge"
        )?;
        for (e, ep) in table.endpoints() {
            writeln!(
                out,
                "glass_gateway_upstream_active{{route=\"{}\",upstream=\"{}\"}} {}",
                e.name,
                ep.addr,
                ep.state.active.load(Relaxed)
            )?;
        }
        Ok(())
    }
}
