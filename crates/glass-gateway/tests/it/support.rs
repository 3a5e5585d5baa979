//! Test support: a gateway on port 0 fed by hand-built snapshots, real
//! backends (HTTP echo, faulty TCP servers) and small clients.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use glass_gateway::{Gateway, GatewayConfig, GatewayMetrics};
use glass_model::{Health, HealthStatus, Registration, RouteSpec};
use glass_snapshot::{SnapshotHandle, SnapshotState};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Bound on anything a test waits for.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A gateway fed by a snapshot the test edits.
pub(crate) struct Glass {
    pub(crate) addr: SocketAddr,
    pub(crate) tls_addr: Option<SocketAddr>,
    pub(crate) metrics: GatewayMetrics,
    handle: SnapshotHandle,
    state: SnapshotState,
    revision: i64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The test config: loopback, port 0, no access log, short slowloris guard.
pub(crate) fn config() -> GatewayConfig {
    GatewayConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        access_log: None,
        header_read_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    }
}

impl Glass {
    /// A gateway with the test config and no routes.
    pub(crate) async fn start() -> Glass {
        Glass::start_with(config()).await
    }

    pub(crate) async fn start_with(config: GatewayConfig) -> Glass {
        let handle = SnapshotHandle::default();
        let gateway = Gateway::bind(config, handle.clone()).expect("gateway binds");
        let addr = gateway.local_addr().unwrap();
        let tls_addr = gateway.tls_local_addr();
        let metrics = gateway.metrics();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        Glass {
            addr,
            tls_addr,
            metrics,
            handle,
            state: SnapshotState::default(),
            revision: 0,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Adds (or replaces) a route from its JSON form; call [`Glass::publish`] after.
    pub(crate) fn route(&mut self, json: serde_json::Value) -> &mut Self {
        let spec: RouteSpec = serde_json::from_value(json).expect("route JSON");
        self.state.put_route(spec.validate().expect("valid route"));
        self
    }

    /// Registers instance `id` of `shop/prod/api` with port `name` at `addr`.
    pub(crate) fn instance(
        &mut self,
        id: &str,
        name: &str,
        addr: SocketAddr,
        weight: u32,
    ) -> &mut Self {
        let reg = Registration {
            id: Some(id.into()),
            product: "shop".into(),
            env: "prod".into(),
            job: "api".into(),
            zone: Some("local".into()),
            address: addr.ip().to_string(),
            ports: BTreeMap::from([(name.to_owned(), addr.port())]),
            meta: BTreeMap::from([("weight".to_owned(), weight.to_string())]),
            ..Registration::default()
        };
        let instance = reg.validate("local", || id.into(), "api").expect("valid");
        let key = instance.key();
        self.state.put_instance(instance);
        self.state.put_health(
            key,
            Health {
                status: HealthStatus::Passing,
                output: "ok".into(),
                since_ms: 1,
            },
        );
        self
    }

    /// Marks instance `id` critical.
    pub(crate) fn critical(&mut self, id: &str) -> &mut Self {
        let key = glass_model::InstanceKey {
            product: "shop".into(),
            env: "prod".into(),
            job: "api".into(),
            id: id.into(),
        };
        self.state.put_health(
            key,
            Health {
                status: HealthStatus::Critical,
                output: "down".into(),
                since_ms: 2,
            },
        );
        self
    }

    /// Publishes the edited snapshot and waits until the gateway's table
    /// has every route of it.
    pub(crate) async fn publish(&mut self) {
        self.revision += 1;
        self.state.set_revision(self.revision);
        let snapshot = self.state.snapshot();
        let names: Vec<String> = snapshot.routes().map(|r| r.spec.name.clone()).collect();
        self.handle.publish(snapshot);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.metrics_text();
            if names
                .iter()
                .all(|n| text.contains(&format!("glass_gateway_retries_total{{route=\"{n}\"}}")))
            {
                // The table is swapped right after the metrics see it; give
                // the follower a moment for instance-only changes too.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "routes never reached the table"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn metrics_text(&self) -> String {
        let mut s = String::new();
        self.metrics.encode(&mut s);
        s
    }

    /// The value of one metric line, e.g. `glass_gateway_upstream_ejections_total{route="r",upstream="127.0.0.1:1"}`.
    pub(crate) fn metric(&self, line: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    }

    /// Stops the gateway and waits for it to drain.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("gateway stops")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Glass {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A route to the `shop/prod/api` job's `http` port.
pub(crate) fn service_route(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut route = serde_json::json!({
        "name": name,
        "match": {},
        "target": {"product": "shop", "env": "prod", "job": "api", "port": "http"},
    });
    if let (Some(r), Some(e)) = (route.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    route
}

/// A route to fixed addresses.
pub(crate) fn static_route(
    name: &str,
    addrs: &[SocketAddr],
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut route = serde_json::json!({
        "name": name,
        "match": {},
        "target": {"addresses": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()},
    });
    if let (Some(r), Some(e)) = (route.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    route
}

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A running backend; dropping it kills its listener and every connection.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub(crate) fn from_parts(
        addr: SocketAddr,
        hits: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    ) -> Backend {
        Backend { addr, hits, task }
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }

    /// Kills the listener and every open connection.
    pub(crate) fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections on `l` until the task is aborted, serving each
/// with `serve` on its own task.
pub(crate) fn accept_each<F, Fut>(l: TcpListener, serve: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            conns.spawn(serve(s));
            while conns.try_join_next().is_some() {}
        }
    })
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// What the echo backend saw, as JSON: method, path, version, headers, body length.
async fn echo(name: Arc<str>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.as_str().to_owned(),
            serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    // Behaviours chosen by the path.
    let last = path.rsplit('/').next().unwrap_or("").to_owned();
    if path.contains("/status/") {
        let code: u16 = last.parse().unwrap_or(500);
        let mut r = Response::new(full(format!("status {code}")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        return Ok(r);
    }
    if path.contains("/drip/") {
        // The head now, then five chunks `last` ms apart.
        let gap = Duration::from_millis(last.parse().unwrap_or(100));
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        tokio::spawn(async move {
            for i in 0..5 {
                tokio::time::sleep(gap).await;
                if tx
                    .send(Ok(http_body::Frame::data(Bytes::from(format!(
                        "chunk{i};"
                    )))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut r = Response::new(BodyExt::boxed(body));
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        return Ok(r);
    }
    if path.contains("/sleep/") {
        let ms: u64 = last.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut r = Response::new(full(format!("body error: {e}")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    let out = serde_json::json!({
        "backend": &*name,
        "method": method,
        "path": path,
        "version": version,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut r = Response::new(full(out.to_string()));
    let h = r.headers_mut();
    h.insert("x-backend", name.parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    // Hop-by-hop headers the gateway must not pass back.
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("x-drop-me", "1".parse().unwrap());
    h.insert("connection", "x-drop-me".parse().unwrap());
    Ok(r)
}

/// An HTTP/1.1 + h2c echo backend named `name`.
pub(crate) async fn http_backend(name: &str) -> Backend {
    let (l, addr) = listener().await;
    let name: Arc<str> = name.into();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = accept_each(l, move |s| {
        let name = name.clone();
        let counter = counter.clone();
        async move {
            let svc = service_fn(move |req| {
                counter.fetch_add(1, Relaxed);
                echo(name.clone(), req)
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1().timer(TokioTimer::new());
            b.http2().timer(TokioTimer::new());
            let _ = b.serve_connection(TokioIo::new(s), svc).await;
        }
    });
    Backend { addr, hits, task }
}

/// A backend that answers every request with `code`.
pub(crate) async fn status_backend(name: &str, code: u16) -> Backend {
    let (l, addr) = listener().await;
    let name: Arc<str> = name.into();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = accept_each(l, move |s| {
        let name = name.clone();
        let counter = counter.clone();
        async move {
            let svc = service_fn(move |_req: Request<Incoming>| {
                counter.fetch_add(1, Relaxed);
                let mut r = Response::new(full(format!("status {code}")));
                *r.status_mut() = StatusCode::from_u16(code).unwrap();
                r.headers_mut().insert("x-backend", name.parse().unwrap());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        }
    });
    Backend { addr, hits, task }
}

/// How a raw TCP backend misbehaves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// Accepts, reads, never answers.
    Silent,
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Reads the request, starts a response, and dies mid-body.
    DieMidBody,
}

/// A TCP backend that misbehaves as told.
pub(crate) async fn faulty_backend(fault: Fault) -> Backend {
    let (l, addr) = listener().await;
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = accept_each(l, move |mut s| {
        let counter = counter.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    continue;
                }
                counter.fetch_add(1, Relaxed);
                match fault {
                    Fault::Silent => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Fault::Reset => {
                        let _ = s.set_zero_linger();
                        return;
                    }
                    Fault::DieMidBody => {
                        let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nx-backend: dying\r\n\r\npartial",
                                )
                                .await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.set_zero_linger();
                        return;
                    }
                }
            }
        }
    });
    Backend { addr, hits, task }
}

/// A closed port: nothing listens there.
pub(crate) async fn closed_port() -> SocketAddr {
    let (l, a) = listener().await;
    drop(l);
    a
}

/// One HTTP/1.1 connection to `addr`.
pub(crate) async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    send
}

/// One h2c (prior knowledge) connection to `addr`.
pub(crate) async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Got {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Got {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend that answered (`x-backend`).
    pub(crate) fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub(crate) fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

pub(crate) fn body(b: impl Into<Bytes>) -> Body {
    full(b)
}

async fn read(resp: Response<Incoming>) -> Got {
    let (parts, b) = resp.into_parts();
    let body = tokio::time::timeout(PATIENCE, b.collect())
        .await
        .expect("body within the patience")
        .expect("body")
        .to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends on an HTTP/1.1 connection and reads the answer.
pub(crate) async fn send1(
    conn: &mut hyper::client::conn::http1::SendRequest<Body>,
    req: Request<Body>,
) -> Got {
    conn.ready().await.unwrap();
    let resp = tokio::time::timeout(PATIENCE, conn.send_request(req))
        .await
        .expect("answer within the patience")
        .expect("response");
    read(resp).await
}

/// Sends on an h2 connection and reads the answer.
pub(crate) async fn send2(
    conn: &mut hyper::client::conn::http2::SendRequest<Body>,
    req: Request<Body>,
) -> Got {
    conn.ready().await.unwrap();
    let resp = tokio::time::timeout(PATIENCE, conn.send_request(req))
        .await
        .expect("answer within the patience")
        .expect("response");
    read(resp).await
}

/// One GET over a fresh HTTP/1.1 connection with `Host: host`.
pub(crate) async fn get1(addr: SocketAddr, host: &str, path: &str) -> Got {
    let mut c = h1(addr).await;
    send1(
        &mut c,
        get(path).header("host", host).body(empty()).unwrap(),
    )
    .await
}

/// Writes raw bytes on a new connection and reads until the peer closes
/// or `wait` passes; returns what came back and whether the peer closed.
pub(crate) async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status code of the first response in raw bytes.
pub(crate) fn status_of(raw: &str) -> Option<u16> {
    raw.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}
