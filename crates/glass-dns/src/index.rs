//! The DNS index of one snapshot: every name Glass answers, with its records
//! already in wire format, so that a query is a hash lookup and a few copies.

use std::collections::BTreeMap;

/// Names are hashed with foldhash, not SipHash: only the catalog inserts
/// keys (queries only look up), so there is no collision attack to resist,
/// and the index is rebuilt often.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::sync::Arc;

use glass_model::Revision;
use glass_snapshot::{InstanceFilter, Member, Snapshot};

use crate::config::{DnsConfig, DnsError, Domain};
use crate::wire::{self, CLASS_IN, rtype};

/// Every name under the Glass domain at one snapshot revision, with its
/// prepared answers. Built once per snapshot; immutable afterwards.
#[derive(Debug)]
pub struct DnsIndex {
    revision: Revision,
    domain: Domain,
    names: HashMap<Box<[u8]>, Node>,
    /// The apex SOA record from its type on (the owner is written per answer).
    soa: Box<[u8]>,
    /// The apex NS record from its type on.
    ns: Box<[u8]>,
}

/// What a name holds.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// An empty non-terminal, e.g. `prod.shop.eu1.glass.`: it exists, owns no records.
    Empty,
    /// An instance's own name: its address.
    Host(Arc<Host>),
    /// A service name: SRV and addresses of its healthy instances.
    Service(Arc<Service>),
    /// The domain itself: SOA and NS.
    Apex,
}

impl Node {
    /// When two kinds claim a name, the higher rank keeps it.
    fn rank(&self) -> u8 {
        match self {
            Node::Empty => 0,
            Node::Host(_) => 1,
            Node::Service(_) => 2,
            Node::Apex => 3,
        }
    }
}

/// One host (an instance, or the server's `ns` name) and its address record.
#[derive(Debug)]
pub(crate) struct Host {
    /// `A` or `AAAA`.
    pub(crate) addr_type: u16,
    /// The address record from its type on.
    pub(crate) addr: Box<[u8]>,
    /// The whole address record, owner included, for additional sections.
    pub(crate) glue: Box<[u8]>,
}

/// The healthy instances behind a service name.
#[derive(Debug)]
pub(crate) struct Service {
    /// In answer order before rotation: the local zone's `local` first, then the rest.
    pub(crate) members: Vec<ServiceMember>,
    /// How many of `members` are in the local zone.
    pub(crate) local: usize,
}

/// One instance as a service answers it.
#[derive(Debug)]
pub(crate) struct ServiceMember {
    /// The SRV record from its type on.
    pub(crate) srv: Box<[u8]>,
    /// The instance (its address and glue).
    pub(crate) host: Arc<Host>,
}

impl DnsIndex {
    /// Indexes `snapshot` for answering under `config`.
    pub fn build(snapshot: &Snapshot, config: &DnsConfig) -> Result<DnsIndex, DnsError> {
        config.validate()?;
        let domain = Domain::parse(&config.domain)?;
        Ok(DnsIndex::build_with(snapshot, config, domain, None))
    }

    /// Like [`DnsIndex::build`] with a parsed domain; `ns_addr` is the
    /// address `ns.<domain>` answers with, when the server knows it.
    pub(crate) fn build_with(
        snapshot: &Snapshot,
        config: &DnsConfig,
        domain: Domain,
        ns_addr: Option<IpAddr>,
    ) -> Self {
        let mut builder = Builder {
            config,
            domain: &domain,
            names: HashMap::default(),
            services: BTreeMap::new(),
        };
        for member in snapshot.members(&InstanceFilter::default()) {
            builder.add(member);
        }
        let names = builder.finish(ns_addr);
        let ns_name = wire::name_wire(["ns"], &domain.wire);
        let mut soa_rdata = ns_name.clone();
        soa_rdata.extend(wire::name_wire(["hostmaster"], &domain.wire));
        // The serial only needs to change when the data does; revisions past
        // 2^32 wrap, which RFC 1982 serial arithmetic allows.
        let serial = snapshot.revision as u32;
        for value in [serial, 3600, 600, 86400, config.negative_ttl] {
            soa_rdata.extend_from_slice(&value.to_be_bytes());
        }
        DnsIndex {
            revision: snapshot.revision,
            soa: rr_body(rtype::SOA, config.negative_ttl, &soa_rdata).into(),
            ns: rr_body(rtype::NS, config.ttl, &ns_name).into(),
            domain,
            names,
        }
    }

    /// The snapshot revision this index reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// How many names exist under the domain, the apex included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the index holds no names (never: the apex always exists).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Option<&Node> {
        self.names.get(key)
    }

    pub(crate) fn domain(&self) -> &Domain {
        &self.domain
    }

    pub(crate) fn soa(&self) -> &[u8] {
        &self.soa
    }

    pub(crate) fn ns(&self) -> &[u8] {
        &self.ns
    }
}

