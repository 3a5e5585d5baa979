//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte header, the types and flags
//! the server reads and writes, settings, error codes.

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Size of a frame header.
pub(crate) const HEADER_LEN: usize = 9;

/// The largest frame payload either side may send until told otherwise,
/// and the one this server accepts (it never raises it).
pub(crate) const DEFAULT_MAX_FRAME: usize = 16_384;

/// The initial flow-control window of every stream and the connection.
pub(crate) const DEFAULT_WINDOW: i64 = 65_535;

/// A window may not grow past 2^31 - 1 (RFC 9113 §6.9.1).
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;

pub(crate) mod kind {
    pub(crate) const DATA: u8 = 0x0;
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const PRIORITY: u8 = 0x2;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const PUSH_PROMISE: u8 = 0x5;
    pub(crate) const PING: u8 = 0x6;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    pub(crate) const CONTINUATION: u8 = 0x9;
}

pub(crate) mod flag {
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const ACK: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;
    pub(crate) const PADDED: u8 = 0x8;
    pub(crate) const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A frame's header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) len: usize,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

impl Head {
    /// Reads a header from the first nine bytes of `b`.
    pub(crate) fn parse(b: &[u8]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame header's bytes.
pub(crate) fn head_bytes(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; HEADER_LEN] {
    debug_assert!(len < 1 << 24);
    let s = stream.to_be_bytes();
    [
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        kind,
        flags,
        s[0],
        s[1],
        s[2],
        s[3],
    ]
}

/// Appends a frame header.
pub(crate) fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&head_bytes(len, kind, flags, stream));
}

pub(crate) fn put_rst(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&(reason as u32).to_be_bytes());
}

pub(crate) fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

pub(crate) fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&(reason as u32).to_be_bytes());
    out.extend_from_slice(debug);
}

/// Settings identifiers (RFC 9113 §6.5.2).
pub(crate) mod setting {
    pub(crate) const HEADER_TABLE_SIZE: u16 = 0x1;
    pub(crate) const ENABLE_PUSH: u16 = 0x2;
    pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(crate) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(crate) const MAX_FRAME_SIZE: u16 = 0x5;
    pub(crate) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

pub(crate) fn put_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    put_head(out, settings.len() * 6, kind::SETTINGS, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// What the peer's SETTINGS frame changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerSettings {
    pub(crate) header_table_size: Option<u32>,
    pub(crate) initial_window: Option<u32>,
    pub(crate) max_frame: Option<u32>,
}

/// Reads a SETTINGS payload; an invalid value is a connection error.
pub(crate) fn parse_settings(payload: &[u8]) -> Result<PeerSettings, Reason> {
    if !payload.len().is_multiple_of(6) {
        return Err(Reason::FrameSize);
    }
    let mut s = PeerSettings::default();
    for item in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([item[0], item[1]]);
        let value = u32::from_be_bytes([item[2], item[3], item[4], item[5]]);
        match id {
            setting::HEADER_TABLE_SIZE => s.header_table_size = Some(value),
            setting::ENABLE_PUSH if value > 1 => return Err(Reason::Protocol),
            setting::INITIAL_WINDOW_SIZE if i64::from(value) > MAX_WINDOW => {
                return Err(Reason::FlowControl);
            }
            setting::INITIAL_WINDOW_SIZE => s.initial_window = Some(value),
            setting::MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&value) => {
                return Err(Reason::Protocol);
            }
            setting::MAX_FRAME_SIZE => s.max_frame = Some(value),
            // Unknown settings, and ones a server has no use for, are ignored.
            _ => {}
        }
    }
    Ok(s)
}

/// The stream a priority block (HEADERS with PRIORITY, or PRIORITY) names
/// as its dependency.
pub(crate) fn dependency(priority: &[u8]) -> u32 {
    u32::from_be_bytes([priority[0], priority[1], priority[2], priority[3]]) & 0x7fff_ffff
}

/// Removes the padding of a PADDED frame's payload (RFC 9113 §6.1).
pub(crate) fn unpad(head: &Head, payload: &[u8]) -> Result<(usize, usize), Reason> {
    if !head.has(flag::PADDED) {
        return Ok((0, payload.len()));
    }
    let Some(&pad) = payload.first() else {
        return Err(Reason::FrameSize);
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(Reason::Protocol);
    }
    Ok((1, payload.len() - pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back() {
        let mut out = Vec::new();
        put_head(&mut out, 0x01_02_03, kind::HEADERS, flag::END_HEADERS, 7);
        let h = Head::parse(&out);
        assert_eq!((h.len, h.kind, h.flags, h.stream), (0x01_02_03, 1, 4, 7));
        out[5] |= 0x80;
        assert_eq!(Head::parse(&out).stream, 7, "the reserved bit is ignored");
    }

    #[test]
    fn settings_are_checked() {
        let mut out = Vec::new();
        put_settings(
            &mut out,
            &[(setting::INITIAL_WINDOW_SIZE, 1 << 20), (0x99, 5)],
        );
        let s = parse_settings(&out[HEADER_LEN..]).unwrap();
        assert_eq!(s.initial_window, Some(1 << 20));
        let bad = |id: u16, v: u32| {
            let mut out = Vec::new();
            put_settings(&mut out, &[(id, v)]);
            parse_settings(&out[HEADER_LEN..]).unwrap_err()
        };
        assert_eq!(bad(setting::ENABLE_PUSH, 2), Reason::Protocol);
        assert_eq!(
            bad(setting::INITIAL_WINDOW_SIZE, 1 << 31),
            Reason::FlowControl
        );
        assert_eq!(bad(setting::MAX_FRAME_SIZE, 100), Reason::Protocol);
        assert_eq!(parse_settings(&[0; 5]).unwrap_err(), Reason::FrameSize);
    }

    #[test]
    fn padding_is_removed_or_refused() {
        let padded = Head {
            len: 5,
            kind: kind::DATA,
            flags: flag::PADDED,
            stream: 1,
        };
        assert_eq!(unpad(&padded, &[2, b'a', b'b', 0, 0]).unwrap(), (1, 3));
        assert_eq!(
            unpad(&padded, &[5, 0, 0, 0, 0]).unwrap_err(),
            Reason::Protocol
        );
        assert_eq!(unpad(&padded, &[]).unwrap_err(), Reason::FrameSize);
    }
}
