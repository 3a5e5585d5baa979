//! The DNS wire format (RFC 1035, RFC 6891) as far as the server reads and writes it by hand.
//!
//! Queries are parsed without allocating: the question name is lowercased
//! into a stack buffer that is also the key of the index lookup. Anything
//! that is not a well-formed standard query is classified here, so the
//! answering code only ever sees a valid question.

/// Length of the fixed message header.
pub(crate) const HEADER_LEN: usize = 12;
/// Longest domain name in wire format, terminal zero included (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Most labels a name of [`MAX_NAME_LEN`] bytes can have.
const MAX_LABELS: usize = 128;
/// Offset of the question name in every message: right after the header.
pub(crate) const QNAME_OFFSET: usize = HEADER_LEN;

/// Record types the server knows by number.
pub(crate) mod rtype {
    pub(crate) const A: u16 = 1;
    pub(crate) const NS: u16 = 2;
    pub(crate) const SOA: u16 = 6;
    pub(crate) const AAAA: u16 = 28;
    pub(crate) const SRV: u16 = 33;
    pub(crate) const OPT: u16 = 41;
    pub(crate) const IXFR: u16 = 251;
    pub(crate) const AXFR: u16 = 252;
    pub(crate) const ANY: u16 = 255;
}

/// Class IN.
pub(crate) const CLASS_IN: u16 = 1;
/// Class ANY (`*`), answered like IN.
pub(crate) const CLASS_ANY: u16 = 255;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const OPCODE_MASK: u16 = 0x7800;

/// The response codes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rcode {
    /// The query was answered (possibly with no records: NODATA).
    NoError,
    /// The query was malformed.
    FormErr,
    /// The server failed (never sent today; kept for metrics).
    ServFail,
    /// The name does not exist under the Glass domain.
    NxDomain,
    /// The opcode is not QUERY.
    NotImp,
    /// The name is outside the Glass domain, or the class or type is not served.
    Refused,
    /// The query used an EDNS version other than 0 (extended rcode 16).
    BadVers,
}

impl Rcode {
    /// Every code, in the order metrics list them.
    pub(crate) const ALL: [Rcode; 7] = [
        Rcode::NoError,
        Rcode::FormErr,
        Rcode::ServFail,
        Rcode::NxDomain,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::BadVers,
    ];

    /// The name dig prints (`NOERROR`, `NXDOMAIN`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::BadVers => "BADVERS",
        }
    }

    /// The low four bits that go in the header.
    fn header_bits(self) -> u16 {
        match self {
            Rcode::NoError | Rcode::BadVers => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
        }
    }

    /// The high eight bits that go in the OPT record (RFC 6891 §6.1.3).
    pub(crate) fn extended_bits(self) -> u8 {
        match self {
            Rcode::BadVers => 1,
            _ => 0,
        }
    }

    pub(crate) fn index(self) -> usize {
        Rcode::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The EDNS0 parameters of a query (its OPT record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The UDP payload size the client can receive.
    pub(crate) payload: u16,
    /// The EDNS version; only 0 exists.
    pub(crate) version: u8,
}

/// A well-formed standard query.
pub(crate) struct Question<'a> {
    /// The whole query message.
    pub(crate) packet: &'a [u8],
    /// Header flags of the query.
    pub(crate) flags: u16,
    /// Question name lowercased, in wire format with its terminal zero.
    lower: [u8; MAX_NAME_LEN],
    /// Length of the name in `lower` and in the packet.
    name_len: usize,
    /// Offset in the name of each label's length byte.
    label_starts: [u8; MAX_LABELS],
    /// Number of labels (the root label not counted).
    labels: usize,
    /// QTYPE.
    pub(crate) qtype: u16,
    /// QCLASS.
    pub(crate) qclass: u16,
    /// The OPT record, when the query had one.
    pub(crate) edns: Option<Edns>,
}

impl Question<'_> {
    /// The lowercased name, wire format: the index key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }

    /// The question section exactly as the client sent it (0x20 case kept).
    pub(crate) fn section(&self) -> &[u8] {
        &self.packet[HEADER_LEN..HEADER_LEN + self.name_len + 4]
    }

    /// The offset in the name where its last `n` labels start, if it has that many.
    pub(crate) fn suffix_offset(&self, n: usize) -> Option<usize> {
        match n {
            0 => Some(self.name_len - 1),
            _ if n <= self.labels => Some(usize::from(self.label_starts[self.labels - n])),
            _ => None,
        }
    }

    /// Number of labels, the root not counted.
    #[cfg(test)]
    pub(crate) fn label_count(&self) -> usize {
        self.labels
    }
}

