//! Bodies on both sides of the proxy: the response body streams the
//! upstream's frames (trailers included) under the idle timeout, counts
//! bytes and finishes the access log; the request body enforces the size
//! limit and tells the upstream phase when the upload is still moving.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Errors crossing the proxy.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Called once when a response body ends (fully sent, failed, or dropped).
pub(crate) trait OnEnd: Send + Sync {
    fn end(&mut self, bytes: u64, error: Option<&str>);
}

/// The body of every response the gateway sends.
pub(crate) enum ProxyBody {
    /// A body the gateway made itself (errors).
    Full(Option<Bytes>),
    /// The upstream's body.
    Upstream(Box<Streamed>),
}

/// A response body as it comes from an upstream client.
pub(crate) enum UpstreamBody {
    /// From hyper's pooled client (HTTP/2, upgrades, requests with bodies).
    Hyper(Incoming),
    /// From the gateway's own HTTP/1.1 path.
    H1(crate::h1::H1Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::H1(b) => b.size_hint(),
        }
    }
}

/// An upstream body in flight.
pub(crate) struct Streamed {
    inner: UpstreamBody,
    idle: Duration,
    deadline: Option<Instant>,
    /// When the idle timeout ends, armed when the upstream first has
    /// nothing to give (no clock read per frame).
    idle_end: Option<Instant>,
    /// A frame came since `idle_end` was armed.
    moved: bool,
    timer: Option<Pin<Box<Sleep>>>,
    bytes: u64,
    on_end: Option<Box<dyn OnEnd>>,
}

impl ProxyBody {
    pub(crate) fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }

    /// The upstream's body, cut when nothing moves for `idle` or at
    /// `deadline` (the route's `total` or the call's `grpc-timeout`).
    pub(crate) fn upstream(
        inner: UpstreamBody,
        idle: Duration,
        deadline: Option<Instant>,
        on_end: Option<Box<dyn OnEnd>>,
    ) -> Self {
        ProxyBody::Upstream(Box::new(Streamed {
            inner,
            idle,
            deadline,
            idle_end: None,
            moved: false,
            timer: None,
            bytes: 0,
            on_end,
        }))
    }
}

impl Streamed {
    fn finish(&mut self, error: Option<&str>) {
        if let Some(mut on_end) = self.on_end.take() {
            on_end.end(self.bytes, error);
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(s) => {
                match Pin::new(&mut s.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            s.bytes += data.len() as u64;
                        }
                        s.moved = true;
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(err))) => {
                        let text = err.to_string();
                        s.finish(Some(&text));
                        Poll::Ready(Some(Err(err)))
                    }
                    Poll::Ready(None) => {
                        s.finish(None);
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        // Nothing from the upstream: the idle timer runs from
                        // the first time it had nothing after its last frame,
                        // capped by the exchange's total deadline.
                        let idle_end = match s.idle_end {
                            Some(end) if !s.moved => end,
                            _ => {
                                s.moved = false;
                                *s.idle_end.insert(Instant::now() + s.idle)
                            }
                        };
                        let deadline = s.deadline.map_or(idle_end, |d| d.min(idle_end));
                        let timer = s
                            .timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if timer.deadline() != deadline {
                            timer.as_mut().reset(deadline);
                        }
                        ready!(timer.as_mut().poll(cx));
                        if deadline < idle_end {
                            s.finish(Some("total timeout"));
                            return Poll::Ready(Some(Err(
                                "the exchange ran past its total timeout".into(),
                            )));
                        }
                        s.finish(Some("idle timeout"));
                        Poll::Ready(Some(Err(
                            "the upstream sent nothing within the idle timeout".into(),
                        )))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(s) => s.inner.size_hint(),
        }
    }
}

/// How far an upload has got, shared with the upstream phase so the
/// response-head timeout starts only once the request body is sent.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    epoch_ms: AtomicU64,
    done: AtomicBool,
    /// Why the client's body broke, if it did: one of the `UPLOAD_*` codes.
    failure: AtomicU8,
}

/// How a client's upload can fail: so the upstream phase can blame the
/// client (400 / 413) rather than the upstream (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadFailure {
    /// The body broke: bad chunking, a connection cut mid-body.
    Malformed,
    /// The body went past the size limit.
    TooLarge,
}

const UPLOAD_MALFORMED: u8 = 1;
const UPLOAD_TOO_LARGE: u8 = 2;

impl Upload {
    fn fail(&self, code: u8) {
        self.failure.store(code, Relaxed);
        self.done.store(true, Relaxed);
    }

    /// Whether, and how, the client's body failed.
    pub(crate) fn failure(&self) -> Option<UploadFailure> {
        match self.failure.load(Relaxed) {
            UPLOAD_MALFORMED => Some(UploadFailure::Malformed),
            UPLOAD_TOO_LARGE => Some(UploadFailure::TooLarge),
            _ => None,
        }
    }

    fn touch(&self, epoch: Instant) {
        self.epoch_ms
            .store(epoch.elapsed().as_millis() as u64, Relaxed);
    }

    /// Whether the body is still being sent, and when it last moved.
    pub(crate) fn progress(&self, epoch: Instant) -> (bool, Instant) {
        (
            !self.done.load(Relaxed),
            epoch + Duration::from_millis(self.epoch_ms.load(Relaxed)),
        )
    }
}

/// A request body as a client sends it, from whichever server read it.
pub(crate) enum ClientBody {
    /// From hyper's server (HTTP/1.1 requests with a body).
    Hyper(Incoming),
    /// From the gateway's own HTTP/2 server.
    H2(crate::h2_serve::RequestBody),
    /// No body (the HTTP/2 request ended with its head).
    Empty,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The body sent upstream.
pub(crate) enum RequestBody {
    /// No body (or one that is known to be empty).
    Empty,
    /// The client's body, size-limited and tracked.
    Stream {
        inner: ClientBody,
        sent: u64,
        limit: u64,
        epoch: Instant,
        upload: Arc<Upload>,
    },
}

impl RequestBody {
    pub(crate) fn stream(inner: ClientBody, limit: u64, epoch: Instant) -> (Self, Arc<Upload>) {
        let upload = Arc::new(Upload::default());
        upload.touch(epoch);
        (
            RequestBody::Stream {
                inner,
                sent: 0,
                limit,
                epoch,
                upload: upload.clone(),
            },
            upload,
        )
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Stream {
                inner,
                sent,
                limit,
                epoch,
                upload,
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                upload.touch(*epoch);
                match frame {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            *sent += data.len() as u64;
                            if *sent > *limit {
                                upload.fail(UPLOAD_TOO_LARGE);
                                return Poll::Ready(Some(Err(format!(
                                    "the request body is larger than {limit} bytes"
                                )
                                .into())));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(err)) => {
                        upload.fail(UPLOAD_MALFORMED);
                        Poll::Ready(Some(Err(err)))
                    }
                    None => {
                        upload.done.store(true, Relaxed);
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}
