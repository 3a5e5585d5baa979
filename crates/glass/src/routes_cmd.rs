//! `glass apply -f routes.toml` and `glass routes`.

use std::path::Path;

use anyhow::{Context, bail};
use glass_model::RouteSpec;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::cli::{ApplyArgs, ListArgs};
use crate::client::Client;
use crate::commands::{get_json, print_json};
use crate::table;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile<T> {
    #[serde(default = "Vec::new")]
    routes: Vec<T>,
}

/// Reads and validates a routes file; errors name the file and line.
fn read_routes(path: &Path) -> anyhow::Result<Vec<RouteSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let entries: Vec<(usize, RouteSpec)> = if path.extension().is_some_and(|e| e == "json") {
        let file: RoutesFile<RouteSpec> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), e.line()))?;
        file.routes.into_iter().map(|r| (1, r)).collect()
    } else {
        let file: RoutesFile<toml::Spanned<RouteSpec>> = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(s.start)).unwrap_or(1);
            anyhow::anyhow!("{}:{line}: {}", path.display(), e.message().trim())
        })?;
        file.routes
            .into_iter()
            .map(|s| (line_of(s.span().start), s.into_inner()))
            .collect()
    };
    for (line, spec) in &entries {
        if let Err(err) = spec.validate() {
            bail!("{}:{line}: route {:?}: {err}", path.display(), spec.name);
        }
    }
    Ok(entries.into_iter().map(|(_, spec)| spec).collect())
}

/// Applies a routes file and prints one line per route.
pub(crate) async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let routes = read_routes(&args.file)?;
    let client = Client::new(&args.client)?;
    let req = client
        .request(Method::POST, "/api/v1/routes/apply")
        .query(&[("dry_run", args.dry_run), ("prune", args.prune)])
        .json(&serde_json::json!({ "routes": routes }));
    let report: Value = client.send(req).await?.json().await?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    for change in report["changes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!(
            "{} {}{suffix}",
            change[0].as_str().unwrap_or("?"),
            change[1].as_str().unwrap_or("?")
        );
    }
    println!("revision {}{suffix}", report["revision"]);
    Ok(())
}

/// Lists the routes.
pub(crate) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let body = get_json(&args, "/api/v1/routes", &[]).await?;
    if args.json {
        return print_json(&body);
    }
    let text = |v: &Value| v.as_str().unwrap_or("*").to_owned();
    let rows: Vec<Vec<String>> = body
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let m = &r["match"];
            let path = m["path"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| m["path_prefix"].as_str().map(|p| format!("{p}*")));
            let t = &r["target"];
            let target = match t["addresses"].as_array() {
                Some(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                None => format!(
                    "{}.{}.{}.{}",
                    t["port"].as_str().unwrap_or("http"),
                    text(&t["job"]),
                    text(&t["env"]),
                    text(&t["product"])
                ),
            };
            vec![
                text(&r["name"]),
                text(&m["host"]),
                path.unwrap_or_else(|| "*".into()),
                target,
                r["lb"].as_str().unwrap_or("round_robin").to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["NAME", "HOST", "PATH", "TARGET", "LB"], &rows)
    );
    Ok(())
}
