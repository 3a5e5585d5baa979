//! Glass's DNS server: SRV and A/AAAA discovery over UDP and TCP, answered
//! from the catalog snapshot without locks.
//!
//! Names (see `docs/dns.md`): `<port>.<job>.<env>.<product>.<zone>.<domain>`
//! (and RFC 2782's `_<port>._tcp.…`) answer SRV, A and AAAA with the
//! healthy instances; `<id>.<job>.<env>.<product>.<zone>.<domain>` answers
//! one instance's address; the zone `any` means every zone, the local one
//! first.
//!
//! The crate knows the snapshot and the model, never the store or the
//! catalog. Each snapshot is indexed once ([`DnsIndex`]): names map to
//! records already in wire format, so a query is a parse into a stack
//! buffer, a hash lookup and a few copies. [`handle_query`] is that pure
//! function; [`DnsServer`] puts UDP and TCP sockets around it.

mod answer;
mod cache;
mod config;
mod index;
mod metrics;
mod server;
mod wire;

pub use answer::{MAX_UDP_PAYLOAD, Transport, handle_query};
pub use config::{DnsConfig, DnsError};
pub use index::DnsIndex;
pub use metrics::DnsMetrics;
pub use server::DnsServer;
pub use wire::Rcode;
