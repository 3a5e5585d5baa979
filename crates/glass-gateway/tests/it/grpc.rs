//! gRPC through a `protocol = "grpc"` route: unary, server streaming,
//! client streaming, bidirectional streaming, statuses and trailers,
//! deadlines.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::Stream;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::*;

/// A Health service whose answers depend on the service name asked about.
struct Scripted;

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>>;

fn serving(s: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: s as i32 }
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        match req.get_ref().service.as_str() {
            "missing" => {
                let mut s = tonic::Status::not_found("no such service: missing");
                s.metadata_mut()
                    .insert("x-detail", "looked-everywhere".parse().unwrap());
                Err(s)
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(tonic::Response::new(serving(ServingStatus::Serving)))
            }
            _ => {
                let mut r = tonic::Response::new(serving(ServingStatus::Serving));
                r.metadata_mut()
                    .insert("x-answered-by", "scripted".parse().unwrap());
                Ok(r)
            }
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, tonic::Status> {
        let every = match req.get_ref().service.as_str() {
            // A long stream: one message every 5 s, for ever.
            "forever" => Some(Duration::from_secs(5)),
            _ => None,
        };
        let stream: WatchStream = match every {
            Some(every) => Box::pin(
                tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(every))
                    .map(|_| Ok(serving(ServingStatus::Serving))),
            ),
            None => Box::pin(tokio_stream::iter(vec![
                Ok(serving(ServingStatus::Serving)),
                Ok(serving(ServingStatus::NotServing)),
                Ok(serving(ServingStatus::Serving)),
                Err(tonic::Status::aborted("watch over")),
            ])),
        };
        Ok(tonic::Response::new(stream))
    }
}

/// A client-streaming service written against tonic's server API (the
/// services tonic ships have no client-streaming method): `Sum` adds up
/// the numbers sent as `HealthCheckRequest.service` and answers the total
/// as `HealthCheckResponse.status`; a message `fail` ends the call with
/// `INVALID_ARGUMENT`.
#[derive(Clone)]
struct Collect;

const SUM_PATH: &str = "/glass.test.Collect/Sum";

impl tonic::server::NamedService for Collect {
    const NAME: &'static str = "glass.test.Collect";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Collect {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != SUM_PATH {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.client_streaming(Sum, req).await)
        })
    }
}

struct Sum;

impl tonic::server::ClientStreamingService<HealthCheckRequest> for Sum {
    type Response = HealthCheckResponse;
    type Future = tonic::codegen::BoxFuture<tonic::Response<HealthCheckResponse>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<tonic::Streaming<HealthCheckRequest>>) -> Self::Future {
        Box::pin(async move {
            let mut calls = req.into_inner();
            let mut sum = 0i32;
            while let Some(m) = calls.message().await? {
                if m.service == "fail" {
                    return Err(tonic::Status::invalid_argument("asked to fail"));
                }
                sum += m
                    .service
                    .parse::<i32>()
                    .map_err(|_| tonic::Status::invalid_argument("not a number"))?;
            }
            Ok(tonic::Response::new(HealthCheckResponse { status: sum }))
        })
    }
}

/// A tonic backend with Health (scripted), reflection v1 (bidi) and
/// `Collect` (client streaming).
pub(crate) async fn grpc_backend() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(HealthServer::new(Scripted))
            .add_service(reflection)
            .add_service(Collect)
            .serve_with_incoming(TcpListenerStream::new(l))
            .await;
    });
    Backend::from_parts(addr, Arc::new(AtomicU64::new(0)), task)
}

/// An h2c backend that takes requests and never answers them.
async fn stalling_h2_backend() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = accept_each(l, move |s| {
        let counter = counter.clone();
        async move {
            let svc = hyper::service::service_fn(move |_req| {
                counter.fetch_add(1, Relaxed);
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(empty()))
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        }
    });
    Backend::from_parts(addr, hits, task)
}

pub(crate) async fn grpc_gateway(upstream: std::net::SocketAddr) -> Glass {
    let mut g = Glass::start().await;
    g.route(static_route(
        "grpc",
        &[upstream],
        json!({"protocol": "grpc"}),
    ))
    .publish()
    .await;
    g
}

pub(crate) async fn channel(g: &Glass) -> Channel {
    Channel::from_shared(format!("http://{}", g.addr))
        .unwrap()
        .connect_timeout(PATIENCE)
        .connect()
        .await
        .unwrap()
}

fn check(service: &str) -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    })
}