struct ServiceBuilder {
    /// The RFC 2782 spelling of the same name: `_<port>._tcp.…`.
    tcp_key: Vec<u8>,
    local: Vec<ServiceMember>,
    other: Vec<ServiceMember>,
}

struct Builder<'a> {
    config: &'a DnsConfig,
    domain: &'a Domain,
    names: HashMap<Box<[u8]>, Node>,
    services: BTreeMap<Vec<u8>, ServiceBuilder>,
}

impl Builder<'_> {
    fn put(&mut self, name: Vec<u8>, node: Node) {
        let key = name.into_boxed_slice();
        match self.names.get(&key) {
            Some(have) if have.rank() >= node.rank() => {}
            _ => {
                self.names.insert(key, node);
            }
        }
    }

    fn add(&mut self, member: &Member) {
        let i = &member.instance;
        let dw = &self.domain.wire;
        let host_name = wire::name_wire(
            [&i.id, &i.job, &i.env, &i.product, &i.zone].map(String::as_str),
            dw,
        );
        let host = Arc::new(host(&host_name, i.address, self.config.ttl));
        let healthy = member.is_healthy(self.config.allow_warning);
        let local = i.zone == self.config.local_zone;
        for zone in [i.zone.as_str(), "any"] {
            let tail = [i.job.as_str(), &i.env, &i.product, zone];
            self.put(
                wire::name_wire(std::iter::once(i.id.as_str()).chain(tail), dw),
                Node::Host(host.clone()),
            );
            for (port_name, port) in &i.ports {
                let key = wire::name_wire(std::iter::once(port_name.as_str()).chain(tail), dw);
                let service = self.services.entry(key).or_insert_with(|| ServiceBuilder {
                    tcp_key: wire::name_wire(
                        [format!("_{port_name}").as_str(), "_tcp"]
                            .into_iter()
                            .chain(tail),
                        dw,
                    ),
                    local: Vec::new(),
                    other: Vec::new(),
                });
                if healthy {
                    let mut rdata = Vec::with_capacity(6 + host_name.len());
                    for value in [i.priority(), i.weight(), *port] {
                        rdata.extend_from_slice(&value.to_be_bytes());
                    }
                    rdata.extend_from_slice(&host_name);
                    let entry = ServiceMember {
                        srv: rr_body(rtype::SRV, self.config.ttl, &rdata).into(),
                        host: host.clone(),
                    };
                    if local {
                        service.local.push(entry)
                    } else {
                        service.other.push(entry)
                    }
                }
            }
        }
    }

    fn finish(mut self, ns_addr: Option<IpAddr>) -> HashMap<Box<[u8]>, Node> {
        for (key, mut builder) in std::mem::take(&mut self.services) {
            let local = builder.local.len();
            builder.local.append(&mut builder.other);
            let service = Arc::new(Service {
                members: builder.local,
                local,
            });
            self.put(builder.tcp_key, Node::Service(service.clone()));
            self.put(key, Node::Service(service));
        }
        if let Some(addr) = ns_addr {
            let name = wire::name_wire(["ns"], &self.domain.wire);
            let ns = Arc::new(host(&name, addr, self.config.ttl));
            self.put(name, Node::Host(ns));
        }
        self.put(self.domain.wire.clone(), Node::Apex);
        // Every name between a record's owner and the apex exists too (RFC 8020).
        let owners: Vec<Box<[u8]>> = self.names.keys().cloned().collect();
        for owner in owners {
            let mut at = 0;
            while owner.len() - at > self.domain.wire.len() {
                self.put(owner[at..].to_vec(), Node::Empty);
                at += 1 + usize::from(owner[at]);
            }
        }
        self.names
    }
}

/// A record from its type on: type, class IN, TTL, rdata length, rdata.
fn rr_body(rr_type: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(10 + rdata.len());
    body.extend_from_slice(&rr_type.to_be_bytes());
    body.extend_from_slice(&CLASS_IN.to_be_bytes());
    body.extend_from_slice(&ttl.to_be_bytes());
    // Rdata here is at most an SRV with one name: far below 64 KiB.
    body.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    body.extend_from_slice(rdata);
    body
}

fn host(name: &[u8], address: IpAddr, ttl: u32) -> Host {
    let (addr_type, addr) = match address {
        IpAddr::V4(v4) => (rtype::A, rr_body(rtype::A, ttl, &v4.octets())),
        IpAddr::V6(v6) => (rtype::AAAA, rr_body(rtype::AAAA, ttl, &v6.octets())),
    };
    let mut glue = name.to_vec();
    glue.extend_from_slice(&addr);
    Host {
        addr_type,
        addr: addr.into(),
        glue: glue.into(),
    }
}
