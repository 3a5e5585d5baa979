//! The gateway's own HTTP/2 server: h2c with prior knowledge, and TLS
//! with `h2` chosen in ALPN.
//!
//! One task per connection does everything: it reads frames, decodes
//! header blocks (`hpack`) into requests for the same `proxy::handle` the
//! HTTP/1.1 servers call, polls each stream's work in a
//! `FuturesUnordered` (no task spawned per stream), and writes response
//! frames into one buffer that leaves in as few writes as the socket
//! takes. Flow control works both ways: request bodies return their
//! credit once the upstream has taken the bytes, response bodies are read
//! only while the client has window for them. A general-purpose server
//! (a task and a shared, locked stream store per stream, a second copy of
//! every field map) cost more than the rest of the proxy together on
//! small requests; the protocol itself is small.
//!
//! Limits and defences: header lists over `max_header_bytes` or with more
//! than `max_headers` fields get 431; a header block is cut off after
//! 64 CONTINUATION frames or twice the header limit; at most 1024
//! concurrent streams; a client that resets streams faster than it lets
//! them finish (rapid reset) gets GOAWAY(ENHANCE_YOUR_CALM); the server
//! stops reading while 256 KiB of its output is unread by the client.

mod body;
mod frame;
mod request;

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, Request, Version};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub(crate) use body::RequestBody;
use body::{Piece, Releases};
use frame::{Head, Reason, flag, kind};

use crate::body::{BoxError, ClientBody, ProxyBody};
use crate::hpack;
use crate::proxy::{self, Conn, Exchange, Keys, RawAnswer, Shared};
use crate::table::RouteEntry;
use crate::{h1, upstream_head};
use glass_model::UpstreamProtocol;

/// Streams a client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// The window each request body starts with, and the connection's.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 1 << 20;
/// Output not yet taken by the client above which reading stops.
const WRITE_HIGH: usize = 256 * 1024;
/// CONTINUATION frames one header block may take.
const MAX_CONTINUATIONS: usize = 64;
/// Streams a client may reset before their response beyond those it let
/// finish (rapid reset, CVE-2023-44487).
const RESET_BUDGET: i64 = 200;
/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The work of one stream, polled by the connection: it ends with the
/// next thing to send.
type Work = Abortable<WorkFuture>;
type WorkFuture = Pin<Box<dyn Future<Output = (u32, Step)> + Send>>;

enum Step {
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
struct RawResponse {
    head: h1::RawHead,
    entry: Arc<RouteEntry>,
    request_id: http::HeaderValue,
    cookie: Option<http::HeaderValue>,
}

/// Serves HTTP/2 on `io` until the connection ends. `io` starts with the
/// client's preface (already read bytes may be in front of it).
pub(crate) async fn serve<S>(
    io: S,
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    drain: &mut watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut c = Connection::new(io, shared, conn);
    let preface = tokio::time::timeout(shared.config.header_read_timeout, c.read_preface()).await;
    if !matches!(preface, Ok(true)) {
        // Not HTTP/2: closed without a word (RFC 9113 §3.4).
        tracing::debug!(peer = %conn.peer, "No HTTP/2 preface");
        let _ = c.io.shutdown().await;
        return;
    }
    c.start();
    // Frames that came with the preface.
    c.frames();
    let mut draining = std::pin::pin!(drain.changed());
    let mut drain_seen = false;
    poll_fn(|cx| {
        if !drain_seen && draining.as_mut().poll(cx).is_ready() {
            drain_seen = true;
            c.go_away(Reason::NoError);
        }
        c.poll(cx)
    })
    .await;
    let _ = c.io.shutdown().await;
}

/// A stream the client opened and the server has not finished.
struct Stream {
    /// Where the request body's pieces go, while the client still sends.
    body: Option<mpsc::UnboundedSender<Piece>>,
    /// The client has not ended its side.
    remote_open: bool,
    /// Bytes the client may still send on this stream.
    recv_window: i64,
    /// Credit taken by the body and not yet returned.
    unreleased: u32,
    length: Option<u64>,
    received: u64,
    /// Bytes the server may still send.
    send_window: i64,
    /// Response data waiting for window, the body it came from, and
    /// whether that body has ended.
    blocked: Option<(Bytes, ProxyBody, bool)>,
    /// Cancels the stream's current work.
    abort: Option<AbortHandle>,
    /// The response head has been sent.
    answered: bool,
}

impl Stream {
    fn cancel(&mut self, why: &'static str) {
        if let Some(a) = self.abort.take() {
            a.abort();
        }
        if let Some(body) = self.body.take() {
            let _ = body.send(Piece::Broken(why));
        }
    }
}

/// A header block split over CONTINUATION frames, being gathered.
struct Continuing {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: usize,
    /// The stream was made to depend on itself (a stream error).
    self_dependent: bool,
}

/// What the server writes: frames gathered in one buffer, and the send
/// side's flow-control state.
struct Output {
    buf: Vec<u8>,
    /// How much of `buf` is written.
    written: usize,
    encoder: hpack::Encoder,
    /// Connection-level window for DATA the server sends.
    window: i64,
    max_frame: usize,
    /// A field name, lowercased.
    name: Vec<u8>,
}

impl Output {
    /// Writes a header block as HEADERS (and CONTINUATION frames if it is
    /// larger than the client's frame size): `status` for a response head,
    /// `None` for trailers.
    fn headers(&mut self, stream: u32, status: Option<u16>, fields: &HeaderMap, end: bool) {
        let start = self.begin_block();
        match status {
            Some(s) => self.encoder.status(&mut self.buf, s),
            None => self.encoder.trailers(&mut self.buf),
        }
        for (name, value) in fields {
            let name = name.as_str().as_bytes();
            // Connection-specific fields have no place in HTTP/2.
            if matches!(
                name,
                b"connection"
                    | b"keep-alive"
                    | b"proxy-connection"
                    | b"transfer-encoding"
                    | b"upgrade"
            ) {
                continue;
            }
            self.encoder
                .field(&mut self.buf, name, value.as_bytes(), value.is_sensitive());
        }
        self.end_block(start, stream, end);
    }

