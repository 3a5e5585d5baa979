//! The HTTP/2 server on the cleartext port (h2c with prior knowledge),
//! driven frame by frame over raw TCP: the connection preface and
//! SETTINGS, streams, flow control, stream and connection errors
//! (RFC 9113), malformed requests, abuse limits (header blocks that never
//! end, CONTINUATION floods, rapid reset), trailers, graceful drain; then
//! real clients (curl, h2load) against it.
//!
//! Requests are encoded with HPACK literals without indexing and without
//! Huffman coding, which every decoder must accept; responses are read
//! with a complete HPACK decoder (dynamic table, Huffman), so the server's
//! encoder may choose any representation. Every frame the server sends is
//! checked against the rules a client can see (size, reserved bit, header
//! blocks contiguous, response fields well formed, no DATA past a window).
//!
//! Where RFC 9113 allows several reactions (a stream error or a connection
//! error, a GOAWAY before the close or a bare close, a 4xx or a reset) the
//! tests accept each allowed one and nothing else.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Bound on every read: a server that neither answers nor closes fails.
const WAIT: Duration = Duration::from_secs(5);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// Error codes (§7).
const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const STREAM_CLOSED: u32 = 0x5;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

// Settings (§6.5.2).
const HEADER_TABLE_SIZE: u16 = 0x1;
const ENABLE_PUSH: u16 = 0x2;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;

/// The flow-control window every stream and the connection start with.
const DEFAULT_WINDOW: i64 = 65_535;
/// The frame size every endpoint accepts; we never advertise more.
const DEFAULT_MAX_FRAME: usize = 16_384;

fn code_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("{code:#x}"),
    };
    name.to_owned()
}

fn codes_named(codes: &[u32]) -> String {
    codes
        .iter()
        .map(|c| code_name(*c))
        .collect::<Vec<_>>()
        .join("|")
}

// ---------------------------------------------------------------------------
// Frames out.

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24, "a frame payload over 2^24");
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

fn ping(flags: u8, opaque: &[u8; 8]) -> Vec<u8> {
    frame(PING, flags, 0, opaque)
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

fn priority(stream: u32, depends_on: u32, weight: u8) -> Vec<u8> {
    let mut payload = depends_on.to_be_bytes().to_vec();
    payload.push(weight);
    frame(PRIORITY, 0, stream, &payload)
}

fn data(stream: u32, flags: u8, bytes: &[u8]) -> Vec<u8> {
    frame(DATA, flags, stream, bytes)
}

/// A DATA frame with `pad` bytes of padding.
fn data_padded(stream: u32, flags: u8, bytes: &[u8], pad: u8) -> Vec<u8> {
    let mut payload = vec![pad];
    payload.extend_from_slice(bytes);
    payload.extend(std::iter::repeat_n(0, usize::from(pad)));
    frame(DATA, flags | PADDED, stream, &payload)
}

fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags, stream, block)
}

fn continuation(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(CONTINUATION, flags, stream, block)
}

/// A whole request head as HEADERS, END_HEADERS and END_STREAM set.
fn get_frame(stream: u32, path: &str) -> Vec<u8> {
    headers(
        stream,
        END_HEADERS | END_STREAM,
        &request_block("GET", path),
    )
}

// ---------------------------------------------------------------------------
// HPACK out (RFC 7541): literals without indexing, new names, no Huffman.

fn hpack_int(out: &mut Vec<u8>, prefix_bits: u8, first: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// One field as a literal without indexing with a new name (§6.2.2).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 7, 0, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 7, 0, value.len());
    out.extend_from_slice(value);
}

fn block<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        literal(&mut out, n.as_ref(), v.as_ref());
    }
    out
}

fn request_fields(method: &str, path: &str) -> Vec<(String, String)> {
    [
        (":method", method),
        (":scheme", "http"),
        (":authority", "x.test"),
        (":path", path),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect()
}

fn request_block(method: &str, path: &str) -> Vec<u8> {
    block(&request_fields(method, path))
}

// ---------------------------------------------------------------------------
// HPACK in: a complete decoder, for whatever representation the server picks.

const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Code lengths of the HPACK Huffman code (RFC 7541 Appendix B), symbols
/// 0..=255; EOS (256) is 30 bits. The code is canonical: the codes follow
/// from the lengths.
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// The canonical Huffman code by length: for each length, the first code,
/// how many codes, and where its symbols start in `symbols`.
struct Huffman {
    first: [u32; 31],
    count: [u32; 31],
    offset: [usize; 31],
    symbols: Vec<u16>,
}

fn huffman() -> &'static Huffman {
    static TABLE: OnceLock<Huffman> = OnceLock::new();
    TABLE.get_or_init(|| {
        let len = |s: u16| {
            if s == 256 {
                30
            } else {
                usize::from(HUFFMAN_LENGTHS[usize::from(s)])
            }
        };
        let mut symbols: Vec<u16> = (0..=256).collect();
        symbols.sort_by_key(|&s| (len(s), s));
        let mut count = [0u32; 31];
        for s in 0..=256 {
            count[len(s)] += 1;
        }
        let mut first = [0u32; 31];
        let mut offset = [0usize; 31];
        let mut code = 0u32;
        for l in 1..31 {
            code = (code + count[l - 1]) << 1;
            first[l] = code;
            offset[l] = offset[l - 1] + count[l - 1] as usize;
        }
        Huffman {
            first,
            count,
            offset,
            symbols,
        }
    })
}

fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let t = huffman();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in bytes {
        for i in (0..8).rev() {
            code = code << 1 | u32::from(byte >> i & 1);
            len += 1;
            if len > 30 {
                return Err("a Huffman code over 30 bits".into());
            }
            if t.count[len] > 0 && code >= t.first[len] && code - t.first[len] < t.count[len] {
                let symbol = t.symbols[t.offset[len] + (code - t.first[len]) as usize];
                if symbol == 256 {
                    return Err("EOS inside a Huffman string".into());
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the EOS prefix).
    if len > 7 || code != (1 << len) - 1 {
        return Err(format!("bad Huffman padding: {len} bits {code:#b}"));
    }
    Ok(out)
}

fn hpack_read_int(b: &mut &[u8], prefix_bits: u8) -> Result<usize, String> {
    let (&first, rest) = b.split_first().ok_or("truncated integer")?;
    *b = rest;
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&byte, rest) = b.split_first().ok_or("truncated integer")?;
        *b = rest;
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if shift > 28 {
            return Err("integer overflow".into());
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

fn hpack_read_string(b: &mut &[u8]) -> Result<String, String> {
    let huffman = b.first().ok_or("truncated string")? & 0x80 != 0;
    let len = hpack_read_int(b, 7)?;
    if b.len() < len {
        return Err(format!("a {len}-byte string with {} bytes left", b.len()));
    }
    let (raw, rest) = b.split_at(len);
    *b = rest;
    let bytes = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The decoding side of one connection's HPACK context.
struct Hpack {
    table: VecDeque<(String, String)>,
    size: usize,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the encoder may not go over it.
    limit: usize,
    max: usize,
}

impl Hpack {
    fn new(limit: usize) -> Hpack {
        Hpack {
            table: VecDeque::new(),
            size: 0,
            limit,
            max: limit,
        }
    }

    fn entry(&self, index: usize) -> Result<(String, String), String> {
        match index {
            0 => Err("index 0".into()),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok((n.to_owned(), v.to_owned()))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or_else(|| format!("index {index} past the dynamic table")),
        }
    }

    fn insert(&mut self, name: String, value: String) {
        self.size += name.len() + value.len() + 32;
        self.table.push_front((name, value));
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let (n, v) = self.table.pop_back().expect("size accounts for entries");
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn literal(&self, b: &mut &[u8], prefix_bits: u8) -> Result<(String, String), String> {
        let index = hpack_read_int(b, prefix_bits)?;
        let name = if index == 0 {
            hpack_read_string(b)?
        } else {
            self.entry(index)?.0
        };
        Ok((name, hpack_read_string(b)?))
    }

    fn decode(&mut self, mut b: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut fields = Vec::new();
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                let index = hpack_read_int(&mut b, 7)?;
                fields.push(self.entry(index)?);
            } else if first & 0x40 != 0 {
                let (n, v) = self.literal(&mut b, 6)?;
                self.insert(n.clone(), v.clone());
                fields.push((n, v));
            } else if first & 0x20 != 0 {
                // RFC 7541 §4.2: only at the start of a block, within our limit.
                if !fields.is_empty() {
                    return Err("a dynamic table size update after a field".into());
                }
                let size = hpack_read_int(&mut b, 5)?;
                if size > self.limit {
                    return Err(format!("table size {size} over our {}", self.limit));
                }
                self.max = size;
                self.evict();
            } else {
                // Without indexing (0000) or never indexed (0001).
                fields.push(self.literal(&mut b, 4)?);
            }
        }
        Ok(fields)
    }
}

#[test]
fn hpack_decoder_reads_the_rfc7541_examples() {
    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
    fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }
    // C.4.1: a Huffman-coded request.
    let mut d = Hpack::new(4096);
    assert_eq!(
        d.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap(),
        owned(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ])
    );
    // C.6.1 and C.6.2: Huffman-coded responses with a 256-byte table,
    // the second evicting from it.
    let mut d = Hpack::new(256);
    let date = "Mon, 21 Oct 2013 20:13:21 GMT";
    assert_eq!(
        d.decode(&hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"
        ))
        .unwrap(),
        owned(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", date),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!(
        d.decode(&hex("4883 640e ffc1 c0bf")).unwrap(),
        owned(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", date),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!(d.table.len(), 4);
    // Our own encoding decodes to itself, long values included.
    let long = "v".repeat(300);
    let fields = owned(&[(":path", "/x"), ("x-long", &long)]);
    assert_eq!(Hpack::new(4096).decode(&block(&fields)).unwrap(), fields);
    assert!(huffman_decode(&[0x00]).is_err(), "zero padding is refused");
}

// ---------------------------------------------------------------------------
// A raw HTTP/2 client connection.

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
    /// HEADERS: the decoded block (CONTINUATIONs folded in).
    fields: Vec<(String, String)>,
}

impl Frame {
    fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The error code of a RST_STREAM or GOAWAY.
    fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// DATA without its padding.
    fn data(&self) -> &[u8] {
        if self.is(PADDED) {
            let pad = usize::from(self.payload[0]);
            &self.payload[1..self.payload.len() - pad]
        } else {
            &self.payload
        }
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.kind {
            DATA => "DATA",
            HEADERS => "HEADERS",
            PRIORITY => "PRIORITY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PUSH_PROMISE => "PUSH_PROMISE",
            PING => "PING",
            GOAWAY => "GOAWAY",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            CONTINUATION => "CONTINUATION",
            _ => "UNKNOWN",
        };
        write!(
            f,
            "{name}(stream {}, flags {:#x}, {} bytes",
            self.stream,
            self.flags,
            self.payload.len()
        )?;
        if matches!(self.kind, RST_STREAM | GOAWAY) {
            write!(f, ", {}", code_name(self.code()))?;
        }
        if self.kind == GOAWAY {
            let last = u32::from_be_bytes(self.payload[..4].try_into().unwrap());
            let debug = String::from_utf8_lossy(&self.payload[8..]);
            write!(f, ", last stream {last}, {debug:?}")?;
        }
        if !self.fields.is_empty() {
            write!(f, ", {:?}", self.fields)?;
        }
        write!(f, ")")
    }
}

#[derive(Debug)]
enum Next {
    Frame(Frame),
    Closed,
    Timeout,
}

/// One stream's answer as read.
#[derive(Default)]
struct Reply {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Option<Vec<(String, String)>>,
    reset: Option<u32>,
    end_stream: bool,
    /// Kind and flags of every frame on the stream, in order.
    frames: Vec<(u8, u8)>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body", &text)
            .field("trailers", &self.trailers)
            .field("reset", &self.reset.map(code_name))
            .field("end_stream", &self.end_stream)
            .field("frames", &self.frames)
            .finish()
    }
}

const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// A response or trailer block must be well formed (RFC 9113 §8.1.1,
/// §8.2, §8.3.2): lowercase names, no connection-specific fields, one
/// `:status` first in a head and none in trailers.
fn check_response_fields(fields: &[(String, String)], trailers: bool) {
    let mut regular = false;
    let mut statuses = 0;
    for (n, v) in fields {
        assert!(
            !n.is_empty() && !n.bytes().any(|c| c.is_ascii_uppercase()),
            "field name {n:?} not lowercase: {fields:?}"
        );
        assert!(
            !v.bytes().any(|c| c == 0 || c == b'\r' || c == b'\n'),
            "NUL, CR or LF in {n}: {fields:?}"
        );
        if let Some(pseudo) = n.strip_prefix(':') {
            assert!(!trailers, "pseudo-header in trailers: {fields:?}");
            assert!(!regular, "pseudo-header after a regular field: {fields:?}");
            assert_eq!(pseudo, "status", "a response may only carry :status");
            statuses += 1;
        } else {
            regular = true;
            assert!(
                !CONNECTION_SPECIFIC.contains(&n.as_str()),
                "connection-specific field {n} sent over HTTP/2: {fields:?}"
            );
        }
    }
    if !trailers {
        assert_eq!(statuses, 1, "one :status in a response head: {fields:?}");
    }
}

impl Reply {
    fn done(&self) -> bool {
        self.end_stream || self.reset.is_some()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .flatten()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn record(&mut self, f: &Frame) {
        if self.done() {
            // After END_STREAM or RST_STREAM only these may follow (§5.1).
            assert!(
                matches!(f.kind, WINDOW_UPDATE | PRIORITY | RST_STREAM),
                "{f:?} after the stream ended: {self:?}"
            );
        }
        self.frames.push((f.kind, f.flags));
        match f.kind {
            HEADERS if self.status.is_none() => {
                check_response_fields(&f.fields, false);
                let status: u16 = f.fields[0].1.parse().expect(":status is a number");
                if (100..200).contains(&status) {
                    assert!(!f.is(END_STREAM), "an interim response ends the stream");
                } else {
                    self.status = Some(status);
                    self.headers = f.fields[1..].to_vec();
                }
            }
            HEADERS => {
                check_response_fields(&f.fields, true);
                assert!(
                    f.is(END_STREAM),
                    "trailers without END_STREAM (§8.1): {f:?}"
                );
                self.trailers = Some(f.fields.clone());
            }
            DATA => {
                assert!(
                    self.status.is_some(),
                    "DATA before the response head: {f:?}"
                );
                assert!(self.trailers.is_none(), "DATA after trailers: {f:?}");
                self.body.extend_from_slice(f.data());
            }
            RST_STREAM => self.reset = Some(f.code()),
            _ => {}
        }
        if matches!(f.kind, HEADERS | DATA) && f.is(END_STREAM) {
            self.end_stream = true;
        }
    }
}

/// How a connection ended, as seen by [`H2::ending`].
#[derive(Debug)]
struct Ending {
    closed: bool,
    goaways: Vec<(u32, u32)>,
    /// Frames that have no business on a connection being torn down.
    unexpected: Vec<String>,
    took: Duration,
}

impl Ending {
    /// A connection error: the connection closed, after at most GOAWAYs
    /// with one of `codes` naming no stream past `max_last`, and nothing
    /// else was sent.
    fn conn_error(&self, codes: &[u32], max_last: u32) -> Result<(), String> {
        if !self.closed {
            return Err(format!("still open after {WAIT:?}: {self:?}"));
        }
        if !self.unexpected.is_empty() {
            return Err(format!("unexpected frames: {:?}", self.unexpected));
        }
        for &(last, code) in &self.goaways {
            if !codes.contains(&code) {
                return Err(format!(
                    "GOAWAY {}, expected {}",
                    code_name(code),
                    codes_named(codes)
                ));
            }
            if last > max_last {
                return Err(format!(
                    "GOAWAY names stream {last} as processed, at most {max_last} was valid"
                ));
            }
        }
        Ok(())
    }
}

struct H2 {
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    hpack: Hpack,
    /// The server's SETTINGS, in the order received.
    settings: Vec<(u16, u32)>,
    /// GOAWAYs received: last stream id and code.
    goaways: Vec<(u32, u32)>,
    /// WINDOW_UPDATEs received: stream and increment.
    window_updates: Vec<(u32, u32)>,
    /// Kind and stream of every frame read, in order.
    log: Vec<(u8, u32)>,
    /// Stream frames read while uploading, for [`H2::replies`].
    pending: VecDeque<Frame>,
    /// Whether [`H2::replies`] grants DATA back as it arrives.
    grant: bool,
    /// Our sending windows: the connection's and each stream's.
    send_conn: i64,
    send_streams: HashMap<u32, i64>,
    /// The server's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_initial: i64,
    /// The server closed the connection (or broke it).
    closed: bool,
}

impl H2 {
    /// A TCP connection, nothing sent.
    async fn connect(addr: SocketAddr) -> H2 {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        s.set_nodelay(true).unwrap();
        let (rd, wr) = s.into_split();
        H2 {
            rd,
            wr: Some(wr),
            buf: Vec::with_capacity(64 * 1024),
            hpack: Hpack::new(4096),
            settings: Vec::new(),
            goaways: Vec::new(),
            window_updates: Vec::new(),
            log: Vec::new(),
            pending: VecDeque::new(),
            grant: true,
            send_conn: DEFAULT_WINDOW,
            send_streams: HashMap::new(),
            peer_initial: DEFAULT_WINDOW,
            closed: false,
        }
    }

    /// A connection past the preface: ours sent, the server's SETTINGS
    /// received (and acknowledged).
    async fn open(addr: SocketAddr) -> H2 {
        H2::open_with(addr, &[(ENABLE_PUSH, 0)]).await
    }

    async fn open_with(addr: SocketAddr, ours: &[(u16, u32)]) -> H2 {
        let mut h = H2::connect(addr).await;
        if let Some((_, size)) = ours.iter().find(|(id, _)| *id == HEADER_TABLE_SIZE) {
            h.hpack = Hpack::new(*size as usize);
        }
        h.send(&[PREFACE, &settings(ours)].concat()).await;
        let first = h.frame().await;
        assert!(
            first.kind == SETTINGS && !first.is(ACK),
            "the server's preface must start with SETTINGS: {first:?}"
        );
        h
    }

    /// Writes `bytes`; false when the connection is gone (the reads tell).
    async fn send(&mut self, bytes: &[u8]) -> bool {
        match &mut self.wr {
            Some(w) => w.write_all(bytes).await.is_ok(),
            None => false,
        }
    }

    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    async fn read_frame(&mut self, deadline: tokio::time::Instant) -> Next {
        loop {
            if self.buf.len() >= 9 {
                let b = &self.buf;
                let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
                assert!(
                    len <= DEFAULT_MAX_FRAME,
                    "a {len}-byte frame over our SETTINGS_MAX_FRAME_SIZE (§4.2)"
                );
                if b.len() >= 9 + len {
                    let raw_id = u32::from_be_bytes(b[5..9].try_into().unwrap());
                    assert_eq!(raw_id >> 31, 0, "the reserved bit is set (§4.1)");
                    let f = Frame {
                        kind: b[3],
                        flags: b[4],
                        stream: raw_id,
                        payload: b[9..9 + len].to_vec(),
                        fields: Vec::new(),
                    };
                    self.buf.drain(..9 + len);
                    return Next::Frame(f);
                }
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.rd.read_buf(&mut self.buf)).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(0) | Err(_)) => {
                    self.closed = true;
                    return Next::Closed;
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame within `wait`, a header block read whole, the
    /// server's SETTINGS and PINGs acknowledged, windows tracked.
    async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        let mut f = match self.read_frame(deadline).await {
            Next::Frame(f) => f,
            other => return other,
        };
        self.log.push((f.kind, f.stream));
        match f.kind {
            HEADERS => {
                assert_ne!(f.stream, 0, "HEADERS on stream 0");
                let mut fragment = f.payload.as_slice();
                let mut pad = 0;
                if f.is(PADDED) {
                    pad = usize::from(fragment[0]);
                    fragment = &fragment[1..];
                }
                if f.is(PRIORITY_FLAG) {
                    fragment = &fragment[5..];
                }
                let mut block = fragment[..fragment.len() - pad].to_vec();
                while !f.is(END_HEADERS) {
                    let c = match self.read_frame(deadline).await {
                        Next::Frame(c) => c,
                        other => return other,
                    };
                    assert!(
                        c.kind == CONTINUATION && c.stream == f.stream,
                        "a header block must be contiguous (§4.3): {c:?} inside {f:?}"
                    );
                    block.extend_from_slice(&c.payload);
                    f.flags |= c.flags & END_HEADERS;
                }
                f.fields = self
                    .hpack
                    .decode(&block)
                    .unwrap_or_else(|e| panic!("an undecodable header block: {e}"));
            }
            CONTINUATION => panic!("CONTINUATION outside a header block: {f:?}"),
            PUSH_PROMISE => panic!("a push although we sent ENABLE_PUSH 0: {f:?}"),
            SETTINGS => {
                assert_eq!(f.stream, 0, "SETTINGS on a stream");
                if f.is(ACK) {
                    assert!(f.payload.is_empty(), "a SETTINGS ACK with a payload");
                } else {
                    assert_eq!(f.payload.len() % 6, 0, "SETTINGS length");
                    for pair in f.payload.chunks(6) {
                        let id = u16::from_be_bytes([pair[0], pair[1]]);
                        let value = u32::from_be_bytes(pair[2..6].try_into().unwrap());
                        if id == INITIAL_WINDOW_SIZE {
                            let delta = i64::from(value) - self.peer_initial;
                            self.send_streams.values_mut().for_each(|w| *w += delta);
                            self.peer_initial = i64::from(value);
                        }
                        self.settings.push((id, value));
                    }
                    self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                }
            }
            PING => {
                assert_eq!((f.stream, f.payload.len()), (0, 8), "PING shape");
                if !f.is(ACK) {
                    let opaque: [u8; 8] = f.payload[..].try_into().unwrap();
                    self.send(&ping(ACK, &opaque)).await;
                }
            }
            GOAWAY => {
                assert_eq!(f.stream, 0, "GOAWAY on a stream");
                assert!(f.payload.len() >= 8, "GOAWAY shape");
                let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                self.goaways.push((last & 0x7fff_ffff, f.code()));
            }
            WINDOW_UPDATE => {
                assert_eq!(f.payload.len(), 4, "WINDOW_UPDATE shape");
                let inc = u32::from_be_bytes(f.payload[..].try_into().unwrap()) & 0x7fff_ffff;
                assert_ne!(inc, 0, "a WINDOW_UPDATE of 0 (§6.9)");
                self.window_updates.push((f.stream, inc));
                if f.stream == 0 {
                    self.send_conn += i64::from(inc);
                } else {
                    let init = self.peer_initial;
                    *self.send_streams.entry(f.stream).or_insert(init) += i64::from(inc);
                }
            }
            RST_STREAM => {
                assert_ne!(f.stream, 0, "RST_STREAM on stream 0");
                assert_eq!(f.payload.len(), 4, "RST_STREAM shape");
            }
            DATA => {
                assert_ne!(f.stream, 0, "DATA on stream 0");
                if f.is(PADDED) {
                    assert!(
                        !f.payload.is_empty() && usize::from(f.payload[0]) < f.payload.len(),
                        "DATA padding"
                    );
                }
            }
            _ => {}
        }
        Next::Frame(f)
    }

    /// The next frame; the connection must not end or stall.
    async fn frame(&mut self) -> Frame {
        match self.next(WAIT).await {
            Next::Frame(f) => f,
            other => panic!(
                "expected a frame, got {other:?}; GOAWAYs {:?}",
                self.goaways
            ),
        }
    }

    /// Reads until a frame matches.
    async fn until(&mut self, what: &str, matches: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Frame(f) if matches(&f) => return f,
                Next::Frame(_) => {}
                other => panic!("waiting for {what}: {other:?}; GOAWAYs {:?}", self.goaways),
            }
        }
    }

    /// Every frame that arrives within `wait`; the connection stays open.
    async fn quiet(&mut self, wait: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Frame(f) => seen.push(f),
                Next::Timeout => return seen,
                Next::Closed => panic!("closed; seen {seen:?}; GOAWAYs {:?}", self.goaways),
            }
        }
    }

    /// Reads until every stream of `ids` ended (END_STREAM or RST_STREAM),
    /// the connection closes, or [`WAIT`] passes; DATA is granted back as
    /// it arrives unless `grant` is off.
    async fn replies(&mut self, ids: &[u32]) -> HashMap<u32, Reply> {
        let deadline = Instant::now() + WAIT;
        let mut out: HashMap<u32, Reply> = ids.iter().map(|&i| (i, Reply::default())).collect();
        while !out.values().all(Reply::done) {
            let f = match self.pending.pop_front() {
                Some(f) => f,
                None => match self
                    .next(deadline.saturating_duration_since(Instant::now()))
                    .await
                {
                    Next::Frame(f) => f,
                    _ => break,
                },
            };
            let Some(r) = out.get_mut(&f.stream) else {
                continue;
            };
            r.record(&f);
            if f.kind == DATA && self.grant && !f.payload.is_empty() {
                let n = u32::try_from(f.payload.len()).unwrap();
                let mut grant = window_update(0, n);
                if !f.is(END_STREAM) {
                    grant.extend(window_update(f.stream, n));
                }
                self.send(&grant).await;
            }
        }
        out
    }

    async fn reply(&mut self, id: u32) -> Reply {
        let r = self.replies(&[id]).await.remove(&id).unwrap();
        assert!(
            r.done(),
            "stream {id} never ended: {r:?}; GOAWAYs {:?}",
            self.goaways
        );
        r
    }

    /// A complete 200 on `id`, its length as declared.
    async fn ok(&mut self, id: u32) -> Reply {
        let r = self.reply(id).await;
        assert!(
            r.status == Some(200) && r.reset.is_none() && r.end_stream,
            "stream {id}: {r:?}"
        );
        if let Some(len) = r.header("content-length") {
            assert_eq!(
                len.parse::<usize>().unwrap(),
                r.body.len(),
                "content-length"
            );
        }
        r
    }

    /// Sends `body` on stream `id` (open, head sent) as DATA frames within
    /// the server's windows, END_STREAM on the last; waits for
    /// WINDOW_UPDATEs when blocked.
    async fn upload(&mut self, id: u32, body: &[u8]) {
        let max = self
            .setting(MAX_FRAME_SIZE)
            .map_or(DEFAULT_MAX_FRAME, |v| v as usize);
        let mut at = 0;
        loop {
            let init = self.peer_initial;
            let stream = *self.send_streams.entry(id).or_insert(init);
            let room = usize::try_from(self.send_conn.min(stream).max(0)).unwrap();
            let n = room.min(max).min(body.len() - at);
            if n == 0 && at < body.len() {
                match self.next(WAIT).await {
                    Next::Frame(f) => {
                        if f.stream != 0 && f.kind != WINDOW_UPDATE {
                            self.pending.push_back(f);
                        }
                        continue;
                    }
                    other => panic!(
                        "upload blocked at {at} of {} bytes, windows: connection {} stream {stream}: {other:?}",
                        body.len(),
                        self.send_conn
                    ),
                }
            }
            let last = at + n == body.len();
            let flags = if last { END_STREAM } else { 0 };
            assert!(self.send(&data(id, flags, &body[at..at + n])).await);
            self.send_conn -= n as i64;
            *self.send_streams.get_mut(&id).unwrap() -= n as i64;
            at += n;
            if last {
                return;
            }
        }
    }

    /// Reads until the server closes the connection (or [`WAIT`] passes);
    /// frames on `live` streams are expected, others are noted.
    async fn ending(&mut self, live: &[u32]) -> Ending {
        let started = Instant::now();
        let deadline = started + WAIT;
        let mut unexpected = Vec::new();
        let closed = loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Frame(f) => {
                    let fine = match f.kind {
                        SETTINGS | PING | GOAWAY => true,
                        WINDOW_UPDATE => f.stream == 0 || live.contains(&f.stream),
                        _ => live.contains(&f.stream),
                    };
                    if !fine {
                        unexpected.push(format!("{f:?}"));
                    }
                }
                Next::Closed => break true,
                Next::Timeout => break false,
            }
        };
        Ending {
            closed,
            goaways: self.goaways.clone(),
            unexpected,
            took: started.elapsed(),
        }
    }

    /// Raw bytes until the server closes or `wait` passes.
    async fn read_all(&mut self, wait: Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = std::mem::take(&mut self.buf);
        loop {
            out.reserve(8192);
            match tokio::time::timeout_at(deadline, self.rd.read_buf(&mut out)).await {
                Err(_) => return (out, false),
                Ok(Ok(0) | Err(_)) => return (out, true),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A fresh connection is served: the gateway survived whatever came before.
async fn serves(addr: SocketAddr) {
    let mut h = H2::open(addr).await;
    h.send(&get_frame(1, "/fresh")).await;
    h.ok(1).await;
}

// ---------------------------------------------------------------------------
// Panics in the gateway: its tasks run on the test's own thread (a
// current-thread runtime), so a per-thread count sees them.

thread_local! {
    static PANICS: Cell<u32> = const { Cell::new(0) };
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

fn assert_no_panic() {
    assert_eq!(PANICS.with(Cell::get), 0, "the gateway panicked");
}

// ---------------------------------------------------------------------------
// Gateways and upstreams.

/// A gateway with one catch-all route to `upstream`.
async fn gateway(upstream: SocketAddr) -> Glass {
    count_panics();
    let mut g = Glass::start().await;
    g.route(static_route("r", &[upstream], json!({})))
        .publish()
        .await;
    g
}

/// `n` bytes that show where each one belongs.
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// An HTTP/1.1 upstream for byte-exact checks: `/echo` answers with the
/// request body as received, `/bytes/N` with N bytes of [`pattern`];
/// counts requests.
pub(crate) async fn bytes_backend() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = accept_each(l, move |s| {
        let counter = counter.clone();
        async move {
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                counter.fetch_add(1, Relaxed);
                async move {
                    let path = req.uri().path().to_owned();
                    let out = if path == "/echo" {
                        match req.into_body().collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(_) => {
                                let mut r = http::Response::new(body("body error"));
                                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                                return Ok::<_, Infallible>(r);
                            }
                        }
                    } else if let Some(n) = path.strip_prefix("/bytes/") {
                        Bytes::from(pattern(n.parse().unwrap()))
                    } else {
                        Bytes::from_static(b"?")
                    };
                    Ok(http::Response::new(body(out)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        }
    });
    Backend::from_parts(addr, hits, task)
}

/// Waits until `b` has seen `n` requests.
async fn hits_reach(b: &Backend, n: u64) {
    let deadline = Instant::now() + WAIT;
    while b.hits() < n {
        assert!(Instant::now() < deadline, "the upstream saw {}", b.hits());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. The connection preface.

#[tokio::test]
async fn preface_settings_exchange_and_ping() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::connect(g.addr).await;
    h.send(
        &[
            PREFACE,
            &settings(&[(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, 100_000)]),
        ]
        .concat(),
    )
    .await;
    // The server's preface is a SETTINGS frame, first (§3.4).
    let first = h.frame().await;
    assert!(
        first.kind == SETTINGS && !first.is(ACK) && first.stream == 0,
        "{first:?}"
    );
    for &(id, value) in &h.settings {
        match id {
            // A server may only send ENABLE_PUSH 0 (§6.5.2).
            ENABLE_PUSH => assert_eq!(value, 0, "ENABLE_PUSH from a server"),
            INITIAL_WINDOW_SIZE => assert!(value <= i32::MAX as u32),
            MAX_FRAME_SIZE => assert!((16_384..=16_777_215).contains(&value)),
            _ => {}
        }
    }
    // Ours is acknowledged: an empty SETTINGS with ACK.
    let ack = h
        .until("our SETTINGS acknowledged", |f| {
            f.kind == SETTINGS && f.is(ACK)
        })
        .await;
    assert!(ack.payload.is_empty());
    // PING: answered with ACK and the same 8 bytes (§6.7).
    h.send(&ping(0, b"glass-h2")).await;
    let pong = h.until("a PING", |f| f.kind == PING).await;
    assert!(pong.is(ACK), "{pong:?}");
    assert_eq!(pong.payload, b"glass-h2");
    // A PING ACK is not answered; unknown flags on a PING are ignored.
    h.send(&[ping(ACK, b"unasked!"), ping(0xf0, b"second!!")].concat())
        .await;
    let pong = h.until("a PING", |f| f.kind == PING).await;
    assert!(pong.is(ACK), "{pong:?}");
    assert_eq!(pong.payload, b"second!!", "a PING ACK was answered");
    let more = h.quiet(Duration::from_millis(200)).await;
    assert!(
        !more.iter().any(|f| f.kind == PING),
        "one answer per PING: {more:?}"
    );
    // And the connection serves.
    h.send(&get_frame(1, "/first")).await;
    let r = h.ok(1).await;
    assert_eq!(r.json()["path"], "/first");
    assert_no_panic();
    g.stop().await;
}

// 2. Streams.

#[tokio::test]
async fn streams_one_after_another_on_one_connection() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    for id in [1u32, 3, 5, 7] {
        let path = format!("/seq/{id}");
        let block = request_block("GET", &path);
        let frames = match id {
            // Padded, with a priority (deprecated, still to be parsed).
            3 => {
                let mut payload = vec![7u8, 0, 0, 0, 0, 200];
                payload.extend_from_slice(&block);
                payload.extend_from_slice(&[0; 7]);
                frame(
                    HEADERS,
                    END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
                    id,
                    &payload,
                )
            }
            // Split over HEADERS and two CONTINUATIONs.
            5 => {
                let (a, rest) = block.split_at(5);
                let (b, c) = rest.split_at(9);
                [
                    headers(id, END_STREAM, a),
                    continuation(id, 0, b),
                    continuation(id, END_HEADERS, c),
                ]
                .concat()
            }
            // The reserved bit set: ignored on receipt (§4.1).
            7 => headers(id | 1 << 31, END_STREAM | END_HEADERS, &block),
            _ => headers(id, END_STREAM | END_HEADERS, &block),
        };
        h.send(&frames).await;
        let r = h.ok(id).await;
        let seen = r.json();
        assert_eq!(seen["path"], path, "stream {id}");
        assert_eq!(seen["method"], "GET");
        assert_eq!(r.header("x-backend"), Some("b"));
    }
    assert_eq!(b.hits(), 4);
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn concurrent_streams_interleave_and_all_complete() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    // Three streams open before anything is read, each answered in five
    // chunks 60 ms apart: sequential would take 900 ms.
    let ids = [1u32, 3, 5];
    let started = Instant::now();
    let mut all = Vec::new();
    for id in ids {
        all.extend(get_frame(id, &format!("/s{id}/drip/60")));
    }
    h.send(&all).await;
    let replies = h.replies(&ids).await;
    let took = started.elapsed();
    for id in ids {
        let r = &replies[&id];
        assert_eq!(r.status, Some(200), "stream {id}: {r:?}");
        assert!(r.end_stream && r.reset.is_none(), "stream {id}: {r:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "chunk0;chunk1;chunk2;chunk3;chunk4;",
            "stream {id}"
        );
    }
    assert!(
        took < Duration::from_millis(800),
        "not concurrent: {took:?}"
    );
    // The DATA frames of the streams interleave on the wire.
    let order: Vec<u32> = h
        .log
        .iter()
        .filter(|(k, s)| *k == DATA && *s != 0)
        .map(|(_, s)| *s)
        .collect();
    let first_end = ids
        .iter()
        .map(|id| order.iter().rposition(|s| s == id).unwrap())
        .min()
        .unwrap();
    let before: std::collections::HashSet<u32> = order[..first_end].iter().copied().collect();
    assert!(before.len() > 1, "streams served one by one: {order:?}");
    assert_no_panic();
    g.stop().await;
}

// 3. Bodies and flow control.

#[tokio::test]
async fn request_body_over_several_data_frames_arrives_whole() {
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    h.send(&headers(1, END_HEADERS, &request_block("POST", "/echo")))
        .await;
    for part in [
        data(1, 0, b"hello "),
        data_padded(1, 0, b"brave ", 10),
        data(1, 0, b""),
        data(1, 0, b"new world"),
        data(1, END_STREAM, b""),
    ] {
        h.send(&part).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = h.ok(1).await;
    assert_eq!(String::from_utf8_lossy(&r.body), "hello brave new world");

    // With a content-length that matches, split too.
    let mut fields = request_fields("POST", "/echo");
    fields.push(("content-length".into(), "11".into()));
    h.send(&headers(3, END_HEADERS, &block(&fields))).await;
    h.send(&data(3, 0, b"hello")).await;
    h.send(&data(3, END_STREAM, b" world")).await;
    let r = h.ok(3).await;
    assert_eq!(r.body, b"hello world");
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn upload_past_the_initial_window_needs_and_gets_window_updates() {
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let sent = pattern(300_000);
    h.send(&headers(1, END_HEADERS, &request_block("POST", "/echo")))
        .await;
    h.upload(1, &sent).await;
    let r = h.ok(1).await;
    assert_eq!(r.body.len(), sent.len());
    assert!(r.body == sent, "the echoed body differs");
    // The connection window starts at 65,535 whatever SETTINGS say: the
    // upload could only finish because the server opened it.
    let conn_credit: u64 = h
        .window_updates
        .iter()
        .filter(|(s, _)| *s == 0)
        .map(|(_, i)| u64::from(*i))
        .sum();
    assert!(conn_credit + 65_535 >= 300_000, "{:?}", h.window_updates);
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn download_respects_small_flow_control_steps() {
    const STREAM_STEP: u32 = 4096;
    const CONN_STEP: u32 = 3000;
    const SIZE: usize = 1 << 20;
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let mut h = H2::open_with(
        g.addr,
        &[(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, STREAM_STEP)],
    )
    .await;
    h.send(&get_frame(1, &format!("/bytes/{SIZE}"))).await;
    let (mut conn_window, mut stream_window) = (DEFAULT_WINDOW, i64::from(STREAM_STEP));
    let mut reply = Reply::default();
    let mut paused = false;
    let mut largest = 0;
    let started = Instant::now();
    while !reply.done() {
        let f = h.frame().await;
        if f.stream != 1 {
            continue;
        }
        reply.record(&f);
        if f.kind != DATA {
            continue;
        }
        let n = f.payload.len() as i64;
        largest = largest.max(n);
        assert!(
            n <= conn_window && n <= stream_window,
            "{n} bytes of DATA with windows: connection {conn_window}, stream {stream_window}"
        );
        conn_window -= n;
        stream_window -= n;
        if reply.done() {
            break;
        }
        if (conn_window == 0 || stream_window == 0) && !paused && reply.body.len() > SIZE / 2 {
            // Nothing more may come while a window is shut.
            paused = true;
            let extra = h.quiet(Duration::from_millis(300)).await;
            assert!(
                !extra
                    .iter()
                    .any(|f| f.kind == DATA && !f.payload.is_empty()),
                "DATA past a shut window: {extra:?}"
            );
        }
        if stream_window == 0 {
            h.send(&window_update(1, STREAM_STEP)).await;
            stream_window += i64::from(STREAM_STEP);
        }
        if conn_window == 0 {
            h.send(&window_update(0, CONN_STEP)).await;
            conn_window += i64::from(CONN_STEP);
        }
    }
    assert!(paused, "a window was never exhausted past the middle");
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert!(reply.end_stream, "{reply:?}");
    assert_eq!(reply.body.len(), SIZE);
    assert!(reply.body == pattern(SIZE), "the body differs");
    assert!(largest <= i64::from(STREAM_STEP));
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn initial_window_change_applies_to_open_streams() {
    const SIZE: usize = 100_000;
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let mut h = H2::open_with(g.addr, &[(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, 0)]).await;
    h.send(&get_frame(1, &format!("/bytes/{SIZE}"))).await;
    let mut reply = Reply::default();
    // Reads what comes on stream 1 within `wait`.
    async fn gather(h: &mut H2, reply: &mut Reply, wait: Duration) {
        for f in h.quiet(wait).await {
            if f.stream == 1 {
                reply.record(&f);
            }
        }
    }
    // HEADERS are not flow controlled; DATA is, and the window is 0.
    gather(&mut h, &mut reply, Duration::from_millis(300)).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert!(reply.body.is_empty(), "DATA into a zero window: {reply:?}");
    // Raising SETTINGS_INITIAL_WINDOW_SIZE opens every open stream by the
    // difference (§6.9.2); the connection window (65,535) still limits.
    h.send(&settings(&[(INITIAL_WINDOW_SIZE, SIZE as u32)]))
        .await;
    gather(&mut h, &mut reply, Duration::from_millis(500)).await;
    assert_eq!(
        reply.body.len(),
        65_535,
        "the connection window, exactly: {reply:?}"
    );
    assert!(!reply.end_stream);
    // The connection window opened: the rest comes.
    h.send(&window_update(0, (SIZE - 65_535) as u32)).await;
    while !reply.done() {
        let f = h.frame().await;
        if f.stream == 1 {
            reply.record(&f);
        }
    }
    assert!(reply.end_stream, "{reply:?}");
    assert!(reply.body == pattern(SIZE), "the body differs: {reply:?}");
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn header_table_size_zero_is_honoured() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    // With SETTINGS_HEADER_TABLE_SIZE 0 the server's encoder may not keep
    // anything in its dynamic table (RFC 7541 §4.2): the decoder here has
    // none, so any reference to one fails the decoding.
    let mut h = H2::open_with(g.addr, &[(ENABLE_PUSH, 0), (HEADER_TABLE_SIZE, 0)]).await;
    for id in [1, 3, 5] {
        h.send(&get_frame(id, "/same")).await;
        let r = h.ok(id).await;
        assert_eq!(r.header("x-backend"), Some("b"));
    }
    assert!(h.hpack.table.is_empty());
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn client_goaway_lets_the_stream_in_flight_finish() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    h.send(&get_frame(1, "/sleep/200")).await;
    hits_reach(&b, 1).await;
    // The client will open nothing more, and accepts no pushes (§6.8).
    h.send(&goaway(0, NO_ERROR)).await;
    let r = h.ok(1).await;
    assert_eq!(r.json()["path"], "/sleep/200");
    // The server may close now; if it says why, it is not an error.
    while let Next::Frame(f) = h.next(Duration::from_secs(1)).await {
        assert!(matches!(f.kind, GOAWAY | SETTINGS | WINDOW_UPDATE), "{f:?}");
    }
    for &(_, code) in &h.goaways {
        assert_eq!(code, NO_ERROR, "{:?}", h.goaways);
    }
    assert_no_panic();
    g.stop().await;
}

// 4. Client resets.

#[tokio::test]
async fn client_reset_of_an_in_flight_stream_keeps_the_connection() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    // A request the upstream holds for 3 s, reset while there.
    h.send(&get_frame(1, "/sleep/3000")).await;
    hits_reach(&b, 1).await;
    h.send(&rst_stream(1, CANCEL)).await;
    let started = Instant::now();
    h.send(&get_frame(3, "/after-reset")).await;
    let r = h.ok(3).await;
    assert_eq!(r.json()["path"], "/after-reset");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A request reset while its body is uploading.
    h.send(&headers(5, END_HEADERS, &request_block("POST", "/upload")))
        .await;
    h.send(&data(5, 0, b"part of it")).await;
    h.send(&rst_stream(5, CANCEL)).await;
    h.send(&get_frame(7, "/after-second-reset")).await;
    let r = h.ok(7).await;
    assert_eq!(r.json()["path"], "/after-second-reset");
    // Nothing was answered on the reset streams.
    let answered: Vec<_> = h
        .log
        .iter()
        .filter(|(k, s)| matches!(k, &HEADERS | &DATA) && (*s == 1 || *s == 5))
        .collect();
    assert!(answered.is_empty(), "{answered:?}");
    assert!(h.goaways.is_empty(), "{:?}", h.goaways);
    assert_no_panic();
    g.stop().await;
}

// 5. Connection errors.

struct ConnCase {
    name: &'static str,
    /// Sent after the preface exchange.
    bytes: Vec<u8>,
    /// The GOAWAY codes RFC 9113 names (a close without GOAWAY is allowed
    /// too, §5.4.1).
    codes: &'static [u32],
    /// Valid streams opened before the error: they may be answered.
    live: &'static [u32],
}

fn conn_case(
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    codes: &'static [u32],
    live: &'static [u32],
) -> ConnCase {
    ConnCase {
        name,
        bytes: bytes.into(),
        codes,
        live,
    }
}

impl ConnCase {}

fn conn_cases() -> Vec<ConnCase> {
    let get1 = request_block("GET", "/x");
    let open1 = headers(1, END_HEADERS, &request_block("POST", "/x"));
    let p = &[PROTOCOL_ERROR][..];
    let hpack = |bytes: &[u8]| headers(1, END_HEADERS | END_STREAM, bytes);
    vec![
        conn_case(
            "HEADERS on stream 0",
            headers(0, END_HEADERS | END_STREAM, &get1),
            p,
            &[],
        ),
        conn_case("even stream id", get_frame(2, "/x"), p, &[]),
        conn_case(
            "stream id decreasing (5 then 3)",
            [get_frame(5, "/sleep/100"), get_frame(3, "/x")].concat(),
            p,
            &[5],
        ),
        conn_case(
            "stream id reused (1 again after 1 and 3 ended)",
            [get_frame(1, "/x"), get_frame(3, "/x"), get_frame(1, "/x")].concat(),
            &[PROTOCOL_ERROR, STREAM_CLOSED],
            &[1, 3],
        ),
        conn_case(
            "CONTINUATION without HEADERS",
            continuation(1, END_HEADERS, &get1),
            p,
            &[],
        ),
        conn_case(
            "CONTINUATION on another stream",
            [
                headers(1, END_STREAM, &get1[..4]),
                continuation(3, END_HEADERS, &get1[4..]),
            ]
            .concat(),
            p,
            &[],
        ),
        conn_case(
            "DATA inside a header block",
            [
                headers(1, 0, &get1[..4]),
                data(1, 0, b"x"),
                continuation(1, END_HEADERS, &get1[4..]),
            ]
            .concat(),
            p,
            &[],
        ),
        conn_case(
            "PING inside a header block",
            [headers(1, END_STREAM, &get1[..4]), ping(0, b"inblock!")].concat(),
            p,
            &[],
        ),
        conn_case(
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
            settings(&[(INITIAL_WINDOW_SIZE, 1 << 31)]),
            &[FLOW_CONTROL_ERROR],
            &[],
        ),
        conn_case(
            "SETTINGS_ENABLE_PUSH 2",
            settings(&[(ENABLE_PUSH, 2)]),
            p,
            &[],
        ),
        conn_case(
            "SETTINGS_MAX_FRAME_SIZE below 16384",
            settings(&[(MAX_FRAME_SIZE, 16_383)]),
            p,
            &[],
        ),
        conn_case(
            "SETTINGS_MAX_FRAME_SIZE over 2^24-1",
            settings(&[(MAX_FRAME_SIZE, 1 << 24)]),
            p,
            &[],
        ),
        conn_case(
            "SETTINGS length not a multiple of 6",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
            &[FRAME_SIZE_ERROR],
            &[],
        ),
        conn_case(
            "SETTINGS ACK with a payload",
            frame(SETTINGS, ACK, 0, &[0, 3, 0, 0, 0, 1]),
            &[FRAME_SIZE_ERROR],
            &[],
        ),
        conn_case("SETTINGS on a stream", frame(SETTINGS, 0, 1, &[]), p, &[]),
        conn_case(
            "PING of 7 bytes",
            frame(PING, 0, 0, b"1234567"),
            &[FRAME_SIZE_ERROR],
            &[],
        ),
        conn_case("PING on a stream", frame(PING, 0, 1, b"12345678"), p, &[]),
        conn_case(
            "WINDOW_UPDATE 0 on the connection",
            window_update(0, 0),
            p,
            &[],
        ),
        conn_case(
            "WINDOW_UPDATE past 2^31-1 on the connection",
            [window_update(0, 0x7fff_ffff), window_update(0, 0x7fff_ffff)].concat(),
            &[FLOW_CONTROL_ERROR],
            &[],
        ),
        conn_case(
            "WINDOW_UPDATE of 3 bytes",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
            &[FRAME_SIZE_ERROR],
            &[],
        ),
        conn_case(
            "WINDOW_UPDATE on an idle stream",
            window_update(9, 100),
            p,
            &[],
        ),
        conn_case("RST_STREAM on stream 0", rst_stream(0, CANCEL), p, &[]),
        conn_case(
            "RST_STREAM on an idle stream",
            rst_stream(9, CANCEL),
            p,
            &[],
        ),
        conn_case(
            "RST_STREAM of 3 bytes",
            [open1.clone(), frame(RST_STREAM, 0, 1, &[0, 0, 8])].concat(),
            &[FRAME_SIZE_ERROR],
            &[1],
        ),
        conn_case("GOAWAY on a stream", frame(GOAWAY, 0, 1, &[0; 8]), p, &[]),
        conn_case("DATA on stream 0", data(0, 0, b"x"), p, &[]),
        conn_case("DATA on an idle stream", data(9, END_STREAM, b"x"), p, &[]),
        conn_case(
            "DATA padding past the frame",
            [open1, frame(DATA, PADDED, 1, &[5, b'a', b'b'])].concat(),
            p,
            &[1],
        ),
        conn_case(
            "HEADERS padding past the frame",
            frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, &[200, 0x82]),
            p,
            &[],
        ),
        conn_case(
            "HEADERS frame over MAX_FRAME_SIZE",
            headers(
                1,
                END_HEADERS | END_STREAM,
                &block(&[(":method", "GET"), ("x-big", &"a".repeat(20_000))]),
            ),
            &[FRAME_SIZE_ERROR],
            &[],
        ),
        conn_case(
            "PUSH_PROMISE from a client",
            frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]),
            p,
            &[],
        ),
        // HPACK decoding errors are COMPRESSION_ERROR (§4.3).
        conn_case(
            "HPACK index past both tables",
            hpack(&[0x82, 0x84, 0x86, 0xc6]),
            &[COMPRESSION_ERROR],
            &[],
        ),
        conn_case("HPACK index 0", hpack(&[0x80]), &[COMPRESSION_ERROR], &[]),
        conn_case(
            "HPACK string longer than the block",
            hpack(&[0x82, 0x84, 0x86, 0x00, 0x05, b'a']),
            &[COMPRESSION_ERROR],
            &[],
        ),
        conn_case(
            "HPACK table size update over SETTINGS_HEADER_TABLE_SIZE",
            hpack(&[0x3f, 0xe1, 0xff, 0x03, 0x82, 0x84, 0x86]),
            &[COMPRESSION_ERROR],
            &[],
        ),
    ]
}

/// Runs each case on a fresh connection, then checks a fresh connection
/// is served; returns what went wrong.
async fn run_conn_cases(g: &Glass, b: &Backend, cases: Vec<ConnCase>) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let before = b.hits();
        let mut h = H2::open(g.addr).await;
        h.send(&c.bytes).await;
        let end = h.ending(c.live).await;
        let max_last = c.live.iter().copied().max().unwrap_or(0);
        if let Err(e) = end.conn_error(c.codes, max_last) {
            failures.push(format!("{}: {e}", c.name));
        }
        if b.hits() - before > c.live.len() as u64 {
            failures.push(format!("{}: reached the upstream", c.name));
        }
        serves(g.addr).await;
    }
    failures
}

#[tokio::test]
async fn protocol_errors_end_the_connection() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let cases = conn_cases();
    assert!(cases.len() >= 30);
    let failures = run_conn_cases(&g, &b, cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn data_frame_over_max_frame_size() {
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let limit = h
        .setting(MAX_FRAME_SIZE)
        .map_or(DEFAULT_MAX_FRAME, |v| v as usize);
    h.send(&headers(1, END_HEADERS, &request_block("POST", "/echo")))
        .await;
    h.send(&data(1, END_STREAM, &vec![b'x'; limit + 4000]))
        .await;
    // FRAME_SIZE_ERROR: for DATA a stream error is allowed (§4.2), a
    // connection error too; stream 1 was opened validly.
    let r = h.replies(&[1]).await.remove(&1).unwrap();
    if let Some(code) = r.reset {
        assert_eq!(code, FRAME_SIZE_ERROR, "{r:?}");
        h.send(&get_frame(3, "/bytes/5")).await;
        h.ok(3).await;
    } else {
        assert!(r.status.is_none(), "the request was answered: {r:?}");
        let end = h.ending(&[]).await;
        end.conn_error(&[FRAME_SIZE_ERROR], 1).unwrap();
    }
    serves(g.addr).await;
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn a_bad_preface_is_not_served() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    for (name, bytes) in [
        (
            "wrong magic",
            [&b"PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n"[..], &settings(&[])].concat(),
        ),
        (
            "magic then a 16 MB frame header",
            [PREFACE, b"\xff\xff\xff\x04\x00\x00\x00\x00\x00\xff\xff\xff"].concat(),
        ),
    ] {
        let mut h = H2::connect(g.addr).await;
        h.send(&bytes).await;
        let (out, closed) = h.read_all(WAIT).await;
        assert!(closed, "{name}: still open: {out:?}");
        // A connection error (a GOAWAY may be omitted, §3.4); on a port
        // that also speaks HTTP/1.1, an HTTP/1.1 refusal is as good.
        let text = String::from_utf8_lossy(&out);
        if let Some(status) = status_of(&text) {
            assert!(matches!(status, 400 | 505), "{name}: {text}");
            continue;
        }
        let mut rest = &out[..];
        while !rest.is_empty() {
            assert!(rest.len() >= 9, "{name}: a partial frame: {out:?}");
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, stream, payload) = (rest[3], rest[8], &rest[9..9 + len]);
            assert_eq!(stream, 0, "{name}: a frame on a stream: {out:?}");
            match kind {
                SETTINGS | WINDOW_UPDATE => {}
                GOAWAY => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                    // The 16 MB frame is also over SETTINGS_MAX_FRAME_SIZE.
                    assert!(
                        code == PROTOCOL_ERROR || code == FRAME_SIZE_ERROR,
                        "{name}: {}",
                        code_name(code)
                    );
                }
                _ => panic!("{name}: frame type {kind} sent: {out:?}"),
            }
            rest = &rest[9 + len..];
        }
    }
    assert_eq!(b.hits(), 0);
    serves(g.addr).await;
    assert_no_panic();
    g.stop().await;
}

// 6. Stream errors.

struct StreamCase {
    name: &'static str,
    fields: Vec<(String, String)>,
    /// DATA frames after the head (END_STREAM on the last); none: the head
    /// carries END_STREAM.
    body: Vec<&'static [u8]>,
    /// hyper's h2 treats this as a connection error (RFC 9113 §5.4.1 lets
    /// an endpoint do so); a stream error or a 400 are accepted as well.
    conn_error_ok: bool,
    /// The upstream may see it (the head was valid; the body gave it away).
    may_reach_upstream: bool,
}

fn stream_case(name: &'static str, edit: impl FnOnce(&mut Vec<(String, String)>)) -> StreamCase {
    let mut fields = request_fields("GET", "/malformed");
    edit(&mut fields);
    StreamCase {
        name,
        fields,
        body: Vec::new(),
        conn_error_ok: false,
        may_reach_upstream: false,
    }
}

fn add(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.push((name.to_owned(), value.to_owned()));
}

fn remove(fields: &mut Vec<(String, String)>, name: &str) {
    fields.retain(|(n, _)| n != name);
}

impl StreamCase {
    fn conn_error_ok(mut self) -> Self {
        self.conn_error_ok = true;
        self
    }

    fn post(mut self, body: Vec<&'static [u8]>) -> Self {
        self.fields[0].1 = "POST".into();
        self.body = body;
        self.may_reach_upstream = true;
        self
    }
}

fn stream_cases() -> Vec<StreamCase> {
    vec![
        stream_case("uppercase field name", |f| add(f, "X-Upper", "1")).conn_error_ok(),
        stream_case("connection: keep-alive", |f| {
            add(f, "connection", "keep-alive")
        }),
        stream_case("transfer-encoding: chunked", |f| {
            add(f, "transfer-encoding", "chunked")
        }),
        stream_case("keep-alive", |f| add(f, "keep-alive", "timeout=5")),
        stream_case("proxy-connection", |f| {
            add(f, "proxy-connection", "keep-alive")
        }),
        stream_case("upgrade", |f| add(f, "upgrade", "websocket")),
        stream_case("te: gzip", |f| add(f, "te", "gzip")),
        stream_case("te: trailers, gzip", |f| add(f, "te", "trailers, gzip")),
        stream_case("missing :method", |f| remove(f, ":method")),
        stream_case("missing :scheme", |f| remove(f, ":scheme")),
        stream_case("missing :path", |f| remove(f, ":path")),
        stream_case("empty :path", |f| f[3].1.clear()),
        stream_case(":path not starting with /", |f| f[3].1 = "abc".into()),
        stream_case("two :path", |f| f.insert(4, (":path".into(), "/b".into()))),
        stream_case("two :method", |f| {
            f.insert(1, (":method".into(), "GET".into()))
        }),
        stream_case("pseudo-header after a regular one", |f| {
            f.insert(3, ("x-a".into(), "1".into()))
        }),
        stream_case("unknown pseudo-header :foo", |f| add(f, ":foo", "bar")).conn_error_ok(),
        stream_case("response pseudo-header :status", |f| {
            f.insert(0, (":status".into(), "200".into()))
        }),
        stream_case(":protocol without extended CONNECT", |f| {
            f.insert(0, (":protocol".into(), "websocket".into()))
        }),
        stream_case("CONNECT with :path and :scheme", |f| {
            f[0].1 = "CONNECT".into()
        }),
        stream_case("NUL in a value", |f| add(f, "x-a", "a\0b")).conn_error_ok(),
        stream_case("CR LF in a value", |f| add(f, "x-a", "a\r\nx-b: c")).conn_error_ok(),
        stream_case("space in a name", |f| add(f, "x a", "1")).conn_error_ok(),
        stream_case("colon in a name", |f| add(f, "x:a", "1")).conn_error_ok(),
        stream_case("content-length 10, 3 bytes sent", |f| {
            add(f, "content-length", "10")
        })
        .post(vec![b"abc"]),
        stream_case("content-length 3, 6 bytes sent", |f| {
            add(f, "content-length", "3")
        })
        .post(vec![b"abc", b"def"]),
        stream_case("content-length 5 and END_STREAM on HEADERS", |f| {
            add(f, "content-length", "5")
        }),
        stream_case("two different content-lengths", |f| {
            add(f, "content-length", "3");
            add(f, "content-length", "4");
        })
        .post(vec![b"abc"]),
        stream_case("content-length not a number", |f| {
            add(f, "content-length", "x")
        })
        .post(vec![b"abc"]),
    ]
}

/// Malformed requests hyper's h2 forwards: RFC 9113 §8.2.1 and §8.3.1
/// make each malformed.
fn strict_stream_cases() -> Vec<StreamCase> {
    vec![
        stream_case("leading space in a value", |f| add(f, "x-a", " v")),
        stream_case("trailing tab in a value", |f| add(f, "x-a", "v\t")),
        stream_case("missing :path and :authority", |f| f.truncate(2)),
        stream_case(":path * on a GET", |f| f[3].1 = "*".into()),
        stream_case(":authority with userinfo", |f| f[2].1 = "u:p@x.test".into()),
    ]
}

/// Runs each case on a fresh connection: a 400 or RST_STREAM(
/// PROTOCOL_ERROR), and the connection serves the next stream; or, where
/// allowed, a connection error. Never the upstream, unless allowed.
async fn run_stream_cases(g: &Glass, b: &Backend, cases: Vec<StreamCase>) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let before = b.hits();
        let mut h = H2::open(g.addr).await;
        if c.body.is_empty() {
            h.send(&headers(1, END_HEADERS | END_STREAM, &block(&c.fields)))
                .await;
        } else {
            h.send(&headers(1, END_HEADERS, &block(&c.fields))).await;
            for (i, part) in c.body.iter().enumerate() {
                let flags = if i + 1 == c.body.len() { END_STREAM } else { 0 };
                h.send(&data(1, flags, part)).await;
            }
        }
        let r = h.replies(&[1]).await.remove(&1).unwrap();
        let stream_error = match (r.reset, r.status) {
            // A 400 first, then a reset of the rest, is fine too (§8.1.1).
            (_, Some(400)) | (Some(PROTOCOL_ERROR), None) => true,
            (None, None) if c.conn_error_ok && h.closed => {
                let end = h.ending(&[]).await;
                if let Err(e) = end.conn_error(&[PROTOCOL_ERROR, COMPRESSION_ERROR], 0) {
                    failures.push(format!("{}: {e}", c.name));
                }
                false
            }
            _ => {
                let goaways: Vec<_> = h.goaways.iter().map(|(l, c)| (l, code_name(*c))).collect();
                failures.push(format!(
                    "{}: {r:?}, GOAWAYs {goaways:?}, closed {}",
                    c.name, h.closed
                ));
                false
            }
        };
        if stream_error {
            // The connection keeps serving.
            h.send(&get_frame(3, "/next")).await;
            let next = h.reply(3).await;
            if next.status != Some(200) {
                failures.push(format!("{}: the next stream got {next:?}", c.name));
            }
            if !h.goaways.is_empty() {
                failures.push(format!("{}: GOAWAY {:?}", c.name, h.goaways));
            }
        }
        let reached = b.hits() - before - u64::from(stream_error);
        if reached > 0 && !c.may_reach_upstream {
            failures.push(format!("{}: reached the upstream", c.name));
        }
        serves(g.addr).await;
    }
    failures
}

