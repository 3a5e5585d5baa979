//! Blocking queries: `?index=<revision>&wait=30s` answers as soon as the
//! result differs from what the caller saw at `index`, or when `wait` ends.

use std::time::Duration;

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use glass_model::Revision;
use glass_snapshot::{Snapshot, SnapshotHandle};
use serde::Serialize;

use crate::ApiError;
use crate::extract::Params;

/// Default and longest wait of a blocking query.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The header that carries the revision an answer reflects.
pub(crate) const INDEX_HEADER: &str = "x-glass-index";

/// The blocking part of a query, if any.
pub(crate) struct Blocking {
    index: Option<Revision>,
    wait: Duration,
}

impl Blocking {
    /// Reads `index` and `wait` from the query.
    pub(crate) fn from_params(params: &Params) -> Result<Self, ApiError> {
        let index = params.revision("index")?;
        let wait = params.duration("wait", MAX_WAIT)?;
        if wait.is_some() && index.is_none() {
            return Err(ApiError::bad_request(
                "wait: only meaningful with index=<revision>",
            ));
        }
        Ok(Blocking {
            index,
            wait: wait.unwrap_or(DEFAULT_WAIT),
        })
    }

    /// Answers with `query` run on the current snapshot. With an `index`
    /// that is still current, first waits until the answer changes.
    ///
    /// An `index` older than the current revision answers at once: the
    /// caller may have missed a change, and a fresh index fixes that.
    pub(crate) async fn answer<T, F>(
        &self,
        snapshots: &SnapshotHandle,
        query: F,
    ) -> Result<Response, ApiError>
    where
        T: Serialize + PartialEq,
        F: Fn(&Snapshot) -> Result<T, ApiError>,
    {
        let mut changes = snapshots.subscribe();
        let mut snapshot = snapshots.load();
        let first = query(&snapshot)?;
        let Some(index) = self.index.filter(|i| snapshot.revision <= *i) else {
            return Ok(respond(snapshot.revision, first));
        };
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    snapshot = snapshots.load();
                    let now = query(&snapshot)?;
                    if now != first {
                        return Ok(respond(snapshot.revision, now));
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        tracing::trace!(index, "Blocking query timed out unchanged");
        Ok(respond(snapshot.revision, first))
    }
}

fn respond<T: Serialize>(revision: Revision, body: T) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(revision));
    resp
}
