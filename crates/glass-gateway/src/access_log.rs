//! The access log: one JSON line per request, written by a background
//! thread so the request path never waits on I/O. When the writer falls
//! behind, lines are dropped and counted, never queued without bound.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use serde::Serialize;

use crate::metrics::GatewayMetrics;

/// Lines buffered between the proxy and the writer thread.
const QUEUE: usize = 65_536;

/// One access log line.
#[derive(Debug, Serialize)]
pub(crate) struct AccessRecord {
    /// RFC 3339 time the request arrived.
    pub(crate) time: String,
    pub(crate) request_id: String,
    pub(crate) trace_id: String,
    pub(crate) client: String,
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) route: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) status: u16,
    pub(crate) attempts: u32,
    pub(crate) bytes_sent: u64,
    /// Milliseconds to the response head.
    pub(crate) head_ms: f64,
    /// Milliseconds until the body ended.
    pub(crate) total_ms: f64,
    pub(crate) error: Option<String>,
}

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
                while let Ok(first) = rx.recv() {
                    let mut record = Some(first);
                    // Write everything queued, then flush once.
                    while let Some(r) = record.take() {
                        if serde_json::to_writer(&mut out, &r).is_err()
                            || out.write_all(b"\n").is_err()
                        {
                            return;
                        }
                        record = rx.try_recv().ok();
                    }
                    if out.flush().is_err() {
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
