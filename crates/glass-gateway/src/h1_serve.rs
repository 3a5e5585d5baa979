//! The gateway's own HTTP/1.1 server for the common request: HTTP/1.1,
//! no body, no upgrade, routed to an HTTP/1.1 upstream (most API reads).
//!
//! Such a request is never turned into a `HeaderMap`: its head stays the
//! bytes the client sent, the fields forwarded are copied as they are
//! (hop-by-hop ones dropped, forwarding and tracing ones added), and the
//! response head is written straight into one buffer with the first body
//! bytes. hyper's server costs more than the rest of the proxy together
//! on this path (parsing every field into a map, a dispatcher, a boxed
//! service future); the request-level policies — routing, balancing,
//! retries, outlier ejection, timeouts, access log, metrics — are the
//! same functions the hyper path calls.
//!
//! Anything else — h2c, a body, an upgrade, `Expect`, an absolute-form
//! target, no route, a head hyper must refuse — hands the connection,
//! with the bytes already read, to hyper's server for the rest of its
//! life, so refusals and the rarer features have one implementation.

use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use glass_model::UpstreamProtocol;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access_log::push_u64;
use crate::body::ProxyBody;
use crate::error::{GatewayError, Kind, Side};
use crate::h1;
use crate::headers::{self, Fields};
use crate::proxy::{self, Conn, Exchange, Keys, RawAnswer, Shared};
use crate::table::RouteEntry;
use crate::upstream_head::{self, ClientHead};

/// The first read of a connection; the buffer grows when heads are larger.
const FIRST_READ: usize = 4 * 1024;
/// Most fields parsed here; a request with more goes to hyper, which
/// applies the configured limit.
const MAX_FIELDS: usize = 128;
/// Body bytes gathered before a write.
const WRITE_CHUNK: usize = 16 * 1024;

/// How a connection served here ended.
pub(crate) enum Ended<S> {
    /// Closed: by the client, a timeout, an error or shutdown.
    Closed,
    /// Goes on in hyper, starting with the bytes read so far.
    HandOver(Prefixed<S>),
}

/// Serves requests on `io` until the connection ends or one of them is
/// not for this server.
pub(crate) async fn serve<S>(
    mut io: S,
    shared: &Shared,
    conn: &Conn,
    drain: &mut watch::Receiver<()>,
) -> Ended<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let mut upstream_head = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(FIRST_READ);
    // One request's worth of state, reused: its buffers stay allocated.
    let mut request = RawRequest::default();
    // Watched for the whole connection: one registration, not one per request.
    let mut draining = std::pin::pin!(drain.changed());
    loop {
        match read_head(&mut io, &mut buf, &mut request, shared, draining.as_mut()).await {
            Read::Head => {}
            Read::Closed => return Ended::Closed,
            Read::HandOver => return Ended::HandOver(Prefixed::new(buf.freeze(), io)),
        }
        if request.smuggling {
            refuse_framed_two_ways(&mut io, &mut out, &mut request, shared, conn).await;
            return Ended::Closed;
        }
        // A target the `http` crate refuses is hyper's to refuse (400).
        let target = PathAndQuery::from_maybe_shared(request.head.slice(request.target.clone()));
        let table = shared.table.load();
        let entry = table
            .find(&request.host, request.path(), &request.method, &request)
            .filter(|e| e.route.protocol == UpstreamProtocol::Http1)
            .cloned();
        drop(table);
        let (Some(entry), Ok(target)) = (entry, target) else {
            // hyper answers (404, 400, or the route's protocol) from here on.
            let mut all = BytesMut::from(&request.head[..]);
            all.extend_from_slice(&buf);
            return Ended::HandOver(Prefixed::new(all.freeze(), io));
        };
        let head_only = request.method == Method::HEAD;
        let close = request.close;
        let respond = Respond {
            out: &mut out,
            head_only,
            client_close: close,
        };
        let (body, plan) = exchange(
            shared,
            conn,
            &entry,
            &mut request,
            target,
            &mut upstream_head,
            respond,
        )
        .await;
        let keep = write_body(&mut io, &mut out, body, plan).await;
        if !keep || is_ready(draining.as_mut()) {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// Whether `future` has completed, without waiting.
fn is_ready(future: Pin<&mut impl Future>) -> bool {
    future
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
        .is_ready()
}

/// Answers a head framed by both `Content-Length` and `Transfer-Encoding`
/// with `400` (logged like any refusal) and closes: its body cannot be
/// delimited safely.
async fn refuse_framed_two_ways<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    request: &mut RawRequest,
    shared: &Shared,
    conn: &Conn,
) where
    S: AsyncWrite + Unpin,
{
    let err = GatewayError::new(
        Kind::BadRequest(proxy::FRAMED_TWO_WAYS.into()),
        Side::Downstream,
        false,
    );
    let target = PathAndQuery::from_maybe_shared(request.head.slice(request.target.clone()))
        .unwrap_or_else(|_| PathAndQuery::from_static("/"));
    let host = std::mem::take(&mut request.host);
    let method = request.method.clone();
    let mut exchange = Exchange::start(method, host, Uri::from(target), "HTTP/1.1", conn, None);
    let (parts, body) = proxy::fail(shared, None, &mut exchange, &err, false).into_parts();
    let exact = body.size_hint().exact();
    let respond = Respond {
        out,
        head_only: false,
        client_close: true,
    };
    let plan = respond.made(&parts, exact);
    write_body(io, out, body, plan).await;
    let _ = io.shutdown().await;
}

enum Read {
    /// `request` holds the next request.
    Head,
    Closed,
    HandOver,
}

/// Reads until `buf` holds a complete head and parses it into `request`,
/// within the header-read timeout (slowloris); an idle connection also
/// ends when `draining` completes.
async fn read_head<S>(
    io: &mut S,
    buf: &mut BytesMut,
    request: &mut RawRequest,
    shared: &Shared,
    mut draining: Pin<&mut impl Future>,
) -> Read
where
    S: AsyncRead + Unpin,
{
    let config = &shared.config;
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            match request.parse(buf, config.max_header_bytes, config.max_headers) {
                Parsed::Complete => return Read::Head,
                Parsed::Partial if buf.len() <= config.max_header_bytes => {}
                Parsed::Partial | Parsed::NotHere => return Read::HandOver,
            }
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + config.header_read_timeout);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(FIRST_READ);
        }
        let idle = buf.is_empty();
        let read = tokio::time::timeout_at(deadline, tokio_util::io::read_buf(io, buf));
        let read = if idle {
            tokio::select! {
                biased;
                _ = &mut draining => return Read::Closed,
                r = read => r,
            }
        } else {
            read.await
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            // Timed out (slowloris), closed, or broken.
            _ => return Read::Closed,
        }
    }
}

