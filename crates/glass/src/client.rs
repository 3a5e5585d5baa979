//! The CLI's HTTP client of the control API.

use std::path::Path;

use anyhow::{Context, anyhow};
use reqwest::{Method, RequestBuilder, Response};

use crate::cli::ClientArgs;

/// A connection to one node's control API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// Finds the API (flag/variable, `<data-dir>/addrs.json`, or the default)
    /// and the token (flag/variable or `<data-dir>/token`).
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let addr = args
            .api_addr
            .clone()
            .or_else(|| api_from_addrs(&args.data_dir))
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr
        } else {
            format!("http://{addr}")
        };
        let token = args.token.clone().or_else(|| {
            std::fs::read_to_string(args.data_dir.join("token"))
                .ok()
                .map(|t| t.trim().to_owned())
        });
        let http = reqwest::Client::builder()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A request to `path` (starting with `/api/v1`), authorized when a token is known.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends and turns failures into one readable error.
    pub(crate) async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = req.send().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            anyhow!(
                "cannot reach Glass at {}: {cause} (is `glass serve` running? set --api-addr)",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let detail = body
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or("no detail");
        Err(anyhow!("{status}: {detail}"))
    }
}

fn api_from_addrs(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("addrs.json")).ok()?;
    let addrs: serde_json::Value = serde_json::from_str(&text).ok()?;
    addrs.get("api")?.as_str().map(str::to_owned)
}
