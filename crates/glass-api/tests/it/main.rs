//! The control API through its router (`oneshot`), on a real embedded store.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use glass_api::{ApiState, router};
use glass_catalog::Catalog;
use glass_store::{SqliteOptions, SqliteStore, Store};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "secret-token";

struct Api {
    app: Router,
    catalog: Arc<Catalog>,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        SqliteStore::open(&dir.path().join("store.db"), SqliteOptions::default()).unwrap();
    let catalog = Catalog::new(store, "eu1");
    catalog.start().await.unwrap();
    let app = router(ApiState::new(catalog.clone(), Some(TOKEN.into())));
    Api {
        app,
        catalog,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    index: Option<i64>,
    body: Value,
}

impl Api {
    async fn call(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let index = header("x-glass-index").and_then(|v| v.parse().ok());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            index,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn send(&self, method: &str, uri: &str, body: &str) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.call(req).await
    }

    async fn register(&self, body: Value) -> Reply {
        self.send("POST", "/api/v1/instances", &body.to_string())
            .await
    }

    async fn store_revision(&self) -> i64 {
        self.catalog.store().revision().await.unwrap()
    }
}

fn instance(id: &str) -> Value {
    json!({"id": id, "product": "shop", "env": "prod", "job": "users-api", "zone": "eu1",
           "address": "10.1.2.3", "ports": {"http": 8080, "grpc": 9090},
           "version": "1.4.2", "tags": ["canary"], "meta": {"weight": "10"}})
}

#[tokio::test]
async fn register_list_get_deregister() {
    let api = api().await;
    let r = api.register(instance("i1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["id"], "i1");
    let revision = r.body["revision"].as_i64().unwrap();

    let again = api.register(instance("i1")).await;
    assert_eq!(again.status, StatusCode::OK, "re-registering is idempotent");
    assert_eq!(again.body["changed"], false);
    assert_eq!(api.store_revision().await, revision, "nothing was written");

    let generated = api.register(json!({"product": "shop", "env": "prod", "job": "orders", "address": "::1", "ports": {"http": 80}})).await;
    assert_eq!(generated.status, StatusCode::CREATED);
    let gen_id = generated.body["id"].as_str().unwrap().to_owned();
    assert!(gen_id.starts_with("i-"));

    let all = api.get("/api/v1/instances?product=shop").await;
    assert_eq!(all.body.as_array().unwrap().len(), 2);
    let filtered = api
        .get("/api/v1/instances?job=users-api&tag=canary&port=grpc&healthy=true&zone=eu1")
        .await;
    assert_eq!(filtered.body.as_array().unwrap().len(), 1);
    assert_eq!(filtered.body[0]["health"]["status"], "passing");
    let none = api.get("/api/v1/instances?tag=stable").await;
    assert_eq!(none.body, json!([]));
    let orders = api.get(&format!("/api/v1/instances/{gen_id}")).await;
    assert_eq!(orders.body["zone"], "eu1", "zone defaults to the node's");

    let services = api.get("/api/v1/services").await;
    let addresses: Vec<&str> = services
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [
            "grpc.users-api.prod.shop.eu1",
            "http.orders.prod.shop.eu1",
            "http.users-api.prod.shop.eu1"
        ]
    );
    let behind = api.get("/api/v1/services/http.users-api.prod.shop").await;
    assert_eq!(behind.body[0]["id"], "i1", "zone may be omitted");

    let gone = api.send("DELETE", "/api/v1/instances/i1", "").await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(
        api.get("/api/v1/instances/i1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn blocking_query_answers_soon_after_a_change() {
    let api = api().await;
    api.register(instance("i1")).await;
    let first = api.get("/api/v1/instances?job=users-api").await;
    let index = first.index.unwrap();
    let waiting = {
        let app = api.app.clone();
        tokio::spawn(async move {
            let req = Request::get(format!(
                "/api/v1/instances?job=users-api&index={index}&wait=10s"
            ))
            .body(Body::empty())
            .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let at = tokio::time::Instant::now();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (at, serde_json::from_slice::<Value>(&bytes).unwrap())
        })
    };
    // An unrelated change does not wake the query.
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.register(json!({"id": "o1", "product": "shop", "env": "prod", "job": "orders", "address": "::1", "ports": {"http": 80}})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "an unrelated change must not answer the query"
    );
    let changed_at = tokio::time::Instant::now();
    api.register(instance("i2")).await;
    let (answered_at, body) = waiting.await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 2);
    let latency = answered_at.saturating_duration_since(changed_at);
    assert!(
        latency < Duration::from_millis(50),
        "answered {latency:?} after the change"
    );
}

#[tokio::test]
async fn stale_index_answers_at_once_and_wait_times_out() {
    let api = api().await;
    api.register(instance("i1")).await;
    let r = api.get("/api/v1/services?index=0&wait=5s").await;
    assert_eq!(
        r.body.as_array().unwrap().len(),
        2,
        "an old index answers immediately"
    );
    let index = r.index.unwrap();
    let started = tokio::time::Instant::now();
    let r = api
        .get(&format!("/api/v1/services?index={index}&wait=200ms"))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn heartbeats_keep_ttl_instances_passing() {
    let api = api().await;
    let mut reg = instance("t1");
    reg["check"] = json!({"ttl": "10s"});
    api.register(reg).await;
    let before = api.get("/api/v1/instances/t1").await;
    assert_eq!(
        before.body["health"]["status"], "critical",
        "no heartbeat yet"
    );
    let hb = api.send("PUT", "/api/v1/instances/t1/heartbeat", "").await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    let after = api.get("/api/v1/instances/t1").await;
    assert_eq!(after.body["health"]["status"], "passing");
}

#[tokio::test]
async fn bad_requests_are_problems_and_change_nothing() {
    let api = api().await;
    api.register(instance("i1")).await;
    let revision = api.store_revision().await;
    let count = || async {
        api.get("/api/v1/instances")
            .await
            .body
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = instance("i9");
        f(&mut v);
        v.to_string()
    };
    let huge = json!({"id": "big", "product": "shop", "env": "prod", "job": "j", "address": "::1",
                      "ports": {"http": 1}, "meta": {"x": "a".repeat(70 * 1024)}})
    .to_string();
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/v1/instances",
            "{\"id\": ".into(),
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["color"] = json!("red")),
            StatusCode::BAD_REQUEST,
            "unknown field `color`",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["product"] = json!("Shop")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "product: \"Shop\" contains 'S'",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["address"] = json!("10.1.2")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "address: \"10.1.2\" is not an IPv4 or IPv6 address",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["ports"] = json!({"http": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports.http: must be 1-65535",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["ports"] = json!({"http": 70000})),
            StatusCode::BAD_REQUEST,
            "invalid value: integer `70000`",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["ports"] = json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports: name at least one port",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["zone"] = json!("any")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "zone: \"any\" is reserved",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["id"] = json!("a.b")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "id: \"a.b\" contains '.'",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["meta"] = json!({"weight": "heavy"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "meta.weight",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["check"] = json!({"http": "/h", "ttl": "5s"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "check: name exactly one kind",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| {
                v["check"] =
                    json!({"http": "/h", "port": "http", "interval": "1s", "timeout": "3s"})
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "check.timeout",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| v["check"] = json!({"ttl": "10"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "check.ttl: \"10\" is not a duration",
        ),
        (
            "POST",
            "/api/v1/instances",
            with(&|v| {
                v.as_object_mut().unwrap().remove("job");
            }),
            StatusCode::BAD_REQUEST,
            "missing field `job`",
        ),
        (
            "POST",
            "/api/v1/instances",
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than 65536 bytes",
        ),
        (
            "GET",
            "/api/v1/instances?colour=red",
            String::new(),
            StatusCode::BAD_REQUEST,
            "unknown query parameter \"colour\"",
        ),
        (
            "GET",
            "/api/v1/instances?healthy=maybe",
            String::new(),
            StatusCode::BAD_REQUEST,
            "healthy: \"maybe\" is not true or false",
        ),
        (
            "GET",
            "/api/v1/instances?zone=EU_1",
            String::new(),
            StatusCode::BAD_REQUEST,
            "zone: \"EU_1\"",
        ),
        (
            "GET",
            "/api/v1/instances?index=-3",
            String::new(),
            StatusCode::BAD_REQUEST,
            "index: \"-3\" is not a revision",
        ),
        (
            "GET",
            "/api/v1/instances?wait=5s",
            String::new(),
            StatusCode::BAD_REQUEST,
            "wait: only meaningful with index",
        ),
        (
            "GET",
            "/api/v1/instances?index=1&wait=1h",
            String::new(),
            StatusCode::BAD_REQUEST,
            "wait: at most 600s",
        ),
        (
            "GET",
            "/api/v1/services/http.users-api",
            String::new(),
            StatusCode::BAD_REQUEST,
            "is not a service address",
        ),
        (
            "GET",
            "/api/v1/watch?from=x",
            String::new(),
            StatusCode::BAD_REQUEST,
            "from: \"x\" is not a revision",
        ),
        (
            "DELETE",
            "/api/v1/instances/nope",
            String::new(),
            StatusCode::NOT_FOUND,
            "no instance with id \"nope\"",
        ),
        (
            "PUT",
            "/api/v1/instances/i1/heartbeat",
            String::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "has no ttl check",
        ),
        (
            "DELETE",
            "/api/v1/instances/i1?product=shop",
            String::new(),
            StatusCode::BAD_REQUEST,
            "give all of product, env and job",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            String::new(),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
    ];
    for (method, uri, body, status, detail) in cases {
        let r = api.send(method, uri, &body).await;
        assert_eq!(r.status, status, "{method} {uri}: {:?}", r.body);
        assert_eq!(r.content_type, "application/problem+json", "{method} {uri}");
        let got = r.body["detail"].as_str().unwrap_or_default();
        assert!(
            got.contains(detail),
            "{method} {uri}: detail {got:?} should contain {detail:?}"
        );
        assert_eq!(r.body["status"], status.as_u16());
    }

    // Wrong media type, missing and wrong tokens.
    let req = |auth: Option<&str>, ctype: &str| {
        let mut b = Request::post("/api/v1/instances").header("content-type", ctype);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(instance("i7").to_string())).unwrap()
    };
    let r = api
        .call(req(Some("Bearer secret-token"), "text/plain"))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for auth in [None, Some("Bearer wrong"), Some("Basic c2VjcmV0")] {
        let r = api.call(req(auth, "application/json")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.content_type, "application/problem+json");
    }

    assert_eq!(
        api.store_revision().await,
        revision,
        "no bad request changed the store"
    );
    assert_eq!(count().await, before);
}

#[tokio::test]
async fn openapi_and_metrics_are_served() {
    let api = api().await;
    let doc = api.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    for path in [
        "/api/v1/instances",
        "/api/v1/instances/{id}",
        "/api/v1/instances/{id}/heartbeat",
        "/api/v1/services",
        "/api/v1/services/{address}",
        "/api/v1/watch",
        "/api/v1/health",
    ] {
        assert!(
            doc.body["paths"].get(path).is_some(),
            "OpenAPI lacks {path}"
        );
    }
    assert!(
        doc.body["components"]["schemas"]
            .get("Registration")
            .is_some()
    );
    api.register(instance("i1")).await;
    let resp = api
        .app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("glass_catalog_instances{status=\"passing\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "glass_api_requests_total{method=\"POST\",route=\"/api/v1/instances\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    let health = api.get("/api/v1/health").await;
    assert_eq!(health.body["status"], "ok");
}

#[test]
fn committed_openapi_document_is_current() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    assert!(
        committed.trim_end() == glass_api::openapi_json().trim_end(),
        "docs/openapi.json is stale: run `cargo run -p glass -- openapi > docs/openapi.json`"
    );
}