/// A request head as received, with what the gateway needs located.
#[derive(Default)]
struct RawRequest {
    /// The head's bytes, request line to the blank line.
    head: Bytes,
    method: Method,
    target: Range<usize>,
    /// Name and value of every field, in order.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The `Host`, lowercase, without port.
    host: String,
    host_value: Range<usize>,
    /// `Connection: close`.
    close: bool,
    /// A client `x-request-id` worth keeping.
    request_id: Option<Range<usize>>,
    /// A client `traceparent` worth propagating.
    traceparent: Option<Range<usize>>,
    content_length: bool,
    /// Framed by both `Content-Length` and `Transfer-Encoding`.
    smuggling: bool,
}

enum Parsed {
    Complete,
    Partial,
    /// Valid or not, hyper's to answer.
    NotHere,
}

impl RawRequest {
    /// Parses the head at the front of `buf` into `self` and takes it out
    /// of `buf`; anything this server does not handle is
    /// [`Parsed::NotHere`], `buf` untouched. A head over the configured
    /// limits is not handled either: hyper refuses it.
    fn parse(&mut self, buf: &mut BytesMut, max_bytes: usize, max_fields: usize) -> Parsed {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut slots[..max_fields.min(MAX_FIELDS)],
        ) {
            Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
            Ok(httparse::Status::Complete(_)) => return Parsed::NotHere,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::NotHere,
        };
        if req.version != Some(1) {
            return Parsed::NotHere;
        }
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Parsed::NotHere;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::NotHere;
        };
        if method == Method::CONNECT || !path.starts_with('/') {
            return Parsed::NotHere;
        }
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        *self = RawRequest {
            head: Bytes::new(),
            method,
            target: span(path.as_bytes()),
            fields,
            host: String::new(),
            host_value: 0..0,
            close: false,
            request_id: None,
            traceparent: None,
            content_length: false,
            smuggling: false,
        };
        let request = self;
        let mut hosts = 0;
        let (mut seen_request_id, mut seen_traceparent) = (false, false);
        let (mut lengths, mut sized, mut chunked) = (0, false, false);
        for field in req.headers.iter() {
            let (name, value) = (field.name.as_bytes(), field.value);
            let is = |n: &str| n.as_bytes().eq_ignore_ascii_case(name);
            if is("host") {
                hosts += 1;
                request.host_value = span(value);
            } else if is("content-length") {
                lengths += 1;
                sized |= value != b"0";
                request.content_length = true;
            } else if is("transfer-encoding") {
                chunked = true;
            } else if is("upgrade") || is("expect") {
                return Parsed::NotHere;
            } else if is("connection") {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        request.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // Fields named as hop-by-hop: hyper's path removes them.
                        return Parsed::NotHere;
                    }
                }
            } else if is("content-type") && value.starts_with(b"application/grpc") {
                return Parsed::NotHere;
            } else if is("x-request-id") {
                // The first one decides, as on hyper's path.
                if !seen_request_id && headers::sane_request_id(value) {
                    request.request_id = Some(span(value));
                }
                seen_request_id = true;
            } else if is("traceparent") {
                if !seen_traceparent && headers::propagated_traceparent(value) {
                    request.traceparent = Some(span(value));
                }
                seen_traceparent = true;
            }
            request.fields.push((span(name), span(value)));
        }
        // A body framed two ways is refused here and now (as hyper's path
        // would: `proxy::check_request`); any other body, and only an
        // explicit empty one stays here, goes to hyper.
        request.smuggling = chunked && lengths > 0;
        if !request.smuggling && (chunked || lengths > 1 || sized || hosts != 1) {
            return Parsed::NotHere;
        }
        request.host = host_name(&buf[request.host_value.clone()]);
        request.head = buf.split_to(len).freeze();
        Parsed::Complete
    }

    fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.head[range.clone()]
    }

    /// A field value that shares the head's bytes.
    fn value(&self, range: &Range<usize>) -> HeaderValue {
        HeaderValue::from_maybe_shared(self.head.slice(range.clone()))
            .expect("httparse admits only valid field values")
    }

    fn target(&self) -> &str {
        // httparse admits only visible ASCII in a request target.
        std::str::from_utf8(self.bytes(&self.target)).unwrap_or("/")
    }

    fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(p, _)| p)
    }
}

