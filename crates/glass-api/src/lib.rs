//! The control API: `/api/v1` (instances, services, watch, health,
//! providers, OpenAPI) and `/metrics`, as one axum [`Router`].
//!
//! The router is a value built from [`ApiState`]; the binary binds it to a
//! listener, tests call it with `oneshot`. Every error leaves through
//! [`ApiError`] as `application/problem+json`.

mod auth;
mod blocking;
mod error;
mod extract;
mod instances;
mod metrics;
mod openapi;
mod routes;
mod services;
mod system;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, put};
use glass_catalog::{Catalog, FileProvider};

pub use error::{ApiError, Problem};
pub use metrics::{ApiMetrics, MetricsSource};
pub use openapi::openapi_json;

/// The largest request body the API reads (registrations are a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The catalog (write side and snapshot).
    pub catalog: Arc<Catalog>,
    /// Bearer token required for mutations; `None` in dev mode.
    pub token: Option<Arc<str>>,
    /// The file provider, when one is configured.
    pub providers: Option<FileProvider>,
    /// Request metrics and extra metric sources.
    pub metrics: Arc<ApiMetrics>,
}

impl ApiState {
    /// State for `catalog` with a token (or none) and fresh metrics.
    pub fn new(catalog: Arc<Catalog>, token: Option<String>) -> Self {
        ApiState {
            catalog,
            token: token.map(Arc::from),
            providers: None,
            metrics: Arc::new(ApiMetrics::default()),
        }
    }
}

/// The control API router.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/instances", get(instances::list).post(instances::register))
        .route(
            "/instances/{id}",
            get(instances::get_one).delete(instances::deregister),
        )
        .route("/instances/{id}/heartbeat", put(instances::heartbeat))
        .route("/routes", get(routes::list).post(routes::create))
        .route("/routes/apply", axum::routing::post(routes::apply))
        .route(
            "/routes/{name}",
            get(routes::get_one)
                .put(routes::replace)
                .delete(routes::delete),
        )
        .route("/services", get(services::list))
        .route("/services/{address}", get(services::get_one))
        .route("/watch", get(watch::sse))
        .route("/health", get(system::health))
        .route("/providers", get(system::providers))
        .route("/openapi.json", get(system::openapi))
        .fallback(system::not_found);
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics::scrape))
        .fallback(system::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}
