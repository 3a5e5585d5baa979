//! The request path: route → prepare → balance → forward (with retries)
//! → respond. Failures leave through [`rescue`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use glass_model::{HashOn, LbPolicy, UpstreamProtocol};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessRecord};
use crate::balance::PickKey;
use crate::body::{ClientBody, OnEnd, ProxyBody, RequestBody, Upload, UploadFailure, UpstreamBody};
use crate::config::GatewayConfig;
use crate::endpoint::{Endpoint, InFlight};
use crate::error::{GatewayError, Kind, Side, rescue};
use crate::headers::Fields;
use crate::metrics::GatewayMetrics;
use crate::retry::{RetryBudget, backoff, idempotent};
use crate::table::{RouteEntry, RouteTable};
use crate::upstream::Clients;
use crate::websocket;
use crate::{h1, headers, upstream_head};

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) table: Arc<ArcSwap<RouteTable>>,
    pub(crate) config: GatewayConfig,
    pub(crate) log: AccessLog,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) budget: RetryBudget,
    pub(crate) clients: Clients,
    /// Open WebSocket tunnels: hyper's graceful shutdown no longer sees
    /// an upgraded connection, so the gateway drains these itself.
    pub(crate) tunnels: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// The client connection a request arrived on.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    /// The client's part of the forwarding headers.
    pub(crate) forwarding: headers::Forwarding,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> Self {
        Conn {
            peer,
            forwarding: headers::Forwarding::new(peer.ip(), tls),
        }
    }
}

/// Facts about one request kept for the access log.
pub(crate) struct Exchange {
    pub(crate) arrived: SystemTime,
    pub(crate) started: Instant,
    pub(crate) request_id: HeaderValue,
    /// The `traceparent` sent upstream.
    pub(crate) trace: HeaderValue,
    pub(crate) method: Method,
    pub(crate) host: String,
    /// The request target (a cheap clone: it shares the request's bytes).
    pub(crate) uri: Uri,
    pub(crate) protocol: &'static str,
    /// The client's address as text.
    pub(crate) client: HeaderValue,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<Endpoint>>,
    pub(crate) attempts: u32,
    /// When the exchange must be over (route `total`, `grpc-timeout`).
    pub(crate) deadline: Option<Instant>,
}

impl Exchange {
    /// The access log record; takes the owned text out (called once).
    /// The access log's facts about a request arriving now.
    pub(crate) fn start(
        method: Method,
        host: String,
        uri: Uri,
        protocol: &'static str,
        conn: &Conn,
        entry: Option<&Arc<RouteEntry>>,
    ) -> Exchange {
        Exchange {
            arrived: SystemTime::now(),
            started: Instant::now(),
            request_id: HeaderValue::from_static(""),
            trace: HeaderValue::from_static(""),
            method,
            host,
            uri,
            protocol,
            client: conn.forwarding.xff.clone(),
            route: entry.map(|e| e.name.clone()),
            upstream: None,
            attempts: 0,
            deadline: entry
                .and_then(|e| e.route.timeouts.total)
                .map(|t| Instant::now() + t),
        }
    }

    fn record(
        &mut self,
        status: u16,
        head: Duration,
        bytes: u64,
        error: Option<String>,
    ) -> AccessRecord {
        AccessRecord {
            arrived: self.arrived,
            request_id: self.request_id.clone(),
            trace: self.trace.clone(),
            client: self.client.clone(),
            method: self.method.clone(),
            host: std::mem::take(&mut self.host),
            uri: self.uri.clone(),
            protocol: self.protocol,
            route: self.route.clone(),
            upstream: self
                .upstream
                .as_ref()
                .map(|e| (e.authority.clone(), e.instance.clone())),
            status,
            attempts: self.attempts,
            bytes_sent: bytes,
            head,
            total: self.started.elapsed(),
            error,
        }
    }
}

/// Writes the access log line when the response body ends.
struct LogOnEnd {
    log: AccessLog,
    exchange: Exchange,
    status: u16,
    head: Duration,
}

