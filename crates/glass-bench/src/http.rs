//! A minimal keep-alive HTTP/1.1 client: one TCP connection, one request at
//! a time, no pooling — so each benchmark task owns exactly one connection.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One HTTP/1.1 connection to the control API.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Opens a connection (TCP_NODELAY) and runs its driver on a task.
    pub(crate) async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server
            // closes it; the error (if any) surfaces on the next request.
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends a request and returns the response with its body unread.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(body.map(Bytes::from).unwrap_or_default()))?;
        self.sender.ready().await.context("connection closed")?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends a request and reads the whole body.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// `GET path` expecting 200 with a JSON body.
    pub(crate) async fn get_json(&mut self, path: &str) -> Result<(serde_json::Value, usize)> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok((
            serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))?,
            body.len(),
        ))
    }
}

/// The registration body of bench instance number `n` in job `job`.
pub(crate) fn registration(
    product: &str,
    env: &str,
    job: &str,
    id: &str,
    n: u64,
    meta: Option<(&str, String)>,
) -> String {
    let address = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    let meta = meta
        .map(|(k, v)| format!(r#","meta":{{"{k}":"{v}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"id":"{id}","product":"{product}","env":"{env}","job":"{job}","zone":"eu1","address":"{address}","ports":{{"http":8080}}{meta}}}"#
    )
}
