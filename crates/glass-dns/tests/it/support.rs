//! Test support: catalogs built with `SnapshotState`, a server on 127.0.0.1:0, and clients.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use glass_dns::{DnsConfig, DnsMetrics, DnsServer};
use glass_model::{Health, HealthStatus, Instance, InstanceKey, Registration};
use glass_snapshot::{SnapshotHandle, SnapshotState};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A registration in the brief's JSON shape, validated.
pub(crate) fn instance(json: serde_json::Value) -> Instance {
    let registration: Registration = serde_json::from_value(json).expect("registration JSON");
    registration
        .validate("local", || unreachable!("tests give ids"), "test")
        .expect("valid registration")
}

/// `users-api` in product `shop`, env `prod`, with one `http` port.
pub(crate) fn user_api(id: &str, zone: &str, address: &str, port: u16) -> Instance {
    instance(serde_json::json!({
        "id": id, "product": "shop", "env": "prod", "job": "users-api", "zone": zone,
        "address": address, "ports": {"http": port, "grpc": port + 1000},
    }))
}

/// A catalog that publishes a new snapshot after every change.
pub(crate) struct Catalog {
    state: SnapshotState,
    revision: i64,
    pub(crate) handle: SnapshotHandle,
}

impl Catalog {
    pub(crate) fn new() -> Self {
        Catalog {
            state: SnapshotState::default(),
            revision: 0,
            handle: SnapshotHandle::default(),
        }
    }

    pub(crate) fn put(&mut self, instance: Instance) -> InstanceKey {
        let key = instance.key();
        self.state.put_instance(instance);
        self.publish();
        key
    }

    pub(crate) fn put_many(&mut self, instances: impl IntoIterator<Item = Instance>) {
        for instance in instances {
            self.state.put_instance(instance);
        }
        self.publish();
    }

    pub(crate) fn health(&mut self, key: &InstanceKey, status: HealthStatus) {
        self.state.put_health(
            key.clone(),
            Health {
                status,
                output: String::new(),
                since_ms: 1,
            },
        );
        self.publish();
    }

    pub(crate) fn remove(&mut self, key: &InstanceKey) {
        self.state.remove_instance(key);
        self.publish();
    }

    fn publish(&mut self) {
        self.revision += 1;
        self.state.set_revision(self.revision);
        self.handle.publish(self.state.snapshot());
    }
}

/// The configuration the tests use: domain `glass.`, local zone `eu1`.
pub(crate) fn config() -> DnsConfig {
    DnsConfig {
        domain: "glass.".into(),
        ttl: 5,
        negative_ttl: 7,
        allow_warning: false,
        local_zone: "eu1".into(),
    }
}

/// A server running on 127.0.0.1:0 until dropped.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Arc<DnsMetrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub(crate) async fn start(handle: &SnapshotHandle) -> Running {
        Running::start_with(handle, config()).await
    }

    pub(crate) async fn start_with(handle: &SnapshotHandle, config: DnsConfig) -> Running {
        let metrics = Arc::new(DnsMetrics::new());
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server = DnsServer::bind(addr, config, handle.clone(), metrics.clone()).expect("bind");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
            ended
                .expect("server stops in time")
                .expect("task")
                .expect("run");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub(crate) fn name(text: &str) -> Name {
    Name::from_str(text).expect("name")
}

/// A query message: `payload` adds an EDNS0 OPT record with that UDP size.
pub(crate) fn query(text: &str, rtype: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(text), rtype));
    if let Some(size) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        message.set_edns(edns);
    }
    message.to_vec().expect("encode")
}

pub(crate) fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("the server's answer decodes")
}

/// Sends one datagram and waits up to 2 s for the answer.
pub(crate) async fn udp(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.send_to(bytes, addr).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let received = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await;
    let len = received.ok()?.expect("recv");
    buf.truncate(len);
    Some(buf)
}

/// Sends one length-prefixed message over a new TCP connection; returns the answer.
pub(crate) async fn tcp(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.expect("write");
    let exchange = async {
        let len = stream.read_u16().await.expect("length");
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.expect("body");
        buf
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .expect("TCP answer in time")
}

/// A hickory client over UDP.
pub(crate) fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(2)))
        .build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}

/// A hickory client over TCP.
pub(crate) async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(
        addr,
        None,
        Some(Duration::from_secs(2)),
        TokioRuntimeProvider::new(),
    );
    let (client, background) =
        Client::<TokioRuntimeProvider>::new(stream.await.expect("connect"), sender);
    tokio::spawn(background);
    client
}

/// Asks `client` and returns the whole answer message.
pub(crate) async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    text: &str,
    rtype: RecordType,
) -> Message {
    let response = client
        .query(name(text), DNSClass::IN, rtype)
        .await
        .expect("answer");
    response.into_message()
}

/// `(type, rdata as text)` of every answer record, sorted.
pub(crate) fn answers(message: &Message) -> Vec<String> {
    let mut out: Vec<String> = message
        .answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    out.sort();
    out
}
