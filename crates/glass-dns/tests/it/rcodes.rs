//! Every response code and the protocol details around it, over UDP and TCP.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Catalog, Running, decode, query, tcp, udp, user_api};

fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    catalog.put(user_api("i1", "eu1", "10.1.2.3", 8080));
    catalog
}

/// Asks over UDP and TCP, checks both give the same answer, returns it.
async fn ask(server: &Running, bytes: &[u8]) -> Message {
    let over_udp = udp(server.addr, bytes).await.expect("a UDP answer");
    let over_tcp = tcp(server.addr, bytes).await;
    assert_eq!(over_udp, over_tcp, "UDP and TCP agree");
    decode(&over_udp)
}

fn negative_soa(message: &Message) -> (String, u32, u32) {
    assert!(message.answers.is_empty());
    assert_eq!(message.authorities.len(), 1, "SOA in the authority section");
    let soa = &message.authorities[0];
    let RData::SOA(data) = &soa.data else {
        panic!("not a SOA: {soa}")
    };
    (soa.name.to_string(), soa.ttl, data.minimum)
}

#[tokio::test]
async fn negative_answers_tell_nxdomain_from_nodata() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    let nx = ask(
        &server,
        &query("nope.users-api.prod.shop.eu1.glass.", RecordType::A, None),
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(negative_soa(&nx), ("glass.".into(), 7, 7));

    let names_without_type = [
        ("http.users-api.prod.shop.eu1.glass.", RecordType::TXT),
        ("http.users-api.prod.shop.eu1.glass.", RecordType::AAAA),
        ("i1.users-api.prod.shop.eu1.glass.", RecordType::SRV),
        ("prod.shop.eu1.glass.", RecordType::A),
        ("users-api.prod.shop.any.glass.", RecordType::SRV),
        ("_tcp.users-api.prod.shop.eu1.glass.", RecordType::SRV),
        ("eu1.glass.", RecordType::A),
        ("glass.", RecordType::A),
    ];
    for (name, rtype) in names_without_type {
        let nodata = ask(&server, &query(name, rtype, None)).await;
        assert_eq!(
            nodata.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert_eq!(negative_soa(&nodata).0, "glass.", "{name} {rtype}");
    }
    let other_zone = ask(
        &server,
        &query("http.users-api.prod.shop.eu2.glass.", RecordType::A, None),
    )
    .await;
    assert_eq!(other_zone.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn apex_answers_soa_and_ns() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    let soa = ask(&server, &query("GLASS.", RecordType::SOA, None)).await;
    assert_eq!(soa.answers.len(), 1);
    let RData::SOA(data) = &soa.answers[0].data else {
        panic!("SOA")
    };
    assert_eq!(
        (
            data.mname.to_string().as_str(),
            data.rname.to_string().as_str()
        ),
        ("ns.glass.", "hostmaster.glass.")
    );
    assert_eq!(data.serial, 1, "the serial is the snapshot revision");
    let ns = ask(&server, &query("glass.", RecordType::NS, None)).await;
    assert_eq!(ns.answers[0].data.to_string(), "ns.glass.");
    let ns_addr = ask(&server, &query("ns.glass.", RecordType::A, None)).await;
    assert_eq!(ns_addr.answers[0].data.to_string(), "127.0.0.1");
    let any = ask(&server, &query("glass.", RecordType::ANY, None)).await;
    assert_eq!(any.answers.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn refused_outside_the_domain_and_for_other_classes_and_transfers() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    for (name, rtype) in [
        ("example.com.", RecordType::A),
        (".", RecordType::NS),
        ("glass.example.", RecordType::A),
        ("xglass.", RecordType::A),
        ("glass.", RecordType::AXFR),
        ("glass.", RecordType::IXFR),
    ] {
        let refused = ask(&server, &query(name, rtype, None)).await;
        assert_eq!(
            refused.metadata.response_code,
            ResponseCode::Refused,
            "{name} {rtype}"
        );
        assert!(!refused.metadata.authoritative && !refused.metadata.recursion_available);
        assert!(refused.answers.is_empty() && refused.authorities.is_empty());
    }
    let mut chaos = query("version.bind.", RecordType::TXT, None);
    let class_at = chaos.len() - 2;
    chaos[class_at..].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        ask(&server, &chaos).await.metadata.response_code,
        ResponseCode::Refused
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_other_opcodes_notimp() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    let good = query("http.users-api.prod.shop.eu1.glass.", RecordType::A, None);
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut cut_question = good.clone();
    cut_question.truncate(good.len() - 3);
    let mut bad_label = good.clone();
    bad_label[12] = 0x41;
    let mut with_answer = good.clone();
    with_answer[7] = 1;
    for (what, bytes) in [
        ("two questions", two_questions),
        ("cut question", cut_question),
        ("label type 0x40", bad_label),
        ("answer in a query", with_answer),
        ("header only", good[..12].to_vec()),
    ] {
        let answer = decode(&udp(server.addr, &bytes).await.expect("an answer"));
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::FormErr,
            "{what}"
        );
        assert_eq!(
            answer.metadata.id,
            u16::from_be_bytes([good[0], good[1]]),
            "{what}"
        );
    }
    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let answer = decode(&udp(server.addr, &notify).await.expect("an answer"));
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    // Too short for an id, or a response: dropped without an answer.
    assert_eq!(udp(server.addr, &[0x12]).await, None);
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(udp(server.addr, &response).await, None);
    server.stop().await;
}

#[tokio::test]
async fn edns_is_echoed_sized_and_versioned() {
    let mut catalog = Catalog::new();
    catalog.put_many((0..40u16).map(|n| {
        user_api(
            &format!("n{n}"),
            "eu1",
            &format!("10.9.0.{}", n + 1),
            9000 + n,
        )
    }));
    let server = Running::start(&catalog.handle).await;
    let name = "http.users-api.prod.shop.eu1.glass.";

    let plain = decode(&tcp(server.addr, &query(name, RecordType::A, None)).await);
    assert!(plain.edns.is_none(), "no OPT without one in the query");
    // 40 A records (16 bytes each) do not fit 512 bytes, but fit 1232.
    let cut = decode(
        &udp(server.addr, &query(name, RecordType::A, None))
            .await
            .expect("answer"),
    );
    assert!(cut.metadata.truncation && cut.answers.is_empty());
    let whole = decode(
        &udp(server.addr, &query(name, RecordType::A, Some(1232)))
            .await
            .expect("answer"),
    );
    assert!(!whole.metadata.truncation && whole.answers.len() == 40);
    let srv_plain = decode(
        &udp(server.addr, &query(name, RecordType::SRV, None))
            .await
            .expect("answer"),
    );
    assert!(srv_plain.metadata.truncation, "40 SRV do not fit 512 bytes");
    let srv_edns = decode(
        &udp(server.addr, &query(name, RecordType::SRV, Some(4096)))
            .await
            .expect("answer"),
    );
    assert!(
        srv_edns.metadata.truncation,
        "nor {} bytes",
        glass_dns::MAX_UDP_PAYLOAD
    );
    let srv_tcp = decode(&tcp(server.addr, &query(name, RecordType::SRV, Some(4096))).await);
    assert_eq!(srv_tcp.answers.len(), 40);

    let mut catalog_small = Catalog::new();
    catalog_small.put_many((0..8u16).map(|n| {
        user_api(
            &format!("n{n}"),
            "eu1",
            &format!("10.9.0.{}", n + 1),
            9000 + n,
        )
    }));
    let small = Running::start(&catalog_small.handle).await;
    let at_512 = decode(
        &udp(small.addr, &query(name, RecordType::SRV, None))
            .await
            .expect("answer"),
    );
    let at_1232 = decode(
        &udp(small.addr, &query(name, RecordType::SRV, Some(1232)))
            .await
            .expect("answer"),
    );
    assert!(!at_512.metadata.truncation && !at_1232.metadata.truncation);
    assert_eq!((at_512.answers.len(), at_1232.answers.len()), (8, 8));
    assert!(
        at_512.additionals.len() < 8,
        "glue that does not fit is left out without TC"
    );
    assert_eq!(at_1232.additionals.len(), 8, "all the glue fits");
    let edns = at_1232.edns.as_ref().expect("OPT echoed");
    assert_eq!(edns.max_payload(), glass_dns::MAX_UDP_PAYLOAD);

    let mut v1 = hickory_proto::op::Message::from_vec(&query(name, RecordType::A, Some(1232)))
        .expect("decode");
    v1.edns.as_mut().expect("edns").set_version(1);
    let badvers = decode(
        &udp(server.addr, &v1.to_vec().expect("encode"))
            .await
            .expect("answer"),
    );
    // BADVERS shares code 16 with BADSIG; hickory names it the latter.
    assert_eq!(u16::from(badvers.metadata.response_code), 16);
    assert!(badvers.edns.is_some() && badvers.answers.is_empty());
    small.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_queries_by_type_and_rcode() {
    let catalog = catalog();
    let server = Running::start(&catalog.handle).await;
    udp(
        server.addr,
        &query("http.users-api.prod.shop.eu1.glass.", RecordType::SRV, None),
    )
    .await
    .expect("answer");
    udp(server.addr, &query("nope.glass.", RecordType::A, None))
        .await
        .expect("answer");
    udp(server.addr, &query("example.com.", RecordType::A, None))
        .await
        .expect("answer");
    // The server counts right after sending: give it a moment.
    for _ in 0..100 {
        if server.metrics.queries("A", "REFUSED") == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.metrics.queries("SRV", "NOERROR"), 1);
    assert_eq!(server.metrics.queries("A", "NXDOMAIN"), 1);
    assert_eq!(server.metrics.queries("A", "REFUSED"), 1);
    let mut text = String::new();
    server.metrics.encode_prometheus(&mut text);
    assert!(
        text.contains("glass_dns_query_duration_seconds_count 3"),
        "{text}"
    );
    server.stop().await;
}

#[test]
fn negative_answer_to_a_255_byte_name_points_at_the_apex() {
    let catalog = catalog();
    let index = glass_dns::DnsIndex::build(&catalog.handle.load(), &crate::support::config())
        .expect("index");
    // Four 60-byte labels and `glass.`: the apex sits past offset 255 of the message.
    let long = format!("{}glass.", format!("{}.", "a".repeat(60)).repeat(4));
    let answer = glass_dns::handle_query(
        &index,
        &query(&long, RecordType::A, None),
        glass_dns::Transport::Udp,
    )
    .expect("an answer");
    let message = decode(&answer);
    assert_eq!(message.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(negative_soa(&message).0, "glass.");
}
