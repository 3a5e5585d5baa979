//! `/metrics`: Prometheus (OpenMetrics text) metrics of the API, the
//! catalog, and any other part that registers a [`MetricsSource`].

use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use glass_model::HealthStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::ApiState;

/// Another part of Glass (DNS, gateway) that adds its metrics to `/metrics`.
pub trait MetricsSource: Send + Sync {
    /// Appends OpenMetrics text (`# TYPE` lines and samples, no `# EOF`).
    fn encode(&self, out: &mut String);
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The API's metrics.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    registrations: Family<OutcomeLabels, Counter>,
    watchers: Gauge,
    sources: Mutex<Vec<Arc<dyn MetricsSource>>>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        let registrations = Family::<OutcomeLabels, Counter>::default();
        let watchers = Gauge::default();
        registry.register(
            "glass_api_requests",
            "Control API requests by route and status",
            requests.clone(),
        );
        registry.register(
            "glass_api_request_duration_seconds",
            "Control API request latency",
            durations.clone(),
        );
        registry.register(
            "glass_catalog_registrations",
            "Registrations by outcome (changed or unchanged)",
            registrations.clone(),
        );
        registry.register(
            "glass_api_watchers",
            "Open watch (SSE) streams",
            watchers.clone(),
        );
        ApiMetrics {
            registry,
            requests,
            durations,
            registrations,
            watchers,
            sources: Mutex::new(Vec::new()),
        }
    }
}

impl ApiMetrics {
    /// Adds a source whose metrics are appended to every scrape.
    pub fn add_source(&self, source: Arc<dyn MetricsSource>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    pub(crate) fn registered(&self, changed: bool) {
        let outcome = if changed { "changed" } else { "unchanged" };
        self.registrations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn watchers(&self, delta: i64) {
        self.watchers.inc_by(delta);
    }
}

/// Counts and times every request by its route template (bounded labels).
pub(crate) async fn track(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels = RequestLabels {
        method,
        route: route.clone(),
        status: resp.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .durations
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The scrape: API metrics, catalog gauges, then every source.
pub(crate) async fn scrape(State(state): State<ApiState>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    if let Err(err) =
        prometheus_client::encoding::text::encode_registry(&mut out, &state.metrics.registry)
    {
        tracing::warn!(error = %err, "Could not encode metrics");
    }
    catalog_gauges(&state, &mut out);
    let sources = state
        .metrics
        .sources
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for source in sources {
        source.encode(&mut out);
    }
    out.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn catalog_gauges(state: &ApiState, out: &mut String) {
    use std::fmt::Write;
    let snapshot = state.catalog.snapshots().load();
    let mut counts = [0usize; 3];
    for member in snapshot.members(&Default::default()) {
        counts[member.health.status as usize] += 1;
    }
    let _ = writeln!(
        out,
        "# HELP glass_catalog_instances Registered instances by health status.\n# TYPE glass_catalog_instances gauge"
    );
    for status in [
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ] {
        let _ = writeln!(
            out,
            "glass_catalog_instances{{status=\"{}\"}} {}",
            status.as_str(),
            counts[status as usize]
        );
    }
    let _ = writeln!(
        out,
        "# HELP glass_catalog_revision Store revision of the served snapshot.\n# TYPE glass_catalog_revision gauge\nglass_catalog_revision {}",
        snapshot.revision
    );
}
