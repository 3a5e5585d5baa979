//! Answers over real sockets with hickory's client: records match the catalog and follow its changes.

use std::time::Duration;

use glass_model::HealthStatus;
use hickory_proto::rr::RecordType;
use tokio::time::Instant;

use crate::support::{
    Catalog, Running, answers, ask, decode, instance, query, tcp_client, udp, udp_client, user_api,
};

/// i1 (eu1, weight 10), i2 (eu1, IPv6), i3 (eu2) pass; i4 (eu1) has a TTL
/// check that never reported, so it is critical.
fn shop() -> Catalog {
    let mut catalog = Catalog::new();
    catalog.put(instance(serde_json::json!({
        "id": "i1", "product": "shop", "env": "prod", "job": "users-api", "zone": "eu1",
        "address": "10.1.2.3", "ports": {"http": 8080, "grpc": 9090}, "meta": {"weight": "10"},
    })));
    catalog.put(user_api("i2", "eu1", "2001:db8::2", 8081));
    catalog.put(user_api("i3", "eu2", "10.2.0.3", 8082));
    catalog.put(instance(serde_json::json!({
        "id": "i4", "product": "shop", "env": "prod", "job": "users-api", "zone": "eu1",
        "address": "10.1.2.4", "ports": {"http": 8084}, "check": {"ttl": "10s"},
    })));
    catalog
}

