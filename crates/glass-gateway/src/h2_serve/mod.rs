//! The gateway's own HTTP/2 server: h2c with prior knowledge, and TLS
//! with `h2` chosen in ALPN.
//!
//! One task per connection does everything: it reads frames (`frame`),
//! decodes header blocks (`hpack`) into a reused, checked field list
//! (`request`), starts each stream's work (`work`: the own HTTP/1.1
//! upstream path straight from the field list for a bodiless request to
//! an HTTP/1.1 upstream, `proxy::handle` for any other), polls that work
//! in a `FuturesUnordered` (no task spawned per stream), and gathers the
//! response frames in one buffer (`output`) that leaves in as few writes
//! as the socket takes. Flow control works both ways (`stream`, `body`):
//! request bodies return their credit once the upstream has taken the
//! bytes, response bodies are read only while the client has window for
//! them and is reading. A general-purpose server (a task and a shared,
//! locked stream store per stream, every field map built twice) cost
//! more than the rest of the proxy together on small requests; the
//! protocol itself is small.
//!
//! Limits and defences: header lists over `max_header_bytes` or with more
//! than `max_headers` fields get 431; a header block is cut off after
//! 64 CONTINUATION frames or twice the header limit; at most 1024
//! concurrent streams; a client that resets streams before their answer
//! faster than it lets them finish (rapid reset) gets
//! GOAWAY(ENHANCE_YOUR_CALM); while 256 KiB of output is unread by the
//! client, the server reads neither requests nor response bodies.

mod body;
mod frame;
mod output;
mod request;
mod stream;
mod work;

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub(crate) use body::RequestBody;
use body::{Piece, Releases};
use frame::{Head, Reason, flag, kind};
use output::Output;
use stream::Stream;
use work::{Step, Work, WorkFuture};

use crate::body::{BoxError, ProxyBody};
use crate::hpack;
use crate::proxy::{Conn, Shared};

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

/// A header block split over CONTINUATION frames, being gathered.
struct Continuing {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: usize,
    /// The stream was made to depend on itself (a stream error).
    self_dependent: bool,
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
    /// Written since the last completed flush.
    unflushed: bool,
    /// Closes a failed connection whose client does not take the GOAWAY.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
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
            parked: Vec::new(),
            unflushed: false,
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
                            // A burst's buffer is not kept by an idle connection.
                            if self.out.buf.capacity() > 4 * READ_CHUNK {
                                self.out.buf.shrink_to(READ_CHUNK);
                            }
                        }
                        if !self.parked.is_empty() && self.pending_output() < WRITE_HIGH / 2 {
                            for id in std::mem::take(&mut self.parked) {
                                self.unblock(id);
                            }
                        }
                        self.unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if self.unflushed && self.pending_output() == 0 {
                // TLS keeps records until flushed (and may need to wait).
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
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
            if finished && self.pending_output() == 0 && !self.unflushed {
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
        let (shared, conn) = (self.shared, self.conn);
        let (work, body) = match work::raw(&self.collect, shared, conn, id, end_stream) {
            Some(work) => (work, None),
            None => match self.collect.head() {
                Ok(head) => {
                    let length = self.collect.length;
                    work::general(head, length, shared, conn, &self.releases, id, end_stream)
                }
                Err(why) => {
                    tracing::debug!(stream = id, why, "Malformed HTTP/2 request");
                    frame::put_rst(&mut self.out.buf, id, Reason::Protocol);
                    return Ok(());
                }
            },
        };
        self.open(id, work, body, end_stream);
        Ok(())
    }

    /// Opens a stream for a request and starts its work.
    fn open(
        &mut self,
        id: u32,
        work: WorkFuture,
        body: Option<mpsc::UnboundedSender<Piece>>,
        end_stream: bool,
    ) {
        let (handle, registration) = AbortHandle::new_pair();
        self.work.push(Abortable::new(work, registration));
        self.streams.insert(
            id,
            Stream {
                body,
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
        // A head ends the stream itself when the body had nothing at all.
        let (body, next) = match step {
            Step::Answer(parts, body, first) => {
                let end = matches!(first, Poll::Ready(None));
                let status = Some(parts.status.as_u16());
                self.out.headers(id, status, &parts.headers, end);
                (body, first)
            }
            Step::Raw(r, body, first) => {
                self.out
                    .raw_headers(id, &r, matches!(first, Poll::Ready(None)));
                (body, first)
            }
            Step::Frame(Some(f), body) => (body, Poll::Ready(Some(f))),
            Step::Frame(None, _) => {
                frame::put_head(&mut self.out.buf, 0, kind::DATA, flag::END_STREAM, id);
                return self.response_ended(id);
            }
        };
        match next {
            Poll::Ready(None) => self.response_ended(id),
            Poll::Ready(Some(f)) => self.body_frame(id, f, body),
            Poll::Pending => self.next_frame(id, body),
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
            Ok(data) => {
                let end = body.is_end_stream();
                let Some(stream) = self.streams.get_mut(&id) else {
                    return;
                };
                stream.blocked = Some((data, body, end));
                self.unblock(id);
            }
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_default();
                self.out.headers(id, None, &trailers, true);
                self.response_ended(id);
            }
        }
    }

    /// Polls the body for its next frame as the stream's work.
    fn next_frame(&mut self, id: u32, body: ProxyBody) {
        let backed_up = self.pending_output() >= WRITE_HIGH;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if backed_up {
            // The client is not reading: the body waits, not the memory.
            stream.blocked = Some((Bytes::new(), body, false));
            self.parked.push(id);
            return;
        }
        let (handle, registration) = AbortHandle::new_pair();
        stream.abort = Some(handle);
        self.work
            .push(Abortable::new(work::next_frame(id, body), registration));
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

    /// Sends the stream's waiting data as far as the windows allow; then
    /// ends the response or asks the body for more.
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
