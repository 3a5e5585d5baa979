//! `dns-latency`: registers instances one at a time and measures how long
//! each takes to answer over DNS (UDP), from just before the `POST`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use hyper::Method;
use tokio::net::UdpSocket;

use crate::http::Conn;
use crate::node::Node;
use crate::stats::{Summary, ms};

/// A DNS query for the A record of `name` (labels, no trailing dot).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether `resp` answers query `id` with NOERROR and at least one record.
fn answered(resp: &[u8], id: u16) -> bool {
    resp.len() >= 12
        && resp[..2] == id.to_be_bytes()
        && resp[3] & 0x0f == 0
        && u16::from_be_bytes([resp[6], resp[7]]) > 0
}

pub(crate) async fn run(node: &Node, registrations: usize) -> Result<()> {
    let mut conn = Conn::open(node.api).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(node.dns).await?;
    let mut samples = Vec::with_capacity(registrations);
    let mut buf = [0u8; 1500];
    for n in 0..registrations {
        let body = format!(
            r#"{{"id":"i{n}","product":"bench","env":"prod","job":"dnslat","zone":"local","address":"10.9.{}.{}","ports":{{"http":8080}}}}"#,
            n / 250,
            n % 250 + 1
        );
        let name = format!("i{n}.dnslat.prod.bench.local.glass");
        let started = Instant::now();
        let (status, _) = conn
            .call(Method::POST, "/api/v1/instances", Some(body))
            .await?;
        ensure!(status.is_success(), "registration {n} failed: {status}");
        let id = n as u16;
        let packet = query(id, &name);
        loop {
            ensure!(
                started.elapsed() < Duration::from_secs(5),
                "i{n} not in DNS after 5 s"
            );
            socket.send(&packet).await?;
            match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
                Ok(Ok(len)) if answered(&buf[..len], id) => break,
                Ok(Ok(_)) => tokio::time::sleep(Duration::from_micros(500)).await,
                Ok(Err(e)) => bail!("DNS receive failed: {e}"),
                Err(_) => {}
            }
        }
        samples.push(started.elapsed().as_micros() as u64);
    }
    let s = Summary::of(&mut samples);
    println!(
        "registration -> first DNS answer ({} registrations, one at a time):",
        s.count
    );
    println!(
        "  p50 {}  p90 {}  p99 {}  max {}",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    );
    Ok(())
}
