//! The work of a stream: the proxying of its request, polled by the
//! connection until it has the next thing to send. A bodiless request to
//! an HTTP/1.1 upstream goes from the decoded fields to the upstream head
//! and comes back as the upstream's head bytes (no `HeaderMap` either
//! way); any other becomes an `http::Request` for `proxy::handle`.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::future::Abortable;
use glass_model::UpstreamProtocol;
use http::{Request, Version};
use http_body::{Body, Frame};
use tokio::sync::mpsc;

use super::body::{Piece, Releases, RequestBody};
use super::request::{Collect, Head};
use crate::body::{BoxError, ClientBody, ProxyBody};
use crate::h1;
use crate::proxy::{self, Conn, Exchange, Keys, RawAnswer, Shared};
use crate::table::RouteEntry;
use crate::upstream_head;

/// The work of one stream, polled by the connection: it ends with the
/// next thing to send.
pub(super) type Work = Abortable<WorkFuture>;
pub(super) type WorkFuture = Pin<Box<dyn Future<Output = (u32, Step)> + Send>>;

pub(super) enum Step {
    /// The response head, and the body's first frame if it was ready.
    Answer(
        http::response::Parts,
        ProxyBody,
        Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    ),
    /// The upstream's head as received on the own HTTP/1.1 path, and the
    /// body's first frame if it was ready.
    Raw(
        Box<RawResponse>,
        ProxyBody,
        Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    ),
    /// The body's next frame.
    Frame(Option<Result<Frame<Bytes>, BoxError>>, ProxyBody),
}

/// An upstream's response head and what the gateway adds to it.
pub(super) struct RawResponse {
    pub(super) head: h1::RawHead,
    pub(super) entry: Arc<RouteEntry>,
    pub(super) request_id: http::HeaderValue,
    pub(super) cookie: Option<http::HeaderValue>,
}

/// The work for the common request — no body, routed to an HTTP/1.1
/// upstream — on the own HTTP/1.1 path: the upstream head is encoded
/// from the decoded fields, the response head from the upstream's
/// bytes; no `HeaderMap` either way.
pub(super) fn raw(
    c: &Collect,
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    id: u32,
    end_stream: bool,
) -> Option<WorkFuture> {
    if !end_stream || !c.plain() || *c.method() == http::Method::CONNECT {
        return None;
    }
    let host = c.host_name();
    let entry = shared
        .table
        .load()
        .find(&host, c.path(), c.method(), c)
        .filter(|e| e.route.protocol == UpstreamProtocol::Http1)
        .cloned()?;
    let target = c.path_and_query()?;
    let (shared, conn) = (shared.clone(), conn.clone());
    let method = c.method().clone();
    let mut exchange = Exchange::start(
        method.clone(),
        host,
        http::Uri::from(target),
        "HTTP/2",
        &conn,
        Some(&entry),
    );
    let mut encoded = Vec::with_capacity(512);
    upstream_head::encode(&mut encoded, c, &entry, &shared, &conn, &mut exchange);
    let keys = Keys::of(&entry, c);
    Some(Box::pin(async move {
        let answer = proxy::forward_raw(
            &shared,
            &conn,
            &entry,
            &method,
            &encoded,
            &keys,
            &mut exchange,
        )
        .await;
        match answer {
            RawAnswer::Upstream {
                head,
                mut body,
                request_id,
                cookie,
            } => {
                let first = first_frame(&mut body).await;
                let r = RawResponse {
                    head,
                    entry,
                    request_id,
                    cookie,
                };
                (id, Step::Raw(Box::new(r), body, first))
            }
            RawAnswer::Made(resp) => {
                let (parts, mut body) = resp.into_parts();
                let first = first_frame(&mut body).await;
                (id, Step::Answer(parts, body, first))
            }
        }
    }))
}

/// The work for any other request: the general path, as for hyper's
/// HTTP/1.1 server; the sender feeds the request body.
pub(super) fn general(
    head: Head,
    length: Option<u64>,
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    releases: &Releases,
    id: u32,
    end_stream: bool,
) -> (WorkFuture, Option<mpsc::UnboundedSender<Piece>>) {
    let (body, sender) = if end_stream {
        (ClientBody::Empty, None)
    } else {
        let (b, tx) = RequestBody::new(id, length, releases.clone());
        (ClientBody::H2(b), Some(tx))
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = head.headers;
    let (shared, conn) = (shared.clone(), conn.clone());
    let work = Box::pin(async move {
        let Ok(resp) = proxy::handle(shared, conn, req).await;
        let (parts, mut body) = resp.into_parts();
        let first = first_frame(&mut body).await;
        (id, Step::Answer(parts, body, first))
    });
    (work, sender)
}

/// Polls `body` for its next frame as the stream's work.
pub(super) fn next_frame(id: u32, mut body: ProxyBody) -> WorkFuture {
    Box::pin(async move {
        let f = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        (id, Step::Frame(f, body))
    })
}

/// The body's first frame if it is ready now, without waiting.
pub(super) async fn first_frame(
    body: &mut ProxyBody,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
}