#[tokio::test]
async fn grpc_unary_statuses_and_metadata_pass_intact() {
    let b = grpc_backend().await;
    let g = grpc_gateway(b.addr).await;
    let mut client = HealthClient::new(channel(&g).await);

    let ok = client.check(check("")).await.expect("unary OK");
    assert_eq!(ok.get_ref().status, ServingStatus::Serving as i32);
    assert_eq!(ok.metadata().get("x-answered-by").unwrap(), "scripted");
    assert!(ok.metadata().get("x-request-id").is_some());

    let err = client.check(check("missing")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no such service: missing");
    assert_eq!(err.metadata().get("x-detail").unwrap(), "looked-everywhere");

    // Many calls multiplexed on one connection.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut c = client.clone();
        calls.spawn(async move { c.check(check("")).await.map(|_| ()) });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    g.stop().await;
}

#[tokio::test]
async fn grpc_server_streaming_keeps_trailers() {
    let b = grpc_backend().await;
    let g = grpc_gateway(b.addr).await;
    let mut client = HealthClient::new(channel(&g).await);
    let mut stream = client.watch(check("x")).await.unwrap().into_inner();
    let mut got = Vec::new();
    let end = loop {
        match tokio::time::timeout(PATIENCE, stream.next()).await.unwrap() {
            Some(Ok(m)) => got.push(m.status),
            Some(Err(status)) => break Some(status),
            None => break None,
        }
    };
    assert_eq!(
        got,
        vec![
            ServingStatus::Serving as i32,
            ServingStatus::NotServing as i32,
            ServingStatus::Serving as i32
        ]
    );
    let status = end.expect("the stream ends with the backend's status");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(status.message(), "watch over");
    g.stop().await;
}

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

/// One request and its answer on an open bidi reflection stream.
pub(crate) async fn bidi_round(
    tx: &tokio::sync::mpsc::Sender<ServerReflectionRequest>,
    rx: &mut tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>,
) {
    tx.send(list_services()).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, rx.next())
        .await
        .expect("an answer in time")
        .expect("stream open")
        .expect("answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            assert!(
                list.service
                    .iter()
                    .any(|s| s.name == "grpc.health.v1.Health"),
                "{list:?}"
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

pub(crate) async fn open_bidi(
    channel: Channel,
) -> (
    tokio::sync::mpsc::Sender<ServerReflectionRequest>,
    tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = ServerReflectionClient::new(channel);
    let resp = client
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .expect("bidi stream opens");
    (tx, resp.into_inner())
}

#[tokio::test]
async fn grpc_bidi_streaming() {
    let b = grpc_backend().await;
    let g = grpc_gateway(b.addr).await;
    let (tx, mut rx) = open_bidi(channel(&g).await).await;
    for _ in 0..5 {
        bidi_round(&tx, &mut rx).await;
    }
    drop(tx);
    // The client half-closes: the server ends the stream with OK.
    let end = tokio::time::timeout(PATIENCE, rx.next()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
    g.stop().await;
}

/// Sends `messages` on one client-streaming `Sum` call, a few at a time.
async fn sum(g: &Glass, messages: Vec<String>) -> Result<i32, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(g).await);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for (i, service) in messages.into_iter().enumerate() {
            if tx.send(HealthCheckRequest { service }).await.is_err() {
                return;
            }
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let resp: tonic::Response<HealthCheckResponse> = grpc
        .client_streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(SUM_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(resp.into_inner().status)
}

#[tokio::test]
async fn grpc_client_streaming() {
    let b = grpc_backend().await;
    let g = grpc_gateway(b.addr).await;
    // 100 messages, streamed in bursts: every one arrives, in one call.
    let numbers: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(sum(&g, numbers).await.unwrap(), 4950);
    // The backend's status ends the call, through the gateway.
    let status = sum(&g, vec!["1".into(), "fail".into(), "2".into()])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "asked to fail");
    g.stop().await;
}

#[tokio::test]
async fn grpc_timeout_is_honoured() {
    // A raw h2 client: tonic's own client would enforce the deadline
    // itself and hide whether the gateway does.
    let b = stalling_h2_backend().await;
    let g = grpc_gateway(b.addr).await;
    let mut c = h2(g.addr).await;
    let req = http::Request::post("http://x.test/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(body(vec![0u8; 5]))
        .unwrap();
    let started = Instant::now();
    let got = send2(&mut c, req).await;
    let took = started.elapsed();
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-type"], "application/grpc");
    assert_eq!(
        got.headers["grpc-status"], "4",
        "DEADLINE_EXCEEDED: {:?}",
        got.headers
    );
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(b.hits(), 1, "a deadline is not retried");
    g.stop().await;
}

#[tokio::test]
async fn grpc_without_upstream_is_unavailable() {
    let g = grpc_gateway(closed_port().await).await;
    let mut client = HealthClient::new(channel(&g).await);
    let err = client.check(check("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("grpc"), "names the route: {err:?}");
    g.stop().await;
}
