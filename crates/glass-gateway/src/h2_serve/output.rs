//! What the server writes: frames gathered in one buffer (HEADERS with
//! CONTINUATIONs when a head is larger than the client's frame size, DATA
//! within the flow-control windows), and the send side's window.

use bytes::{Buf, Bytes};
use http::HeaderMap;

use super::frame::{self, flag, kind};
use super::stream::Stream;
use super::work::RawResponse;
use crate::hpack;
use crate::proxy;

/// What the server writes: frames gathered in one buffer, and the send
/// side's flow-control state.
pub(super) struct Output {
    pub(super) buf: Vec<u8>,
    /// How much of `buf` is written.
    pub(super) written: usize,
    pub(super) encoder: hpack::Encoder,
    /// Connection-level window for DATA the server sends.
    pub(super) window: i64,
    pub(super) max_frame: usize,
    /// A field name, lowercased.
    pub(super) name: Vec<u8>,
}

impl Output {
    /// Writes a header block as HEADERS (and CONTINUATION frames if it is
    /// larger than the client's frame size): `status` for a response head,
    /// `None` for trailers.
    pub(super) fn headers(
        &mut self,
        stream: u32,
        status: Option<u16>,
        fields: &HeaderMap,
        end: bool,
    ) {
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
    pub(super) fn raw_headers(&mut self, stream: u32, r: &RawResponse, end: bool) {
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
    pub(super) fn data(
        &mut self,
        id: u32,
        stream: &mut Stream,
        data: &mut Bytes,
        end: bool,
    ) -> bool {
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

#[cfg(test)]
mod tests {
    use super::frame::Head;
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
