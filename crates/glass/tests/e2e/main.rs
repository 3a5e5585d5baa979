//! End-to-end tests of the `glass` binary, as a user runs it: real
//! processes, `addrs.json`, the CLI and the HTTP API on loopback.

mod cli;
mod dns;
mod durability;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const GLASS: &str = env!("CARGO_BIN_EXE_glass");

/// A `glass serve` process on ephemeral ports; killed on drop.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) data_dir: PathBuf,
    pub(crate) api: String,
    pub(crate) dns: String,
}

impl Node {
    /// Starts a node on `data_dir` with extra flags and waits for `addrs.json`.
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let _ = std::fs::remove_file(data_dir.join("addrs.json"));
        let child = Command::new(GLASS)
            .args([
                "serve",
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
            .arg(data_dir)
            .args(extra)
            .env("GLASS_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("the glass binary starts");
        let started = Instant::now();
        let addrs = loop {
            if let Ok(text) = std::fs::read_to_string(data_dir.join("addrs.json")) {
                break serde_json::from_str::<serde_json::Value>(&text).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "glass serve did not write addrs.json"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Node {
            child,
            data_dir: data_dir.to_owned(),
            api: format!("http://{}", addrs["api"].as_str().unwrap()),
            dns: addrs["dns"].as_str().unwrap().to_owned(),
        }
    }

    /// Runs a CLI command against this node (`--data-dir` finds address and token).
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(GLASS)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .unwrap()
    }

    /// Like [`Node::cli`], asserting success; returns stdout.
    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "glass {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends SIGKILL: no shutdown code runs.
    pub(crate) fn kill_9(mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: as in kill_9.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "glass did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines from a child's stdout on a thread, so tests can wait with a bound.
pub(crate) fn line_reader(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