#[tokio::test]
async fn malformed_requests_get_a_stream_error_or_400() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let cases = stream_cases();
    assert!(cases.len() >= 25);
    let failures = run_stream_cases(&g, &b, cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_no_panic();
    g.stop().await;
}

/// A protocol violation on one stream, and what it may end in.
struct StreamError {
    name: &'static str,
    bytes: Vec<u8>,
    /// RST_STREAM codes RFC 9113 names.
    reset: &'static [u32],
    /// GOAWAY codes, when the endpoint makes it a connection error.
    goaway: &'static [u32],
    /// Ignoring it is allowed too (deprecated priority signals).
    may_ignore: bool,
}

fn stream_errors() -> Vec<StreamError> {
    let case = |name, bytes, reset, goaway| StreamError {
        name,
        bytes,
        reset,
        goaway,
        may_ignore: false,
    };
    let p = &[PROTOCOL_ERROR][..];
    let slow = get_frame(1, "/sleep/300");
    let self_dependent = {
        let mut payload = vec![0, 0, 0, 1, 16];
        payload.extend_from_slice(&request_block("GET", "/x"));
        frame(
            HEADERS,
            END_HEADERS | END_STREAM | PRIORITY_FLAG,
            1,
            &payload,
        )
    };
    vec![
        case(
            "WINDOW_UPDATE 0 on a stream",
            [slow.clone(), window_update(1, 0)].concat(),
            p,
            p,
        ),
        case(
            "WINDOW_UPDATE past 2^31-1 on a stream",
            [
                slow.clone(),
                window_update(1, 0x7fff_ffff),
                window_update(1, 0x7fff_ffff),
            ]
            .concat(),
            &[FLOW_CONTROL_ERROR],
            &[FLOW_CONTROL_ERROR],
        ),
        case(
            "trailers without END_STREAM",
            [
                headers(1, END_HEADERS, &request_block("POST", "/x")),
                data(1, 0, b"abc"),
                headers(1, END_HEADERS, &block(&[("x-trailer", "1")])),
            ]
            .concat(),
            p,
            p,
        ),
        // RFC 7540 §5.3.1 made these a stream error; RFC 9113 deprecates
        // the priority scheme, so ignoring them is accepted.
        StreamError {
            may_ignore: true,
            ..case("HEADERS depending on its own stream", self_dependent, p, p)
        },
        StreamError {
            may_ignore: true,
            ..case(
                "PRIORITY depending on its own stream",
                priority(1, 1, 16),
                p,
                p,
            )
        },
        StreamError {
            ..case(
                "PRIORITY of 4 bytes",
                frame(PRIORITY, 0, 1, &[0, 0, 0, 0]),
                &[FRAME_SIZE_ERROR],
                &[FRAME_SIZE_ERROR],
            )
        },
        // Half-closed (remote): STREAM_CLOSED (§5.1).
        StreamError {
            ..case(
                "DATA after END_STREAM",
                [slow.clone(), data(1, 0, b"late")].concat(),
                &[STREAM_CLOSED],
                &[STREAM_CLOSED],
            )
        },
        StreamError {
            ..case(
                "HEADERS after END_STREAM",
                [slow, headers(1, END_HEADERS, &block(&[("x-late", "1")]))].concat(),
                &[STREAM_CLOSED],
                &[STREAM_CLOSED],
            )
        },
    ]
}

