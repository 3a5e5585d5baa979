//! `/api/v1/routes`: the gateway's routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use glass_catalog::ApplyReport;
use glass_model::RouteSpec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Problem;
use crate::extract::{JsonBody, Params};
use crate::instances::RevisionResponse;
use crate::{ApiError, ApiState};

/// Every route, by name.
#[utoipa::path(get, path = "/api/v1/routes", tag = "routes", responses((status = 200, body = Vec<RouteSpec>)))]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<RouteSpec>> {
    let snapshot = state.catalog.snapshots().load();
    Json(snapshot.routes().map(|r| r.spec.clone()).collect())
}

/// Create a route (409 if the name exists).
#[utoipa::path(post, path = "/api/v1/routes", tag = "routes", request_body = RouteSpec, security(("bearer" = [])),
    responses((status = 201, body = RevisionResponse), (status = 400, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create(
    State(state): State<ApiState>,
    JsonBody(spec): JsonBody<RouteSpec>,
) -> Result<Response, ApiError> {
    let revision = state.catalog.create_route(&spec).await?;
    Ok((StatusCode::CREATED, Json(RevisionResponse { revision })).into_response())
}

/// One route.
#[utoipa::path(get, path = "/api/v1/routes/{name}", tag = "routes", params(("name" = String, Path)),
    responses((status = 200, body = RouteSpec), (status = 404, body = Problem)))]
pub(crate) async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RouteSpec>, ApiError> {
    let snapshot = state.catalog.snapshots().load();
    let route = snapshot
        .route(&name)
        .ok_or_else(|| ApiError::not_found(format!("no route {name:?}")))?;
    Ok(Json(route.spec.clone()))
}

/// Create or replace a route; the body's name must be the path's.
#[utoipa::path(put, path = "/api/v1/routes/{name}", tag = "routes", request_body = RouteSpec, params(("name" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = RevisionResponse), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn replace(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<RouteSpec>,
) -> Result<Json<RevisionResponse>, ApiError> {
    if spec.name != name {
        return Err(ApiError::bad_request(format!(
            "the body names route {:?} but the path {name:?}",
            spec.name
        )));
    }
    let (_, revision) = state.catalog.put_route(&spec).await?;
    Ok(Json(RevisionResponse { revision }))
}

/// Delete a route.
#[utoipa::path(delete, path = "/api/v1/routes/{name}", tag = "routes", params(("name" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = RevisionResponse), (status = 404, body = Problem)))]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RevisionResponse>, ApiError> {
    let revision = state.catalog.delete_route(&name).await?;
    Ok(Json(RevisionResponse { revision }))
}

/// A set of routes to apply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSet {
    /// The routes as they should be.
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

/// What an apply changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApplyResponse {
    /// `[name, "created" | "updated" | "unchanged" | "deleted"]`, by name.
    #[schema(value_type = Vec<Vec<String>>)]
    changes: Vec<(String, glass_catalog::RouteChange)>,
    /// Store revision after the apply.
    revision: i64,
    /// Whether this was a dry run (nothing written).
    dry_run: bool,
}

/// Apply routes declaratively in one transaction: create or update the
/// given ones; with `prune=true` delete the others; `dry_run=true` only reports.
#[utoipa::path(post, path = "/api/v1/routes/apply", tag = "routes", request_body = RouteSet, security(("bearer" = [])),
    params(("dry_run" = Option<bool>, Query), ("prune" = Option<bool>, Query)),
    responses((status = 200, body = ApplyResponse), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn apply(
    State(state): State<ApiState>,
    uri: Uri,
    JsonBody(set): JsonBody<RouteSet>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let params = Params::parse(&uri, &["dry_run", "prune"])?;
    let dry_run = params.boolean("dry_run")?.unwrap_or(false);
    let prune = params.boolean("prune")?.unwrap_or(false);
    let ApplyReport {
        changes,
        revision,
        dry_run,
    } = state
        .catalog
        .apply_routes(&set.routes, prune, dry_run)
        .await?;
    Ok(Json(ApplyResponse {
        changes,
        revision,
        dry_run,
    }))
}
