//! The quickstart and the CLI's behaviour on good and bad input.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{GLASS, Node, line_reader};

#[test]
fn quickstart_register_list_watch() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    assert_eq!(token.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let mut watch = Command::new(GLASS)
        .args(["watch", "--json", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut watch);
    std::thread::sleep(Duration::from_millis(300));

    let out = node.cli_ok(&[
        "register",
        "--id",
        "i1",
        "--product",
        "shop",
        "--env",
        "prod",
        "--job",
        "users-api",
        "--zone",
        "eu1",
        "--address",
        "10.1.2.3",
        "--port",
        "http=8080",
        "--port",
        "grpc=9090",
        "--tag",
        "canary",
        "--meta",
        "weight=10",
    ]);
    assert!(out.starts_with("registered i1 (revision "), "{out}");
    let reg = r#"{"id": "i2", "product": "shop", "env": "prod", "job": "users-api", "zone": "eu1", "address": "10.1.2.4", "ports": {"http": 8080}}"#;
    let file = dir.path().join("i2.json");
    std::fs::write(&file, reg).unwrap();
    node.cli_ok(&["register", "-f", file.to_str().unwrap()]);
    let again = node.cli_ok(&["register", "-f", file.to_str().unwrap()]);
    assert!(again.starts_with("unchanged i2"), "{again}");

    let table = node.cli_ok(&["instances", "--job", "users-api"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("ID"), "{table}");
    assert!(
        rows[1].starts_with("i1")
            && rows[1].contains("grpc=9090,http=8080")
            && rows[1].contains("passing"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&node.cli_ok(&["instances", "--json", "--tag", "canary"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    let services = node.cli_ok(&["services"]);
    assert!(
        services.lines().any(|l| l
            .split_whitespace()
            .eq(["http.users-api.prod.shop.eu1", "2/2"])),
        "{services}"
    );
    node.cli_ok(&["deregister", "i1"]);

    // The watch saw each change once, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = lines
            .recv_timeout(Duration::from_secs(5))
            .expect("watch printed the change");
        let change: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push((
            change["revision"].as_i64().unwrap(),
            change["kind"].as_str().unwrap().to_owned(),
            change["key"].as_str().unwrap().to_owned(),
        ));
    }
    assert!(
        lines.recv_timeout(Duration::from_millis(300)).is_err(),
        "no duplicate or extra events"
    );
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|(_, k, key)| (k.as_str(), key.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("put", "shop/prod/users-api/i1"),
            ("put", "shop/prod/users-api/i2"),
            ("delete", "shop/prod/users-api/i1")
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions increase: {seen:?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    let status = node.stop();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
}

#[test]
fn cli_errors_are_one_line_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let before = node.cli_ok(&["instances", "--json"]);
    // `glass register` of product `product` with one `--port` argument, plus `extra`.
    let register = |product: &'static str, port: &'static str, extra: &[&'static str]| {
        let mut args = vec![
            "register",
            "--product",
            product,
            "--env",
            "prod",
            "--job",
            "j",
        ];
        args.extend(["--address", "10.0.0.1", "--port", port]);
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            register("Shop", "http=80", &[]),
            "422 Unprocessable Entity: product: \"Shop\" contains 'S'",
        ),
        (
            register("shop", "http", &[]),
            "--port \"http\": write NAME=VALUE",
        ),
        (
            register("shop", "http=99999", &[]),
            "--port \"http=99999\": \"99999\" is not a valid value",
        ),
        (
            register("shop", "http=80", &["--token", "wrong"]),
            "401 Unauthorized: the bearer token is wrong",
        ),
        (
            vec!["deregister", "nope"],
            "404 Not Found: no instance with id \"nope\"",
        ),
        (
            vec!["instances", "--zone", "Bad_Zone"],
            "400 Bad Request: zone: \"Bad_Zone\"",
        ),
        (
            vec!["instances", "--api-addr", "127.0.0.1:1"],
            "cannot reach Glass at http://127.0.0.1:1",
        ),
    ];
    for (args, expected) in cases {
        let out = node.cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(
            stderr.starts_with("glass: ") && stderr.contains(expected),
            "{args:?}: {stderr:?} should contain {expected:?}"
        );
    }
    assert_eq!(node.cli_ok(&["instances", "--json"]), before);
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("glass.toml");
    std::fs::write(&config, "zone = \"eu1\"\n\napi_addr = \"localhost\"\n").unwrap();
    let out = Command::new(GLASS)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "glass: {}:3:api_addr: \"localhost\" is not an address; write IP:PORT, e.g. 127.0.0.1:8500 (port 0 picks a free port)\n",
            config.display()
        )
    );
    std::fs::write(&config, "zone = \"eu1\"\nlisten = 1\n").unwrap();
    let out = Command::new(GLASS)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "glass: {}:2: unknown field `listen`",
            config.display()
        )),
        "{stderr}"
    );
}

#[test]
fn file_provider_registers_from_the_providers_dir() {
    let dir = tempfile::tempdir().unwrap();
    let providers = dir.path().join("providers");
    std::fs::create_dir(&providers).unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--dev", "--providers-dir", providers.to_str().unwrap()],
    );
    std::fs::write(providers.join(".tmp"), "[[instances]]\nid = \"f1\"\nproduct = \"shop\"\nenv = \"prod\"\njob = \"files\"\naddress = \"10.9.0.1\"\nports = { http = 80 }\n").unwrap();
    std::fs::rename(providers.join(".tmp"), providers.join("host.toml")).unwrap();
    let started = std::time::Instant::now();
    loop {
        let out = node.cli_ok(&["instances", "--job", "files", "--json"]);
        if out.contains("\"f1\"") {
            assert!(out.contains("\"source\": \"file:host\""), "{out}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the provider file was not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