/// Runs each case on a fresh connection: an allowed RST_STREAM and the
/// connection serves the next stream, or an allowed connection error, or
/// (where allowed) nothing at all.
async fn run_stream_errors(g: &Glass, cases: Vec<StreamError>) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let (reset, goaway) = (c.reset, c.goaway);
        let mut h = H2::open(g.addr).await;
        h.send(&c.bytes).await;
        let r = h.replies(&[1]).await.remove(&1).unwrap();
        let keeps_serving = match (r.reset, r.status) {
            (Some(code), _) if reset.contains(&code) => true,
            (Some(code), _) => {
                failures.push(format!(
                    "{}: RST_STREAM {}, expected {}",
                    c.name,
                    code_name(code),
                    codes_named(reset)
                ));
                false
            }
            (None, Some(_)) if c.may_ignore => true,
            (None, None) if h.closed => {
                let end = h.ending(&[1]).await;
                if let Err(e) = end.conn_error(goaway, 1) {
                    failures.push(format!("{}: {e}", c.name));
                }
                false
            }
            (None, None) if c.may_ignore => true,
            _ => {
                failures.push(format!("{}: not refused: {r:?}", c.name));
                false
            }
        };
        if keeps_serving {
            h.send(&get_frame(3, "/next")).await;
            let next = h.reply(3).await;
            if next.status != Some(200) {
                failures.push(format!("{}: the next stream got {next:?}", c.name));
            }
        }
        serves(g.addr).await;
    }
    failures
}

