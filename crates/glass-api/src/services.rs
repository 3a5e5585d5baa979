//! `/api/v1/services`: service addresses and the instances behind them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use glass_model::ServiceAddr;
use glass_snapshot::{Member, ServiceSummary};

use crate::blocking::Blocking;
use crate::error::Problem;
use crate::extract::Params;
use crate::{ApiError, ApiState};

/// Every service address with healthy and total instance counts.
#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    params(("index" = Option<i64>, Query), ("wait" = Option<String>, Query)),
    responses((status = 200, body = Vec<ServiceSummary>), (status = 400, body = Problem)))]
pub(crate) async fn list(State(state): State<ApiState>, uri: Uri) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, &["index", "wait"])?;
    Blocking::from_params(&params)?
        .answer(state.catalog.snapshots(), |snap| Ok(snap.services()))
        .await
}

/// The instances behind one service address
/// (`<port>.<job>.<env>.<product>[.<zone>]`; no zone or `any` = all zones).
#[utoipa::path(get, path = "/api/v1/services/{address}", tag = "services",
    params(("address" = String, Path), ("healthy" = Option<bool>, Query), ("index" = Option<i64>, Query), ("wait" = Option<String>, Query)),
    responses((status = 200, body = Vec<Member>), (status = 400, body = Problem)))]
pub(crate) async fn get_one(
    State(state): State<ApiState>,
    Path(address): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, &["healthy", "index", "wait"])?;
    let addr: ServiceAddr = address
        .parse()
        .map_err(|e: glass_model::ModelError| ApiError::bad_request(e.to_string()))?;
    let healthy = params.boolean("healthy")?;
    Blocking::from_params(&params)?
        .answer(state.catalog.snapshots(), |snap| {
            Ok(snap
                .service(&addr)
                .filter(|m| healthy.is_none_or(|h| m.is_healthy(false) == h))
                .cloned()
                .collect::<Vec<Arc<Member>>>())
        })
        .await
}
