//! The gateway's own HTTP/1.1 path to upstreams for requests without a
//! body (most GET, HEAD, DELETE and OPTIONS traffic).
//!
//! The request's task takes a pooled keep-alive connection, writes the
//! head and reads the answer itself. hyper's pooled client instead hands
//! every request to a per-connection task and the response back through a
//! channel: two extra wake-ups and a pool lock keyed by URI per request,
//! the largest structural cost in the gateway's profile. Requests with a
//! body, WebSocket upgrades and HTTP/2 upstreams still go through hyper.
//!
//! Response framing follows RFC 9112 §6.3; anything the gateway cannot
//! frame with certainty closes the connection instead of reusing it.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::BoxError;
use crate::endpoint::Endpoint;
use crate::headers::Fields;
use crate::retry::idempotent;

/// Idle connections kept per upstream address.
const MAX_IDLE: usize = 256;
/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Largest response head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers (and trailers) accepted.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// How much the reader asks the kernel for at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The first read of a response.
const FIRST_READ: usize = 4 * 1024;

/// Idle keep-alive connections to one upstream address, newest last.
#[derive(Debug, Default)]
pub(crate) struct IdlePool {
    conns: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    io: TcpStream,
    since: Instant,
}

impl IdlePool {
    /// The newest idle connection that is still open.
    fn take(&self) -> Option<TcpStream> {
        loop {
            let idle = {
                let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
                let idle = conns.pop()?;
                if idle.since.elapsed() > IDLE_FOR {
                    // The newest is too old, so are all the others.
                    conns.clear();
                    return None;
                }
                idle
            };
            // An idle connection has nothing to say: bytes or EOF mean the
            // upstream closed it (or broke the protocol). Without readiness
            // from the reactor this costs no system call.
            match idle.io.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(idle.io),
                _ => continue,
            }
        }
    }

    fn put(&self, io: TcpStream) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() < MAX_IDLE {
            conns.push(Idle {
                io,
                since: Instant::now(),
            });
        }
    }

    /// How many connections are idle now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum H1Error {
    /// No connection could be made (safe to retry anywhere).
    Connect(String),
    /// The exchange failed after the request went out.
    Upstream(String),
}

/// Sends `request` (an encoded head without body, see
/// [`crate::upstream_head::encode`]) to `endpoint` on a pooled connection (or a new
/// one) and reads the response head; the body streams from the
/// connection, which goes back to the pool when the body has been read to
/// its end.
pub(crate) async fn send(
    endpoint: &Endpoint,
    method: &Method,
    request: &[u8],
    connect_timeout: Duration,
) -> Result<(RawHead, H1Body), H1Error> {
    let pool = &endpoint.state.idle;
    if let Some(io) = pool.take() {
        match exchange(io, request, method, endpoint).await {
            // The upstream closed the idle connection as it was reused (its
            // keep-alive timeout): nothing was read, so an idempotent
            // request goes again on a new connection.
            Err(Failure::Stale(_)) if idempotent(method) => {}
            Err(f) => return Err(f.into()),
            Ok(resp) => return Ok(resp),
        }
    }
    let io = connect(endpoint, connect_timeout).await?;
    exchange(io, request, method, endpoint)
        .await
        .map_err(H1Error::from)
}

async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, H1Error> {
    let io = tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr))
        .await
        .map_err(|_| {
            H1Error::Connect(format!(
                "connecting to {} timed out after {timeout:?}",
                endpoint.addr
            ))
        })?
        .map_err(|e| H1Error::Connect(format!("connecting to {}: {e}", endpoint.addr)))?;
    let _ = io.set_nodelay(true);
    Ok(io)
}

/// An exchange's failure: `Stale` when the connection died before the
/// upstream said anything.
enum Failure {
    Stale(String),
    Broken(String),
}

impl From<Failure> for H1Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Stale(why) | Failure::Broken(why) => H1Error::Upstream(why),
        }
    }
}

