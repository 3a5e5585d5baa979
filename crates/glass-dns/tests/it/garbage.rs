//! Bad input: random and mutated messages never crash or hang the server,
//! and every answer it gives is a well-formed DNS message.

use std::time::Duration;

use glass_dns::{DnsIndex, Transport, handle_query};
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::support::{Catalog, Running, config, decode, query, udp, user_api};

/// A small seeded PRNG (xorshift64*), so failures replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let names = [
        "http.users-api.prod.shop.eu1.glass.",
        "_http._tcp.users-api.prod.shop.any.glass.",
        "glass.",
        "x.",
    ];
    let types = [
        RecordType::SRV,
        RecordType::A,
        RecordType::AAAA,
        RecordType::SOA,
        RecordType::ANY,
    ];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, rtype) in types.iter().enumerate() {
            out.push(query(name, *rtype, ((i + j) % 2 == 0).then_some(1232)));
        }
    }
    out
}

/// Half pure noise, half valid queries with a few bytes flipped, cut or added.
fn garbage(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.next().is_multiple_of(2) {
        let len = rng.below(600);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut packet = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 => {
                let at = rng.below(packet.len());
                packet[at] = rng.next() as u8;
            }
            1 => packet.truncate(rng.below(packet.len() + 1)),
            2 => packet.push(rng.next() as u8),
            _ => {
                let at = rng.below(packet.len());
                packet[at] ^= 1 << rng.below(8);
            }
        }
        if packet.is_empty() {
            break;
        }
    }
    packet
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    catalog.put_many((0..30u16).map(|n| {
        user_api(
            &format!("n{n}"),
            ["eu1", "eu2"][usize::from(n % 2)],
            &format!("10.9.0.{}", n + 1),
            9000 + n,
        )
    }));
    catalog
}

#[test]
fn handler_answers_any_bytes_with_a_well_formed_message() {
    let catalog = catalog();
    let index = DnsIndex::build(&catalog.handle.load(), &config()).expect("index");
    let seeds = seeds();
    let mut rng = Rng(0x5EED_0001);
    let mut answered = 0;
    for _ in 0..50_000 {
        let packet = garbage(&mut rng, &seeds);
        for transport in [Transport::Udp, Transport::Tcp] {
            let Some(answer) = handle_query(&index, &packet, transport) else {
                continue;
            };
            let message = decode(&answer);
            assert_eq!(&answer[..2], &packet[..2], "the id is echoed");
            if transport == Transport::Udp {
                assert!(
                    answer.len() <= usize::from(glass_dns::MAX_UDP_PAYLOAD),
                    "{packet:?}"
                );
            }
            assert!(message.metadata.message_type == hickory_proto::op::MessageType::Response);
            answered += 1;
        }
    }
    assert!(
        answered > 10_000,
        "most garbage still gets an answer: {answered}"
    );
}

#[tokio::test]
async fn random_bytes_on_udp_and_tcp_leave_the_server_answering() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    let seeds = seeds();
    let mut rng = Rng(0x5EED_0002);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for n in 0..20_000 {
        let packet = garbage(&mut rng, &seeds);
        let _ = socket.send_to(&packet, server.addr).await;
        if n % 256 == 0 {
            // Let the server drain its socket; answers to us are simply dropped.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for _ in 0..200 {
        let Ok(mut stream) = TcpStream::connect(server.addr).await else {
            continue;
        };
        let len = rng.below(300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.next().is_multiple_of(2) {
            // A well-framed but mutated message.
            let body = garbage(&mut rng, &seeds);
            bytes = (body.len() as u16).to_be_bytes().to_vec();
            bytes.extend(body);
        }
        let _ = stream.write_all(&bytes).await;
        drop(stream);
    }
    let good = query(
        "http.users-api.prod.shop.eu1.glass.",
        RecordType::A,
        Some(1232),
    );
    let answer = decode(
        &udp(server.addr, &good)
            .await
            .expect("still answers over UDP"),
    );
    assert_eq!(answer.answers.len(), 15);
    let answer = decode(&crate::support::tcp(server.addr, &good).await);
    assert_eq!(answer.answers.len(), 15);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_tcp_peer_does_not_block_others() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(&[0, 40, 1, 2])
        .await
        .expect("half a message");
    let good = query("glass.", RecordType::SOA, None);
    let answer = decode(&crate::support::tcp(server.addr, &good).await);
    assert_eq!(answer.answers.len(), 1);
    server.stop().await;
}
