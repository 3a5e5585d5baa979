//! Answering one query from a [`DnsIndex`]: the protocol rules of RFC 1034,
//! RFC 2308 (negative answers), RFC 2181 (truncation) and RFC 6891 (EDNS0).

use std::cell::Cell;

use crate::index::{DnsIndex, Host, Node, Service, ServiceMember};
use crate::wire::{
    self, CLASS_ANY, CLASS_IN, OPT_LEN, QNAME_OFFSET, Question, Rcode, Reject, rtype,
};

/// How a query arrived; it decides how large the answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS0 size the client advertises up to [`MAX_UDP_PAYLOAD`].
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// The largest UDP answer the server sends, and the size its OPT record
/// advertises (the 2020 DNS flag day value, which avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// A compression pointer to the question name, the owner of every answer record.
const QNAME_POINTER: [u8; 2] = [0xC0, QNAME_OFFSET as u8];

/// What was answered, for metrics and the query log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The question's type, when the query had a readable question.
    pub(crate) qtype: Option<u16>,
    /// The response code sent.
    pub(crate) rcode: Rcode,
    /// Whether the answer was cut to fit UDP (TC set).
    pub(crate) truncated: bool,
    /// Length of the question name at [`QNAME_OFFSET`] in the query (0: none).
    pub(crate) name_len: usize,
}

/// Answers one DNS message. `None` means no answer is sent: the message is
/// too short to carry an id, or is itself a response.
///
/// Pure and total: any byte string gives an answer or `None`, never a panic.
pub fn handle_query(index: &DnsIndex, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    answer(index, query, transport, &mut out).map(|_| out)
}

/// [`handle_query`] into a reused buffer; reports what it answered.
pub(crate) fn answer(
    index: &DnsIndex,
    query: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    out.clear();
    match wire::parse(query) {
        Err(Reject::Drop) => None,
        Err(Reject::Error { id, flags, rcode }) => {
            wire::write_header(out, id, flags, rcode, false);
            Some(Outcome {
                qtype: None,
                rcode,
                truncated: false,
                name_len: 0,
            })
        }
        Ok(question) => Some(answer_question(index, &question, transport, out)),
    }
}

