//! The access log: one JSON line per request, written by a background
//! thread so the request path never waits on I/O. When the writer falls
//! behind, lines are dropped and counted, never queued without bound.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};

use serde::Serialize;

use crate::metrics::GatewayMetrics;

/// Lines buffered between the proxy and the writer thread.
const QUEUE: usize = 65_536;

/// One request's facts, handed to the writer thread as they are: the
/// request path only moves and clones cheap values; formatting happens
/// on the writer thread.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    pub(crate) arrived: SystemTime,
    pub(crate) request_id: HeaderValue,
    pub(crate) trace_id: String,
    pub(crate) client: IpAddr,
    pub(crate) method: Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) route: Option<Arc<str>>,
    /// Upstream address and instance id.
    pub(crate) upstream: Option<(SocketAddr, Arc<str>)>,
    pub(crate) status: u16,
    pub(crate) attempts: u32,
    pub(crate) bytes_sent: u64,
    /// Time to the response head.
    pub(crate) head: Duration,
    /// Time until the body ended.
    pub(crate) total: Duration,
    pub(crate) error: Option<String>,
}

/// One access log line as written.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    trace_id: &'a str,
    client: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'static str,
    route: Option<&'a str>,
    upstream: Option<String>,
    instance: Option<&'a str>,
    status: u16,
    attempts: u32,
    bytes_sent: u64,
    head_ms: f64,
    total_ms: f64,
    error: Option<&'a str>,
}

impl AccessRecord {
    fn line(&self) -> Line<'_> {
        Line {
            time: rfc3339(self.arrived),
            request_id: self.request_id.to_str().unwrap_or_default(),
            trace_id: &self.trace_id,
            client: self.client.to_string(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            protocol: self.protocol,
            route: self.route.as_deref(),
            upstream: self.upstream.as_ref().map(|(a, _)| a.to_string()),
            instance: self.upstream.as_ref().map(|(_, i)| &**i),
            status: self.status,
            attempts: self.attempts,
            bytes_sent: self.bytes_sent,
            head_ms: self.head.as_secs_f64() * 1e3,
            total_ms: self.total.as_secs_f64() * 1e3,
            error: self.error.as_deref(),
        }
    }
}

/// How often the writer thread drains the queue. Polling, not a blocking
/// receive, so the request path never pays for waking the writer.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Where access log lines go.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    tx: Option<SyncSender<AccessRecord>>,
    metrics: GatewayMetrics,
}

impl AccessLog {
    /// Starts the writer for `target` (`-` = stdout, else a file appended to); `None` = off.
    pub(crate) fn start(
        target: Option<&Path>,
        metrics: GatewayMetrics,
    ) -> std::io::Result<AccessLog> {
        let Some(target) = target else {
            return Ok(AccessLog { tx: None, metrics });
        };
        let out: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)?,
            )
        };
        let (tx, rx) = sync_channel::<AccessRecord>(QUEUE);
        std::thread::Builder::new()
            .name("glass-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
                loop {
                    std::thread::sleep(DRAIN_EVERY);
                    let mut gone = false;
                    loop {
                        match rx.try_recv() {
                            Ok(r) => {
                                if serde_json::to_writer(&mut out, &r.line()).is_err()
                                    || out.write_all(b"\n").is_err()
                                {
                                    return;
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                gone = true;
                                break;
                            }
                        }
                    }
                    if out.flush().is_err() || gone {
                        return;
                    }
                }
            })?;
        Ok(AccessLog {
            tx: Some(tx),
            metrics,
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub(crate) fn write(&self, record: AccessRecord) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(record)
        {
            self.metrics.log_dropped();
        }
    }
}

/// `2026-11-23T10:15:30.123Z` for a system time.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_rfc3339() {
        assert_eq!(super::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_432_573_054);
        assert_eq!(super::rfc3339(t), "2026-11-23T11:16:13.054Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(super::rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
