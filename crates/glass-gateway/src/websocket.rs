//! WebSocket (and any HTTP/1.1 upgrade) tunnels: after both sides agreed
//! to switch protocols, bytes are copied both ways until either side
//! closes or nothing moves in either direction for the idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::endpoint::InFlight;

/// Copies between the client and the upstream once both upgrades resolve.
/// The endpoint's in-flight slot is held for the tunnel's life.
pub(crate) fn spawn_tunnel(
    tunnels: &std::sync::Mutex<tokio::task::JoinSet<()>>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    in_flight: InFlight,
) {
    // Upgrades are rare next to requests: a short lock here is fine.
    let mut tunnels = tunnels.lock().unwrap_or_else(|p| p.into_inner());
    while tunnels.try_join_next().is_some() {}
    tunnels.spawn(async move {
        let _in_flight = in_flight;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "Upgrade failed");
                return;
            }
        };
        let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
        let (up_read, up_write) = tokio::io::split(TokioIo::new(upstream));
        let epoch = Instant::now();
        let activity = Arc::new(AtomicU64::new(0));
        let up = pump(client_read, up_write, idle, epoch, activity.clone());
        let down = pump(up_read, client_write, idle, epoch, activity);
        // When one direction ends, the tunnel ends: a close frame has been
        // relayed or a side went away.
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
    });
}

/// Copies one direction; stops at EOF, on error, or when neither
/// direction moved for `idle` (`activity` is shared by both).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    idle: Duration,
    epoch: Instant,
    activity: Arc<AtomicU64>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => {
                let last = epoch + Duration::from_millis(activity.load(Relaxed));
                if last.elapsed() >= idle {
                    tracing::debug!("Closing an idle tunnel");
                    break;
                }
                continue;
            }
        };
        activity.store(epoch.elapsed().as_millis() as u64, Relaxed);
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
