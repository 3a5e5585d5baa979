//! The composition root: opens the store, starts the catalog, health
//! checks, file provider and listeners, writes `addrs.json`, registers the
//! node itself, and drains on shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use glass_api::ApiState;
use glass_catalog::{Catalog, FileProvider, HealthChecker};
use glass_model::Registration;
use glass_store::{SqliteOptions, SqliteStore, Store};
use tokio::net::TcpListener;

use crate::config::Config;

/// TTL of the lease that keeps this node's own registration alive.
const NODE_LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the file provider directory is scanned.
const PROVIDER_SCAN_EVERY: Duration = Duration::from_millis(500);

/// Runs a node until `shutdown` resolves.
pub(crate) async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store_path = config.data_dir.join("store.db");
    let store = SqliteStore::open(&store_path, SqliteOptions::default())
        .with_context(|| format!("cannot open the store {}", store_path.display()))?;
    let sqlite = store.clone();
    let store: Arc<dyn Store> = store;
    let token = if config.dev {
        None
    } else {
        Some(load_or_create_token(&config.data_dir)?)
    };

    let catalog = Catalog::new(store.clone(), config.zone.clone());
    let follower = catalog.start().await.context("cannot load the catalog")?;
    let checker = HealthChecker::spawn(catalog.clone(), None);
    let mut state = ApiState::new(catalog.clone(), token);
    let provider_task = config.providers_dir.as_ref().map(|dir| {
        let provider = FileProvider::new(catalog.clone(), dir);
        state.providers = Some(provider.clone());
        provider.spawn(PROVIDER_SCAN_EVERY)
    });

    let api_listener = TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--api-addr)", config.api_addr))?;
    let api_addr = api_listener.local_addr()?;
    let dns = crate::node_dns::start(&config, &catalog, &state).await?;
    let gateway = crate::node_gateway::start(&config, &catalog, &state)?;

    let mut addrs = BTreeMap::new();
    addrs.insert("api", api_addr.to_string());
    addrs.insert("dns", dns.addr.to_string());
    addrs.insert("gateway", gateway.addr.to_string());
    if let Some(tls) = gateway.tls_addr {
        addrs.insert("gateway_tls", tls.to_string());
    }
    write_atomically(
        &config.data_dir.join("addrs.json"),
        serde_json::to_string(&addrs)?.as_bytes(),
    )
    .context("cannot write addrs.json")?;
    tracing::info!(api = %api_addr, dns = %dns.addr, gateway = %gateway.addr, data_dir = %config.data_dir.display(), zone = %config.zone, dev = config.dev, "Glass is serving");

    let lease = register_self(&catalog, &config, &addrs).await?;
    let keeper = tokio::spawn(keep_lease(store.clone(), lease));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut api_stop = stop_rx.clone();
    let app = glass_api::router(state);
    axum::serve(api_listener, app)
        .with_graceful_shutdown(async move {
            let _ = api_stop.wait_for(|s| *s).await;
            tracing::info!("Shutting down");
        })
        .await
        .context("the control API failed")?;

    gateway.stop().await;
    keeper.abort();
    if let Err(err) = store.lease_revoke(lease).await {
        tracing::warn!(error = %err, "Could not remove this node's registration");
    }
    dns.stop().await;
    for task in [checker, follower].into_iter().chain(provider_task) {
        task.abort();
    }
    sqlite.close().await;
    tracing::info!("Stopped");
    Ok(())
}

/// Registers this node as `glass.system` instance `<node-name>` with its
/// listeners as ports, attached to a lease so it disappears if the node dies.
async fn register_self(
    catalog: &Catalog,
    config: &Config,
    addrs: &BTreeMap<&str, String>,
) -> anyhow::Result<i64> {
    let lease = catalog.store().lease_grant(NODE_LEASE_TTL).await?;
    let mut ports = BTreeMap::new();
    let mut address = None;
    for (name, addr) in addrs {
        let addr: std::net::SocketAddr = addr.parse()?;
        ports.insert((*name).to_owned(), addr.port());
        address.get_or_insert(addr.ip());
    }
    let reg = Registration {
        id: Some(config.node_name.clone()),
        product: "glass".into(),
        env: "system".into(),
        job: "node".into(),
        address: address.map(|a| a.to_string()).unwrap_or_default(),
        ports,
        version: Some(env!("CARGO_PKG_VERSION").into()),
        ..Registration::default()
    };
    let instance = reg.validate(catalog.zone(), String::new, "node")?;
    catalog
        .put_instance(instance, Some(lease))
        .await
        .context("cannot register this node")?;
    Ok(lease)
}

async fn keep_lease(store: Arc<dyn Store>, lease: i64) {
    let mut tick = tokio::time::interval(NODE_LEASE_TTL / 3);
    loop {
        tick.tick().await;
        if let Err(err) = store.lease_keep_alive(lease).await {
            tracing::warn!(error = %err, "Could not renew this node's lease");
        }
    }
}

/// Reads `<data-dir>/token`, creating it (mode 0600) on first start.
fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        anyhow::ensure!(
            !token.is_empty(),
            "{} is empty; delete it to get a new token",
            path.display()
        );
        return Ok(token);
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    write_atomically(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "Created the API token");
    Ok(token)
}

/// Writes a file so readers see the old or the new content, never a part
/// (temp file, fsync, rename). Files are created 0600: they may hold secrets.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
