//! Real peers: `dig` as a client, and unbound forwarding the Glass domain
//! to Glass with the stub zone that `docs/dns.md` shows.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{Catalog, Running, user_api};

/// The unbound configuration `docs/dns.md` documents, with placeholders.
const UNBOUND_CONF: &str = include_str!("unbound.conf.in");

/// Runs `dig` with `args` against `addr`; returns its standard output.
async fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=2"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("dig runs (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
#[ignore = "needs dig"]
async fn dig_sees_the_catalog() {
    let mut catalog = Catalog::new();
    catalog.put(user_api("i1", "eu1", "10.1.2.3", 8080));
    catalog.put(user_api("i2", "eu1", "10.1.2.4", 8081));
    let server = Running::start(&catalog.handle).await;
    let name = "http.users-api.prod.shop.eu1.glass.";
    assert_eq!(
        sorted_lines(&dig(server.addr, &["+short", name, "SRV"]).await),
        [
            "0 1 8080 i1.users-api.prod.shop.eu1.glass.",
            "0 1 8081 i2.users-api.prod.shop.eu1.glass."
        ]
    );
    assert_eq!(
        sorted_lines(&dig(server.addr, &["+short", "+tcp", name, "A"]).await),
        ["10.1.2.3", "10.1.2.4"]
    );
    assert_eq!(
        sorted_lines(
            &dig(
                server.addr,
                &["+short", "_http._tcp.users-api.prod.shop.any.glass.", "SRV"]
            )
            .await
        )
        .len(),
        2
    );
    assert!(
        dig(server.addr, &["nope.glass.", "A"])
            .await
            .contains("status: NXDOMAIN")
    );
    assert!(
        dig(server.addr, &["prod.shop.eu1.glass.", "A"])
            .await
            .contains("status: NOERROR")
    );
    assert!(
        dig(server.addr, &["example.com.", "A"])
            .await
            .contains("status: REFUSED")
    );
    let full = dig(server.addr, &[name, "SRV"])
        .await
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        full.contains("flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 3"),
        "{full}"
    );
    assert!(
        full.contains("i1.users-api.prod.shop.eu1.glass. 5 IN A 10.1.2.3"),
        "glue: {full}"
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs dig"]
async fn dig_falls_back_to_tcp_on_truncation() {
    let mut catalog = Catalog::new();
    catalog.put_many((0..200u16).map(|n| {
        user_api(
            &format!("n{n}"),
            "eu1",
            &format!("10.9.{}.{}", n / 250, n % 250 + 1),
            9000 + n,
        )
    }));
    let server = Running::start(&catalog.handle).await;
    let name = "http.users-api.prod.shop.eu1.glass.";
    let cut = dig(server.addr, &["+ignore", "+noedns", name, "SRV"]).await;
    assert!(cut.contains("flags: qr aa tc rd;"), "{cut}");
    // Without +ignore, dig retries over TCP by itself.
    assert_eq!(
        sorted_lines(&dig(server.addr, &["+short", name, "SRV"]).await).len(),
        200
    );
    assert_eq!(
        sorted_lines(&dig(server.addr, &["+short", name, "A"]).await).len(),
        200
    );
    server.stop().await;
}

/// A free loopback port for both UDP and TCP (as free as it can be known).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

#[tokio::test]
#[ignore = "needs unbound"]
async fn unbound_resolves_glass_names_through_a_stub_zone() {
    let mut catalog = Catalog::new();
    catalog.put(user_api("i1", "eu1", "10.1.2.3", 8080));
    let server = Running::start(&catalog.handle).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = UNBOUND_CONF
        .replace("{{DIR}}", &dir.path().display().to_string())
        .replace("{{UNBOUND_PORT}}", &port.to_string())
        .replace(
            "{{GLASS_ADDR}}",
            &format!("{}@{}", server.addr.ip(), server.addr.port()),
        );
    let conf_path = dir.path().join("unbound.conf");
    std::fs::write(&conf_path, conf).expect("write unbound.conf");
    let check = Command::new("unbound-checkconf")
        .arg(&conf_path)
        .output()
        .await
        .expect("unbound-checkconf runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut unbound = Command::new("unbound")
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("unbound starts (apt-get install unbound)");
    let resolver: SocketAddr = ([127, 0, 0, 1], port).into();
    let host = "i1.users-api.prod.shop.eu1.glass.";
    let mut answer = String::new();
    for _ in 0..50 {
        answer = dig(resolver, &["+short", host, "A"]).await;
        if !answer.trim().is_empty() && !answer.starts_with(';') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer.trim(),
        "10.1.2.3",
        "unbound resolves the instance through Glass"
    );
    let srv = dig(
        resolver,
        &["+short", "_http._tcp.users-api.prod.shop.eu1.glass.", "SRV"],
    )
    .await;
    assert_eq!(srv.trim(), "0 1 8080 i1.users-api.prod.shop.eu1.glass.");
    assert!(
        dig(resolver, &["nope.users-api.prod.shop.eu1.glass.", "A"])
            .await
            .contains("status: NXDOMAIN")
    );
    let _ = unbound.kill().await;
    server.stop().await;
}
