//! The access log: one JSON line per request, written by a background
//! thread so the request path never waits on I/O. When the writer falls
//! behind, lines are dropped and counted, never queued without bound.

use std::io::Write;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri};

use crate::metrics::GatewayMetrics;

/// Lines buffered between the proxy and the writer thread.
const QUEUE: usize = 65_536;

/// One request's facts, handed to the writer thread as they are: the
/// request path only moves and clones cheap values; formatting happens
/// on the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub(crate) arrived: SystemTime,
    pub(crate) request_id: HeaderValue,
    /// The `traceparent` sent upstream.
    pub(crate) trace: HeaderValue,
    /// The client's address, as text (made once per connection).
    pub(crate) client: HeaderValue,
    pub(crate) method: Method,
    pub(crate) host: String,
    pub(crate) uri: Uri,
    pub(crate) protocol: &'static str,
    pub(crate) route: Option<Arc<str>>,
    /// Upstream address and instance id.
    pub(crate) upstream: Option<(http::uri::Authority, Arc<str>)>,
    pub(crate) status: u16,
    pub(crate) attempts: u32,
    pub(crate) bytes_sent: u64,
    /// Time to the response head.
    pub(crate) head: Duration,
    /// Time until the body ended.
    pub(crate) total: Duration,
    pub(crate) error: Option<String>,
}