    /// The head of an upstream's response on the own HTTP/1.1 path,
    /// written from its bytes with the same fields passed on as for an
    /// HTTP/1.1 client.
    fn raw_headers(&mut self, stream: u32, r: &RawResponse, end: bool) {
        let start = self.begin_block();
        self.encoder.status(&mut self.buf, r.head.status.as_u16());
        for (name, value) in proxy::passed_on(&r.head, &r.entry) {
            // HTTP/2 field names are lowercase.
            self.name.clear();
            self.name.extend(name.iter().map(u8::to_ascii_lowercase));
            self.encoder.field(&mut self.buf, &self.name, value, false);
        }
        for (name, value) in r.entry.response_edits.added() {
            let name = name.as_str().as_bytes();
            self.encoder
                .field(&mut self.buf, name, value.as_bytes(), value.is_sensitive());
        }
        // Unique per response: never indexed.
        let id = r.request_id.as_bytes();
        self.encoder.field(&mut self.buf, b"x-request-id", id, true);
        if let Some(cookie) = &r.cookie {
            self.encoder
                .field(&mut self.buf, b"set-cookie", cookie.as_bytes(), false);
        }
        self.end_block(start, stream, end);
    }

    /// Room for the frame header of a header block written next.
    fn begin_block(&mut self) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; frame::HEADER_LEN]);
        start
    }

    /// Frames the header block written since `start`: one HEADERS frame,
    /// or HEADERS and CONTINUATION frames if it is larger than the
    /// client's frame size.
    fn end_block(&mut self, start: usize, stream: u32, end: bool) {
        let end_flag = if end { flag::END_STREAM } else { 0 };
        let len = self.buf.len() - start - frame::HEADER_LEN;
        if len <= self.max_frame {
            let head = frame::head_bytes(len, kind::HEADERS, end_flag | flag::END_HEADERS, stream);
            self.buf[start..start + frame::HEADER_LEN].copy_from_slice(&head);
            return;
        }
        let block = self.buf.split_off(start + frame::HEADER_LEN);
        self.buf.truncate(start);
        let mut chunks = block.chunks(self.max_frame).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (k, mut flags) = if first {
                (kind::HEADERS, end_flag)
            } else {
                (kind::CONTINUATION, 0)
            };
            if last {
                flags |= flag::END_HEADERS;
            }
            frame::put_head(&mut self.buf, chunk.len(), k, flags, stream);
            self.buf.extend_from_slice(chunk);
            first = false;
        }
    }

    /// Sends as much of `data` as the windows allow, the last frame with
    /// END_STREAM if `end`; true when all of it went.
    fn data(&mut self, id: u32, stream: &mut Stream, data: &mut Bytes, end: bool) -> bool {
        let end_flag = if end { flag::END_STREAM } else { 0 };
        if data.is_empty() {
            if end {
                frame::put_head(&mut self.buf, 0, kind::DATA, end_flag, id);
            }
            return true;
        }
        loop {
            let allowed = self.window.min(stream.send_window).max(0) as usize;
            let n = data.len().min(allowed).min(self.max_frame);
            if n == 0 {
                return false;
            }
            let last = n == data.len();
            frame::put_head(
                &mut self.buf,
                n,
                kind::DATA,
                if last { end_flag } else { 0 },
                id,
            );
            self.buf.extend_from_slice(&data[..n]);
            data.advance(n);
            self.window -= n as i64;
            stream.send_window -= n as i64;
            if last {
                return true;
            }
        }
    }
}

