//! The TLS listener: ALPN h2 and http/1.1, certificates chosen by SNI.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::*;

struct Cert {
    der: CertificateDer<'static>,
}

fn write_cert(dir: &std::path::Path, name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), ck.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    Cert {
        der: ck.cert.der().clone(),
    }
}

fn connector(roots: &[&Cert], alpn: &[u8]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_with_alpn_and_sni() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a.test");
    let b = write_cert(dir.path(), "b.test");
    let backend = http_backend("tls-backend").await;
    let mut g = Glass::start_with(glass_gateway::GatewayConfig {
        tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        tls_dir: Some(dir.path().to_owned()),
        ..config()
    })
    .await;
    g.route(static_route("tls", &[backend.addr], json!({})))
        .publish()
        .await;
    let tls_addr = g.tls_addr.expect("TLS listener");

    // h2 with SNI a.test.
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let tls = connector(&[&a, &b], b"h2")
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .expect("TLS handshake for a.test");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(session.peer_certificates().unwrap()[0], a.der);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let got = send2(
        &mut send,
        get("https://a.test/secure").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["host"], "a.test");

    // http/1.1 with SNI b.test.
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let tls = connector(&[&b], b"http/1.1")
        .connect(ServerName::try_from("b.test").unwrap(), tcp)
        .await
        .expect("TLS handshake for b.test");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(session.peer_certificates().unwrap()[0], b.der);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let got = send1(
        &mut send,
        get("/plain")
            .header("host", "b.test")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-forwarded-proto"], "https");

    // A client trusting only a.test's certificate cannot be fooled into b.test's.
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let wrong = connector(&[&a], b"h2")
        .connect(ServerName::try_from("b.test").unwrap(), tcp)
        .await;
    assert!(wrong.is_err(), "b.test must present its own certificate");

    // A garbage handshake does not hurt the listener.
    let (_, closed) = raw(tls_addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", PATIENCE).await;
    assert!(closed);
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    connector(&[&a], b"h2")
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .expect("still serving");
    g.stop().await;
}

#[tokio::test]
async fn certificates_reload_when_the_directory_changes() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a.test");
    let g = Glass::start_with(glass_gateway::GatewayConfig {
        tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        tls_dir: Some(dir.path().to_owned()),
        ..config()
    })
    .await;
    let tls_addr = g.tls_addr.unwrap();
    let c = write_cert(dir.path(), "c.test");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let tcp = TcpStream::connect(tls_addr).await.unwrap();
        let got = connector(&[&c], b"h2")
            .connect(ServerName::try_from("c.test").unwrap(), tcp)
            .await;
        if let Ok(tls) = got {
            assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], c.der);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "c.test never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A broken pair keeps the previous certificates.
    std::fs::write(dir.path().join("d.test.crt"), "not a certificate").unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    connector(&[&a], b"h2")
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .expect("a.test still served");
    g.stop().await;
}

/// Large bodies both ways over HTTP/2 on TLS, the download read slowly:
/// flow control, the server's output buffering and TLS record flushing
/// together deliver every byte, in order.
#[tokio::test]
async fn large_bodies_over_tls_h2_arrive_whole() {
    use http_body_util::BodyExt;

    const DOWN: usize = 3_000_000;
    const UP: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a.test");
    let backend = crate::h2_server::bytes_backend().await;
    let mut g = Glass::start_with(glass_gateway::GatewayConfig {
        tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        tls_dir: Some(dir.path().to_owned()),
        ..config()
    })
    .await;
    g.route(static_route("big", &[backend.addr], json!({})))
        .publish()
        .await;
    let tcp = TcpStream::connect(g.tls_addr.unwrap()).await.unwrap();
    let tls = connector(&[&a], b"h2")
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    let req = get(&format!("https://a.test/bytes/{DOWN}"))
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), send.send_request(req))
        .await
        .expect("the head in time")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut down = resp.into_body();
    let mut got = Vec::with_capacity(DOWN);
    let mut frames = 0;
    let read = async {
        while let Some(frame) = down.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
            }
            frames += 1;
            if frames % 8 == 0 {
                // A slow reader: the gateway's output backs up meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("the whole body in time");
    assert_eq!(got.len(), DOWN);
    assert!(got == crate::h2_server::pattern(DOWN), "the bytes differ");

    let up = crate::h2_server::pattern(UP);
    let req = http::Request::post("https://a.test/echo")
        .body(body(up.clone()))
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    })
    .await
    .expect("the echo in time");
    assert!(
        resp[..] == up[..],
        "the echo differs ({} bytes)",
        resp.len()
    );
    g.stop().await;
}