#[tokio::test]
async fn stream_errors_keep_the_connection() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let failures = run_stream_errors(&g, stream_errors()).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn rfc_9113_details_general_servers_miss() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut failures = Vec::new();
    // Malformed requests a general-purpose server (hyper's h2) forwards.
    failures.extend(run_stream_cases(&g, &b, strict_stream_cases()).await);
    // The client preface is the magic and then a SETTINGS frame (§3.4).
    let mut h = H2::connect(g.addr).await;
    h.send(&[PREFACE, &ping(0, b"notfirst")].concat()).await;
    let end = h.ending(&[]).await;
    if let Err(e) = end.conn_error(&[PROTOCOL_ERROR], 0) {
        failures.push(format!("PING before SETTINGS in the preface: {e}"));
    }
    // A header block well within the limits, in 16 small CONTINUATIONs:
    // legal, and no flood.
    let mut fields = request_fields("GET", "/small-pieces");
    add(&mut fields, "x-pad", &"p".repeat(2000));
    let hpack = block(&fields);
    let chunks: Vec<&[u8]> = hpack.chunks(128).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        bytes.extend(if i == 0 {
            headers(1, END_STREAM | end, chunk)
        } else {
            continuation(1, end, chunk)
        });
    }
    let mut h = H2::open(g.addr).await;
    h.send(&bytes).await;
    let r = h.replies(&[1]).await.remove(&1).unwrap();
    if r.status != Some(200) {
        failures.push(format!("16 CONTINUATIONs: {r:?}, GOAWAYs {:?}", h.goaways));
    }
    // `host` naming another authority than `:authority`: a server SHOULD
    // treat it as malformed (§8.3.1); at the least the upstream must not
    // be told another host than the one the route was chosen by.
    let mut fields = request_fields("GET", "/two-hosts");
    add(&mut fields, "host", "other.test");
    let mut h = H2::open(g.addr).await;
    h.send(&headers(1, END_HEADERS | END_STREAM, &block(&fields)))
        .await;
    let r = h.replies(&[1]).await.remove(&1).unwrap();
    if r.status == Some(200) && r.json()["headers"]["host"] != "x.test" {
        failures.push(format!(
            "host other than :authority: routed by x.test, the upstream was told {}",
            r.json()["headers"]["host"]
        ));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn unknown_frames_settings_and_priority_are_ignored() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    // Extension frames and settings are ignored (§5.5), so is PRIORITY,
    // on an idle stream too (§5.1, §5.3.2).
    h.send(
        &[
            frame(0xfa, 0xff, 0, b"extension"),
            frame(0xfb, 0, 1, b"on an idle stream"),
            settings(&[(0x99, 7), (0xf00d, 1)]),
            priority(1, 0, 16),
            priority(11, 3, 200),
            headers(1, END_HEADERS, &request_block("GET", "/x")),
            frame(0xfa, 0, 1, b"on an open stream"),
            priority(1, 0, 32),
            data(1, END_STREAM, b""),
        ]
        .concat(),
    )
    .await;
    let r = h.ok(1).await;
    assert_eq!(r.json()["path"], "/x");
    // HEADERS with flags it does not define: ignored (§4.1).
    h.send(&headers(
        3,
        END_HEADERS | END_STREAM | 0x2 | 0x10 | 0x40,
        &request_block("GET", "/y"),
    ))
    .await;
    assert_eq!(h.ok(3).await.json()["path"], "/y");
    assert!(h.goaways.is_empty(), "{:?}", h.goaways);
    assert_no_panic();
    g.stop().await;
}