impl ClientHead for RawRequest {
    fn method(&self) -> &Method {
        &self.method
    }

    fn target(&self) -> &str {
        RawRequest::target(self)
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (self.bytes(n), self.bytes(v)))
    }

    fn host(&self) -> (&[u8], bool) {
        (self.bytes(&self.host_value), true)
    }

    fn request_id(&self) -> Option<HeaderValue> {
        self.request_id.as_ref().map(|id| self.value(id))
    }

    fn traceparent(&self) -> Option<HeaderValue> {
        self.traceparent.as_ref().map(|tp| self.value(tp))
    }

    fn has_content_length(&self) -> bool {
        self.content_length
    }
}

impl Fields for RawRequest {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.fields
            .iter()
            .filter(move |(n, _)| self.bytes(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.bytes(v))
    }
}

/// `Host` as routing wants it: lowercase, no port.
pub(crate) fn host_name(value: &[u8]) -> String {
    let value = std::str::from_utf8(value).unwrap_or("");
    let host = if value.starts_with('[') {
        value.split_inclusive(']').next().unwrap_or("")
    } else {
        value.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

/// Runs the exchange for `request` on `entry`; failures become responses.
async fn exchange(
    shared: &Shared,
    conn: &Conn,
    entry: &Arc<RouteEntry>,
    request: &mut RawRequest,
    target: PathAndQuery,
    upstream_head: &mut Vec<u8>,
    respond: Respond<'_>,
) -> (ProxyBody, Plan) {
    let host = std::mem::take(&mut request.host);
    let method = request.method.clone();
    let mut exchange = Exchange::start(
        method,
        host,
        Uri::from(target),
        "HTTP/1.1",
        conn,
        Some(entry),
    );
    upstream_head.clear();
    upstream_head::encode(upstream_head, &*request, entry, shared, conn, &mut exchange);
    let keys = Keys::of(entry, &*request);
    let answer = proxy::forward_raw(
        shared,
        conn,
        entry,
        &request.method,
        upstream_head,
        &keys,
        &mut exchange,
    )
    .await;
    match answer {
        RawAnswer::Upstream {
            head,
            body,
            request_id,
            cookie,
        } => (body, respond.raw(&head, entry, &request_id, cookie)),
        RawAnswer::Made(response) => {
            let (parts, body) = response.into_parts();
            let exact = body.size_hint().exact();
            (body, respond.made(&parts, exact))
        }
    }
}

pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where and how a response head is written.
struct Respond<'a> {
    out: &'a mut Vec<u8>,
    head_only: bool,
    client_close: bool,
}

/// What the client learns of the body's length.
enum Length {
    /// The head already has a `Content-Length`.
    InHead,
    /// Known, to be written.
    Known(u64),
    /// Unknown: the body is sent chunked.
    Unknown,
}

/// How the body follows the head written.
struct Plan {
    /// No body (`HEAD`, 204, 304).
    bodiless: bool,
    /// Sent chunked (the upstream gave no length).
    chunked: bool,
    /// The connection closes after this response.
    close: bool,
}

impl Respond<'_> {
    fn status_line(&mut self, status: StatusCode) {
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.as_str().as_bytes());
        self.out.push(b' ');
        self.out
            .extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Ends the head: framing and connection fields, the blank line.
    fn finish(self, status: StatusCode, length: Length, close: bool) -> Plan {
        let bodiless = self.head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let mut chunked = false;
        if !bodiless {
            match length {
                Length::InHead => {}
                Length::Known(n) => {
                    self.out.extend_from_slice(b"content-length: ");
                    push_u64(self.out, n);
                    self.out.extend_from_slice(b"\r\n");
                }
                Length::Unknown => {
                    chunked = true;
                    field(self.out, b"transfer-encoding", b"chunked");
                }
            }
        }
        if close {
            field(self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        Plan {
            bodiless,
            chunked,
            close,
        }
    }

    /// The head for an upstream's answer, from the bytes it sent: the same
    /// fields the hyper path's `respond` leaves (hop-by-hop ones and those
    /// the upstream's `Connection` names dropped, the route's edits, the
    /// request id, the sticky cookie).
    fn raw(
        mut self,
        head: &h1::RawHead,
        entry: &RouteEntry,
        request_id: &HeaderValue,
        cookie: Option<HeaderValue>,
    ) -> Plan {
        self.status_line(head.status);
        let mut length = false;
        for (name, value) in proxy::passed_on(head, entry) {
            length |= name.eq_ignore_ascii_case(b"content-length");
            field(self.out, name, value);
        }
        for (name, value) in entry.response_edits.added() {
            field(self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        field(self.out, b"x-request-id", request_id.as_bytes());
        if let Some(cookie) = cookie {
            field(self.out, b"set-cookie", cookie.as_bytes());
        }
        let close = self.client_close;
        let length = if length {
            Length::InHead
        } else {
            Length::Unknown
        };
        self.finish(head.status, length, close)
    }

    /// The head for a response the gateway made (errors); `exact` is its
    /// body's length.
    fn made(mut self, parts: &http::response::Parts, exact: Option<u64>) -> Plan {
        self.status_line(parts.status);
        let mut close = self.client_close;
        let mut length = false;
        for (name, value) in &parts.headers {
            if name == header::CONNECTION {
                close |= value.as_bytes().eq_ignore_ascii_case(b"close");
                continue;
            }
            length |= name == header::CONTENT_LENGTH;
            field(self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        let length = match (length, exact) {
            (true, _) => Length::InHead,
            (false, Some(n)) => Length::Known(n),
            (false, None) => Length::Unknown,
        };
        self.finish(parts.status, length, close)
    }
}

/// Writes the body after the head already in `out`; whether the
/// connection can carry another request. The head and the first body
/// bytes leave in one write; a chunked body's trailers are passed on.
async fn write_body<S>(io: &mut S, out: &mut Vec<u8>, mut body: ProxyBody, plan: Plan) -> bool
where
    S: AsyncWrite + Unpin,
{
    if plan.bodiless {
        drop(body);
        return io.write_all(out).await.is_ok() && !plan.close;
    }
    let chunked = plan.chunked;
    let mut complete = false;
    loop {
        // Whatever is ready joins the buffer; the buffer leaves before
        // waiting for more, so a slow stream (SSE) is never held back.
        let frame = match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)))
            .await
        {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if io.write_all(out).await.is_err() {
                    return false;
                }
                out.clear();
                body.frame().await
            }
        };
        match frame {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                complete = true;
                break;
            }
            Some(Err(_)) => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        push_hex(out, data.len());
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(&data);
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Err(frame) => {
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        out.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            field(out, name.as_str().as_bytes(), value.as_bytes());
                        }
                        out.extend_from_slice(b"\r\n");
                        complete = true;
                        break;
                    }
                }
            },
        }
        if out.len() >= WRITE_CHUNK {
            if io.write_all(out).await.is_err() {
                return false;
            }
            out.clear();
        }
    }
    // A body cut short ends the connection: the client must not take
    // what it got for the whole answer.
    io.write_all(out).await.is_ok() && complete && !plan.close
}

/// `n` in lowercase hex, as a chunk size.
fn push_hex(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(n >> (i * 4)) & 0xf]);
    }
}

/// A connection with bytes already read from it in front.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Bytes, io: S) -> Self {
        Prefixed { prefix, io }
    }

    /// The client opened with the HTTP/2 preface (h2c, prior knowledge).
    pub(crate) fn is_http2(&self) -> bool {
        self.prefix.starts_with(b"PRI * HTTP/2.0")
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
