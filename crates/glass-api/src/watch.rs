//! `GET /api/v1/watch?from=<revision>`: catalog changes as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::error::Problem;
use crate::extract::Params;
use crate::{ApiError, ApiState};

/// Streams every catalog change from `from` on (default: from now), in
/// revision order, each once. Each SSE event is one change (`event: put`
/// or `delete`); the last event of a transaction carries `id: <revision>`,
/// so a client that reconnects with `Last-Event-ID` resumes after it.
#[utoipa::path(get, path = "/api/v1/watch", tag = "watch",
    params(("from" = Option<i64>, Query, description = "first revision to send; 0 or absent = only new changes")),
    responses((status = 200, content_type = "text/event-stream", description = "one event per change: data is {revision, kind, record, key, value}"),
        (status = 400, body = Problem), (status = 410, description = "the revision was compacted", body = Problem)))]
pub(crate) async fn sse(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, &["from"])?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.parse::<i64>()
                .map(|r| r + 1)
                .map_err(|_| ApiError::bad_request("Last-Event-ID: not a revision"))
        })
        .transpose()?;
    let from = resume.or(params.revision("from")?).unwrap_or(0);
    let stream = state.catalog.watch(from).await?;
    let metrics = state.metrics.clone();
    metrics.watchers(1);
    let guard = WatcherGuard(metrics);
    let events = stream.flat_map(move |batch| {
        let _keep = &guard;
        let out: Vec<Result<Event, Infallible>> = match batch {
            Ok(changes) => {
                let last = changes.len().saturating_sub(1);
                changes
                    .iter()
                    .enumerate()
                    .map(|(i, change)| {
                        let data = serde_json::to_string(change).expect("events always serialize");
                        let event = Event::default()
                            .event(if change.kind == glass_catalog::ChangeKind::Put {
                                "put"
                            } else {
                                "delete"
                            })
                            .data(data);
                        Ok(if i == last {
                            event.id(change.revision.to_string())
                        } else {
                            event
                        })
                    })
                    .collect()
            }
            Err(err) => vec![Ok(Event::default().event("error").data(err.to_string()))],
        };
        futures::stream::iter(out)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Counts open watch streams for `/metrics`.
struct WatcherGuard(std::sync::Arc<crate::ApiMetrics>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers(-1);
    }
}