#[tokio::test]
async fn srv_a_aaaa_match_the_catalog() {
    let catalog = shop();
    let server = Running::start(&catalog.handle).await;
    let mut client = udp_client(server.addr);

    let srv = ask(
        &mut client,
        "http.users-api.prod.shop.eu1.glass.",
        RecordType::SRV,
    )
    .await;
    assert!(srv.metadata.authoritative);
    assert_eq!(
        answers(&srv),
        [
            "http.users-api.prod.shop.eu1.glass. SRV 0 1 8081 i2.users-api.prod.shop.eu1.glass.",
            "http.users-api.prod.shop.eu1.glass. SRV 0 10 8080 i1.users-api.prod.shop.eu1.glass.",
        ]
    );
    assert!(srv.answers.iter().all(|r| r.ttl == 5));
    let mut glue: Vec<String> = srv
        .additionals
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    glue.sort();
    assert_eq!(
        glue,
        [
            "i1.users-api.prod.shop.eu1.glass. A 10.1.2.3",
            "i2.users-api.prod.shop.eu1.glass. AAAA 2001:db8::2"
        ]
    );

    let rfc2782 = ask(
        &mut client,
        "_http._tcp.users-api.prod.shop.eu1.glass.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(rfc2782.answers.len(), 2);
    let grpc = ask(
        &mut client,
        "_grpc._tcp.users-api.prod.shop.eu1.glass.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        answers(&grpc),
        [
            "_grpc._tcp.users-api.prod.shop.eu1.glass. SRV 0 1 9081 i2.users-api.prod.shop.eu1.glass.",
            "_grpc._tcp.users-api.prod.shop.eu1.glass. SRV 0 10 9090 i1.users-api.prod.shop.eu1.glass.",
        ]
    );

    let a = ask(
        &mut client,
        "http.users-api.prod.shop.eu1.glass.",
        RecordType::A,
    )
    .await;
    assert_eq!(
        answers(&a),
        ["http.users-api.prod.shop.eu1.glass. A 10.1.2.3"]
    );
    let aaaa = ask(
        &mut client,
        "http.users-api.prod.shop.eu1.glass.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(
        answers(&aaaa),
        ["http.users-api.prod.shop.eu1.glass. AAAA 2001:db8::2"]
    );

    // An instance's own name answers its address whatever its health.
    let host = ask(
        &mut client,
        "i4.users-api.prod.shop.eu1.glass.",
        RecordType::A,
    )
    .await;
    assert_eq!(
        answers(&host),
        ["i4.users-api.prod.shop.eu1.glass. A 10.1.2.4"]
    );
    // Names are case-insensitive and the question's spelling is kept.
    let upper = query("HTTP.Users-API.prod.shop.EU1.glass.", RecordType::A, None);
    let answer = udp(server.addr, &upper).await.expect("an answer");
    assert_eq!(&answer[12..upper.len()], &upper[12..]);
    assert_eq!(answers(&decode(&answer)).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn zone_any_puts_the_local_zone_first_and_rotates() {
    let catalog = shop();
    let server = Running::start(&catalog.handle).await;
    let mut client = udp_client(server.addr);
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let srv = ask(
            &mut client,
            "http.users-api.prod.shop.any.glass.",
            RecordType::SRV,
        )
        .await;
        let targets: Vec<String> = srv
            .answers
            .iter()
            .map(|r| {
                r.data
                    .to_string()
                    .rsplit(' ')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(targets.len(), 3, "{targets:?}");
        assert!(
            targets[..2].iter().all(|t| t.contains(".eu1.")),
            "local zone first: {targets:?}"
        );
        assert!(targets[2].contains(".eu2."), "{targets:?}");
        firsts.insert(targets[0].clone());
    }
    assert_eq!(firsts.len(), 2, "answers rotate within the local zone");
    let a = ask(
        &mut client,
        "http.users-api.prod.shop.any.glass.",
        RecordType::A,
    )
    .await;
    assert_eq!(a.answers.len(), 2);
    let host = ask(
        &mut client,
        "i3.users-api.prod.shop.any.glass.",
        RecordType::A,
    )
    .await;
    assert_eq!(
        answers(&host),
        ["i3.users-api.prod.shop.any.glass. A 10.2.0.3"]
    );
    server.stop().await;
}

/// Polls until `check` holds, for at most 50 ms.
async fn within_50ms(
    client: &mut hickory_net::client::Client<hickory_net::runtime::TokioRuntimeProvider>,
    want: usize,
) {
    let deadline = Instant::now() + Duration::from_millis(50);
    loop {
        let srv = ask(
            client,
            "http.users-api.prod.shop.eu1.glass.",
            RecordType::SRV,
        )
        .await;
        if srv.answers.len() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} answers after 50 ms, want {want}",
            srv.answers.len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn health_changes_and_removals_show_within_50ms() {
    let mut catalog = shop();
    let server = Running::start(&catalog.handle).await;
    let mut client = udp_client(server.addr);
    within_50ms(&mut client, 2).await;

    let i1 = user_api("i1", "eu1", "10.1.2.3", 8080).key();
    catalog.health(&i1, HealthStatus::Critical);
    within_50ms(&mut client, 1).await;
    catalog.health(&i1, HealthStatus::Warning);
    within_50ms(&mut client, 1).await;
    catalog.health(&i1, HealthStatus::Passing);
    within_50ms(&mut client, 2).await;

    let i2 = user_api("i2", "eu1", "2001:db8::2", 8081).key();
    catalog.remove(&i2);
    within_50ms(&mut client, 1).await;
    let gone = ask(
        &mut client,
        "i2.users-api.prod.shop.eu1.glass.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(
        gone.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    server.stop().await;
}

#[tokio::test]
async fn warning_instances_answer_when_allowed() {
    let mut catalog = shop();
    let i1 = user_api("i1", "eu1", "10.1.2.3", 8080).key();
    catalog.health(&i1, HealthStatus::Warning);
    let config = glass_dns::DnsConfig {
        allow_warning: true,
        ..crate::support::config()
    };
    let server = Running::start_with(&catalog.handle, config).await;
    let mut client = udp_client(server.addr);
    within_50ms(&mut client, 2).await;
    server.stop().await;
}

#[tokio::test]
async fn two_hundred_instances_truncate_over_udp_and_come_whole_over_tcp() {
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
    let mut udp = udp_client(server.addr);
    for rtype in [RecordType::SRV, RecordType::A] {
        let cut = ask(&mut udp, "http.users-api.prod.shop.eu1.glass.", rtype).await;
        assert!(cut.metadata.truncation, "{rtype} over UDP sets TC");
        assert!(cut.answers.is_empty());
    }
    let mut tcp = tcp_client(server.addr).await;
    let srv = ask(
        &mut tcp,
        "http.users-api.prod.shop.eu1.glass.",
        RecordType::SRV,
    )
    .await;
    assert!(!srv.metadata.truncation);
    assert_eq!(srv.answers.len(), 200);
    assert_eq!(
        srv.additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        200
    );
    let a = ask(
        &mut tcp,
        "http.users-api.prod.shop.eu1.glass.",
        RecordType::A,
    )
    .await;
    assert_eq!(a.answers.len(), 200);
    let mut text = String::new();
    server.metrics.encode_prometheus(&mut text);
    assert!(text.contains("glass_dns_truncated_total 2"), "{text}");
    server.stop().await;
}