async fn exchange(
    mut io: TcpStream,
    request: &[u8],
    method: &Method,
    endpoint: &Endpoint,
) -> Result<(RawHead, H1Body), Failure> {
    if let Err(e) = io.write_all(request).await {
        return Err(Failure::Stale(format!("writing the request: {e}")));
    }
    // Most response heads (and small bodies) fit in a few KiB; the buffer
    // grows by READ_CHUNK when a body needs more.
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let n = match tokio_util::io::read_buf(&mut io, &mut buf).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => {
                return Err(Failure::Stale(format!("reading the response: {e}")));
            }
            Err(e) => return Err(Failure::Broken(format!("reading the response: {e}"))),
        };
        if n == 0 {
            let why = "the upstream closed the connection before a complete response head";
            return Err(if buf.is_empty() {
                Failure::Stale(why.into())
            } else {
                Failure::Broken(why.into())
            });
        }
        // 1xx answers (100 Continue, 103 Early Hints) are skipped: the real
        // one follows, in these bytes or the next.
        while let Some(parsed) = parse_head(&mut buf, method).map_err(Failure::Broken)? {
            if let Parsed::Final(head) = parsed {
                let body = H1Body::new(&head, io, buf, endpoint);
                return Ok((head, body));
            }
        }
    }
}

enum Parsed {
    Informational,
    Final(RawHead),
}

/// A response head as received: the bytes, with the fields located.
/// The gateway's own HTTP/1.1 server copies it to the client as it is;
/// hyper's path turns it into a [`Response`] ([`RawHead::into_response`]).
pub(crate) struct RawHead {
    bytes: Bytes,
    pub(crate) status: StatusCode,
    /// Name and value of every field, in order.
    fields: Vec<(Range<usize>, Range<usize>)>,
    framing: Framing,
    keep_alive: bool,
    /// Framed both ways: its `Content-Length` must not reach the client.
    drop_length: bool,
}

impl RawHead {
    /// Every field as (name, value), in order, except a `Content-Length`
    /// that must not be passed on.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
            .filter(|(n, _)| !(self.drop_length && n.eq_ignore_ascii_case(b"content-length")))
    }

    /// The head as a [`Response`] around `body`, for hyper's server.
    pub(crate) fn into_response<B>(self, body: B) -> Result<Response<B>, String> {
        // Room for what the gateway adds (request id, sticky cookie).
        let mut headers = HeaderMap::with_capacity(self.fields.len() + 2);
        for (name, value) in self.fields() {
            let name = HeaderName::from_bytes(name)
                .map_err(|_| "the upstream sent an invalid header name".to_owned())?;
            let value = HeaderValue::from_maybe_shared(self.bytes.slice_ref(value))
                .map_err(|_| format!("the upstream sent an invalid value for {name}"))?;
            headers.append(name, value);
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

impl Fields for RawHead {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.fields
            .iter()
            .filter(move |(n, _)| self.bytes[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.bytes[v.clone()])
    }
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    UntilClose,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, at the trailer section.
    Trailers,
}

/// Parses a response head from the front of `buf` (and removes it);
/// `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, String> {
    // Uninitialised slots: zeroing 128 of them (4 KiB) per response showed
    // up in the profile.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(format!(
                "the upstream's response head is larger than {MAX_HEAD_BYTES} bytes"
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!(
                "the upstream's response has more than {MAX_HEADERS} headers"
            ));
        }
        Err(e) => return Err(format!("the upstream's response head is malformed: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| format!("the upstream answered an invalid status {code}"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("the upstream switched protocols without being asked to".into());
        }
        buf.advance(len);
        return Ok(Some(Parsed::Informational));
    }
    // Fields stay in the received bytes (no copies).
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let fields = resp
        .headers
        .iter()
        .map(|h| (span(h.name.as_bytes()), span(h.value)))
        .collect();
    let http10 = resp.version == Some(0);
    let mut head = RawHead {
        bytes: buf.split_to(len).freeze(),
        status,
        fields,
        framing: Framing::UntilClose,
        keep_alive: false,
        drop_length: false,
    };
    head.framing = framing(status, method, &head)?;
    head.keep_alive = keep_alive(&head, http10) && head.framing != Framing::UntilClose;
    if head.first("transfer-encoding").is_some() && head.first("content-length").is_some() {
        // Framed two ways (RFC 9112 §6.3): Transfer-Encoding wins, the
        // length must not reach the client (it would frame the body
        // differently), and the connection is not trusted again.
        head.drop_length = true;
        head.keep_alive = false;
    }
    Ok(Some(Parsed::Final(head)))
}

