//! Request extractors whose rejections are problem+json with a precise detail.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, Uri, header};
use glass_model::{Revision, parse_duration};
use serde::de::DeserializeOwned;

use crate::{ApiError, MAX_BODY_BYTES};

/// A JSON request body: `application/json`, at most [`MAX_BODY_BYTES`],
/// unknown fields refused by the target type.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the body must be JSON with Content-Type: application/json (got {content_type:?})"
                ),
            ));
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters checked against the names an endpoint accepts.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `uri`'s query; unknown or repeated names are refused.
    pub(crate) fn parse(uri: &Uri, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        let mut out = BTreeMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?}; this endpoint accepts: {}",
                    allowed.join(", ")
                )));
            }
            if out.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad_request(format!(
                    "query parameter {name:?} is given twice"
                )));
            }
        }
        Ok(Params(out))
    }

    /// A text parameter.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// A boolean parameter (`true`/`false`).
    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.0
            .get(name)
            .map(|v| match v.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(ApiError::bad_request(format!(
                    "{name}: {other:?} is not true or false"
                ))),
            })
            .transpose()
    }

    /// A revision parameter (a non-negative integer).
    pub(crate) fn revision(&self, name: &str) -> Result<Option<Revision>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<Revision>()
                    .ok()
                    .filter(|r| *r >= 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "{name}: {v:?} is not a revision (a number >= 0)"
                        ))
                    })
            })
            .transpose()
    }

    /// A duration parameter, capped at `max`.
    pub(crate) fn duration(&self, name: &str, max: Duration) -> Result<Option<Duration>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                let d =
                    parse_duration(name, v).map_err(|e| ApiError::bad_request(e.to_string()))?;
                if d > max {
                    return Err(ApiError::bad_request(format!(
                        "{name}: at most {}s",
                        max.as_secs()
                    )));
                }
                Ok(d)
            })
            .transpose()
    }
}
