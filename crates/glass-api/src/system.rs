//! Health of the node, provider status, the OpenAPI document, 404s.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use glass_catalog::ProviderStatus;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Problem;
use crate::{ApiError, ApiState};

/// Liveness and readiness of this node.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeHealth {
    /// `ok` when the store answers, else `unavailable`.
    status: &'static str,
    /// The zone of this node.
    zone: String,
    /// The revision of the catalog snapshot this node serves.
    revision: i64,
    /// Instances in the snapshot.
    instances: usize,
}

/// Liveness/readiness: 200 when the store answers, 503 otherwise.
#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, body = NodeHealth), (status = 503, body = Problem)))]
pub(crate) async fn health(State(state): State<ApiState>) -> Result<Json<NodeHealth>, ApiError> {
    state
        .catalog
        .store()
        .revision()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let snapshot = state.catalog.snapshots().load();
    Ok(Json(NodeHealth {
        status: "ok",
        zone: state.catalog.zone().to_owned(),
        revision: snapshot.revision,
        instances: snapshot.len(),
    }))
}

/// The file provider's files and their last outcome.
#[utoipa::path(get, path = "/api/v1/providers", tag = "system", responses((status = 200, description = "one entry per provider file")))]
pub(crate) async fn providers(State(state): State<ApiState>) -> Json<Vec<ProviderStatus>> {
    Json(
        state
            .providers
            .as_ref()
            .map(|p| p.statuses())
            .unwrap_or_default(),
    )
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI document")))]
pub(crate) async fn openapi() -> Response {
    (
        [("content-type", "application/json")],
        crate::openapi_json(),
    )
        .into_response()
}

/// Anything that is not a route.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}; see /api/v1/openapi.json",
        uri.path()
    ))
}