// 7. Limits.

#[tokio::test]
async fn a_header_block_over_the_limit_is_refused() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let mut fields = request_fields("GET", "/big");
    add(&mut fields, "x-big", &"a".repeat(100 * 1024));
    let hpack = block(&fields);
    let mut bytes = Vec::new();
    let chunks: Vec<&[u8]> = hpack.chunks(DEFAULT_MAX_FRAME).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        bytes.extend(if i == 0 {
            headers(1, END_STREAM | end, chunk)
        } else {
            continuation(1, end, chunk)
        });
    }
    h.send(&bytes).await;
    let started = Instant::now();
    let r = h.replies(&[1]).await.remove(&1).unwrap();
    let stream_refusal = r.status == Some(431) || r.reset.is_some();
    if stream_refusal {
        assert!(
            r.status.is_none_or(|s| s == 431) && r.body.len() < 1024,
            "{r:?}"
        );
        // The connection keeps serving.
        h.send(&get_frame(3, "/next")).await;
        h.ok(3).await;
    } else {
        assert!(r.status.is_none(), "{r:?}");
        let end = h.ending(&[]).await;
        end.conn_error(&[ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR], 0)
            .unwrap();
    }
    assert!(started.elapsed() < WAIT);
    assert_eq!(b.hits(), u64::from(stream_refusal), "only /next went up");
    serves(g.addr).await;
    assert_no_panic();
    g.stop().await;
}