/// The body's framing (RFC 9112 §6.3).
fn framing(status: StatusCode, method: &Method, headers: &impl Fields) -> Result<Framing, String> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    if headers.first("transfer-encoding").is_some() {
        // Chunked must be the final coding; anything else runs to the close.
        let last = headers
            .values("transfer-encoding")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .last();
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in headers.values("content-length") {
        for part in value.split(|&b| b == b',') {
            let n = std::str::from_utf8(part)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or("the upstream sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("the upstream sent conflicting Content-Length values".into());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Whether the connection may carry another request after this response.
fn keep_alive(headers: &impl Fields, http10: bool) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in headers
        .values("connection")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        close |= token.eq_ignore_ascii_case("close");
        keep |= token.eq_ignore_ascii_case("keep-alive");
    }
    !close && (!http10 || keep)
}

/// A response body read from a pooled connection.
pub(crate) struct H1Body {
    /// `None` once the body has ended (the connection went back to the
    /// pool or was closed).
    io: Option<TcpStream>,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
    state: Arc<crate::endpoint::EndpointState>,
}

impl H1Body {
    fn new(head: &RawHead, io: TcpStream, buf: BytesMut, endpoint: &Endpoint) -> H1Body {
        let mut body = H1Body {
            io: Some(io),
            buf,
            framing: head.framing,
            keep_alive: head.keep_alive,
            state: endpoint.state.clone(),
        };
        if body.framing == Framing::Length(0) {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back to the pool if it can
    /// carry another exchange (nothing unread, keep-alive).
    fn finish(&mut self) {
        self.framing = Framing::Length(0);
        if let Some(io) = self.io.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            self.state.idle.put(io);
        }
    }

    fn fail(&mut self, why: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.io = None;
        self.framing = Framing::Length(0);
        Poll::Ready(Some(Err(why.into().into())))
    }

    /// Reads more bytes into `buf`; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf)
    }

    /// Takes up to `max` buffered bytes as one data frame.
    fn data(&mut self, max: u64) -> Bytes {
        let n = self
            .buf
            .len()
            .min(usize::try_from(max).unwrap_or(usize::MAX));
        self.buf.split_to(n).freeze()
    }

    /// Reads more, failing if the upstream closes before the body's end.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        match ready!(self.poll_fill(cx)) {
            Ok(0) => Poll::Ready(Err(
                "the upstream closed the connection before the body's end".into(),
            )),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(format!("reading the upstream's body: {e}"))),
        }
    }

    /// One step of the chunked decoder: a frame, or `None` to go on.
    fn step_chunked(&mut self, chunk: Chunk) -> Result<Option<Option<Frame<Bytes>>>, String> {
        match chunk {
            Chunk::Size => {
                let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                    if self.buf.len() > MAX_CHUNK_LINE {
                        return Err("the upstream sent an overlong chunk-size line".into());
                    }
                    return Ok(None);
                };
                let size = chunk_size(&self.buf[..end])?;
                self.buf.advance(end + 2);
                self.framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Some(None))
            }
            Chunk::Data(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let data = self.data(left);
                let left = left - data.len() as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(Some(Frame::data(data))))
            }
            Chunk::DataEnd => {
                if self.buf.len() < 2 {
                    return Ok(None);
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err("the upstream's chunk data is not followed by CRLF".into());
                }
                self.buf.advance(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Ok(Some(None))
            }
            Chunk::Trailers => {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(&self.buf, &mut slots) {
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD_BYTES => {
                        Err("the upstream's trailers are too large".into())
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(format!("the upstream's trailers are malformed: {e}")),
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::new();
                        for f in fields {
                            if let (Ok(n), Ok(v)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                trailers.append(n, v);
                            }
                        }
                        self.buf.advance(len);
                        self.finish();
                        Ok(Some(
                            (!trailers.is_empty()).then(|| Frame::trailers(trailers)),
                        ))
                    }
                }
            }
        }
    }
}