impl OnEnd for LogOnEnd {
    fn end(&mut self, bytes: u64, error: Option<&str>) {
        let record = self
            .exchange
            .record(self.status, self.head, bytes, error.map(str::to_owned));
        self.log.write(record);
    }
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The host a request is for: `:authority` or `Host`, lowercase, no port.
fn host_of(req: &Request<ClientBody>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let host = if raw.starts_with('[') {
        raw.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        raw.split(':').next().unwrap_or("").to_owned()
    };
    host.to_ascii_lowercase()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn is_websocket(req: &Request<ClientBody>) -> bool {
    let h = req.headers();
    req.method() == Method::GET
        && h.get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// `grpc-timeout: 100m` → 100 ms.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The balancing keys a request carries, taken out of its headers.
pub(crate) struct Keys {
    header: Option<Vec<u8>>,
    cookie: Option<String>,
    /// The gateway's sticky cookie, naming an instance.
    pub(crate) sticky: Option<String>,
}

impl Keys {
    pub(crate) fn of(entry: &RouteEntry, headers: &impl Fields) -> Keys {
        let (header, cookie_value) = match entry.balancer.policy() {
            LbPolicy::Hash(HashOn::Header(h)) => {
                (headers.first(h.as_str()).map(<[u8]>::to_vec), None)
            }
            LbPolicy::Hash(HashOn::Cookie(c)) => (None, cookie(headers, c).map(str::to_owned)),
            _ => (None, None),
        };
        Keys {
            header,
            cookie: cookie_value,
            sticky: cookie(headers, &entry.sticky_cookie).map(str::to_owned),
        }
    }

    pub(crate) fn pick_key(&self, client_ip: std::net::IpAddr) -> PickKey<'_> {
        PickKey {
            header: self.header.as_deref(),
            cookie: self.cookie.as_deref(),
            client_ip,
            sticky: self.sticky.as_deref(),
        }
    }
}

fn cookie<'a>(headers: &'a impl Fields, name: &str) -> Option<&'a str> {
    headers
        .values("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a request with both `Transfer-Encoding` and `Content-Length` is refused.
pub(crate) const FRAMED_TWO_WAYS: &str =
    "Transfer-Encoding and Content-Length together are refused (request smuggling)";

/// Refuses requests the gateway will not forward (RFC 9112 §3.2, §6.3;
/// RFC 6455 §4.2.1): a body framed two ways or a `Content-Length` that is
/// not one number (smuggling shapes), a missing or repeated `Host`,
/// `CONNECT` (the gateway is no forward proxy), and WebSocket handshakes
/// that are incomplete or carry a body.
fn check_request(req: &Request<ClientBody>, max_body: u64) -> Result<(), GatewayError> {
    let h = req.headers();
    let bad = |why: &str| {
        Err(GatewayError::new(
            Kind::BadRequest(why.into()),
            Side::Downstream,
            false,
        ))
    };
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return bad(FRAMED_TWO_WAYS);
    }
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.next().is_some() {
            return bad("more than one Content-Length");
        }
        let n = first.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        match n {
            None => return bad("Content-Length is not a number"),
            Some(n) if n > max_body => {
                return Err(GatewayError::new(
                    Kind::TooLarge(max_body),
                    Side::Downstream,
                    false,
                ));
            }
            Some(_) => {}
        }
    }
    let mut hosts = h.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => {
            return bad("an HTTP/1.1 request needs a Host header");
        }
        (Some(_), Some(_)) => return bad("more than one Host header"),
        _ => {}
    }
    if req.method() == Method::CONNECT {
        return bad("CONNECT is not supported: the gateway is not a forward proxy");
    }
    if is_websocket(req) {
        let key_ok = h
            .get(header::SEC_WEBSOCKET_KEY)
            .is_some_and(|k| k.len() == 24 && k.as_bytes().ends_with(b"=="));
        if !key_ok {
            return bad("a WebSocket upgrade needs a Sec-WebSocket-Key of 16 base64-encoded bytes");
        }
        if h.get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return bad("a WebSocket upgrade needs Sec-WebSocket-Version: 13");
        }
        let has_body = h.contains_key(header::TRANSFER_ENCODING)
            || h.get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if has_body {
            return bad("a WebSocket upgrade cannot carry a body");
        }
    }
    Ok(())
}

