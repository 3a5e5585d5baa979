//! Bearer-token authentication of mutations.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, ApiState};

/// Requires `Authorization: Bearer <token>` on every request that can
/// change something; reads stay open (the API listens on loopback by default).
pub(crate) async fn require_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let mutation = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (true, Some(token)) = (mutation, state.token.as_deref()) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let detail = match given {
            None => Some(
                "this request changes the catalog and needs Authorization: Bearer <token> (the token is in <data-dir>/token)",
            ),
            Some(given) if !constant_time_eq(given.as_bytes(), token.as_bytes()) => {
                Some("the bearer token is wrong")
            }
            Some(_) => None,
        };
        if let Some(detail) = detail {
            return ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
