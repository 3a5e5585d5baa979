//! `glass-bench`: load benchmarks for the Glass control API and embedded
//! store. Each subcommand starts its own `glass serve --dev` node on loopback
//! (fresh data directory), runs the load, prints a table and kills the node.
//!
//! - `registrations`: registrations/s with N concurrent keep-alive clients;
//! - `watch-fanout`: write → SSE event latency on N watchers;
//! - `memory`: node RSS with N registered instances, and query times;
//! - `dns-latency`: time from a registration to its first DNS answer.
//!
//! Results and their reading are in `docs/benchmarks.md`.

mod dns_latency;
mod fanout;
mod http;
mod node;
mod register;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::{Args, Parser, Subcommand};

use crate::http::Conn;
use crate::node::Node;
use crate::stats::{Summary, dur, ms, table};

#[derive(Debug, Parser)]
#[command(
    name = "glass-bench",
    about = "Benchmarks a Glass node (started by the bench itself)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// The glass binary to benchmark.
    #[arg(long, global = true, default_value = "target/release/glass")]
    glass: PathBuf,
    /// Directory under which the node's data directory is created (the
    /// store's fsyncs hit this file system). Default: the system temp dir.
    #[arg(long, global = true)]
    data_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Registrations per second with concurrent keep-alive clients.
    Registrations {
        /// Concurrent clients, each with its own HTTP/1.1 connection.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Registrations in all (distinct instances).
        #[arg(long, default_value_t = 200_000)]
        total: u64,
        /// Jobs the instances are spread over.
        #[arg(long, default_value_t = 100)]
        jobs: u64,
    },
    /// Latency from a write to its event on many SSE watchers.
    WatchFanout {
        /// SSE watchers, each on its own connection.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Writes (one instance registration each).
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// Milliseconds between writes.
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
    /// Time from a registration to its first appearance in a DNS answer.
    DnsLatency {
        /// Registrations, one after the other.
        #[arg(long, default_value_t = 1000)]
        registrations: usize,
    },
    /// Node memory with many registered instances, and query times.
    Memory {
        /// Instances to register.
        #[arg(long, default_value_t = 100_000)]
        instances: u64,
        /// Concurrent clients used to register them.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Jobs the instances are spread over.
        #[arg(long, default_value_t = 100)]
        jobs: u64,
        /// Seconds to wait after registering before reading RSS.
        #[arg(long, default_value_t = 3)]
        settle_secs: u64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = cli
        .common
        .data_root
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let node = Node::start(&cli.common.glass, &root).await?;
    println!(
        "glass node at http://{} (log: {})",
        node.api,
        node.log_path().display()
    );
    let result = match cli.command {
        Command::Registrations {
            clients,
            total,
            jobs,
        } => registrations(&node, clients, total, jobs).await,
        Command::WatchFanout {
            watchers,
            writes,
            interval_ms,
        } => {
            watch_fanout(
                &node,
                fanout::Plan {
                    watchers,
                    writes,
                    interval: Duration::from_millis(interval_ms),
                },
            )
            .await
        }
        Command::Memory {
            instances,
            clients,
            jobs,
            settle_secs,
        } => memory(&node, instances, clients, jobs, settle_secs).await,
        Command::DnsLatency { registrations } => dns_latency::run(&node, registrations).await,
    };
    node.stop().await?;
    result
}

fn latency_row(s: &Summary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}  (mean {}, n={})",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
        ms(s.mean as u64),
        s.count
    )
}

/// The node's current store revision.
async fn revision(node: &Node) -> Result<i64> {
    let (health, _) = Conn::open(node.api)
        .await?
        .get_json("/api/v1/health")
        .await?;
    Ok(health["revision"].as_i64().unwrap_or(-1))
}

async fn registrations(node: &Node, clients: usize, total: u64, jobs: u64) -> Result<()> {
    let before = node.memory()?;
    let load = register::Load {
        clients,
        total,
        product: "bench".into(),
        env: "reg".into(),
        jobs,
    };
    let out = register::run(node.api, &load).await?;
    let after = node.memory()?;
    table(
        &format!("registrations: {clients} clients, {total} distinct instances over {jobs} jobs"),
        &[
            ("acknowledged", out.ok.to_string()),
            ("errors", out.errors.to_string()),
            ("elapsed", format!("{:.2} s", out.elapsed.as_secs_f64())),
            ("registrations/s", format!("{:.0}", out.rate())),
            ("latency", latency_row(&out.latency)),
            ("store revision", revision(node).await?.to_string()),
            ("node memory before", before.to_string()),
            ("node memory after", after.to_string()),
            (
                "data dir size",
                format!("{:.1} MB", node.data_bytes() as f64 / 1e6),
            ),
        ],
    );
    if let Some(err) = out.first_error {
        println!("first error: {err}");
    }
    ensure!(out.errors == 0, "{} registrations failed", out.errors);
    Ok(())
}

