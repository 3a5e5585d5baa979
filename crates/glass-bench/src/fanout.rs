//! Watch fan-out: many SSE watchers on `/api/v1/watch`, one writer at a
//! modest rate; measures write → event latency on every watcher and checks
//! that each watcher sees each write exactly once, in revision order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use tokio::sync::{Semaphore, mpsc};

use crate::http::{Conn, registration};
use crate::stats::Summary;

/// Parameters of a fan-out run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) watchers: usize,
    pub(crate) writes: usize,
    pub(crate) interval: Duration,
}

/// Results of a fan-out run.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Watcher × event latency from just before the write was sent.
    pub(crate) from_send: Summary,
    /// Watcher × event latency from the write's acknowledgement
    /// (events that arrived before the acknowledgement count as 0).
    pub(crate) from_ack: Summary,
    /// Events that arrived before the writer got its acknowledgement.
    pub(crate) before_ack: u64,
    /// Per write: send → the last watcher has the event.
    pub(crate) all_have_it: Summary,
    /// Write request latency (send → 201).
    pub(crate) write_latency: Summary,
    /// Time to open all watchers (connect + response headers).
    pub(crate) open_time: Duration,
    pub(crate) missed: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    pub(crate) wrong_revision: u64,
}

const PRODUCT: &str = "bench";
const ENV: &str = "fanout";
const JOB: &str = "writer";
const KEY_PREFIX: &str = "bench/fanout/writer/w";

/// One event a watcher received: write number, revision, µs since origin.
type Seen = (usize, i64, u64);

/// Runs the fan-out benchmark against the node at `api`.
pub(crate) async fn run(api: SocketAddr, plan: Plan) -> Result<Outcome> {
    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..plan.writes).map(|_| AtomicU64::new(0)).collect());
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(plan.watchers);
    // Bound concurrent connection set-up so the listen backlog never overflows.
    let setup = Arc::new(Semaphore::new(64));
    let deadline = plan.interval * plan.writes as u32 + Duration::from_secs(60);
    let mut watchers = Vec::with_capacity(plan.watchers);
    for _ in 0..plan.watchers {
        let (ready_tx, setup) = (ready_tx.clone(), setup.clone());
        watchers.push(tokio::spawn(async move {
            tokio::time::timeout(
                deadline,
                watcher(api, origin, plan.writes, ready_tx, &setup),
            )
            .await
            .unwrap_or_else(|_| Ok(Vec::new()))
        }));
    }
    drop(ready_tx);
    for i in 0..plan.watchers {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(err))) => return Err(err.context(format!("watcher {i} could not start"))),
            Ok(None) => bail!("watchers ended before all were open"),
            Err(_) => bail!("only {i} of {} watchers open after 60 s", plan.watchers),
        }
    }
    let open_time = origin.elapsed();

    // The writer: one connection, one write per interval.
    let mut conn = Conn::open(api).await?;
    let mut acked = vec![0u64; plan.writes];
    let revisions: Vec<AtomicI64> = (0..plan.writes).map(|_| AtomicI64::new(0)).collect();
    let mut write_latency = Vec::with_capacity(plan.writes);
    let mut tick = tokio::time::interval(plan.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for k in 0..plan.writes {
        tick.tick().await;
        let now = origin.elapsed().as_micros() as u64;
        sent[k].store(now, Ordering::Relaxed);
        let body = registration(
            PRODUCT,
            ENV,
            JOB,
            &format!("w{k}"),
            k as u64,
            Some(("sent_us", now.to_string())),
        );
        let (status, reply) = conn
            .call(Method::POST, "/api/v1/instances", Some(body))
            .await?;
        acked[k] = origin.elapsed().as_micros() as u64;
        ensure!(
            status == StatusCode::CREATED,
            "write {k}: {status}: {}",
            String::from_utf8_lossy(&reply)
        );
        let reply: serde_json::Value = serde_json::from_slice(&reply)?;
        revisions[k].store(
            reply["revision"].as_i64().context("no revision in reply")?,
            Ordering::Relaxed,
        );
        write_latency.push(acked[k] - now);
    }

    let mut from_send = Vec::with_capacity(plan.watchers * plan.writes);
    let mut from_ack = Vec::with_capacity(plan.watchers * plan.writes);
    let mut last_arrival = vec![0u64; plan.writes];
    let (mut before_ack, mut missed, mut duplicated, mut out_of_order, mut wrong_revision) =
        (0, 0, 0, 0, 0);
    for task in watchers {
        let seen = task.await??;
        let mut count = vec![0u32; plan.writes];
        let mut last_rev = 0;
        for (k, rev, at) in seen {
            count[k] += 1;
            if count[k] > 1 {
                continue;
            }
            if rev <= last_rev {
                out_of_order += 1;
            }
            last_rev = rev;
            if rev != revisions[k].load(Ordering::Relaxed) {
                wrong_revision += 1;
            }
            let s = sent[k].load(Ordering::Relaxed);
            from_send.push(at.saturating_sub(s));
            if at < acked[k] {
                before_ack += 1;
            }
            from_ack.push(at.saturating_sub(acked[k]));
            last_arrival[k] = last_arrival[k].max(at);
        }
        missed += count.iter().filter(|&&c| c == 0).count() as u64;
        duplicated += count
            .iter()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum::<u64>();
    }
    let mut all_have_it: Vec<u64> = last_arrival
        .iter()
        .enumerate()
        .map(|(k, &at)| at.saturating_sub(sent[k].load(Ordering::Relaxed)))
        .collect();
    Ok(Outcome {
        from_send: Summary::of(&mut from_send),
        from_ack: Summary::of(&mut from_ack),
        before_ack,
        all_have_it: Summary::of(&mut all_have_it),
        write_latency: Summary::of(&mut write_latency),
        open_time,
        missed,
        duplicated,
        out_of_order,
        wrong_revision,
    })
}