impl AccessRecord {
    /// Appends the record as one JSON line. Formatted by hand (the
    /// writer thread's cost is the gateway's cost): no intermediate
    /// strings, no float formatting, the date made once per second.
    fn write_line(&self, out: &mut Vec<u8>, dates: &mut DateCache) -> std::io::Result<()> {
        out.extend_from_slice(b"{\"time\":\"");
        dates.write(out, self.arrived);
        out.write_all(b"\",\"request_id\":")?;
        json_str(out, self.request_id.as_bytes())?;
        out.write_all(b",\"trace_id\":")?;
        json_str(out, crate::headers::trace_id(&self.trace).as_bytes())?;
        out.extend_from_slice(b",\"client\":");
        json_str(out, self.client.as_bytes())?;
        out.extend_from_slice(b",\"method\":");
        json_str(out, self.method.as_str().as_bytes())?;
        out.write_all(b",\"host\":")?;
        json_str(out, self.host.as_bytes())?;
        out.write_all(b",\"path\":")?;
        json_str(out, self.uri.path().as_bytes())?;
        out.extend_from_slice(b",\"protocol\":\"");
        out.extend_from_slice(self.protocol.as_bytes());
        out.extend_from_slice(b"\",\"route\":");
        match &self.route {
            Some(r) => json_str(out, r.as_bytes())?,
            None => out.write_all(b"null")?,
        }
        match &self.upstream {
            Some((addr, instance)) => {
                out.extend_from_slice(b",\"upstream\":\"");
                out.extend_from_slice(addr.as_str().as_bytes());
                out.extend_from_slice(b"\",\"instance\":");
                json_str(out, instance.as_bytes())?;
            }
            None => out.write_all(b",\"upstream\":null,\"instance\":null")?,
        }
        out.extend_from_slice(b",\"status\":");
        push_u64(out, self.status.into());
        out.extend_from_slice(b",\"attempts\":");
        push_u64(out, self.attempts.into());
        out.extend_from_slice(b",\"bytes_sent\":");
        push_u64(out, self.bytes_sent);
        out.extend_from_slice(b",\"head_ms\":");
        push_ms(out, self.head);
        out.extend_from_slice(b",\"total_ms\":");
        push_ms(out, self.total);
        out.extend_from_slice(b",\"error\":");
        match &self.error {
            Some(e) => json_str(out, e.as_bytes())?,
            None => out.write_all(b"null")?,
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a duration in milliseconds with three decimals (`1.500`).
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    push_u64(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// The `YYYY-MM-DDTHH:MM:SS.` part of the last second written.
#[derive(Default)]
struct DateCache {
    secs: Option<u64>,
    text: Vec<u8>,
}

impl DateCache {
    /// Appends `2026-11-23T10:15:30.123Z` for `t`.
    fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        if self.secs != Some(d.as_secs()) {
            self.text.clear();
            write_rfc3339_seconds(&mut self.text, d.as_secs());
            self.secs = Some(d.as_secs());
        }
        out.extend_from_slice(&self.text);
        let ms = d.subsec_millis();
        out.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }
}

/// Writes `s` as a JSON string (RFC 8259 §7): quotes, backslashes and
/// control characters escaped; bytes that are not UTF-8 (header values
/// may hold them) become U+FFFD.
fn json_str(out: &mut impl Write, s: &[u8]) -> std::io::Result<()> {
    // The usual case: printable ASCII without quotes or backslashes.
    if s.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.write_all(b"\"")?;
        out.write_all(s)?;
        return out.write_all(b"\"");
    }
    out.write_all(b"\"")?;
    for chunk in s.utf8_chunks() {
        let text = chunk.valid().as_bytes();
        let mut from = 0;
        for (i, &b) in text.iter().enumerate() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                out.write_all(&text[from..i])?;
                match b {
                    b'"' => out.write_all(b"\\\"")?,
                    b'\\' => out.write_all(b"\\\\")?,
                    b'\n' => out.write_all(b"\\n")?,
                    b'\r' => out.write_all(b"\\r")?,
                    b'\t' => out.write_all(b"\\t")?,
                    _ => write!(out, "\\u{b:04x}")?,
                }
                from = i + 1;
            }
        }
        out.write_all(&text[from..])?;
        if !chunk.invalid().is_empty() {
            out.write_all("\u{fffd}".as_bytes())?;
        }
    }
    out.write_all(b"\"")
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
                let mut dates = DateCache::default();
                let mut line = Vec::with_capacity(1024);
                loop {
                    std::thread::sleep(DRAIN_EVERY);
                    let mut gone = false;
                    loop {
                        match rx.try_recv() {
                            Ok(r) => {
                                line.clear();
                                if r.write_line(&mut line, &mut dates).is_err()
                                    || out.write_all(&line).is_err()
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

/// Appends `2026-11-23T10:15:30.` for seconds since the epoch.
fn write_rfc3339_seconds(out: &mut Vec<u8>, secs: u64) {
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
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
    .expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn lines_are_json_with_every_field() {
        let record = AccessRecord {
            arrived: UNIX_EPOCH + Duration::from_millis(1_795_432_573_054),
            request_id: HeaderValue::from_static("req-1"),
            trace: HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            client: HeaderValue::from_static("::1"),
            method: Method::POST,
            host: "api.example".into(),
            uri: "/a\"b\\c?q=1"
                .parse()
                .unwrap_or_else(|_| "/x".parse().unwrap()),
            protocol: "HTTP/2",
            route: Some("users".into()),
            upstream: Some(("127.0.0.1:9000".parse().unwrap(), "i-1".into())),
            status: 502,
            attempts: 2,
            bytes_sent: 17,
            head: Duration::from_micros(1500),
            total: Duration::from_micros(2250),
            error: Some("bad \"thing\"\n\u{1}".into()),
        };
        let mut out = Vec::new();
        let mut dates = DateCache::default();
        record.write_line(&mut out, &mut dates).unwrap();
        // The cached date is reused within the second, not across seconds.
        let mut again = Vec::new();
        record.write_line(&mut again, &mut dates).unwrap();
        assert_eq!(out, again);
        let mut later = Vec::new();
        AccessRecord {
            arrived: record.arrived + Duration::from_millis(1_001),
            ..record.clone()
        }
        .write_line(&mut later, &mut dates)
        .unwrap();
        let later: serde_json::Value = serde_json::from_slice(&later).unwrap();
        assert_eq!(later["time"], "2026-11-23T11:16:14.055Z");
        assert!(out.ends_with(b"}\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-11-23T11:16:13.054Z");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["client"], "::1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], record.uri.path());
        assert_eq!(v["route"], "users");
        assert_eq!(v["upstream"], "127.0.0.1:9000");
        assert_eq!(v["instance"], "i-1");
        assert_eq!(v["status"], 502);
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["bytes_sent"], 17);
        assert_eq!(v["head_ms"], 1.5);
        assert_eq!(v["total_ms"], 2.25);
        let mut n = Vec::new();
        push_u64(&mut n, 0);
        n.push(b' ');
        push_u64(&mut n, u64::MAX);
        n.push(b' ');
        push_ms(&mut n, Duration::from_micros(12_000_007));
        assert_eq!(n, b"0 18446744073709551615 12000.007");
        assert_eq!(v["error"], "bad \"thing\"\n\u{1}");
        let mut out = Vec::new();
        json_str(&mut out, b"ok\xffend\\").unwrap();
        assert_eq!(
            serde_json::from_slice::<String>(&out).unwrap(),
            "ok\u{fffd}end\\"
        );
    }

    fn rfc3339(t: SystemTime) -> String {
        let mut out = Vec::new();
        DateCache::default().write(&mut out, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_432_573_054);
        assert_eq!(rfc3339(t), "2026-11-23T11:16:13.054Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