struct Connection<'a, S> {
    io: S,
    shared: &'a Arc<Shared>,
    conn: &'a Arc<Conn>,
    read: BytesMut,
    out: Output,
    decoder: hpack::Decoder,
    /// The header block being decoded.
    collect: request::Collect,
    streams: HashMap<u32, Stream>,
    work: FuturesUnordered<Work>,
    releases: Releases,
    released: mpsc::UnboundedReceiver<(u32, u32)>,
    /// The highest stream id the client has opened.
    last_stream: u32,
    continuing: Option<Continuing>,
    /// Streams whose bodies wait for the output to drain.
    parked: Vec<u32>,
    /// Closes a failed connection whose client does not take the GOAWAY.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The request body of the stream being opened.
    pending_body: Option<mpsc::UnboundedSender<Piece>>,
    /// The window every new stream starts with, from the client's settings.
    peer_initial_window: i64,
    /// Connection-level bytes the client may still send, and credit taken
    /// but not yet returned.
    recv_window: i64,
    unreleased: u32,
    got_settings: bool,
    reset_budget: i64,
    /// GOAWAY sent: no new streams; the connection ends when the open ones do.
    going_away: bool,
    /// A connection error: nothing more is read or answered.
    failed: bool,
    /// The client went away (end of stream, GOAWAY, or an I/O error).
    peer_gone: bool,
}

