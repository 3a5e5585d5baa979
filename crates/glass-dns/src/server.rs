//! The DNS server: UDP and TCP on one address, answering from the index cache.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glass_snapshot::SnapshotHandle;
use hickory_proto::rr::RecordType;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use std::io::{IoSlice, IoSliceMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::{Level, debug, enabled, warn};

use crate::answer::{self, Outcome, Transport};
use crate::cache::IndexCache;
use crate::config::{DnsConfig, Domain};
use crate::metrics::DnsMetrics;
use crate::wire::{self, QNAME_OFFSET};

/// How long a TCP connection may sit idle between queries (RFC 7766 §6.2.3).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Open TCP connections beyond this are closed at once.
const MAX_TCP_CONNECTIONS: usize = 512;
/// How often to try for a TCP port equal to the ephemeral UDP port.
const BIND_ATTEMPTS: usize = 16;
/// Most UDP receive loops on the shared socket.
const MAX_UDP_WORKERS: usize = 4;

/// A bound DNS server; [`DnsServer::run`] serves until shutdown.
#[derive(Debug)]
pub struct DnsServer {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    cache: IndexCache,
    metrics: Arc<DnsMetrics>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`. With port 0 both get the same ephemeral
    /// port. Fails with `InvalidInput` on a bad `config`.
    pub fn bind(
        addr: SocketAddr,
        config: DnsConfig,
        snapshots: SnapshotHandle,
        metrics: Arc<DnsMetrics>,
    ) -> io::Result<DnsServer> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let domain = Domain::parse(&config.domain)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (udp, tcp) = bind_pair(addr)?;
        let local_addr = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let ns_addr = Some(local_addr.ip()).filter(|ip| !ip.is_unspecified());
        let cache = IndexCache::new(snapshots, config, domain, ns_addr);
        Ok(DnsServer {
            udp,
            tcp,
            local_addr,
            shared: Arc::new(Shared { cache, metrics }),
        })
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves on the current tokio runtime until `shutdown` completes; then
    /// stops every task it started, open TCP connections included.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let udp = Arc::new(UdpSocket::from_std(self.udp)?);
        let tcp = TcpListener::from_std(self.tcp)?;
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_UDP_WORKERS);
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(serve_udp(udp.clone(), self.shared.clone()));
        }
        tasks.spawn(serve_tcp(tcp, self.shared.clone()));
        tasks.spawn(warm(self.shared.clone()));
        debug!(addr = %self.local_addr, udp_workers = workers, "DNS serving");
        tokio::select! {
            () = shutdown => {}
            Some(ended) = tasks.join_next() => warn!(?ended, "DNS task ended unexpectedly; stopping"),
        }
        tasks.shutdown().await;
        Ok(())
    }
}

/// Binds UDP, then TCP on the same port; with port 0, retries until the
/// ephemeral UDP port is free for TCP too.
fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = std::net::UdpSocket::bind(addr)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no common UDP/TCP port")))
}

/// Builds the index of each new snapshot as soon as it is published, so
/// queries rarely pay for it.
/// Shortest time between two index builds; a build of a large catalog
/// also waits four times its own duration, so rebuilding under a stream
/// of changes takes at most a fifth of one core.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(10);

/// Rebuilds the index after each publication, rate-limited, on a blocking
/// thread (a build is proportional to the catalog).
async fn warm(shared: Arc<Shared>) {
    let mut changes = shared.cache.snapshots().subscribe();
    loop {
        let started = tokio::time::Instant::now();
        let worker = shared.clone();
        let built = tokio::task::spawn_blocking(move || worker.cache.rebuild())
            .await
            .unwrap_or(false);
        let took = started.elapsed();
        if built {
            let indexed = shared.cache.get();
            debug!(
                revision = indexed.index.revision(),
                names = indexed.index.len(),
                took_ms = took.as_millis() as u64,
                "DNS index ready"
            );
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(
            MIN_REBUILD_INTERVAL
                .max(took * 4)
                .saturating_sub(started.elapsed()),
        )
        .await;
    }
}

/// Datagrams read (and answers written) per system call.
const UDP_BATCH: usize = 32;

/// Serves UDP in batches: one `recvmmsg` takes up to [`UDP_BATCH`] queries,
/// one `sendmmsg` returns their answers. Under load this halves the system
/// calls per query, which is most of a DNS server's cost.
async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    use std::os::fd::AsRawFd;

    let mut bufs = vec![[0u8; 4096]; UDP_BATCH];
    let mut outs: Vec<Vec<u8>> = (0..UDP_BATCH)
        .map(|_| Vec::with_capacity(usize::from(answer::MAX_UDP_PAYLOAD)))
        .collect();
    let fd = socket.as_raw_fd();
    loop {
        if let Err(e) = socket.readable().await {
            warn!(error = %e, "DNS UDP socket failed");
            return;
        }
        let received = socket.try_io(tokio::io::Interest::READABLE, || recv_batch(fd, &mut bufs));
        let received = match received {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors of earlier sends surface here on Linux; they
                // concern one peer, not the socket.
                debug!(error = %e, "DNS UDP receive failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let started = Instant::now();
        let indexed = shared.cache.get();
        let mut replies: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(received.len());
        for (slot, (len, peer)) in received.iter().enumerate() {
            let query = &bufs[slot][..*len];
            let Some(outcome) =
                answer::answer(&indexed.index, query, Transport::Udp, &mut outs[slot])
            else {
                shared.metrics.dropped();
                continue;
            };
            replies.push((slot, *peer));
            finish(
                &shared,
                query,
                to_std(peer),
                Transport::Udp,
                outcome,
                started,
            );
        }
        if replies.is_empty() {
            continue;
        }
        let sent = socket
            .try_io(tokio::io::Interest::WRITABLE, || {
                send_batch(fd, &outs, &replies)
            })
            .unwrap_or(0);
        // What the batch could not send (a full socket buffer) goes one by one.
        for (slot, peer) in &replies[sent..] {
            if let Err(e) = socket.send_to(&outs[*slot], to_std(peer)).await {
                debug!(error = %e, "DNS UDP send failed");
            }
        }
    }
}

/// Reads up to a batch of datagrams without blocking: `(length, sender)` each.
fn recv_batch(
    fd: std::os::fd::RawFd,
    bufs: &mut [[u8; 4096]],
) -> io::Result<Vec<(usize, SockaddrStorage)>> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), None);
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
        bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    let messages = recvmmsg(
        fd,
        &mut headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(messages
        .filter_map(|m| Some((m.bytes, m.address?)))
        .collect())
}

/// Sends the answers in `outs` named by `replies`; returns how many went out.
fn send_batch(
    fd: std::os::fd::RawFd,
    outs: &[Vec<u8>],
    replies: &[(usize, SockaddrStorage)],
) -> io::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
    let iovs: Vec<[IoSlice<'_>; 1]> = replies
        .iter()
        .map(|(slot, _)| [IoSlice::new(&outs[*slot])])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = replies.iter().map(|(_, peer)| Some(*peer)).collect();
    let sent = sendmmsg(
        fd,
        &mut headers,
        iovs.iter(),
        addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

fn to_std(addr: &SockaddrStorage) -> SocketAddr {
    if let Some(v4) = addr.as_sockaddr_in() {
        SocketAddr::from(std::net::SocketAddrV4::from(*v4))
    } else if let Some(v6) = addr.as_sockaddr_in6() {
        SocketAddr::from(std::net::SocketAddrV6::from(*v6))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving UDP.
                warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_TCP_CONNECTIONS {
            debug!(%peer, "DNS TCP connection refused: too many open");
            continue;
        }
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(stream, peer, shared.clone()));
    }
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2) until the peer closes,
/// idles, or sends something that cannot be a message.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut query = vec![0u8; usize::from(u16::MAX)];
    let mut out = Vec::with_capacity(4096);
    let mut pending = Vec::with_capacity(4096);
    loop {
        let Ok(Ok(len)) = timeout(TCP_IDLE, reader.read_u16()).await else {
            break;
        };
        let len = usize::from(len);
        match timeout(TCP_IDLE, reader.read_exact(&mut query[..len])).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let started = Instant::now();
        let indexed = shared.cache.get();
        let Some(outcome) = answer::answer(&indexed.index, &query[..len], Transport::Tcp, &mut out)
        else {
            shared.metrics.dropped();
            break;
        };
        // Answers never exceed 65535 bytes: the TCP limit is enforced while writing them.
        pending.extend_from_slice(&(out.len() as u16).to_be_bytes());
        pending.extend_from_slice(&out);
        // Pipelined queries already read get their answers in one write.
        if !complete_message_buffered(reader.buffer()) {
            if writer.write_all(&pending).await.is_err() {
                break;
            }
            pending.clear();
        }
        finish(
            &shared,
            &query[..len],
            peer,
            Transport::Tcp,
            outcome,
            started,
        );
    }
}

fn complete_message_buffered(buffer: &[u8]) -> bool {
    match buffer {
        [high, low, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*high, *low])),
        _ => false,
    }
}

/// Records metrics and the debug query log for one answer.
fn finish(
    shared: &Shared,
    query: &[u8],
    peer: SocketAddr,
    transport: Transport,
    outcome: Outcome,
    started: Instant,
) {
    shared.metrics.answered(
        outcome.qtype,
        outcome.rcode,
        outcome.truncated,
        started.elapsed(),
    );
    if enabled!(Level::DEBUG) {
        let name = query
            .get(QNAME_OFFSET..QNAME_OFFSET + outcome.name_len)
            .map(wire::name_to_string);
        debug!(
            %peer,
            ?transport,
            qname = name.as_deref().unwrap_or(""),
            qtype = %outcome.qtype.map(RecordType::from).map_or_else(String::new, |t| t.to_string()),
            rcode = outcome.rcode.as_str(),
            truncated = outcome.truncated,
            "DNS query"
        );
    }
}