/// The size in a chunk-size line (`1a;ext=1`), RFC 9112 §7.1.
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if digits == 0 || digits > 15 || !rest_ok {
        return Err("the upstream sent an invalid chunk size".into());
    }
    let text = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
    Ok(u64::from_str_radix(text, 16).expect("at most 15 hex digits fit"))
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(left) => {
                    if this.buf.is_empty()
                        && let Err(why) = ready!(this.poll_more(cx))
                    {
                        return this.fail(why);
                    }
                    let data = this.data(left);
                    let left = left - data.len() as u64;
                    if left == 0 {
                        this.finish();
                    } else {
                        this.framing = Framing::Length(left);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose => {
                    if this.buf.is_empty() {
                        match ready!(this.poll_fill(cx)) {
                            Ok(0) => {
                                this.finish();
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                return this.fail(format!("reading the upstream's body: {e}"));
                            }
                        }
                    }
                    let data = this.data(u64::MAX);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(chunk) => match this.step_chunked(chunk) {
                    Err(why) => return this.fail(why),
                    Ok(Some(Some(frame))) => return Poll::Ready(Some(Ok(frame))),
                    Ok(Some(None)) if this.framing == Framing::Length(0) => {
                        return Poll::Ready(None);
                    }
                    Ok(Some(None)) => {}
                    Ok(None) => {
                        if let Err(why) = ready!(this.poll_more(cx)) {
                            return this.fail(why);
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `method / HTTP/1.1` with `Host: up` to `endpoint`, the
    /// answer as a `Response`.
    async fn send_bare(endpoint: &Endpoint, method: Method) -> Result<Response<H1Body>, H1Error> {
        let request = format!("{method} / HTTP/1.1\r\nhost: up\r\n\r\n");
        send(
            endpoint,
            &method,
            request.as_bytes(),
            Duration::from_secs(1),
        )
        .await
        .map(|(head, body)| head.into_response(body).unwrap())
    }

    fn head(raw: &[u8], method: &Method) -> Result<Option<Parsed>, String> {
        parse_head(&mut BytesMut::from(raw), method)
    }

    fn final_head(raw: &[u8]) -> RawHead {
        match head(raw, &Method::GET) {
            Ok(Some(Parsed::Final(h))) => h,
            _ => panic!("no final head in {:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(
            !h.fields()
                .any(|(n, _)| n.eq_ignore_ascii_case(b"content-length")),
            "the length is dropped"
        );
        assert!(
            !h.keep_alive,
            "a response framed two ways ends the connection"
        );
        let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(
            !h.keep_alive,
            "a body delimited by the close ends the connection"
        );
        let h = final_head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        let h = final_head(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(7));
        match head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            &Method::HEAD,
        ) {
            Ok(Some(Parsed::Final(h))) => assert_eq!(h.framing, Framing::Length(0)),
            _ => panic!("HEAD answer not parsed"),
        }
    }

    #[test]
    fn connection_reuse_follows_the_headers() {
        assert!(
            !final_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(!final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            final_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(
                head(raw, &Method::GET).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(raw)
            );
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(head(huge.as_bytes(), &Method::GET).is_err());
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nX: 1\r\n", &Method::GET),
            Ok(None)
        ));
    }

    #[test]
    fn informational_answers_are_skipped() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..]);
        assert!(matches!(
            parse_head(&mut buf, &Method::GET),
            Ok(Some(Parsed::Informational))
        ));
        match parse_head(&mut buf, &Method::GET) {
            Ok(Some(Parsed::Final(h))) => assert_eq!(h.status, StatusCode::OK),
            _ => panic!("the final answer was not found"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn chunk_sizes_parse_strictly() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"0"), Ok(0));
        assert_eq!(chunk_size(b"10;name=value"), Ok(16));
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"x1").is_err());
        assert!(chunk_size(b"1x").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(
            chunk_size(b"ffffffffffffffff").is_err(),
            "overflow is refused"
        );
    }

    /// A raw upstream: answers the requests on each accepted connection
    /// with the next scripted reply (each sent in small pieces), then
    /// closes that connection. Returns its address and the accept count.
    async fn upstream(
        per_conn: Vec<Vec<&'static [u8]>>,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            for replies in per_conn {
                let (mut io, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                for reply in replies {
                    let mut req = Vec::new();
                    while !req.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if io.read(&mut byte).await.unwrap() == 0 {
                            return;
                        }
                        req.push(byte[0]);
                    }
                    for piece in reply.chunks(7) {
                        io.write_all(piece).await.unwrap();
                        io.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        (addr, accepted)
    }

    async fn get(endpoint: &Endpoint) -> (StatusCode, Bytes, Option<HeaderMap>) {
        use http_body_util::BodyExt;
        let resp = send_bare(endpoint, Method::GET).await.unwrap();
        let status = resp.status();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (status, collected.to_bytes(), trailers)
    }

    fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint::new(addr, "up".into(), 1, Default::default())
    }

    #[tokio::test]
    async fn chunked_bodies_and_trailers_arrive_and_the_connection_is_reused() {
        let (addr, accepted) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\ngrpc-status: 0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ]])
        .await;
        let ep = endpoint(addr);
        let (status, body, trailers) = get(&ep).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"hello, world");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert_eq!(
            ep.state.idle.len(),
            1,
            "the connection went back to the pool"
        );
        let (status, body, _) = get(&ep).await;
        assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"abc"[..]));
        let (status, body, _) = get(&ep).await;
        assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn closed_idle_connections_are_replaced_and_close_is_honoured() {
        let (addr, accepted) = upstream(vec![
            // Keep-alive, then the upstream closes the idle connection.
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"],
            // Connection: close is not reused.
            vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nb"],
            // A body delimited by the close.
            vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"],
        ])
        .await;
        let ep = endpoint(addr);
        assert_eq!(&get(&ep).await.1[..], b"a");
        // Let the upstream's close arrive before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(&get(&ep).await.1[..], b"b");
        assert_eq!(ep.state.idle.len(), 0);
        assert_eq!(&get(&ep).await.1[..], b"until the end");
        assert_eq!(ep.state.idle.len(), 0);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn large_heads_and_bodies_arrive_whole() {
        let big = "h".repeat(10_000);
        let body = "b".repeat(100_000);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply: &'static [u8] = Box::leak(reply.into_bytes().into_boxed_slice());
        let (addr, _) = upstream(vec![vec![reply]]).await;
        let ep = endpoint(addr);
        let resp = send_bare(&ep, Method::GET).await.unwrap();
        assert_eq!(resp.headers()["x-big"].len(), big.len());
        use http_body_util::BodyExt;
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), body.len());
        assert_eq!(ep.state.idle.len(), 1);
    }

    /// An endpoint whose one idle connection the upstream has just
    /// closed, before the gateway could notice; the listener is still
    /// there for a new connection.
    async fn endpoint_with_a_stale_connection() -> (Endpoint, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let io = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.accept().await.unwrap();
        let ep = endpoint(addr);
        ep.state.idle.put(io);
        // No await from here to the request: the reactor has not seen the close.
        drop(first);
        (ep, listener)
    }

    #[tokio::test]
    async fn a_race_with_the_upstreams_close_resends_idempotent_requests_only() {
        use tokio::io::AsyncReadExt;
        let (ep, listener) = endpoint_with_a_stale_connection().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
        });
        let (status, body, _) = get(&ep).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        server.await.unwrap();

        // A POST may have been acted on: it is not sent again.
        let (ep, _listener) = endpoint_with_a_stale_connection().await;
        match send_bare(&ep, Method::POST).await {
            Err(H1Error::Upstream(_)) => {}
            other => panic!(
                "a POST on a stale connection was resent: {:?}",
                other.map(|r| r.status())
            ),
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        use http_body_util::BodyExt;
        let (addr, _) = upstream(vec![
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"],
        ])
        .await;
        let ep = endpoint(addr);
        for _ in 0..2 {
            let resp = send_bare(&ep, Method::GET).await.unwrap();
            assert!(resp.into_body().collect().await.is_err());
            assert_eq!(ep.state.idle.len(), 0);
        }
    }
}