impl<'a, S> Connection<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(io: S, shared: &'a Arc<Shared>, conn: &'a Arc<Conn>) -> Self {
        let (releases, released) = mpsc::unbounded_channel();
        Connection {
            io,
            shared,
            conn,
            read: BytesMut::with_capacity(READ_CHUNK),
            out: Output {
                buf: Vec::with_capacity(READ_CHUNK),
                written: 0,
                encoder: hpack::Encoder::new(),
                window: frame::DEFAULT_WINDOW,
                max_frame: frame::DEFAULT_MAX_FRAME,
                name: Vec::new(),
            },
            collect: request::Collect::default(),
            decoder: hpack::Decoder::new(4096),
            streams: HashMap::new(),
            work: FuturesUnordered::new(),
            releases,
            released,
            last_stream: 0,
            continuing: None,
            pending_body: None,
            parked: Vec::new(),
            linger: None,
            peer_initial_window: frame::DEFAULT_WINDOW,
            recv_window: i64::from(CONNECTION_WINDOW),
            unreleased: 0,
            got_settings: false,
            reset_budget: RESET_BUDGET,
            going_away: false,
            failed: false,
            peer_gone: false,
        }
    }

    /// The server's preface: its settings and the connection window.
    fn start(&mut self) {
        let config = &self.shared.config;
        frame::put_settings(
            &mut self.out.buf,
            &[
                (
                    frame::setting::MAX_CONCURRENT_STREAMS,
                    MAX_CONCURRENT_STREAMS,
                ),
                (frame::setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (
                    frame::setting::MAX_HEADER_LIST_SIZE,
                    config.max_header_bytes as u32,
                ),
            ],
        );
        frame::put_window_update(
            &mut self.out.buf,
            0,
            CONNECTION_WINDOW - frame::DEFAULT_WINDOW as u32,
        );
    }

    /// Reads the client's preface; false if the bytes are anything else.
    async fn read_preface(&mut self) -> bool {
        while self.read.len() < frame::PREFACE.len() {
            match tokio_util::io::read_buf(&mut self.io, &mut self.read).await {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
            let n = self.read.len().min(frame::PREFACE.len());
            if self.read[..n] != frame::PREFACE[..n] {
                return false;
            }
        }
        self.read.advance(frame::PREFACE.len());
        true
    }

    /// Drives the connection: reads, runs the streams' work, writes.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = false;
            if !self.failed && !self.peer_gone && self.pending_output() < WRITE_HIGH {
                if self.read.capacity() - self.read.len() < READ_CHUNK / 2 {
                    self.read.reserve(READ_CHUNK);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        self.peer_gone = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        self.frames();
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some((id, n))) = self.released.poll_recv(cx) {
                self.release(id, n);
                progress = true;
            }
            while let Poll::Ready(Some(done)) = self.work.poll_next_unpin(cx) {
                if let Ok((id, step)) = done {
                    self.step(id, step);
                }
                progress = true;
            }
            if self.pending_output() > 0 {
                match Pin::new(&mut self.io).poll_write(cx, &self.out.buf[self.out.written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.out.written += n;
                        if self.out.written == self.out.buf.len() {
                            self.out.buf.clear();
                            self.out.written = 0;
                        }
                        if !self.parked.is_empty() && self.pending_output() < WRITE_HIGH / 2 {
                            for id in std::mem::take(&mut self.parked) {
                                self.unblock(id);
                            }
                        }
                        progress = true;
                    }
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                if self.pending_output() == 0 {
                    // TLS keeps records until flushed.
                    if let Poll::Ready(Err(_)) = Pin::new(&mut self.io).poll_flush(cx) {
                        return Poll::Ready(());
                    }
                }
            }
            if self.peer_gone {
                // Nobody to answer: the work in flight stops.
                for (_, mut s) in self.streams.drain() {
                    s.cancel("the client's connection closed");
                }
                return Poll::Ready(());
            }
            if let Some(linger) = &mut self.linger
                && linger.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(());
            }
            let finished = self.failed || (self.going_away && self.streams.is_empty());
            if finished && self.pending_output() == 0 {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn pending_output(&self) -> usize {
        self.out.buf.len() - self.out.written
    }

    /// Handles every complete frame in the read buffer.
    fn frames(&mut self) {
        while !self.failed && self.read.len() >= frame::HEADER_LEN {
            let head = Head::parse(&self.read);
            if head.len > frame::DEFAULT_MAX_FRAME {
                return self.error(
                    Reason::FrameSize,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                );
            }
            if self.read.len() < frame::HEADER_LEN + head.len {
                let need = frame::HEADER_LEN + head.len - self.read.len();
                self.read.reserve(need.max(READ_CHUNK / 2));
                return;
            }
            self.read.advance(frame::HEADER_LEN);
            let payload = self.read.split_to(head.len).freeze();
            if let Err((reason, why)) = self.frame(head, payload) {
                self.error(reason, why);
            }
        }
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), (Reason, &'static str)> {
        if !self.got_settings && head.kind != kind::SETTINGS {
            return Err((
                Reason::Protocol,
                "the client's first frame must be SETTINGS",
            ));
        }
        if let Some(c) = &self.continuing
            && (head.kind != kind::CONTINUATION || head.stream != c.stream)
        {
            return Err((Reason::Protocol, "a header block interrupted"));
        }
        match head.kind {
            kind::DATA => self.data(head, payload),
            kind::HEADERS => self.headers(head, &payload),
            kind::CONTINUATION => self.continuation(head, &payload),
            kind::RST_STREAM => self.reset(head, &payload),
            kind::SETTINGS => self.settings(head, &payload),
            kind::PING => {
                if head.len != 8 {
                    return Err((Reason::FrameSize, "PING of the wrong size"));
                }
                if head.stream != 0 {
                    return Err((Reason::Protocol, "PING on a stream"));
                }
                if !head.has(flag::ACK) {
                    frame::put_head(&mut self.out.buf, 8, kind::PING, flag::ACK, 0);
                    self.out.buf.extend_from_slice(&payload);
                }
                Ok(())
            }
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err((Reason::Protocol, "GOAWAY on a stream"));
                }
                // The client opens nothing more; what is open finishes.
                self.going_away = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(head, &payload),
            kind::PRIORITY => {
                if head.stream == 0 {
                    return Err((Reason::Protocol, "PRIORITY on stream 0"));
                }
                if head.len != 5 {
                    self.reset_stream(head.stream, Reason::FrameSize);
                } else if frame::dependency(&payload) == head.stream {
                    self.reset_stream(head.stream, Reason::Protocol);
                }
                Ok(())
            }
            kind::PUSH_PROMISE => Err((Reason::Protocol, "PUSH_PROMISE from a client")),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn headers(&mut self, head: Head, payload: &[u8]) -> Result<(), (Reason, &'static str)> {
        let id = head.stream;
        if id == 0 || id.is_multiple_of(2) {
            return Err((Reason::Protocol, "HEADERS on stream 0 or an even stream"));
        }
        let (mut start, end) = frame::unpad(&head, payload).map_err(|r| (r, "bad padding"))?;
        let mut self_dependent = false;
        if head.has(flag::PRIORITY) {
            if end - start < 5 {
                return Err((Reason::FrameSize, "HEADERS too short for its priority"));
            }
            self_dependent = frame::dependency(&payload[start..]) == id;
            start += 5;
        }
        let fragment = &payload[start..end];
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.block(id, end_stream, fragment, self_dependent);
        }
        self.continuing = Some(Continuing {
            stream: id,
            end_stream,
            block: fragment.to_vec(),
            frames: 0,
            self_dependent,
        });
        Ok(())
    }

    fn continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), (Reason, &'static str)> {
        let Some(c) = self.continuing.as_mut() else {
            return Err((Reason::Protocol, "CONTINUATION without HEADERS"));
        };
        c.block.extend_from_slice(payload);
        c.frames += 1;
        if c.frames > MAX_CONTINUATIONS || c.block.len() > 2 * self.shared.config.max_header_bytes {
            return Err((Reason::EnhanceYourCalm, "header block too large"));
        }
        if head.has(flag::END_HEADERS) {
            let c = self.continuing.take().expect("checked above");
            return self.block(c.stream, c.end_stream, &c.block, c.self_dependent);
        }
        Ok(())
    }

    /// A complete header block: a new request, or trailers.
    fn block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
        self_dependent: bool,
    ) -> Result<(), (Reason, &'static str)> {
        let shared = self.shared;
        let config = &shared.config;
        let max_list = config.max_header_bytes;
        let trailers = self.streams.get(&id).is_some_and(|s| s.remote_open);
        self.collect.reset(trailers);
        // Decoded even when refused: the compression state is shared.
        let collect = &mut self.collect;
        let decoded = self
            .decoder
            .decode(block, max_list, |n, v| collect.field(n, v));
        let too_large = match decoded {
            Ok(()) => self.collect.count > config.max_headers,
            Err(hpack::DecodeError::ListTooLarge) => true,
            Err(_) => return Err((Reason::Compression, "a header block that does not decode")),
        };
        if trailers {
            if !end_stream || too_large {
                self.reset_stream(id, Reason::Protocol);
                return Ok(());
            }
            match self.collect.trailer_map() {
                Ok(t) => self.request_ended(id, Some(t)),
                Err(_) => self.reset_stream(id, Reason::Protocol),
            }
            return Ok(());
        }
        if id <= self.last_stream {
            // Not a new stream (RFC 9113 §5.1, §5.1.1).
            return Err(if self.streams.contains_key(&id) {
                (
                    Reason::StreamClosed,
                    "HEADERS on a stream whose request ended",
                )
            } else {
                (Reason::Protocol, "a stream id not above the last one")
            });
        }
        self.last_stream = id;
        if self_dependent {
            frame::put_rst(&mut self.out.buf, id, Reason::Protocol);
            return Ok(());
        }
        if self.going_away {
            // After GOAWAY new streams are ignored (RFC 9113 §6.8).
            return Ok(());
        }
        if self.streams.len() >= MAX_CONCURRENT_STREAMS as usize {
            frame::put_rst(&mut self.out.buf, id, Reason::RefusedStream);
            return Ok(());
        }
        if too_large {
            let mut empty = HeaderMap::new();
            empty.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static("0"),
            );
            self.out.headers(id, Some(431), &empty, true);
            if !end_stream {
                frame::put_rst(&mut self.out.buf, id, Reason::NoError);
            }
            return Ok(());
        }
        // A request that ends with its head has no body to count.
        let empty_but_sized = end_stream && self.collect.length.is_some_and(|n| n != 0);
        let mut sealed = self.collect.seal();
        if sealed.is_ok() && empty_but_sized {
            sealed = Err("content-length without DATA");
        }
        if let Err(why) = sealed {
            tracing::debug!(stream = id, why, "Malformed HTTP/2 request");
            frame::put_rst(&mut self.out.buf, id, Reason::Protocol);
            return Ok(());
        }
        let work = match self.raw_work(id, end_stream) {
            Some(work) => work,
            None => match self.collect.head() {
                Ok(head) => self.general_work(id, head, end_stream),
                Err(why) => {
                    tracing::debug!(stream = id, why, "Malformed HTTP/2 request");
                    frame::put_rst(&mut self.out.buf, id, Reason::Protocol);
                    return Ok(());
                }
            },
        };
        self.open(id, work, end_stream);
        Ok(())
    }

    /// The work for the common request — no body, routed to an HTTP/1.1
    /// upstream — on the own HTTP/1.1 path: the upstream head is encoded
    /// from the decoded fields, the response head from the upstream's
    /// bytes; no `HeaderMap` either way.
    fn raw_work(&mut self, id: u32, end_stream: bool) -> Option<WorkFuture> {
        let c = &self.collect;
        if !end_stream || !c.plain() || *c.method() == http::Method::CONNECT {
            return None;
        }
        let host = c.host_name();
        let entry = self
            .shared
            .table
            .load()
            .find(&host, c.path(), c.method(), c)
            .filter(|e| e.route.protocol == UpstreamProtocol::Http1)
            .cloned()?;
        let target = c.path_and_query()?;
        let (shared, conn) = (self.shared.clone(), self.conn.clone());
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
    /// HTTP/1.1 server.
    fn general_work(&mut self, id: u32, head: request::Head, end_stream: bool) -> WorkFuture {
        let body = if end_stream {
            ClientBody::Empty
        } else {
            let (b, tx) = RequestBody::new(id, self.collect.length, self.releases.clone());
            self.pending_body = Some(tx);
            ClientBody::H2(b)
        };
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = head.headers;
        let shared = self.shared.clone();
        let conn = self.conn.clone();
        Box::pin(async move {
            let Ok(resp) = proxy::handle(shared, conn, req).await;
            let (parts, mut body) = resp.into_parts();
            let first = first_frame(&mut body).await;
            (id, Step::Answer(parts, body, first))
        })
    }

    /// Opens a stream for a request and starts its work.
    fn open(&mut self, id: u32, work: WorkFuture, end_stream: bool) {
        let (handle, registration) = AbortHandle::new_pair();
        self.work.push(Abortable::new(work, registration));
        self.streams.insert(
            id,
            Stream {
                body: self.pending_body.take(),
                remote_open: !end_stream,
                recv_window: i64::from(STREAM_WINDOW),
                unreleased: 0,
                length: self.collect.length,
                received: 0,
                send_window: self.peer_initial_window,
                blocked: None,
                abort: Some(handle),
                answered: false,
            },
        );
    }

    fn data(&mut self, head: Head, payload: Bytes) -> Result<(), (Reason, &'static str)> {
        let id = head.stream;
        if id == 0 {
            return Err((Reason::Protocol, "DATA on stream 0"));
        }
        let (start, end) = frame::unpad(&head, &payload).map_err(|r| (r, "bad padding"))?;
        let flow = head.len as i64;
        self.recv_window -= flow;
        if self.recv_window < 0 {
            return Err((Reason::FlowControl, "DATA beyond the connection window"));
        }
        let padding = (head.len - (end - start)) as u32;
        let Some(stream) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return Err((Reason::Protocol, "DATA on an idle stream"));
            }
            // A stream already closed: the credit comes straight back.
            self.release(0, head.len as u32);
            return Ok(());
        };
        if !stream.remote_open {
            self.release(0, head.len as u32);
            self.reset_stream(id, Reason::StreamClosed);
            return Ok(());
        }
        stream.recv_window -= flow;
        if stream.recv_window < 0 {
            self.reset_stream(id, Reason::FlowControl);
            return Ok(());
        }
        stream.received += (end - start) as u64;
        if stream.length.is_some_and(|l| stream.received > l) {
            self.reset_stream(id, Reason::Protocol);
            return Ok(());
        }
        if end > start {
            let data = payload.slice(start..end);
            let delivered = stream
                .body
                .as_ref()
                .is_some_and(|b| b.send(Piece::Data(data)).is_ok());
            if !delivered {
                // Nobody reads this body any more.
                self.release(id, (end - start) as u32);
            }
        }
        if padding > 0 {
            self.release(id, padding);
        }
        if head.has(flag::END_STREAM) {
            self.request_ended(id, None);
        }
        Ok(())
    }

    /// The client ended its side of `id`, with `trailers` or without.
    fn request_ended(&mut self, id: u32, trailers: Option<HeaderMap>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.length.is_some_and(|l| stream.received != l) {
            return self.reset_stream(id, Reason::Protocol);
        }
        stream.remote_open = false;
        if let Some(body) = stream.body.take() {
            let _ = body.send(match trailers {
                Some(t) => Piece::Trailers(t),
                None => Piece::End,
            });
        }
        if stream.abort.is_none() && stream.blocked.is_none() {
            // The response was already sent.
            self.streams.remove(&id);
        }
    }

    /// Returns `n` bytes of credit on `id` (0: the connection only).
    fn release(&mut self, id: u32, n: u32) {
        self.unreleased += n;
        if self.unreleased >= CONNECTION_WINDOW / 2 {
            frame::put_window_update(&mut self.out.buf, 0, self.unreleased);
            self.recv_window += i64::from(self.unreleased);
            self.unreleased = 0;
        }
        if let Some(s) = self.streams.get_mut(&id).filter(|s| s.remote_open) {
            s.unreleased += n;
            if s.unreleased >= STREAM_WINDOW / 2 {
                frame::put_window_update(&mut self.out.buf, id, s.unreleased);
                s.recv_window += i64::from(s.unreleased);
                s.unreleased = 0;
            }
        }
    }

    fn reset(&mut self, head: Head, payload: &[u8]) -> Result<(), (Reason, &'static str)> {
        if payload.len() != 4 {
            return Err((Reason::FrameSize, "RST_STREAM of the wrong size"));
        }
        if head.stream == 0 || head.stream > self.last_stream {
            return Err((Reason::Protocol, "RST_STREAM on stream 0 or an idle stream"));
        }
        if let Some(mut s) = self.streams.remove(&head.stream) {
            s.cancel("the client reset the stream");
            // Only streams reset before their answer count: cancelling a
            // long stream is normal, resetting requests as they are sent
            // only makes work.
            if !s.answered {
                self.reset_budget -= 1;
                if self.reset_budget <= 0 {
                    return Err((Reason::EnhanceYourCalm, "too many streams reset"));
                }
            }
        }
        Ok(())
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), (Reason, &'static str)> {
        if head.stream != 0 {
            return Err((Reason::Protocol, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err((Reason::FrameSize, "SETTINGS ACK with a payload"));
            }
            return Ok(());
        }
        self.got_settings = true;
        let s = frame::parse_settings(payload).map_err(|r| (r, "invalid SETTINGS"))?;
        if let Some(size) = s.max_frame {
            self.out.max_frame = size as usize;
        }
        if s.header_table_size.is_some() {
            self.out.encoder.peer_table_size_changed();
        }
        if let Some(w) = s.initial_window {
            let delta = i64::from(w) - self.peer_initial_window;
            self.peer_initial_window = i64::from(w);
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if s.send_window > frame::MAX_WINDOW {
                    return Err((Reason::FlowControl, "a stream window past 2^31-1"));
                }
            }
        }
        frame::put_head(&mut self.out.buf, 0, kind::SETTINGS, flag::ACK, 0);
        self.unblock_all();
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), (Reason, &'static str)> {
        if payload.len() != 4 {
            return Err((Reason::FrameSize, "WINDOW_UPDATE of the wrong size"));
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if increment == 0 {
                return Err((Reason::Protocol, "WINDOW_UPDATE of 0 on the connection"));
            }
            self.out.window += increment;
            if self.out.window > frame::MAX_WINDOW {
                return Err((Reason::FlowControl, "the connection window past 2^31-1"));
            }
            self.unblock_all();
            return Ok(());
        }
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            if head.stream > self.last_stream {
                return Err((Reason::Protocol, "WINDOW_UPDATE on an idle stream"));
            }
            return Ok(());
        };
        if increment == 0 {
            self.reset_stream(head.stream, Reason::Protocol);
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            self.reset_stream(head.stream, Reason::FlowControl);
            return Ok(());
        }
        self.unblock(head.stream);
        Ok(())
    }

    /// A stream error: the stream is reset, the connection goes on.
    fn reset_stream(&mut self, id: u32, reason: Reason) {
        frame::put_rst(&mut self.out.buf, id, reason);
        if let Some(mut s) = self.streams.remove(&id) {
            s.cancel("the stream was reset");
        }
    }

    /// A connection error: GOAWAY, then close.
    fn error(&mut self, reason: Reason, why: &'static str) {
        tracing::debug!(peer = %self.conn.peer, ?reason, why, "HTTP/2 connection error");
        frame::put_goaway(&mut self.out.buf, self.last_stream, reason, why.as_bytes());
        self.failed = true;
        let linger = self.shared.config.header_read_timeout;
        self.linger = Some(Box::pin(tokio::time::sleep(linger)));
        for (_, mut s) in self.streams.drain() {
            s.cancel("the connection failed");
        }
    }

    /// Graceful shutdown: no new streams, the open ones finish.
    fn go_away(&mut self, reason: Reason) {
        if !self.going_away && !self.failed {
            frame::put_goaway(&mut self.out.buf, self.last_stream, reason, b"");
        }
        self.going_away = true;
    }

    /// The next thing a stream's work produced.
    fn step(&mut self, id: u32, step: Step) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.abort = None;
        stream.answered = true;
        match step {
            Step::Answer(parts, body, first) => {
                let end = matches!(first, Poll::Ready(None));
                self.out
                    .headers(id, Some(parts.status.as_u16()), &parts.headers, end);
                match first {
                    Poll::Ready(None) => self.response_ended(id),
                    Poll::Ready(Some(f)) => self.body_frame(id, f, body),
                    Poll::Pending => self.next_frame(id, body),
                }
            }
            Step::Raw(r, body, first) => {
                let end = matches!(first, Poll::Ready(None));
                self.out.raw_headers(id, &r, end);
                match first {
                    Poll::Ready(None) => self.response_ended(id),
                    Poll::Ready(Some(f)) => self.body_frame(id, f, body),
                    Poll::Pending => self.next_frame(id, body),
                }
            }
            Step::Frame(Some(f), body) => self.body_frame(id, f, body),
            Step::Frame(None, _) => {
                frame::put_head(&mut self.out.buf, 0, kind::DATA, flag::END_STREAM, id);
                self.response_ended(id);
            }
        }
    }

    fn body_frame(&mut self, id: u32, f: Result<Frame<Bytes>, BoxError>, body: ProxyBody) {
        let frame = match f {
            Ok(frame) => frame,
            Err(err) => {
                tracing::debug!(stream = id, error = %err, "Response body failed");
                return self.reset_stream(id, Reason::Internal);
            }
        };
        match frame.into_data() {
            Ok(mut data) => {
                let end = body.is_end_stream();
                let Some(stream) = self.streams.get_mut(&id) else {
                    return;
                };
                if !self.out.data(id, stream, &mut data, end) {
                    stream.blocked = Some((data, body, end));
                } else if end {
                    self.response_ended(id);
                } else {
                    self.next_frame(id, body);
                }
            }
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_default();
                self.out.headers(id, None, &trailers, true);
                self.response_ended(id);
            }
        }
    }

    /// Polls the body for its next frame as the stream's work.
    fn next_frame(&mut self, id: u32, mut body: ProxyBody) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if self.out.buf.len() - self.out.written >= WRITE_HIGH {
            // The client is not reading: the body waits, not the memory.
            stream.blocked = Some((Bytes::new(), body, false));
            self.parked.push(id);
            return;
        }
        let work = async move {
            let f = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            (id, Step::Frame(f, body))
        };
        let (handle, registration) = AbortHandle::new_pair();
        stream.abort = Some(handle);
        self.work.push(Abortable::new(Box::pin(work), registration));
    }

    /// The response is complete.
    fn response_ended(&mut self, id: u32) {
        self.reset_budget = (self.reset_budget + 1).min(RESET_BUDGET);
        let Some(mut stream) = self.streams.remove(&id) else {
            return;
        };
        if stream.remote_open {
            // The client need not send the rest of its body (RFC 9113 §8.1).
            frame::put_rst(&mut self.out.buf, id, Reason::NoError);
            stream.cancel("the response ended before the request body");
        }
    }

    fn unblock(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Some((mut data, body, end)) = stream.blocked.take() else {
            return;
        };
        if !self.out.data(id, stream, &mut data, end) {
            stream.blocked = Some((data, body, end));
        } else if end {
            self.response_ended(id);
        } else {
            self.next_frame(id, body);
        }
    }

    fn unblock_all(&mut self) {
        if self.out.window <= 0 {
            return;
        }
        let blocked: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.blocked.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in blocked {
            self.unblock(id);
        }
    }
}