/// One watcher: opens `/api/v1/watch`, reports ready once the response
/// headers arrived (the node has subscribed it by then), then records every
/// bench event until it has seen the last write.
async fn watcher(
    api: SocketAddr,
    origin: Instant,
    writes: usize,
    ready: mpsc::Sender<Result<()>>,
    setup: &Semaphore,
) -> Result<Vec<Seen>> {
    let permit = setup.acquire().await?;
    let opened = async {
        let mut conn = Conn::open(api).await?;
        let resp = conn.send(Method::GET, "/api/v1/watch", None).await?;
        ensure!(resp.status() == StatusCode::OK, "watch: {}", resp.status());
        Ok((conn, resp))
    }
    .await;
    drop(permit);
    let (_conn, resp) = match opened {
        Ok(v) => v,
        Err(err) => {
            let _ = ready.send(Err(err)).await;
            return Ok(Vec::new());
        }
    };
    let _ = ready.send(Ok(())).await;
    drop(ready);

    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut seen = Vec::with_capacity(writes);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let at = origin.elapsed().as_micros() as u64;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            if let Some((k, rev)) = parse_event(&block)? {
                seen.push((k, rev, at));
                if k + 1 == writes {
                    return Ok(seen);
                }
            }
        }
    }
    Ok(seen)
}

/// Parses one SSE event block; returns (write number, revision) for events
/// about the bench writer's instances and `None` for anything else.
fn parse_event(block: &[u8]) -> Result<Option<(usize, i64)>> {
    let text = std::str::from_utf8(block).context("event is not UTF-8")?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    let event: serde_json::Value = serde_json::from_str(&data).context("event data is not JSON")?;
    if event["record"] != "instance" || event["kind"] != "put" {
        return Ok(None);
    }
    let Some(k) = event["key"]
        .as_str()
        .and_then(|key| key.strip_prefix(KEY_PREFIX))
        .and_then(|n| n.parse().ok())
    else {
        return Ok(None);
    };
    Ok(Some((
        k,
        event["revision"]
            .as_i64()
            .context("event without revision")?,
    )))
}