/// Handles one request; never fails (errors become responses).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut exchange = Exchange::start(
        req.method().clone(),
        host_of(&req),
        req.uri().clone(),
        protocol_name(req.version()),
        &conn,
        None,
    );
    let grpc = is_grpc(req.headers());
    let table = shared.table.load_full();
    let checked = check_request(&req, shared.config.max_body_bytes);
    let entry = table
        .find(
            &exchange.host,
            req.uri().path(),
            req.method(),
            req.headers(),
        )
        .cloned();
    let outcome = match (&entry, checked) {
        (_, Err(refused)) => Err(refused),
        (None, Ok(())) => {
            shared.metrics.unrouted();
            Err(GatewayError::new(Kind::NoRoute, Side::Internal, false))
        }
        (Some(entry), Ok(())) => {
            exchange.route = Some(entry.name.clone());
            // Boxed: hyper moves the handler's future around (into each
            // HTTP/2 stream's task); the forwarding state is kilobytes.
            Box::pin(forward(&shared, &conn, entry, req, &mut exchange)).await
        }
    };
    let grpc = grpc
        || entry
            .as_ref()
            .is_some_and(|e| e.route.protocol == UpstreamProtocol::Grpc);
    let response = match outcome {
        Ok(resp) => resp,
        Err(err) => fail(&shared, entry.as_ref(), &mut exchange, &err, grpc),
    };
    Ok(response)
}

/// The response for a request that failed: counted, logged, explained.
pub(crate) fn fail(
    shared: &Shared,
    entry: Option<&Arc<RouteEntry>>,
    exchange: &mut Exchange,
    err: &GatewayError,
    grpc: bool,
) -> Response<ProxyBody> {
    let route = entry.map(|e| &*e.name);
    let resp = rescue(err, route, grpc);
    if let Some(e) = entry {
        e.metrics
            .observe(resp.status().as_u16(), exchange.started.elapsed());
    }
    if shared.log.enabled() {
        let record = exchange.record(
            resp.status().as_u16(),
            exchange.started.elapsed(),
            0,
            Some(err.detail(route)),
        );
        shared.log.write(record);
    }
    tracing::debug!(route, error = %err.detail(route), "Request failed");
    resp
}

