//! The file provider: whole-state files, diffs, errors that change nothing.

use std::path::Path;
use std::time::Duration;

use glass_catalog::FileProvider;

use crate::fixture;

/// Replaces a file the way a host agent should: write a temp file, rename.
fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn instance_toml(id: &str, port: u16) -> String {
    format!(
        "[[instances]]\nid = \"{id}\"\nproduct = \"shop\"\nenv = \"prod\"\njob = \"users-api\"\naddress = \"10.0.0.1\"\nports = {{ http = {port} }}\n\n"
    )
}

#[tokio::test]
async fn files_are_applied_as_diffs() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let provider = FileProvider::new(f.catalog.clone(), dir.path());
    let ids = || {
        let snap = f.catalog.snapshots().load();
        snap.members(&Default::default())
            .map(|m| format!("{}:{}", m.instance.id, m.instance.ports["http"]))
            .collect::<Vec<_>>()
    };

    write_atomically(
        dir.path(),
        "host-a.toml",
        &(instance_toml("a1", 80) + &instance_toml("a2", 80)),
    );
    write_atomically(
        dir.path(),
        "host-b.json",
        r#"{"instances": [{"id": "b1", "product": "shop", "env": "prod", "job": "users-api", "address": "10.0.0.2", "ports": {"http": 81}}]}"#,
    );
    provider.scan().await;
    assert_eq!(ids(), ["a1:80", "a2:80", "b1:81"]);
    let rev = f.catalog.store().revision().await.unwrap();

    // Unchanged files write nothing.
    provider.scan().await;
    assert_eq!(f.catalog.store().revision().await.unwrap(), rev);

    // a2 removed, a1 changed, a3 added: one transaction.
    write_atomically(
        dir.path(),
        "host-a.toml",
        &(instance_toml("a1", 8080) + &instance_toml("a3", 80)),
    );
    provider.scan().await;
    assert_eq!(ids(), ["a1:8080", "a3:80", "b1:81"]);
    assert_eq!(
        f.catalog.store().revision().await.unwrap(),
        rev + 1,
        "one file change is one transaction"
    );

    // A broken file is reported with file and line, and changes nothing.
    let rev = f.catalog.store().revision().await.unwrap();
    write_atomically(
        dir.path(),
        "host-a.toml",
        &(instance_toml("a1", 8080)
            + "[[instances]]\nid = \"a4\"\nproduct = \"Shop\"\nenv = \"prod\"\njob = \"j\"\naddress = \"10.0.0.1\"\nports = { http = 1 }\n"),
    );
    provider.scan().await;
    assert_eq!(ids(), ["a1:8080", "a3:80", "b1:81"]);
    assert_eq!(f.catalog.store().revision().await.unwrap(), rev);
    let status = provider
        .statuses()
        .into_iter()
        .find(|s| s.provider == "host-a")
        .unwrap();
    let error = status.error.unwrap();
    assert!(
        error.ends_with(
            "host-a.toml:9: product: \"Shop\" contains 'S'; only a-z, 0-9 and '-' are allowed"
        ),
        "{error}"
    );

    // Removing a file deregisters what it registered.
    std::fs::remove_file(dir.path().join("host-b.json")).unwrap();
    provider.scan().await;
    assert_eq!(ids(), ["a1:8080", "a3:80"]);
}

#[tokio::test]
async fn a_provider_cannot_take_over_another_sources_instance() {
    let f = fixture().await;
    f.catalog
        .register(
            &crate::registration("a1", 80, serde_json::Value::Null),
            "api",
            None,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_atomically(dir.path(), "host.toml", &instance_toml("a1", 81));
    let provider = FileProvider::new(f.catalog.clone(), dir.path());
    provider.scan().await;
    let error = provider.statuses()[0].error.clone().unwrap();
    assert!(error.contains("already registered by \"api\""), "{error}");
}

#[tokio::test]
async fn the_polling_task_picks_up_changes() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let task = FileProvider::new(f.catalog.clone(), dir.path()).spawn(Duration::from_millis(50));
    write_atomically(dir.path(), "host.toml", &instance_toml("p1", 80));
    crate::wait_status(
        &f.catalog,
        "p1",
        Some(glass_model::HealthStatus::Passing),
        Duration::from_secs(2),
    )
    .await;
    task.abort();
}
