//! Starts the `glass` binary under test on loopback ports, finds its API
//! address through `addrs.json`, reads its memory from `/proc`, and kills it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// A running `glass serve --dev` process with its own data directory.
pub(crate) struct Node {
    child: Child,
    pid: u32,
    /// Control API address.
    pub(crate) api: SocketAddr,
    /// DNS address (UDP and TCP).
    pub(crate) dns: SocketAddr,
    /// Data directory (removed when the node is dropped).
    dir: tempfile::TempDir,
}

impl Node {
    /// Spawns `glass serve --dev` with a fresh data directory under `root`
    /// and waits (at most 30 s) until it has written `addrs.json`.
    pub(crate) async fn start(glass: &Path, root: &Path) -> Result<Node> {
        let dir = tempfile::Builder::new()
            .prefix("glass-bench-")
            .tempdir_in(root)
            .context("cannot create data directory")?;
        let log = std::fs::File::create(dir.path().join("glass.log"))
            .context("cannot create glass.log")?;
        let data = dir.path().join("data");
        let child = Command::new(glass)
            .args([
                "serve",
                "--dev",
                "--api-addr",
                "127.0.0.1:0",
                "--dns-addr",
                "127.0.0.1:0",
                "--gateway-addr",
                "127.0.0.1:0",
                "--access-log",
                "off",
                "--data-dir",
            ])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it: cargo build --release -p glass)",
                    glass.display()
                )
            })?;
        let pid = child.id().context("glass exited at once")?;
        let mut node = Node {
            child,
            pid,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            dns: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        (node.api, node.dns) = node.wait_for_addrs(&data.join("addrs.json")).await?;
        Ok(node)
    }

    async fn wait_for_addrs(&mut self, path: &Path) -> Result<(SocketAddr, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "glass exited with {status} before listening; log: {}",
                    self.log_path().display()
                );
            }
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(api) = value.get("api").and_then(|v| v.as_str())
                && let Some(dns) = value.get("dns").and_then(|v| v.as_str())
            {
                let api = api
                    .parse()
                    .with_context(|| format!("addrs.json: bad api address {api:?}"))?;
                let dns = dns
                    .parse()
                    .with_context(|| format!("addrs.json: bad dns address {dns:?}"))?;
                return Ok((api, dns));
            }
            if Instant::now() > deadline {
                bail!("glass did not write {} within 30 s", path.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where the node's stdout/stderr go.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("glass.log")
    }

    /// Resident and peak resident memory of the node, in KiB.
    pub(crate) fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("cannot read /proc/<pid>/status")?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no {name} in /proc/<pid>/status"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// Size of the data directory's files, in bytes (store file + WAL).
    pub(crate) fn data_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.path().join("data"))
    }

    /// Kills the node (SIGKILL) and waits for it.
    pub(crate) async fn stop(mut self) -> Result<()> {
        self.child.kill().await.context("cannot kill glass")?;
        Ok(())
    }
}

/// Memory figures of a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Resident set size now (VmRSS).
    pub(crate) rss_kib: u64,
    /// Peak resident set size (VmHWM).
    pub(crate) hwm_kib: u64,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MB RSS (peak {:.1} MB)",
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0
        )
    }
}
