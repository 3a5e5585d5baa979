//! Fuzzes the DNS query path: any bytes give no answer or a well-formed one.
#![no_main]

use std::sync::OnceLock;

use glass_dns::{DnsConfig, DnsIndex, Transport, handle_query};
use glass_model::Registration;
use glass_snapshot::SnapshotState;
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

/// A small catalog: two zones, IPv4 and IPv6, two ports.
fn index() -> &'static DnsIndex {
    static INDEX: OnceLock<DnsIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut state = SnapshotState::default();
        for (n, (zone, address)) in [("eu1", "10.0.0.1"), ("eu1", "2001:db8::1"), ("eu2", "10.0.0.3")].iter().enumerate() {
            let json = serde_json::json!({
                "id": format!("i{n}"), "product": "shop", "env": "prod", "job": "users-api",
                "zone": zone, "address": address, "ports": {"http": 8080, "grpc": 9090},
            });
            let registration: Registration = serde_json::from_value(json).expect("registration");
            state.put_instance(registration.validate("eu1", String::new, "fuzz").expect("valid"));
        }
        state.set_revision(1);
        let config = DnsConfig { local_zone: "eu1".into(), ..DnsConfig::default() };
        DnsIndex::build(&state.snapshot(), &config).expect("index")
    })
}

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(answer) = handle_query(index(), data, transport) {
            assert_eq!(answer[..2], data[..2], "the id is echoed");
            let message = Message::from_vec(&answer).expect("answers decode");
            assert_eq!(message.metadata.id, u16::from_be_bytes([data[0], data[1]]));
            if transport == Transport::Udp {
                assert!(answer.len() <= usize::from(glass_dns::MAX_UDP_PAYLOAD));
            }
        }
    }
});