/// Why a received message is not a standard query.
pub(crate) enum Reject {
    /// Not worth an answer: too short to carry an id, or itself a response.
    Drop,
    /// A message that gets an error without a question section.
    Error {
        /// Id of the query.
        id: u16,
        /// Flags of the query (opcode and RD are echoed).
        flags: u16,
        /// FORMERR or NOTIMP.
        rcode: Rcode,
    },
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Parses a received message as a standard query with one question.
pub(crate) fn parse(packet: &[u8]) -> Result<Question<'_>, Reject> {
    let (Some(id), Some(flags)) = (u16_at(packet, 0), u16_at(packet, 2)) else {
        return Err(Reject::Drop);
    };
    if packet.len() < HEADER_LEN || flags & FLAG_QR != 0 {
        return Err(Reject::Drop);
    }
    let error = |rcode| Err(Reject::Error { id, flags, rcode });
    if flags & OPCODE_MASK != 0 {
        return error(Rcode::NotImp);
    }
    let count = |at| u16_at(packet, at).unwrap_or(0);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 {
        return error(Rcode::FormErr);
    }
    match parse_question(packet, flags, ar) {
        Some(question) => Ok(question),
        None => error(Rcode::FormErr),
    }
}

fn parse_question(packet: &[u8], flags: u16, additional: u16) -> Option<Question<'_>> {
    let mut q = Question {
        packet,
        flags,
        lower: [0; MAX_NAME_LEN],
        name_len: 0,
        label_starts: [0; MAX_LABELS],
        labels: 0,
        qtype: 0,
        qclass: 0,
        edns: None,
    };
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*packet.get(at)?);
        let offset = at - HEADER_LEN;
        // 0x40/0x80 are obsolete label types, 0xC0 a pointer: a question
        // name has nothing before it to point at.
        if len > 63 || offset + 1 + len > MAX_NAME_LEN {
            return None;
        }
        if len == 0 {
            q.name_len = offset + 1;
            break;
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        q.label_starts[q.labels] = u8::try_from(offset).ok()?;
        q.labels += 1;
        q.lower[offset] = packet[at];
        for (dst, src) in q.lower[offset + 1..offset + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        at += 1 + len;
    }
    at += 1;
    q.qtype = u16_at(packet, at)?;
    q.qclass = u16_at(packet, at + 2)?;
    at += 4;
    for _ in 0..additional {
        at = parse_additional(packet, at, &mut q.edns)?;
    }
    Some(q)
}

/// Reads one record of the additional section starting at `at`, keeping
/// an OPT record; returns where the next record starts.
fn parse_additional(packet: &[u8], mut at: usize, edns: &mut Option<Edns>) -> Option<usize> {
    let owner_is_root = *packet.get(at)? == 0;
    at = skip_name(packet, at)?;
    let rtype = u16_at(packet, at)?;
    let class = u16_at(packet, at + 2)?;
    let ttl_high = u16_at(packet, at + 4)?;
    let rdlen = usize::from(u16_at(packet, at + 8)?);
    let end = at + 10 + rdlen;
    if end > packet.len() {
        return None;
    }
    if rtype == rtype::OPT {
        // RFC 6891 §6.1.1: one OPT, owned by the root, or FORMERR.
        if edns.is_some() || !owner_is_root {
            return None;
        }
        let version = (ttl_high & 0xff) as u8;
        *edns = Some(Edns {
            payload: class,
            version,
        });
    }
    Some(end)
}

