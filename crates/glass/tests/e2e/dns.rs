//! `glass serve` answers DNS for what is registered, and follows changes.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::Node;

fn ask(server: &str, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut query = Message::query();
    query.metadata.id = 4242;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[test]
fn dns_answers_registered_instances() {
    let dir = tempfile::tempdir().unwrap();
    // One worker thread: the single-threaded scheduler serves the API,
    // DNS and the catalog together.
    let node = Node::start(
        dir.path(),
        &["--dev", "--zone", "eu1", "--worker-threads", "1"],
    );
    node.cli_ok(&[
        "register",
        "--id",
        "i1",
        "--product",
        "shop",
        "--env",
        "prod",
        "--job",
        "users-api",
        "--address",
        "10.1.2.3",
        "--port",
        "http=8080",
    ]);

    // The DNS index follows the catalog within milliseconds.
    let started = Instant::now();
    let srv = loop {
        let srv = ask(
            &node.dns,
            "http.users-api.prod.shop.eu1.glass.",
            RecordType::SRV,
        );
        if !srv.answers.is_empty() {
            break srv;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the registration did not reach DNS"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("registration visible in DNS after {:?}", started.elapsed());
    assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
    let targets: Vec<(String, u16)> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.target.to_ascii(), s.port)),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        [("i1.users-api.prod.shop.eu1.glass.".to_owned(), 8080)]
    );

    let a = ask(
        &node.dns,
        "i1.users-api.prod.shop.eu1.glass.",
        RecordType::A,
    );
    let ips: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ips, ["10.1.2.3"]);

    node.cli_ok(&["deregister", "i1"]);
    let started = Instant::now();
    loop {
        let gone = ask(
            &node.dns,
            "http.users-api.prod.shop.eu1.glass.",
            RecordType::SRV,
        );
        if gone.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the deregistration did not reach DNS"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
