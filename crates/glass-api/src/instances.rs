//! `/api/v1/instances`: register, list, get, deregister, heartbeat.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use glass_model::{InstanceKey, Registration, Revision};
use glass_snapshot::{InstanceFilter, Member};
use serde::Serialize;
use utoipa::ToSchema;

use crate::blocking::Blocking;
use crate::error::Problem;
use crate::extract::{JsonBody, Params};
use crate::{ApiError, ApiState};

/// The answer to a registration.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RegisterResponse {
    /// The instance id (generated when the registration had none).
    id: String,
    /// The store revision that holds the registration.
    revision: Revision,
    /// False when an identical registration existed already.
    changed: bool,
}

/// The answer to a deregistration or heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevisionResponse {
    /// The store revision after the change.
    pub(crate) revision: Revision,
}

/// Register an instance (idempotent for identical registrations).
#[utoipa::path(post, path = "/api/v1/instances", request_body = Registration, tag = "instances",
    security(("bearer" = [])),
    responses((status = 201, body = RegisterResponse), (status = 200, description = "identical registration existed", body = RegisterResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn register(
    State(state): State<ApiState>,
    JsonBody(reg): JsonBody<Registration>,
) -> Result<Response, ApiError> {
    let done = state.catalog.register(&reg, "api", None).await?;
    state.metrics.registered(done.changed);
    let status = if done.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = RegisterResponse {
        id: done.key.id,
        revision: done.revision,
        changed: done.changed,
    };
    Ok((status, Json(body)).into_response())
}

const LIST_PARAMS: &[&str] = &[
    "product", "env", "job", "zone", "port", "tag", "healthy", "index", "wait",
];

/// List instances, filtered; supports blocking queries.
#[utoipa::path(get, path = "/api/v1/instances", tag = "instances",
    params(("product" = Option<String>, Query), ("env" = Option<String>, Query), ("job" = Option<String>, Query),
        ("zone" = Option<String>, Query), ("port" = Option<String>, Query, description = "has a port of this name"),
        ("tag" = Option<String>, Query), ("healthy" = Option<bool>, Query, description = "only passing (true) or only not passing (false)"),
        ("index" = Option<i64>, Query, description = "blocking query: answer when the result differs from the one at this revision"),
        ("wait" = Option<String>, Query, description = "longest wait of a blocking query (default 60s, at most 600s)")),
    responses((status = 200, body = Vec<Member>, headers(("x-glass-index" = i64, description = "revision of the answer"))), (status = 400, body = Problem)))]
pub(crate) async fn list(State(state): State<ApiState>, uri: Uri) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, LIST_PARAMS)?;
    let filter = InstanceFilter {
        product: params.text("product"),
        env: params.text("env"),
        job: params.text("job"),
        zone: params.text("zone"),
        port: params.text("port"),
        tag: params.text("tag"),
        healthy: params.boolean("healthy")?,
    };
    for (name, value) in [
        ("product", &filter.product),
        ("env", &filter.env),
        ("job", &filter.job),
        ("zone", &filter.zone),
        ("port", &filter.port),
    ] {
        if let Some(v) = value {
            glass_model::validate_label(name, v)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    Blocking::from_params(&params)?
        .answer(state.catalog.snapshots(), |snap| {
            Ok(snap.members(&filter).cloned().collect::<Vec<Arc<Member>>>())
        })
        .await
}

/// Finds the instance an `{id}` path names, narrowed by optional
/// `product`/`env`/`job` query parameters when ids repeat across jobs.
fn resolve(state: &ApiState, id: &str, params: &Params) -> Result<InstanceKey, ApiError> {
    match (
        params.text("product"),
        params.text("env"),
        params.text("job"),
    ) {
        (Some(product), Some(env), Some(job)) => Ok(InstanceKey {
            product,
            env,
            job,
            id: id.to_owned(),
        }),
        (None, None, None) => Ok(state.catalog.resolve(id)?),
        _ => Err(ApiError::bad_request(
            "give all of product, env and job, or none of them",
        )),
    }
}

/// The instance an `{id}` path names, for changes (no blocking-query parameters).
fn resolve_path(state: &ApiState, id: &str, uri: &Uri) -> Result<InstanceKey, ApiError> {
    let params = Params::parse(uri, &ONE_PARAMS[..3])?;
    resolve(state, id, &params)
}

const ONE_PARAMS: &[&str] = &["product", "env", "job", "index", "wait"];

/// One instance with its health; supports blocking queries.
#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path), ("product" = Option<String>, Query), ("env" = Option<String>, Query), ("job" = Option<String>, Query),
        ("index" = Option<i64>, Query), ("wait" = Option<String>, Query)),
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, ONE_PARAMS)?;
    let key = resolve(&state, &id, &params)?;
    Blocking::from_params(&params)?
        .answer(state.catalog.snapshots(), |snap| {
            snap.member(&key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("no instance {key}")))
        })
        .await
}

/// Deregister an instance.
#[utoipa::path(delete, path = "/api/v1/instances/{id}", tag = "instances", security(("bearer" = [])),
    params(("id" = String, Path), ("product" = Option<String>, Query), ("env" = Option<String>, Query), ("job" = Option<String>, Query)),
    responses((status = 200, body = RevisionResponse), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn deregister(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<RevisionResponse>, ApiError> {
    let key = resolve_path(&state, &id, &uri)?;
    let revision = state.catalog.deregister(&key).await?;
    Ok(Json(RevisionResponse { revision }))
}

/// Heartbeat of a TTL-checked instance: marks it passing for one TTL.
#[utoipa::path(put, path = "/api/v1/instances/{id}/heartbeat", tag = "instances", security(("bearer" = [])),
    params(("id" = String, Path), ("product" = Option<String>, Query), ("env" = Option<String>, Query), ("job" = Option<String>, Query)),
    responses((status = 200, body = RevisionResponse), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn heartbeat(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<RevisionResponse>, ApiError> {
    let key = resolve_path(&state, &id, &uri)?;
    let revision = state.catalog.heartbeat(&key).await?;
    Ok(Json(RevisionResponse { revision }))
}
