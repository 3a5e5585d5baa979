//! The client commands: register, deregister, heartbeat, instances, services, watch.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use glass_model::{RawCheck, Registration};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{Command, InstanceArgs, InstancesArgs, ListArgs, RegisterArgs, WatchArgs};
use crate::client::Client;
use crate::table;

/// Runs a client command.
pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Register(args) => register(*args).await,
        Command::Deregister(args) => instance_call(args, Method::DELETE, "").await,
        Command::Heartbeat(args) => instance_call(args, Method::PUT, "/heartbeat").await,
        Command::Instances(args) => instances(args).await,
        Command::Services(args) => services(args).await,
        Command::Watch(args) => watch(args).await,
        Command::Apply(args) => crate::routes_cmd::apply(args).await,
        Command::Routes(args) => crate::routes_cmd::list(args).await,
        Command::Serve(_) | Command::CheckConfig(_) | Command::Openapi => {
            unreachable!("handled in main")
        }
    }
}

fn pairs<T: std::str::FromStr>(
    flag: &str,
    items: &[String],
) -> anyhow::Result<BTreeMap<String, T>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("--{flag} {item:?}: write NAME=VALUE"))?;
            let v = v
                .parse()
                .map_err(|_| anyhow!("--{flag} {item:?}: {v:?} is not a valid value"))?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

fn registration(args: &RegisterArgs) -> anyhow::Result<Registration> {
    if let Some(path) = &args.file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
        };
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid registration", path.display()));
    }
    let any_check = args.check_http.is_some()
        || args.check_tcp
        || args.check_ttl.is_some()
        || args.check_grpc.is_some();
    let check = any_check.then(|| RawCheck {
        http: args.check_http.clone(),
        tcp: args.check_tcp.then_some(true),
        grpc: args.check_grpc.clone(),
        ttl: args.check_ttl.clone(),
        port: args.check_port.clone(),
        interval: args.check_interval.clone(),
        timeout: args.check_timeout.clone(),
        deregister_critical_after: args.deregister_critical_after.clone(),
    });
    Ok(Registration {
        id: args.id.clone(),
        product: args.product.clone().unwrap_or_default(),
        env: args.env.clone().unwrap_or_default(),
        job: args.job.clone().unwrap_or_default(),
        zone: args.zone.clone(),
        address: args.address.clone().unwrap_or_default(),
        ports: pairs("port", &args.ports)?,
        version: args.version.clone(),
        tags: args.tags.clone(),
        meta: pairs("meta", &args.meta)?,
        check,
    })
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let reg = registration(&args)?;
    let client = Client::new(&args.client)?;
    let resp = client
        .send(client.request(Method::POST, "/api/v1/instances").json(&reg))
        .await?;
    let body: Value = resp.json().await?;
    let verb = if body["changed"].as_bool() == Some(false) {
        "unchanged"
    } else {
        "registered"
    };
    println!(
        "{verb} {} (revision {})",
        body["id"].as_str().unwrap_or("?"),
        body["revision"]
    );
    Ok(())
}

async fn instance_call(args: InstanceArgs, method: Method, suffix: &str) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let mut req = client.request(
        method.clone(),
        &format!("/api/v1/instances/{}{suffix}", args.id),
    );
    if let (Some(p), Some(e), Some(j)) = (&args.product, &args.env, &args.job) {
        req = req.query(&[("product", p), ("env", e), ("job", j)]);
    }
    let body: Value = client.send(req).await?.json().await?;
    let verb = if method == Method::DELETE {
        "deregistered"
    } else {
        "heartbeat sent for"
    };
    println!("{verb} {} (revision {})", args.id, body["revision"]);
    Ok(())
}

pub(crate) async fn get_json(
    list: &ListArgs,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<Value> {
    let client = Client::new(&list.client)?;
    Ok(client
        .send(client.request(Method::GET, path).query(query))
        .await?
        .json()
        .await?)
}

pub(crate) fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn instances(args: InstancesArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    for (name, value) in [
        ("product", &args.product),
        ("env", &args.env),
        ("job", &args.job),
        ("zone", &args.zone),
        ("port", &args.port),
        ("tag", &args.tag),
    ] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    if args.healthy {
        query.push(("healthy", "true".into()));
    }
    let body = get_json(&args.list, "/api/v1/instances", &query).await?;
    if args.list.json {
        return print_json(&body);
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let rows: Vec<Vec<String>> = body
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let ports = i["ports"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                text(&i["id"]),
                format!(
                    "{}.{}.{}",
                    text(&i["job"]),
                    text(&i["env"]),
                    text(&i["product"])
                ),
                text(&i["zone"]),
                text(&i["address"]),
                ports,
                text(&i["health"]["status"]),
                text(&i["version"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["ID", "JOB", "ZONE", "ADDRESS", "PORTS", "HEALTH", "VERSION"],
            &rows
        )
    );
    Ok(())
}

async fn services(args: ListArgs) -> anyhow::Result<()> {
    let body = get_json(&args, "/api/v1/services", &[]).await?;
    if args.json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                s["address"].as_str().unwrap_or_default().to_owned(),
                format!("{}/{}", s["healthy"], s["total"]),
            ]
        })
        .collect();
    print!("{}", table::render(&["SERVICE", "HEALTHY"], &rows));
    Ok(())
}

async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.list.client)?;
    let req = client
        .request(Method::GET, "/api/v1/watch")
        .query(&[("from", args.from)]);
    let mut body = client.send(req).await?.bytes_stream();
    let mut buffer = String::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.context("the watch stream broke")?,
        ));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                let change: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                if event.lines().any(|l| l == "event: error") {
                    bail!("the watch ended: {}", data.trim());
                }
                if args.list.json {
                    writeln!(stdout, "{change}")?;
                } else {
                    let status = change["value"]["status"]
                        .as_str()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    writeln!(
                        stdout,
                        "{:>6}  {:<6}  {:<8}  {}{status}",
                        change["revision"],
                        change["kind"].as_str().unwrap_or("?"),
                        change["record"].as_str().unwrap_or("?"),
                        change["key"].as_str().unwrap_or("?")
                    )?;
                }
                stdout.flush()?;
            }
        }
    }
    Ok(())
}