/// Prepares the request and sends it upstream, retrying where safe.
async fn forward(
    shared: &Shared,
    conn: &Conn,
    entry: &Arc<RouteEntry>,
    mut req: Request<ClientBody>,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, GatewayError> {
    let config = &shared.config;
    let route = &entry.route;
    let websocket = is_websocket(&req);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // The body: streamed once, so only bodiless requests are retried.
    let has_body = !http_body::Body::is_end_stream(&body) && !websocket;
    let version = match route.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        _ => Version::HTTP_2,
    };
    // Bodiless HTTP/1.1 requests take the gateway's own connection pool,
    // their head encoded once, straight from the client's.
    let fast_path = version == Version::HTTP_11 && !has_body && !websocket;
    let keys = Keys::of(entry, &parts.headers);
    let mut encoded = Vec::new();
    if fast_path {
        let head = upstream_head::MapHead { parts: &parts };
        upstream_head::encode(&mut encoded, &head, entry, shared, conn, exchange);
    } else {
        // Headers: connection-level ones go, forwarding and tracing ones come.
        headers::strip_hop_by_hop(&mut parts.headers, websocket, true);
        exchange.request_id = headers::request_id(&mut parts.headers);
        exchange.trace = headers::trace_context(&mut parts.headers);
        let trusted = config.trusts(conn.peer.ip());
        // HTTP/2 names the host in `:authority`, HTTP/1.1 in `Host`.
        let host_header = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        headers::set_forwarded(
            &mut parts.headers,
            &conn.forwarding,
            trusted,
            host_header.as_ref(),
        );
        if let Some(host) = host_header.filter(|_| !parts.headers.contains_key(header::HOST)) {
            parts.headers.insert(header::HOST, host);
        }
        entry.request_edits.apply(&mut parts.headers);
    }
    let strip = route
        .spec
        .strip_prefix
        .then_some(route.spec.matcher.path_prefix.as_deref())
        .flatten();
    // Without a rewrite the request's own path and query are reused (no copy).
    let path_and_query: http::uri::PathAndQuery = match (strip, parts.uri.path_and_query()) {
        (None, Some(pq)) => pq.clone(),
        _ => rewrite_path(
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            strip,
        )
        .parse()
        .map_err(|e| {
            GatewayError::new(
                Kind::BadRequest(format!("bad request target: {e}")),
                Side::Downstream,
                false,
            )
        })?,
    };

    let mut body = Some(body);
    let timeouts = route.timeouts;
    let total = match (timeouts.total, grpc_timeout(&parts.headers)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let deadline = total.map(|t| exchange.started + t);
    exchange.deadline = deadline;
    let retry_allowed = !has_body && idempotent(&parts.method) && !websocket;
    let key = keys.pick_key(conn.peer.ip());
    let has_body_or_upgrade = has_body || websocket;
    let send = |endpoint: Arc<Endpoint>, attempt_start: Instant| {
        let request_body = body.take();
        let path_and_query = &path_and_query;
        let parts = &parts;
        let encoded = &encoded[..];
        async move {
            if fast_path {
                return send_h1(
                    &endpoint,
                    &parts.method,
                    encoded,
                    timeouts,
                    attempt_start,
                    deadline,
                )
                .await;
            }
            // hyper's client path is the rare one here: boxed, so the
            // common path's future stays small (it is moved per attempt).
            Box::pin(async move {
                let uri = Uri::builder()
                    .scheme(http::uri::Scheme::HTTP)
                    .authority(endpoint.authority.clone())
                    .path_and_query(path_and_query.clone())
                    .build()
                    .map_err(|e| {
                        GatewayError::new(
                            Kind::BadRequest(format!("bad request target: {e}")),
                            Side::Downstream,
                            false,
                        )
                    })?;
                let (request_body, upload): (RequestBody, Option<Arc<Upload>>) = match request_body
                {
                    Some(b) if has_body => {
                        let (b, u) = RequestBody::stream(b, config.max_body_bytes, attempt_start);
                        (b, Some(u))
                    }
                    _ => (RequestBody::Empty, None),
                };
                let mut upstream_req = Request::new(request_body);
                *upstream_req.method_mut() = parts.method.clone();
                *upstream_req.uri_mut() = uri;
                *upstream_req.version_mut() = version;
                *upstream_req.headers_mut() = parts.headers.clone();
                if version == Version::HTTP_2 {
                    upstream_req.headers_mut().remove(header::HOST);
                }
                let watched = upload.clone();
                let call = async {
                    entry
                        .client
                        .request(upstream_req)
                        .await
                        .map(|r| r.map(UpstreamBody::Hyper))
                        .map_err(classify)
                };
                within(
                    call,
                    timeouts.header,
                    timeouts.idle,
                    upload,
                    attempt_start,
                    deadline,
                )
                .await
                .map_err(|err| blame(err, watched.as_deref(), config.max_body_bytes))
            })
            .await
        }
    };
    let (resp, in_flight) = attempts(
        shared,
        entry,
        &key,
        exchange,
        retry_allowed,
        !has_body_or_upgrade,
        send,
    )
    .await?;
    Ok(respond(
        shared,
        entry,
        resp,
        exchange,
        in_flight,
        client_upgrade,
        keys.sticky.as_deref(),
    ))
}

/// What the gateway's own servers get back for a bodiless request sent to
/// an HTTP/1.1 upstream on the gateway's own path.
pub(crate) enum RawAnswer {
    /// The upstream's head as received, its body (timed, logged when it
    /// ends), and what the gateway adds to the head.
    Upstream {
        head: h1::RawHead,
        body: ProxyBody,
        request_id: HeaderValue,
        cookie: Option<HeaderValue>,
    },
    /// A response the gateway made (an error).
    Made(Response<ProxyBody>),
}

/// Sends a bodiless request, its head already `encoded`, to `entry`'s
/// upstreams on the gateway's own HTTP/1.1 path, with the same balancing,
/// retries and accounting as every request; failures become responses.
pub(crate) async fn forward_raw(
    shared: &Shared,
    conn: &Conn,
    entry: &Arc<RouteEntry>,
    method: &Method,
    encoded: &[u8],
    keys: &Keys,
    exchange: &mut Exchange,
) -> RawAnswer {
    let timeouts = entry.route.timeouts;
    let deadline = exchange.deadline;
    let key = keys.pick_key(conn.peer.ip());
    let send = |endpoint: Arc<Endpoint>, start| async move {
        send_h1_raw(&endpoint, method, encoded, timeouts, start, deadline).await
    };
    let retry_allowed = idempotent(method);
    match attempts(shared, entry, &key, exchange, retry_allowed, true, send).await {
        Ok(((head, body), in_flight)) => {
            drop(in_flight);
            let request_id = exchange.request_id.clone();
            let cookie = sticky_cookie(entry, exchange, keys.sticky.as_deref());
            let body = response_body(shared, entry, exchange, head.status, UpstreamBody::H1(body));
            RawAnswer::Upstream {
                head,
                body,
                request_id,
                cookie,
            }
        }
        Err(err) => RawAnswer::Made(fail(shared, Some(entry), exchange, &err, false)),
    }
}

/// The fields of an upstream's response head passed on to the client:
/// not hop-by-hop ones or those its `Connection` names, not its
/// `x-request-id` (the gateway sets its own), not those the route's edits
/// remove or set. The edits' fields, the request id and the sticky
/// cookie follow them.
pub(crate) fn passed_on<'a>(
    head: &'a h1::RawHead,
    entry: &'a RouteEntry,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let named: smallvec::SmallVec<[&[u8]; 4]> = head
        .values("connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    head.fields().filter(move |(name, _)| {
        !(headers::is_hop_by_hop(name)
            || named.iter().any(|n| n.eq_ignore_ascii_case(name))
            || name.eq_ignore_ascii_case(headers::X_REQUEST_ID.as_str().as_bytes())
            || entry.response_edits.drops(name))
    })
}

