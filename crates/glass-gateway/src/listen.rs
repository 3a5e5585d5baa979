//! Listeners: accept TCP (and TLS with ALPN), serve HTTP/1.1 and HTTP/2 on
//! each connection, follow the snapshot, and drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use glass_snapshot::SnapshotHandle;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
use crate::body::ClientBody;
use crate::config::GatewayConfig;
use crate::h1_serve::{self, Ended};
use crate::h2_serve;
use crate::metrics::GatewayMetrics;
use crate::proxy::{self, Conn, Shared};
use crate::retry::RetryBudget;
use crate::table::RouteTable;
use crate::tls;
use crate::upstream::Clients;

/// A bound gateway; [`Gateway::run`] serves until shutdown.
pub struct Gateway {
    listener: std::net::TcpListener,
    tls: Option<(
        std::net::TcpListener,
        TlsAcceptor,
        Arc<tls::CertStore>,
        tls::Fingerprint,
    )>,
    shared: Arc<Shared>,
    snapshots: SnapshotHandle,
    /// Subscribed before the first table is built, so no publication
    /// between `bind` and `run` is missed.
    changes: tokio::sync::watch::Receiver<glass_model::Revision>,
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl Gateway {
    /// Binds the listeners, loads certificates, builds the first routing
    /// table from `snapshots` and starts the access log writer.
    pub fn bind(config: GatewayConfig, snapshots: SnapshotHandle) -> io::Result<Gateway> {
        let listener = bind(config.addr)?;
        let tls = match (&config.tls_addr, &config.tls_dir) {
            (Some(addr), Some(dir)) => {
                let (server, store, seen) = tls::server_config(dir)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Some((bind(*addr)?, TlsAcceptor::from(server), store, seen))
            }
            (None, None) => None,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS needs both a TLS address and a certificate directory",
                ));
            }
        };
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let metrics = GatewayMetrics::new(table.clone());
        let log = AccessLog::start(config.access_log.as_deref(), metrics.clone())?;
        let clients = Clients::default();
        let changes = snapshots.subscribe();
        table.store(Arc::new(RouteTable::build(
            &snapshots.load(),
            &RouteTable::default(),
            &config.local_zone,
            &clients,
        )));
        let shared = Arc::new(Shared {
            table,
            config,
            log,
            metrics,
            budget: RetryBudget::default(),
            clients,
            tunnels: Default::default(),
        });
        Ok(Gateway {
            listener,
            tls,
            shared,
            snapshots,
            changes,
        })
    }

    /// The cleartext listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The TLS listener's address, if TLS is on.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, ..)| l.local_addr().ok())
    }

    /// The gateway's metrics, for `/metrics`.
    pub fn metrics(&self) -> GatewayMetrics {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits up
    /// to the drain timeout for open connections to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let shared = self.shared;
        let follower = tokio::spawn(follow(shared.clone(), self.snapshots, self.changes));
        let listener = TcpListener::from_std(self.listener)?;
        // Every connection holds a receiver: the signal asks them to
        // finish, the sender's `closed` says they all have.
        let (drain, draining) = watch::channel(());
        let mut accepts = tokio::task::JoinSet::new();
        accepts.spawn(accept_loop(
            listener,
            None,
            shared.clone(),
            draining.clone(),
        ));
        let mut reloader = None;
        if let Some((tls_listener, acceptor, store, seen)) = self.tls {
            if let Some(dir) = shared.config.tls_dir.clone() {
                reloader = Some(tls::spawn_reloader(dir, store, seen));
            }
            accepts.spawn(accept_loop(
                TcpListener::from_std(tls_listener)?,
                Some(acceptor),
                shared.clone(),
                draining.clone(),
            ));
        }
        shutdown.await;
        accepts.abort_all();
        while accepts.join_next().await.is_some() {}
        follower.abort();
        if let Some(r) = reloader {
            r.abort();
        }
        drop(draining);
        let mut tunnels =
            std::mem::take(&mut *shared.tunnels.lock().unwrap_or_else(|p| p.into_inner()));
        // Requests and tunnels share one drain deadline; what is still open
        // then is closed.
        let drained = async {
            let _ = drain.send(());
            drain.closed().await;
            while tunnels.join_next().await.is_some() {}
        };
        tokio::select! {
            () = drained => tracing::info!("Gateway drained"),
            () = tokio::time::sleep(shared.config.drain_timeout) => tracing::warn!("Drain timeout: closing open gateway connections"),
        }
        Ok(())
    }
}

/// Rebuilds the routing table whenever a new snapshot is published.
async fn follow(
    shared: Arc<Shared>,
    snapshots: SnapshotHandle,
    mut changes: tokio::sync::watch::Receiver<glass_model::Revision>,
) {
    while changes.changed().await.is_ok() {
        let snapshot = snapshots.load();
        let previous = shared.table.load();
        if previous.revision == snapshot.revision && snapshot.revision != 0 {
            continue;
        }
        let table = RouteTable::build(
            &snapshot,
            &previous,
            &shared.config.local_zone,
            &shared.clients,
        );
        shared.table.store(Arc::new(table));
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    draining: watch::Receiver<()>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!(error = %err, "Accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&CLIENT_KEEPALIVE);
        let shared = shared.clone();
        let tls = tls.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            shared.metrics.connection_opened();
            serve(stream, peer, tls, shared.clone(), draining).await;
            shared.metrics.connection_closed();
        });
    }
}

/// TCP keep-alive on client connections: an idle connection whose peer
/// vanished (no FIN, no RST) is closed after about 90 s.
const CLIENT_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(std::time::Duration::from_secs(60))
    .with_interval(std::time::Duration::from_secs(10))
    .with_retries(3);

fn builder(config: &GatewayConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(config.max_headers)
        // Small heads and bodies: one copy into one buffer beats writev.
        .writev(false)
        .keep_alive(true);
    // HTTP/2 never reaches hyper: `h2_serve` takes it.
    builder.http1_only()
}

/// Serves one connection: HTTP/1.1 (cleartext, or TLS without `h2` in
/// ALPN) on the gateway's own server until a request needs hyper's;
/// HTTP/2 (an h2c preface, or `h2` in ALPN) on the gateway's own HTTP/2
/// server.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut draining: watch::Receiver<()>,
) {
    let conn = Arc::new(Conn::new(peer, tls.is_some()));
    let builder = builder(&shared.config);
    let result = match tls {
        None => match h1_serve::serve(stream, &shared, &conn, &mut draining).await {
            Ended::Closed => return,
            Ended::HandOver(io) if io.is_http2() => {
                h2_serve::serve(io, &shared, &conn, &mut draining).await;
                return;
            }
            Ended::HandOver(io) => serve_hyper(io, &builder, &shared, conn, draining).await,
        },
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.config.header_read_timeout, acceptor.accept(stream))
                    .await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                h2_serve::serve(stream, &shared, &conn, &mut draining).await;
                return;
            } else {
                // HTTP/1.1 over TLS: the own server first, as in cleartext.
                match h1_serve::serve(stream, &shared, &conn, &mut draining).await {
                    Ended::Closed => return,
                    Ended::HandOver(io) => serve_hyper(io, &builder, &shared, conn, draining).await,
                }
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "Connection ended with an error");
    }
}

/// Serves an HTTP/1.1 connection with hyper until it ends; when the
/// gateway drains, hyper finishes the request in flight and closes.
async fn serve_hyper<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Arc<Shared>,
    conn: Arc<Conn>,
    mut draining: watch::Receiver<()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shared = shared.clone();
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            proxy::handle(shared.clone(), conn.clone(), req.map(ClientBody::Hyper))
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = draining.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}
