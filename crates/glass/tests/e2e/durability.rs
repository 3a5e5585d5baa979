//! An acknowledged registration survives `kill -9`.

use crate::Node;

#[test]
fn acknowledged_registrations_survive_kill_9() {
    const TOTAL: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    // The second start below uses the default multi-threaded scheduler.
    let node = Node::start(dir.path(), &["--dev", "--worker-threads", "1"]);
    let api = node.api.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let acknowledged = runtime.block_on(async move {
        let client = reqwest::Client::new();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..32 {
            let (client, api) = (client.clone(), api.clone());
            tasks.spawn(async move {
                let mut acked = Vec::new();
                for n in (worker..TOTAL).step_by(32) {
                    let body = serde_json::json!({"id": format!("d{n}"), "product": "shop", "env": "prod", "job": "durable",
                        "address": "10.0.0.1", "ports": {"http": 8000 + n as u16}, "meta": {"n": n.to_string()}});
                    let resp = client.post(format!("{api}/api/v1/instances")).json(&body).send().await.unwrap();
                    assert_eq!(resp.status(), 201);
                    acked.push(n);
                }
                acked
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.unwrap());
        }
        all
    });
    assert_eq!(acknowledged.len(), TOTAL);
    node.kill_9();

    let node = Node::start(dir.path(), &["--dev"]);
    let body: serde_json::Value = runtime.block_on(async {
        let url = format!("{}/api/v1/instances?job=durable", node.api);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    });
    let instances = body.as_array().unwrap();
    assert_eq!(
        instances.len(),
        TOTAL,
        "every acknowledged registration is back"
    );
    for instance in instances {
        let n: usize = instance["meta"]["n"].as_str().unwrap().parse().unwrap();
        assert_eq!(instance["id"], format!("d{n}"));
        assert_eq!(instance["ports"]["http"], 8000 + n, "records are whole");
    }
}