/// One attempt on the gateway's own HTTP/1.1 path, answered as a
/// [`Response`] (for hyper's server): `request` is the encoded head,
/// `start` when the attempt began, `deadline` the exchange's total one.
pub(crate) async fn send_h1(
    endpoint: &Endpoint,
    method: &Method,
    request: &[u8],
    timeouts: glass_model::Timeouts,
    start: Instant,
    deadline: Option<Instant>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let (head, body) = send_h1_raw(endpoint, method, request, timeouts, start, deadline).await?;
    head.into_response(UpstreamBody::H1(body))
        .map_err(|why| GatewayError::new(Kind::Upstream(why), Side::Upstream, true))
}

/// [`send_h1`], answered with the response head as received.
pub(crate) async fn send_h1_raw(
    endpoint: &Endpoint,
    method: &Method,
    request: &[u8],
    timeouts: glass_model::Timeouts,
    start: Instant,
    deadline: Option<Instant>,
) -> Result<(h1::RawHead, h1::H1Body), GatewayError> {
    let call = async {
        h1::send(endpoint, method, request, timeouts.connect)
            .await
            .map_err(|e| match e {
                h1::H1Error::Connect(why) => {
                    GatewayError::new(Kind::Connect(why), Side::Upstream, true)
                }
                h1::H1Error::Upstream(why) => {
                    GatewayError::new(Kind::Upstream(why), Side::Upstream, true)
                }
            })
    };
    within(call, timeouts.header, timeouts.idle, None, start, deadline).await
}

/// An upstream's answer, as far as retrying is concerned.
pub(crate) trait Answer {
    fn status(&self) -> http::StatusCode;
}

impl<B> Answer for Response<B> {
    fn status(&self) -> http::StatusCode {
        Response::status(self)
    }
}

impl Answer for (h1::RawHead, h1::H1Body) {
    fn status(&self) -> http::StatusCode {
        self.0.status
    }
}