async fn watch_fanout(node: &Node, plan: fanout::Plan) -> Result<()> {
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into());
    if nofile
        .parse::<usize>()
        .is_ok_and(|n| n < plan.watchers + 100)
    {
        println!(
            "warning: open-file limit {nofile} is below {} watchers; raise it with `ulimit -n`",
            plan.watchers
        );
    }
    let out = fanout::run(node.api, plan).await?;
    let mem = node.memory()?;
    table(
        &format!(
            "watch fan-out: {} SSE watchers, {} writes every {} ms (open-file limit {nofile})",
            plan.watchers,
            plan.writes,
            plan.interval.as_millis()
        ),
        &[
            ("open all watchers", dur(out.open_time)),
            ("write latency (send→201)", latency_row(&out.write_latency)),
            ("event latency from send", latency_row(&out.from_send)),
            ("event latency from 201", latency_row(&out.from_ack)),
            ("events before the 201", out.before_ack.to_string()),
            ("send → all watchers have it", latency_row(&out.all_have_it)),
            (
                "missed / duplicated",
                format!("{} / {}", out.missed, out.duplicated),
            ),
            (
                "out of order / wrong revision",
                format!("{} / {}", out.out_of_order, out.wrong_revision),
            ),
            ("node memory", mem.to_string()),
        ],
    );
    ensure!(
        out.missed == 0 && out.duplicated == 0 && out.out_of_order == 0 && out.wrong_revision == 0,
        "watchers did not see every write exactly once, in order"
    );
    Ok(())
}

async fn memory(
    node: &Node,
    instances: u64,
    clients: usize,
    jobs: u64,
    settle_secs: u64,
) -> Result<()> {
    let empty = node.memory()?;
    let load = register::Load {
        clients,
        total: instances,
        product: "bench".into(),
        env: "mem".into(),
        jobs,
    };
    let out = register::run(node.api, &load).await?;
    ensure!(
        out.errors == 0,
        "{} registrations failed: {:?}",
        out.errors,
        out.first_error
    );
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let loaded = node.memory()?;

    let mut conn = Conn::open(node.api).await?;
    let mut rows = vec![
        (
            "registered",
            format!(
                "{} in {:.2} s ({:.0}/s)",
                out.ok,
                out.elapsed.as_secs_f64(),
                out.rate()
            ),
        ),
        ("node memory, empty", empty.to_string()),
        ("node memory, loaded", loaded.to_string()),
        (
            "RSS per instance",
            format!(
                "{:.0} bytes",
                (loaded.rss_kib.saturating_sub(empty.rss_kib) * 1024) as f64 / instances as f64
            ),
        ),
        (
            "data dir size",
            format!("{:.1} MB", node.data_bytes() as f64 / 1e6),
        ),
    ];
    let queries = [
        (
            "GET /api/v1/instances?job=job-7",
            "/api/v1/instances?job=job-7".to_owned(),
            20,
        ),
        (
            "GET /api/v1/instances?job=job-7&product=bench&env=mem",
            "/api/v1/instances?product=bench&env=mem&job=job-7".to_owned(),
            20,
        ),
        ("GET /api/v1/services", "/api/v1/services".to_owned(), 20),
        (
            "GET /api/v1/instances (all)",
            "/api/v1/instances".to_owned(),
            3,
        ),
    ];
    for (name, path, runs) in queries {
        let mut times = Vec::with_capacity(runs);
        let mut shape = String::new();
        for _ in 0..runs {
            let start = Instant::now();
            let (value, bytes) = conn.get_json(&path).await?;
            times.push(start.elapsed().as_micros() as u64);
            shape = format!(
                "{} items, {:.1} KB",
                value.as_array().map_or(0, Vec::len),
                bytes as f64 / 1e3
            );
        }
        let s = Summary::of(&mut times);
        rows.push((
            name,
            format!(
                "median {}  min {}  max {}  ({shape}, {runs} runs)",
                ms(s.p50),
                ms(times[0]),
                ms(s.max)
            ),
        ));
    }
    rows.push(("node memory after queries", node.memory()?.to_string()));
    table(
        &format!("memory: {instances} instances over {jobs} jobs, registered by {clients} clients"),
        &rows,
    );
    Ok(())
}