/// Floods a header block on stream 1 that never ends: `start` in HEADERS,
/// then `frames` CONTINUATIONs of `fragment`, none with END_HEADERS (the
/// writer keeps its half open: only the server can end it); returns how
/// the connection ended.
async fn flood_header_block(
    addr: SocketAddr,
    start: Vec<u8>,
    fragment: Vec<u8>,
    frames: usize,
) -> Ending {
    let mut h = H2::open(addr).await;
    let mut w = h.wr.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&headers(1, END_STREAM, &start)).await;
        let one = continuation(1, 0, &fragment);
        let batch = one.repeat(256);
        let mut sent = 0;
        while sent < frames {
            if w.write_all(&batch).await.is_err() {
                break;
            }
            sent += 256;
        }
        // Held open until the test is done with the connection.
        tokio::time::sleep(WAIT + Duration::from_secs(1)).await;
        drop(w);
    });
    let end = h.ending(&[]).await;
    writer.abort();
    end
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    // Empty CONTINUATION frames without END_HEADERS, 100,000 of them.
    let head = request_block("GET", "/flood");
    let end = flood_header_block(g.addr, head.clone(), Vec::new(), 100_000).await;
    end.conn_error(&[ENHANCE_YOUR_CALM, PROTOCOL_ERROR], 0)
        .unwrap();
    assert!(end.took < WAIT, "{end:?}");
    // One field value that never ends: 64 MiB declared, 4 MiB sent in
    // 4 KiB CONTINUATIONs. Only a cut-off ends it; buffering it does not.
    let mut start = head;
    start.push(0x00);
    hpack_int(&mut start, 7, 0, 5);
    start.extend_from_slice(b"x-big");
    hpack_int(&mut start, 7, 0, 64 << 20);
    let end = flood_header_block(g.addr, start, vec![b'a'; 4096], 1024).await;
    end.conn_error(&[ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR], 0)
        .unwrap();
    assert!(end.took < WAIT, "{end:?}");
    assert_eq!(b.hits(), 0);
    serves(g.addr).await;
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn rapid_reset_does_not_stop_the_server() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        burst.extend(get_frame(id, "/rapid"));
        burst.extend(rst_stream(id, CANCEL));
    }
    let started = Instant::now();
    h.send(&burst).await;
    // Another client is served meanwhile, promptly.
    serves(g.addr).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // This connection: it still serves, or it was told to go away calmly.
    h.send(&get_frame(4001, "/after")).await;
    let r = h.replies(&[4001]).await.remove(&4001).unwrap();
    if r.status == Some(200) {
        assert!(r.end_stream, "{r:?}");
        for &(_, code) in &h.goaways {
            assert!(
                code == NO_ERROR || code == ENHANCE_YOUR_CALM,
                "{}",
                code_name(code)
            );
        }
    } else {
        assert!(
            r.status.is_none() && r.reset.is_none_or(|c| c == REFUSED_STREAM),
            "{r:?}"
        );
        let end = h.ending(&[]).await;
        assert!(!end.goaways.is_empty(), "closed without GOAWAY: {end:?}");
        end.conn_error(&[ENHANCE_YOUR_CALM, NO_ERROR], 4001)
            .unwrap();
    }
    serves(g.addr).await;
    assert_no_panic();
    g.stop().await;
}

