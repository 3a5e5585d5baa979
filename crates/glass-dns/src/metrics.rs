//! DNS metrics: plain atomic counters and one latency histogram, written in
//! the Prometheus text format for the node's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::wire::{Rcode, rtype};

/// The `qtype` label values; anything else counts as `OTHER`, a query
/// without a readable question as `NONE` (bounded cardinality).
const QTYPES: [&str; 8] = ["A", "AAAA", "SRV", "SOA", "NS", "ANY", "OTHER", "NONE"];

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025,
];

/// Counters of the DNS server. Share one `Arc<DnsMetrics>` between the
/// server and the `/metrics` handler.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    queries: [[AtomicU64; Rcode::ALL.len()]; QTYPES.len()],
    truncated: AtomicU64,
    dropped: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_ns: AtomicU64,
}

fn qtype_index(qtype: Option<u16>) -> usize {
    match qtype {
        Some(rtype::A) => 0,
        Some(rtype::AAAA) => 1,
        Some(rtype::SRV) => 2,
        Some(rtype::SOA) => 3,
        Some(rtype::NS) => 4,
        Some(rtype::ANY) => 5,
        Some(_) => 6,
        None => 7,
    }
}

impl DnsMetrics {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        DnsMetrics::default()
    }

    /// Counts one answered query and how long it took from receipt to send.
    pub(crate) fn answered(
        &self,
        qtype: Option<u16>,
        rcode: Rcode,
        truncated: bool,
        elapsed: Duration,
    ) {
        self.queries[qtype_index(qtype)][rcode.index()].fetch_add(1, Relaxed);
        if truncated {
            self.truncated.fetch_add(1, Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.duration_count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.duration_sum_ns.fetch_add(nanos, Relaxed);
    }

    /// Counts one message that got no answer (too short, or a response).
    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    /// Queries answered with `qtype` (`"SRV"`, ...) and `rcode` (`"NOERROR"`, ...) so far.
    pub fn queries(&self, qtype: &str, rcode: &str) -> u64 {
        let q = QTYPES.iter().position(|t| *t == qtype);
        let r = Rcode::ALL.iter().position(|r| r.as_str() == rcode);
        match (q, r) {
            (Some(q), Some(r)) => self.queries[q][r].load(Relaxed),
            _ => 0,
        }
    }

    /// Appends every DNS metric to `out` in the Prometheus text format.
    pub fn encode_prometheus(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = self.write(out);
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP glass_dns_queries_total DNS queries answered, by question type and response code."
        )?;
        writeln!(out, "# TYPE glass_dns_queries_total counter")?;
        for (q, qtype) in QTYPES.iter().enumerate() {
            for (r, rcode) in Rcode::ALL.iter().enumerate() {
                let n = self.queries[q][r].load(Relaxed);
                if n > 0 {
                    writeln!(
                        out,
                        "glass_dns_queries_total{{qtype=\"{qtype}\",rcode=\"{}\"}} {n}",
                        rcode.as_str()
                    )?;
                }
            }
        }
        writeln!(
            out,
            "# HELP glass_dns_truncated_total UDP answers sent with TC set because they did not fit."
        )?;
        writeln!(out, "# TYPE glass_dns_truncated_total counter")?;
        writeln!(
            out,
            "glass_dns_truncated_total {}",
            self.truncated.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glass_dns_dropped_total Messages dropped unanswered: too short for an id, or responses."
        )?;
        writeln!(out, "# TYPE glass_dns_dropped_total counter")?;
        writeln!(
            out,
            "glass_dns_dropped_total {}",
            self.dropped.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glass_dns_query_duration_seconds Time from receiving a query to sending its answer."
        )?;
        writeln!(out, "# TYPE glass_dns_query_duration_seconds histogram")?;
        let mut cumulative = 0;
        for (le, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            writeln!(
                out,
                "glass_dns_query_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            )?;
        }
        let count = self.duration_count.load(Relaxed);
        writeln!(
            out,
            "glass_dns_query_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        )?;
        let sum = self.duration_sum_ns.load(Relaxed) as f64 / 1e9;
        writeln!(out, "glass_dns_query_duration_seconds_sum {sum}")?;
        writeln!(out, "glass_dns_query_duration_seconds_count {count}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histogram() {
        let m = DnsMetrics::new();
        m.answered(
            Some(rtype::SRV),
            Rcode::NoError,
            false,
            Duration::from_micros(3),
        );
        m.answered(
            Some(rtype::SRV),
            Rcode::NoError,
            true,
            Duration::from_millis(1),
        );
        m.answered(None, Rcode::FormErr, false, Duration::from_secs(1));
        m.dropped();
        let mut out = String::new();
        m.encode_prometheus(&mut out);
        for line in [
            "glass_dns_queries_total{qtype=\"SRV\",rcode=\"NOERROR\"} 2",
            "glass_dns_queries_total{qtype=\"NONE\",rcode=\"FORMERR\"} 1",
            "glass_dns_truncated_total 1",
            "glass_dns_dropped_total 1",
            "glass_dns_query_duration_seconds_bucket{le=\"0.000005\"} 1",
            "glass_dns_query_duration_seconds_bucket{le=\"0.001\"} 2",
            "glass_dns_query_duration_seconds_bucket{le=\"+Inf\"} 3",
            "glass_dns_query_duration_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert_eq!(m.queries("SRV", "NOERROR"), 2);
    }
}
