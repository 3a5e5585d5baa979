//! TLS: certificates from a directory, chosen by SNI, reloaded on change.
//!
//! Each `<name>.crt` (PEM chain) with a `<name>.key` (PEM key) serves the
//! server name `<name>`; a name starting with `_.` serves `*.` (one label);
//! `default.crt` answers clients that send no or an unknown name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the directory is checked for changed files.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Server names → keys, swapped whole on reload.
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    keys: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.keys.load();
        if let Some(name) = hello.server_name().map(str::to_ascii_lowercase) {
            if let Some(k) = keys.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(k) = keys.get(&format!("*.{parent}"))
            {
                return Some(k.clone());
            }
        }
        keys.get("default").cloned()
    }
}

/// Reads every certificate pair in `dir`; a broken pair is an error naming the file.
fn load(dir: &Path) -> Result<HashMap<String, Arc<CertifiedKey>>, String> {
    let mut out = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "crt") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let key_path = path.with_extension("key");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in the file", path.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let signing =
            any_supported_type(&key).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let name = match stem.strip_prefix("_.") {
            Some(rest) => format!("*.{rest}"),
            None => stem.to_ascii_lowercase(),
        };
        out.insert(name, Arc::new(CertifiedKey::new(certs, signing)));
    }
    if out.is_empty() {
        return Err(format!(
            "{}: no <name>.crt + <name>.key pair",
            dir.display()
        ));
    }
    Ok(out)
}

/// What the directory looked like: (file, modified, length), sorted.
pub(crate) type Fingerprint = Vec<(PathBuf, SystemTime, u64)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.modified().ok()?, meta.len()))
        })
        .collect();
    files.sort();
    files
}

/// Loads `dir` (failing if it is unusable). The fingerprint is taken
/// before loading, so the reloader catches any change made after it.
pub(crate) fn server_config(
    dir: &Path,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertStore>, Fingerprint), String> {
    let seen = fingerprint(dir);
    let store = Arc::new(CertStore::default());
    store.keys.store(Arc::new(load(dir)?));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), store, seen))
}

/// Watches `dir` and swaps in new certificates when files change from
/// `seen` (what was loaded); a broken change is logged and the previous
/// certificates stay.
pub(crate) fn spawn_reloader(
    dir: PathBuf,
    store: Arc<CertStore>,
    mut seen: Fingerprint,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let now = fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            match tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || load(&dir)
            })
            .await
            {
                Ok(Ok(keys)) => {
                    tracing::info!(dir = %dir.display(), names = keys.len(), "Reloaded TLS certificates");
                    store.keys.store(Arc::new(keys));
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "TLS certificates not reloaded; keeping the previous ones")
                }
                Err(err) => tracing::warn!(error = %err, "TLS reload task failed"),
            }
        }
    })
}