/// The records a name answers for a type.
enum Records<'a> {
    None,
    Apex {
        soa: Option<&'a [u8]>,
        ns: Option<&'a [u8]>,
    },
    Host(&'a Host),
    Srv(&'a Service),
    Addr(&'a Service, u16),
    All(&'a Service),
}

/// The response code, whether it is authoritative, and the records to send.
fn resolve<'a>(index: &'a DnsIndex, q: &Question<'_>) -> (Rcode, bool, Records<'a>) {
    if q.edns.is_some_and(|e| e.version != 0) {
        return (Rcode::BadVers, false, Records::None);
    }
    let zone_transfer = q.qtype == rtype::AXFR || q.qtype == rtype::IXFR;
    if !(q.qclass == CLASS_IN || q.qclass == CLASS_ANY) || zone_transfer || !in_domain(index, q) {
        return (Rcode::Refused, false, Records::None);
    }
    let Some(node) = index.lookup(q.key()) else {
        return (Rcode::NxDomain, true, Records::None);
    };
    let (t, any) = (q.qtype, q.qtype == rtype::ANY);
    let records = match node {
        Node::Empty => Records::None,
        Node::Apex if t == rtype::SOA || t == rtype::NS || any => Records::Apex {
            soa: (t != rtype::NS).then(|| index.soa()),
            ns: (t != rtype::SOA).then(|| index.ns()),
        },
        Node::Host(host) if host.addr_type == t || any => Records::Host(host),
        Node::Service(s) if t == rtype::SRV => Records::Srv(s),
        Node::Service(s) if t == rtype::A || t == rtype::AAAA => Records::Addr(s, t),
        Node::Service(s) if any => Records::All(s),
        _ => Records::None,
    };
    (Rcode::NoError, true, records)
}

fn in_domain(index: &DnsIndex, q: &Question<'_>) -> bool {
    let domain = index.domain();
    q.suffix_offset(domain.labels)
        .is_some_and(|at| q.key()[at..] == domain.wire[..])
}

fn answer_question(
    index: &DnsIndex,
    q: &Question<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Outcome {
    let (rcode, authoritative, records) = resolve(index, q);
    let opt_len = if q.edns.is_some() { OPT_LEN } else { 0 };
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(
            q.edns
                .map_or(512, |e| e.payload.clamp(512, MAX_UDP_PAYLOAD)),
        ),
    } - opt_len;
    let id = u16::from_be_bytes([q.packet[0], q.packet[1]]);
    wire::write_header(out, id, q.flags, rcode, authoritative);
    out.extend_from_slice(q.section());
    wire::set_count(out, 0, 1);
    let question_end = out.len();
    let turn = next_turn();
    let mut answers = write_answers(&records, turn, out);
    let mut truncated = false;
    let mut additional = 0;
    if out.len() > limit {
        // RFC 2181 §9: the answer does not fit, so send none of it and let the client retry over TCP.
        out.truncate(question_end);
        wire::set_truncated(out);
        (answers, truncated) = (0, true);
    } else if answers == 0 && authoritative {
        // RFC 2308 §3: a negative answer carries the SOA, whose owner is the apex
        // inside the question name.
        let apex_at = q.suffix_offset(index.domain().labels).unwrap_or(0);
        // The offset is at most 12 + 254, well within a pointer's 14 bits.
        out.extend_from_slice(&(0xC000 | (QNAME_OFFSET + apex_at) as u16).to_be_bytes());
        out.extend_from_slice(index.soa());
        wire::set_count(out, 2, 1);
    } else if let Records::Srv(service) = records {
        // Glue goes in as long as it fits; leaving some out needs no TC (RFC 2181 §9).
        for member in rotated(service, turn) {
            if out.len() + member.host.glue.len() > limit {
                break;
            }
            out.extend_from_slice(&member.host.glue);
            additional += 1;
        }
    }
    if q.edns.is_some() {
        wire::write_opt(out, MAX_UDP_PAYLOAD, rcode);
        additional += 1;
    }
    wire::set_count(out, 1, answers);
    wire::set_count(out, 3, additional);
    Outcome {
        qtype: Some(q.qtype),
        rcode,
        truncated,
        name_len: q.key().len(),
    }
}

/// Writes the answer section; returns how many records it holds.
fn write_answers(records: &Records<'_>, turn: usize, out: &mut Vec<u8>) -> u16 {
    let mut count = 0u16;
    let mut record = |out: &mut Vec<u8>, body: &[u8]| {
        out.extend_from_slice(&QNAME_POINTER);
        out.extend_from_slice(body);
        count = count.saturating_add(1);
    };
    match *records {
        Records::None => {}
        Records::Apex { soa, ns } => soa.into_iter().chain(ns).for_each(|body| record(out, body)),
        Records::Host(host) => record(out, &host.addr),
        Records::Srv(service) => rotated(service, turn).for_each(|m| record(out, &m.srv)),
        Records::Addr(service, t) => rotated(service, turn)
            .filter(|m| m.host.addr_type == t)
            .for_each(|m| record(out, &m.host.addr)),
        Records::All(service) => {
            rotated(service, turn).for_each(|m| record(out, &m.srv));
            rotated(service, turn).for_each(|m| record(out, &m.host.addr));
        }
    }
    count
}

/// The members in answer order for this turn: each zone group rotated by `turn`.
fn rotated(service: &Service, turn: usize) -> impl Iterator<Item = &ServiceMember> {
    let (local, other) = service.members.split_at(service.local);
    rotate(local, turn).chain(rotate(other, turn))
}

fn rotate<T>(items: &[T], turn: usize) -> impl Iterator<Item = &T> {
    let k = if items.is_empty() {
        0
    } else {
        turn % items.len()
    };
    items[k..].iter().chain(&items[..k])
}

thread_local! {
    /// Round-robin position of this thread: successive answers start one instance later.
    static TURN: Cell<usize> = const { Cell::new(0) };
}

fn next_turn() -> usize {
    TURN.with(|turn| {
        let next = turn.get().wrapping_add(1);
        turn.set(next);
        next
    })
}