/// Cancelling streams that were already answered (a client giving up on
/// long responses) is not rapid reset: more of them than the server lets
/// a client reset unanswered do not end the connection.
#[tokio::test]
async fn cancelling_answered_streams_is_not_rapid_reset() {
    const STREAMS: u32 = 300;
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let ids: Vec<u32> = (0..STREAMS).map(|i| 1 + 2 * i).collect();
    let mut burst = Vec::new();
    for &id in &ids {
        // The head at once, the body's chunks 2 s apart.
        burst.extend(get_frame(id, &format!("/long{id}/drip/2000")));
    }
    h.send(&burst).await;
    let mut answered = std::collections::HashSet::new();
    while answered.len() < ids.len() {
        let f = h.until("the response heads", |f| f.kind == HEADERS).await;
        answered.insert(f.stream);
    }
    let mut resets = Vec::new();
    for &id in &ids {
        resets.extend(rst_stream(id, CANCEL));
    }
    h.send(&resets).await;
    let next = 1 + 2 * STREAMS;
    h.send(&get_frame(next, "/after")).await;
    let r = h.replies(&[next]).await.remove(&next).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}; GOAWAYs {:?}", h.goaways);
    assert!(h.goaways.is_empty(), "GOAWAYs {:?}", h.goaways);
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
async fn max_concurrent_streams_is_enforced() {
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let Some(limit) = h.setting(MAX_CONCURRENT_STREAMS) else {
        panic!("no SETTINGS_MAX_CONCURRENT_STREAMS: a client may open streams without bound");
    };
    assert!((1..=4096).contains(&limit), "{limit}");
    // `limit` requests whose bodies never end keep their streams open.
    let mut burst = Vec::new();
    let head = request_block("POST", "/echo");
    for i in 0..limit {
        burst.extend(headers(1 + 2 * i, END_HEADERS, &head));
    }
    let over = 1 + 2 * limit;
    burst.extend(get_frame(over, "/bytes/1"));
    h.send(&burst).await;
    // One more is refused (§5.1.2): a stream error, PROTOCOL_ERROR or
    // REFUSED_STREAM.
    let r = h.reply(over).await;
    assert!(
        r.status.is_none() && matches!(r.reset, Some(PROTOCOL_ERROR | REFUSED_STREAM)),
        "{r:?}"
    );
    assert!(h.goaways.is_empty(), "{:?}", h.goaways);
    // Finishing one frees a slot.
    h.send(&data(1, END_STREAM, b"one")).await;
    assert_eq!(h.ok(1).await.body, b"one");
    h.send(&get_frame(over + 2, "/bytes/3")).await;
    assert_eq!(h.ok(over + 2).await.body, pattern(3));
    assert_no_panic();
    g.stop().await;
}

// 8. Trailers.

/// One gRPC message (uncompressed) around `bytes`.
fn grpc_message(bytes: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    m.extend_from_slice(bytes);
    m
}

#[tokio::test]
async fn grpc_trailers_arrive_as_a_final_headers_frame() {
    count_panics();
    let b = crate::grpc::grpc_backend().await;
    let g = crate::grpc::grpc_gateway(b.addr).await;
    let mut h = H2::open(g.addr).await;
    let call = |service: &str| {
        let mut fields = request_fields("POST", "/grpc.health.v1.Health/Check");
        add(&mut fields, "content-type", "application/grpc");
        add(&mut fields, "te", "trailers");
        // HealthCheckRequest { service }: field 1, a string.
        let mut message = Vec::new();
        if !service.is_empty() {
            message.extend_from_slice(&[0x0a, service.len() as u8]);
            message.extend_from_slice(service.as_bytes());
        }
        (block(&fields), grpc_message(&message))
    };
    let (head, message) = call("");
    h.send(&headers(1, END_HEADERS, &head)).await;
    h.send(&data(1, END_STREAM, &message)).await;
    let r = h.ok(1).await;
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    // HealthCheckResponse { status: SERVING (1) }.
    assert_eq!(r.body, grpc_message(&[0x08, 0x01]));
    assert_eq!(r.trailer("grpc-status"), Some("0"), "{r:?}");
    // The shape: HEADERS, DATA..., HEADERS with END_STREAM, nothing after.
    let kinds: Vec<u8> = r.frames.iter().map(|(k, _)| *k).collect();
    assert!(kinds.len() >= 3, "{r:?}");
    assert_eq!(r.frames[0].0, HEADERS);
    assert_eq!(r.frames[0].1 & END_STREAM, 0, "the head ends the stream");
    let (last_kind, last_flags) = *r.frames.last().unwrap();
    assert!(
        last_kind == HEADERS && last_flags & END_STREAM != 0,
        "{r:?}"
    );
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == DATA),
        "{r:?}"
    );

    // An error without a message: trailers-only (one HEADERS with
    // END_STREAM), or an empty body and trailers; grpc-status either way.
    let (head, message) = call("missing");
    h.send(&headers(3, END_HEADERS, &head)).await;
    h.send(&data(3, END_STREAM, &message)).await;
    let r = h.reply(3).await;
    assert_eq!(r.status, Some(200), "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    let status = r.trailer("grpc-status").or(r.header("grpc-status"));
    assert_eq!(status, Some("5"), "NOT_FOUND: {r:?}");
    let detail = r.trailer("x-detail").or(r.header("x-detail"));
    assert_eq!(detail, Some("looked-everywhere"), "{r:?}");
    let (last_kind, last_flags) = *r.frames.last().unwrap();
    assert!(
        last_kind == HEADERS && last_flags & END_STREAM != 0,
        "{r:?}"
    );
    assert_no_panic();
    g.stop().await;
}

// 9. Graceful drain.

#[tokio::test]
async fn shutdown_sends_goaway_and_finishes_the_stream_in_flight() {
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    let mut busy = H2::open(g.addr).await;
    let mut idle = H2::open(g.addr).await;
    idle.send(&get_frame(1, "/before")).await;
    idle.ok(1).await;
    busy.send(&get_frame(1, "/sleep/400")).await;
    hits_reach(&b, 2).await;
    let started = Instant::now();
    let stop = tokio::spawn(g.stop());
    let busy_side = async {
        let r = busy.ok(1).await;
        assert_eq!(r.json()["path"], "/sleep/400");
        let end = busy.ending(&[1]).await;
        (busy, end)
    };
    let idle_side = async {
        let end = idle.ending(&[]).await;
        (idle, end)
    };
    let ((busy, busy_end), (_idle, idle_end)) = tokio::join!(busy_side, idle_side);
    for (name, end, last) in [("busy", &busy_end, 1), ("idle", &idle_end, 1)] {
        assert!(end.closed, "{name}: never closed: {end:?}");
        assert!(end.unexpected.is_empty(), "{name}: {end:?}");
        assert!(!end.goaways.is_empty(), "{name}: closed without GOAWAY");
        for &(l, code) in &end.goaways {
            assert_eq!(code, NO_ERROR, "{name}: {end:?}");
            assert!(l >= last, "{name}: GOAWAY drops stream {last}: {end:?}");
        }
    }
    // The GOAWAY came while the request was in flight, not after it.
    let goaway_at = busy.log.iter().position(|(k, _)| *k == GOAWAY).unwrap();
    let head_at = busy
        .log
        .iter()
        .position(|(k, s)| *k == HEADERS && *s == 1)
        .unwrap();
    assert!(goaway_at < head_at, "{:?}", busy.log);
    tokio::time::timeout(PATIENCE, stop)
        .await
        .expect("the gateway stops")
        .unwrap();
    // Both connections closed on their own, before the 1 s drain timeout.
    assert!(
        started.elapsed() < Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_no_panic();
}

// 10. Real clients.

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One curl call with prior knowledge: the body, the status and the
/// HTTP version curl used.
async fn curl(args: &[&str], url: String) -> (String, String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["--http2-prior-knowledge", "-sS", "--max-time", "5"])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .arg(&url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{url}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, meta) = text.rsplit_once('\n').unwrap();
    let (code, version) = meta.split_once(' ').unwrap();
    (body.to_owned(), code.to_owned(), version.to_owned())
}

#[tokio::test]
async fn curl_with_http2_prior_knowledge() {
    if !have("curl") {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let b = http_backend("b").await;
    let g = gateway(b.addr).await;
    // One connection per call: curl 7.88 breaks its own reuse of an h2c
    // prior-knowledge connection (curl/curl#10634, fixed in 8.0).
    let (body, code, version) = curl(&[], format!("http://{}/curl/get?q=1", g.addr)).await;
    assert_eq!((code.as_str(), version.as_str()), ("200", "2"), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/curl/get?q=1");
    assert_eq!(seen["method"], "GET");
    // A 100 KB upload, over the initial window.
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload");
    std::fs::write(&upload, pattern(100_000)).unwrap();
    let from = format!("@{}", upload.display());
    let (body, code, version) = curl(
        &["--data-binary", &from],
        format!("http://{}/curl/post", g.addr),
    )
    .await;
    assert_eq!((code.as_str(), version.as_str()), ("200", "2"), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 100_000);
    // A response streamed in chunks.
    let (body, code, _) = curl(&[], format!("http://{}/drip/20", g.addr)).await;
    assert_eq!(code, "200");
    assert_eq!(body, "chunk0;chunk1;chunk2;chunk3;chunk4;");
    assert_no_panic();
    g.stop().await;
}

#[tokio::test]
#[ignore = "needs h2load"]
async fn h2load_against_the_gateway() {
    assert!(have("h2load"), "h2load is not installed");
    let b = bytes_backend().await;
    let g = gateway(b.addr).await;
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "16", "-t", "1"])
        .arg(format!("http://{}/bytes/1000", g.addr))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    assert!(text.contains("(2000000) data"), "every body whole: {text}");
    assert_eq!(b.hits(), 2000);
    assert_no_panic();
    g.stop().await;
}