/// Skips a possibly compressed name; returns the offset after it.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    let mut total = 0;
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            1..=63 => {
                total += usize::from(len) + 1;
                if total >= MAX_NAME_LEN {
                    return None;
                }
                at += usize::from(len) + 1;
            }
            _ if len & 0xC0 == 0xC0 => {
                packet.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// Writes a 12-byte header for an answer to a query with `id` and `flags`.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    id: u16,
    query_flags: u16,
    rcode: Rcode,
    authoritative: bool,
) {
    let mut flags = FLAG_QR | (query_flags & (OPCODE_MASK | FLAG_RD)) | rcode.header_bits();
    if authoritative {
        flags |= FLAG_AA;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// Sets the TC bit of the message in `out`.
pub(crate) fn set_truncated(out: &mut [u8]) {
    out[2] |= (FLAG_TC >> 8) as u8;
}

/// Sets one of the four section counts (0 = question ... 3 = additional).
pub(crate) fn set_count(out: &mut [u8], section: usize, count: u16) {
    let at = 4 + 2 * section;
    out[at..at + 2].copy_from_slice(&count.to_be_bytes());
}

/// Bytes of the OPT record the server adds to answers.
pub(crate) const OPT_LEN: usize = 11;

/// Writes the server's OPT record: its payload size, version 0, `rcode`'s high bits.
pub(crate) fn write_opt(out: &mut Vec<u8>, payload: u16, rcode: Rcode) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[rcode.extended_bits(), 0, 0, 0]);
    out.extend_from_slice(&[0, 0]);
}

/// Writes `name` (wire format) as text for logs: `http.users-api.glass.`.
pub(crate) fn name_to_string(wire: &[u8]) -> String {
    let mut text = String::new();
    let mut at = 0;
    while let Some(&len) = wire.get(at) {
        if len == 0 || len > 63 {
            break;
        }
        let end = (at + 1 + usize::from(len)).min(wire.len());
        for &b in &wire[at + 1..end] {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                text.push(char::from(b));
            } else {
                text.push_str(&format!("\\{b:03}"));
            }
        }
        text.push('.');
        at = end;
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// The wire format of `labels` followed by `suffix` (itself wire format).
pub(crate) fn name_wire<'a>(labels: impl IntoIterator<Item = &'a str>, suffix: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(64);
    for label in labels {
        // Labels come from validated model names (1–63 bytes), so the length fits.
        wire.push(label.len() as u8);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    wire.extend_from_slice(suffix);
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, extra: &[u8], ar: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&ar.to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p.extend_from_slice(extra);
        p
    }

    fn kind(packet: &[u8]) -> &'static str {
        match parse(packet) {
            Err(Reject::Drop) => "drop",
            Err(Reject::Error { rcode, .. }) => rcode.as_str(),
            Ok(_) => "query",
        }
    }

    #[test]
    fn classifies_messages() {
        let www = b"\x03WwW\x05glass\x00";
        let opt = [0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0];
        let cases: [(Vec<u8>, &str); 10] = [
            (vec![], "drop"),
            (vec![1], "drop"),
            (vec![0; 11], "drop"),
            (query(www, 1, &[], 0), "query"),
            (query(www, 1, &opt, 1), "query"),
            (
                query(www, 1, &[opt.as_slice(), &opt].concat(), 2),
                "FORMERR",
            ),
            (query(b"\xc0\x0c", 1, &[], 0), "FORMERR"),
            (query(b"\x05glass", 1, &[], 0), "FORMERR"),
            (query(www, 1, &opt[..5], 1), "FORMERR"),
            (
                {
                    let mut p = query(www, 1, &[], 0);
                    p[2] = 0x28;
                    p
                },
                "NOTIMP",
            ),
        ];
        for (packet, want) in cases {
            assert_eq!(kind(&packet), want, "{packet:?}");
        }
        let mut response = query(www, 1, &[], 0);
        response[2] |= 0x80;
        assert_eq!(kind(&response), "drop");
    }

    #[test]
    fn lowercases_the_key_and_keeps_the_section() {
        let packet = query(
            b"\x03WwW\x05glass\x00",
            33,
            &[0, 0, 41, 2, 0, 0, 1, 0, 0, 0, 0],
            1,
        );
        let Ok(q) = parse(&packet) else {
            panic!("not a query")
        };
        assert_eq!(q.key(), b"\x03www\x05glass\x00");
        assert_eq!(&q.section()[..4], b"\x03WwW");
        assert_eq!((q.qtype, q.label_count()), (33, 2));
        assert_eq!(q.suffix_offset(1), Some(4));
        assert_eq!(q.suffix_offset(0), Some(10));
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 512,
                version: 1
            })
        );
        assert_eq!(name_to_string(q.key()), "www.glass.");
    }
}