/// The body's first frame if it is ready now, without waiting.
async fn first_frame(body: &mut ProxyBody) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(window: i64) -> Output {
        Output {
            buf: Vec::new(),
            written: 0,
            encoder: hpack::Encoder::new(),
            window,
            max_frame: frame::DEFAULT_MAX_FRAME,
            name: Vec::new(),
        }
    }

    fn stream(send_window: i64) -> Stream {
        Stream {
            body: None,
            remote_open: false,
            recv_window: 0,
            unreleased: 0,
            length: None,
            received: 0,
            send_window,
            blocked: None,
            abort: None,
            answered: true,
        }
    }

    /// The frames in `buf`, as (header, payload).
    fn frames(mut buf: &[u8]) -> Vec<(Head, Vec<u8>)> {
        let mut all = Vec::new();
        while !buf.is_empty() {
            let head = Head::parse(buf);
            let end = frame::HEADER_LEN + head.len;
            all.push((head, buf[frame::HEADER_LEN..end].to_vec()));
            buf = &buf[end..];
        }
        all
    }

    #[test]
    fn a_head_larger_than_a_frame_goes_on_in_continuations() {
        let mut out = output(0);
        let mut fields = HeaderMap::new();
        let big = "v".repeat(40_000);
        fields.insert("x-big", http::HeaderValue::from_str(&big).unwrap());
        fields.insert("connection", http::HeaderValue::from_static("close"));
        out.headers(7, Some(200), &fields, true);
        let frames = frames(&out.buf);
        let kinds: Vec<u8> = frames.iter().map(|(h, _)| h.kind).collect();
        assert_eq!(
            kinds,
            [kind::HEADERS, kind::CONTINUATION, kind::CONTINUATION]
        );
        let (first, last) = (&frames[0].0, &frames[2].0);
        assert!(first.has(flag::END_STREAM) && !first.has(flag::END_HEADERS));
        assert!(last.has(flag::END_HEADERS) && !frames[1].0.has(flag::END_HEADERS));
        assert!(
            frames
                .iter()
                .all(|(h, p)| h.stream == 7 && p.len() <= 16_384)
        );
        let block: Vec<u8> = frames.iter().flat_map(|(_, p)| p.clone()).collect();
        let mut decoded = Vec::new();
        hpack::Decoder::new(4096)
            .decode(&block, 1 << 20, |n, v| {
                decoded.push((n.to_vec(), v.to_vec()))
            })
            .unwrap();
        // `connection` has no place in HTTP/2: left out.
        assert_eq!(
            decoded,
            [
                (b":status".to_vec(), b"200".to_vec()),
                (b"x-big".to_vec(), big.into_bytes())
            ]
        );
    }

    #[test]
    fn data_stops_at_the_smaller_window_and_ends_the_stream_last() {
        let mut out = output(50_000);
        let mut s = stream(20_000);
        let mut data = Bytes::from(vec![b'x'; 40_000]);
        assert!(
            !out.data(1, &mut s, &mut data, true),
            "the stream window is short"
        );
        let sent = frames(&out.buf);
        let sizes: Vec<usize> = sent.iter().map(|(h, _)| h.len).collect();
        assert_eq!(sizes, [16_384, 3_616]);
        assert!(sent.iter().all(|(h, _)| !h.has(flag::END_STREAM)));
        assert_eq!((data.len(), s.send_window, out.window), (20_000, 0, 30_000));

        out.buf.clear();
        s.send_window += 100_000;
        assert!(out.data(1, &mut s, &mut data, true));
        let sent = frames(&out.buf);
        let ends: Vec<(usize, bool)> = sent
            .iter()
            .map(|(h, _)| (h.len, h.has(flag::END_STREAM)))
            .collect();
        assert_eq!(ends, [(16_384, false), (3_616, true)]);
        assert_eq!(out.window, 10_000);

        out.buf.clear();
        let mut more = Bytes::from(vec![b'y'; 15_000]);
        assert!(
            !out.data(3, &mut s, &mut more, false),
            "the connection window is short"
        );
        assert_eq!((more.len(), out.window), (5_000, 0));
        out.buf.clear();
        let mut empty = Bytes::new();
        assert!(out.data(1, &mut s, &mut empty, true));
        let end = frames(&out.buf);
        assert_eq!(end.len(), 1);
        assert!(end[0].0.has(flag::END_STREAM) && end[0].0.len == 0);
    }
}
