//! Concurrent registration load: `clients` tasks, each on its own keep-alive
//! connection, register `total` distinct instances as fast as the node
//! acknowledges them (each acknowledgement means durable and visible).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use hyper::{Method, StatusCode};

use crate::http::{Conn, registration};
use crate::stats::Summary;

/// What to register: `total` instances of `product`/`env`, spread over
/// `jobs` jobs (`job-0` …), ids `i<n>`.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) clients: usize,
    pub(crate) total: u64,
    pub(crate) product: String,
    pub(crate) env: String,
    pub(crate) jobs: u64,
}

/// The outcome of a load run.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Summary,
}

impl Outcome {
    /// Acknowledged registrations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Stop a client after this many errors so a broken node ends the run.
const MAX_ERRORS_PER_CLIENT: u64 = 100;

/// Runs the load and waits for every client.
pub(crate) async fn run(api: SocketAddr, load: &Load) -> Result<Outcome> {
    let next = Arc::new(AtomicU64::new(0));
    // Open every connection first so connect time is not measured.
    let mut conns = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        conns.push(Conn::open(api).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(load.clients);
    for conn in conns {
        let next = next.clone();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            client(api, conn, &next, &load).await
        }));
    }
    let mut latencies = Vec::with_capacity(load.total as usize);
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for task in tasks {
        let part = task.await?;
        ok += part.ok;
        errors += part.errors;
        first_error = first_error.or(part.first_error);
        latencies.extend(part.latencies);
    }
    let elapsed = start.elapsed();
    Ok(Outcome {
        ok,
        errors,
        first_error,
        elapsed,
        latency: Summary::of(&mut latencies),
    })
}

struct Part {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u64>,
}

async fn client(api: SocketAddr, mut conn: Conn, next: &AtomicU64, load: &Load) -> Part {
    let mut part = Part {
        ok: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
    };
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= load.total || part.errors >= MAX_ERRORS_PER_CLIENT {
            return part;
        }
        let job = format!("job-{}", n % load.jobs);
        let body = registration(&load.product, &load.env, &job, &format!("i{n}"), n, None);
        let sent = Instant::now();
        let result = conn
            .call(Method::POST, "/api/v1/instances", Some(body))
            .await;
        let took = sent.elapsed().as_micros() as u64;
        let failure = match result {
            Ok((StatusCode::CREATED, _)) => None,
            Ok((status, body)) => Some(format!("{status}: {}", String::from_utf8_lossy(&body))),
            Err(err) => {
                let msg = format!("{err:#}");
                // The connection is unusable; open a new one.
                match Conn::open(api).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => part.errors = MAX_ERRORS_PER_CLIENT,
                }
                Some(msg)
            }
        };
        match failure {
            None => {
                part.ok += 1;
                part.latencies.push(took);
            }
            Some(msg) => {
                part.errors += 1;
                part.first_error.get_or_insert(msg);
            }
        }
    }
}