/// Picks endpoints and sends until one answers or the retries run out:
/// the circuit breaker, retry budget, backoff and outlier accounting of
/// every request, whichever server received it. `send` makes one attempt
/// (given when it starts);
/// `retry_allowed` says a failed or 5xx answer may be tried again,
/// `connect_retry` that a connection failure may (nothing was sent).
pub(crate) async fn attempts<F, Fut, R>(
    shared: &Shared,
    entry: &Arc<RouteEntry>,
    key: &PickKey<'_>,
    exchange: &mut Exchange,
    retry_allowed: bool,
    connect_retry: bool,
    mut send: F,
) -> Result<(R, InFlight), GatewayError>
where
    F: FnMut(Arc<Endpoint>, Instant) -> Fut,
    Fut: Future<Output = Result<R, GatewayError>>,
    R: Answer,
{
    let config = &shared.config;
    let route = &entry.route;
    shared.budget.deposit();
    // Endpoints tried so far; a handful at most, kept off the heap.
    let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    let mut last_error = GatewayError::new(Kind::NoEndpoint, Side::Internal, false);
    let mut attempt = 0u32;
    while attempt <= route.retries {
        let Some(index) = entry.balancer.pick(key, &tried) else {
            return Err(GatewayError::new(Kind::NoEndpoint, Side::Internal, false));
        };
        let endpoint = entry.balancer.endpoints()[index].clone();
        tried.push(index);
        let Some(in_flight) = InFlight::acquire(&endpoint.state, config.max_requests_per_endpoint)
        else {
            last_error = GatewayError::new(Kind::CircuitOpen, Side::Upstream, true);
            if tried.len() >= entry.balancer.endpoints().len() {
                break;
            }
            continue;
        };
        attempt += 1;
        exchange.attempts = attempt;
        exchange.upstream = Some(endpoint.clone());
        let start = if attempt > 1 {
            entry
                .metrics
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(backoff(attempt - 1)).await;
            Instant::now()
        } else {
            exchange.started
        };
        match send(endpoint.clone(), start).await {
            Ok(resp)
                if resp.status().is_server_error()
                    && retry_allowed
                    && attempt <= route.retries
                    && shared.budget.withdraw() =>
            {
                endpoint.state.failed();
                drop(in_flight);
                last_error = GatewayError::new(
                    Kind::Upstream(format!("HTTP {}", resp.status())),
                    Side::Upstream,
                    true,
                );
                continue;
            }
            Ok(resp) => {
                if resp.status().is_server_error() {
                    endpoint.state.failed();
                } else {
                    endpoint.state.succeeded();
                }
                return Ok((resp, in_flight));
            }
            Err(err) => {
                // Only the upstream's own failures count towards ejection:
                // a client's broken body or short deadline says nothing of it.
                if err.side == Side::Upstream && err.kind != Kind::Timeout("total") {
                    endpoint.state.failed();
                }
                let again = err.retryable
                    && (retry_allowed || (connect_retry && matches!(err.kind, Kind::Connect(_))));
                last_error = err;
                if !(again && attempt <= route.retries && shared.budget.withdraw()) {
                    break;
                }
            }
        }
    }
    Err(last_error)
}

/// Blames the client when the exchange failed because its body did.
fn blame(err: GatewayError, upload: Option<&Upload>, max_body: u64) -> GatewayError {
    match upload.and_then(Upload::failure) {
        Some(UploadFailure::TooLarge) => {
            GatewayError::new(Kind::TooLarge(max_body), Side::Downstream, false)
        }
        Some(UploadFailure::Malformed) => GatewayError::new(
            Kind::BadRequest("the request body is malformed or was cut short".into()),
            Side::Downstream,
            false,
        ),
        None => err,
    }
}

/// The path and query sent upstream, with `strip` removed from the front.
pub(crate) fn rewrite_path(pq: &str, strip: Option<&str>) -> String {
    match strip {
        Some(prefix) if pq.starts_with(prefix) => {
            let rest = &pq[prefix.len()..];
            if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            }
        }
        _ => pq.to_owned(),
    }
}

/// Runs an upstream call, begun at `epoch`, under stream-aware timeouts:
/// while the request body is still moving only the idle timeout applies;
/// once it is sent, the upstream has `header` to answer. `deadline`
/// (total, grpc-timeout) caps everything.
async fn within<T>(
    call: impl Future<Output = Result<T, GatewayError>>,
    header_timeout: Duration,
    idle: Duration,
    upload: Option<Arc<Upload>>,
    epoch: Instant,
    deadline: Option<Instant>,
) -> Result<T, GatewayError> {
    tokio::pin!(call);
    let mut wake = epoch + header_timeout;
    loop {
        let until = deadline.map_or(wake, |d| d.min(wake));
        tokio::select! {
            result = &mut call => return result,
            () = tokio::time::sleep_until(until) => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(GatewayError::new(Kind::Timeout("total"), Side::Upstream, false));
                }
                let next = match &upload {
                    Some(u) => {
                        let (sending, last) = u.progress(epoch);
                        if sending { last + idle } else { last + header_timeout }
                    }
                    None => wake,
                };
                if now >= next {
                    let which = if upload.as_ref().is_some_and(|u| u.progress(epoch).0) { "idle" } else { "header" };
                    return Err(GatewayError::new(Kind::Timeout(which), Side::Upstream, false));
                }
                wake = next;
            }
        }
    }
}

/// Classifies a client error: connect failures are safe to retry anywhere.
fn classify(err: hyper_util::client::legacy::Error) -> GatewayError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if err.is_connect() {
        GatewayError::new(Kind::Connect(text), Side::Upstream, true)
    } else {
        GatewayError::new(Kind::Upstream(text), Side::Upstream, true)
    }
}

/// Builds the client's response from the upstream's.
pub(crate) fn respond(
    shared: &Shared,
    entry: &Arc<RouteEntry>,
    mut resp: Response<UpstreamBody>,
    exchange: &mut Exchange,
    in_flight: InFlight,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    sticky: Option<&str>,
) -> Response<ProxyBody> {
    let status = resp.status();
    let route = &entry.route;
    let switching = status == http::StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        websocket::spawn_tunnel(
            &shared.tunnels,
            client_upgrade,
            upstream_upgrade,
            route.timeouts.idle,
            in_flight,
        );
    } else {
        drop(in_flight);
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, switching, false);
    entry.response_edits.apply(&mut parts.headers);
    // Unique per response: HPACK must not put it in its table, where it
    // would only push out fields that repeat.
    let mut request_id = exchange.request_id.clone();
    request_id.set_sensitive(true);
    parts
        .headers
        .insert(headers::X_REQUEST_ID.clone(), request_id);
    if let Some(v) = sticky_cookie(entry, exchange, sticky) {
        parts.headers.append(header::SET_COOKIE, v);
    }
    Response::from_parts(parts, response_body(shared, entry, exchange, status, body))
}

/// The gateway's sticky cookie for the instance that answered, unless the
/// client already names it.
pub(crate) fn sticky_cookie(
    entry: &RouteEntry,
    exchange: &Exchange,
    sticky: Option<&str>,
) -> Option<HeaderValue> {
    let (LbPolicy::Hash(HashOn::StickyCookie), Some(endpoint)) =
        (entry.balancer.policy(), &exchange.upstream)
    else {
        return None;
    };
    if sticky == Some(&*endpoint.instance) {
        return None;
    }
    HeaderValue::from_str(&format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax",
        entry.sticky_cookie, endpoint.instance
    ))
    .ok()
}

/// The response head is in: counts it, and wraps the upstream's body so
/// it streams under the idle timeout and the deadline and writes the
/// access log line when it ends.
pub(crate) fn response_body(
    shared: &Shared,
    entry: &RouteEntry,
    exchange: &mut Exchange,
    status: http::StatusCode,
    body: UpstreamBody,
) -> ProxyBody {
    let head = exchange.started.elapsed();
    entry.metrics.observe(status.as_u16(), head);
    let deadline = exchange.deadline;
    let on_end: Option<Box<dyn OnEnd>> = shared.log.enabled().then(|| {
        let exchange = std::mem::replace(exchange, placeholder(exchange));
        Box::new(LogOnEnd {
            log: shared.log.clone(),
            exchange,
            status: status.as_u16(),
            head,
        }) as Box<dyn OnEnd>
    });
    ProxyBody::upstream(body, entry.route.timeouts.idle, deadline, on_end)
}

fn placeholder(e: &Exchange) -> Exchange {
    Exchange {
        arrived: e.arrived,
        started: e.started,
        request_id: HeaderValue::from_static(""),
        trace: HeaderValue::from_static(""),
        method: Method::GET,
        host: String::new(),
        uri: Uri::default(),
        protocol: e.protocol,
        client: e.client.clone(),
        route: None,
        upstream: None,
        attempts: 0,
        deadline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rewritten() {
        assert_eq!(rewrite_path("/v1/users/7?x=1", Some("/v1")), "/users/7?x=1");
        assert_eq!(rewrite_path("/v1/users/7?x=1", None), "/v1/users/7?x=1");
        assert_eq!(rewrite_path("/v1", Some("/v1")), "/");
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(2)));
        h.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }
}
