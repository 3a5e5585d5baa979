//! The file provider: host-local registration from a directory of files.
//!
//! Each `*.toml` or `*.json` file holds the *whole* desired state of one
//! provider (named after the file's stem): `instances = [...]`. When a file
//! changes, the provider's instances are made equal to the file in one
//! transaction; when it is removed, they are deregistered. A file with an
//! error is reported with file, line and reason, and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glass_model::{Instance, Registration, Revision};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Catalog;

/// A provider file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct ProviderFile<T> {
    /// The instances this provider wants registered.
    #[serde(default)]
    pub instances: Vec<T>,
}

/// The last outcome of applying one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderStatus {
    /// Provider name (the file's stem).
    pub provider: String,
    /// The file.
    pub file: String,
    /// `None` when the file applied; else `file:line: reason`.
    pub error: Option<String>,
    /// Instances the provider has registered.
    pub instances: usize,
    /// Store revision of the last applied version of the file.
    pub revision: Revision,
}

/// Per provider: the bytes last applied and the outcome.
type Applied = BTreeMap<String, (Vec<u8>, ProviderStatus)>;

/// Watches a directory and applies its files.
#[derive(Clone)]
pub struct FileProvider {
    catalog: Arc<Catalog>,
    dir: PathBuf,
    state: Arc<Mutex<Applied>>,
}

/// A file error: where and why.
fn located(file: &Path, line: usize, reason: impl std::fmt::Display) -> String {
    format!("{}:{line}: {reason}", file.display())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Parses and validates a provider file's text; `Err` is one readable line.
pub(crate) fn parse(
    file: &Path,
    text: &str,
    source: &str,
    zone: &str,
) -> Result<Vec<Instance>, String> {
    let is_json = file.extension().is_some_and(|e| e == "json");
    // Each registration paired with the line it starts on, for messages.
    let entries: Vec<(usize, Registration)> = if is_json {
        let raw: ProviderFile<&RawValue> =
            serde_json::from_str(text).map_err(|e| located(file, e.line(), e))?;
        let mut out = Vec::with_capacity(raw.instances.len());
        for value in raw.instances {
            // The raw value borrows from `text`; its offset gives its line.
            let offset = value.get().as_ptr() as usize - text.as_ptr() as usize;
            let line = line_of(text, offset);
            let reg: Registration = serde_json::from_str(value.get())
                .map_err(|e| located(file, line + e.line() - 1, e))?;
            out.push((line, reg));
        }
        out
    } else {
        let raw: ProviderFile<toml::Spanned<Registration>> = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            located(file, line, e.message().trim())
        })?;
        raw.instances
            .into_iter()
            .map(|s| (line_of(text, s.span().start), s.into_inner()))
            .collect()
    };
    let mut instances = Vec::with_capacity(entries.len());
    for (line, reg) in entries {
        if reg.id.is_none() {
            return Err(located(
                file,
                line,
                "id: required in provider files, so a change updates the same instance",
            ));
        }
        let instance = reg
            .validate(zone, String::new, source)
            .map_err(|e| located(file, line, e))?;
        instances.push(instance);
    }
    Ok(instances)
}

impl FileProvider {
    /// A provider reading `dir`.
    pub fn new(catalog: Arc<Catalog>, dir: impl Into<PathBuf>) -> Self {
        FileProvider {
            catalog,
            dir: dir.into(),
            state: Default::default(),
        }
    }

    /// The outcome of the last application of every file.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        self.lock().values().map(|(_, s)| s.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scans the directory every `every` until the task is aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.scan().await;
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Reads every file once and applies the changed ones.
    pub async fn scan(&self) {
        let files = match list(&self.dir).await {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "Cannot read the provider directory");
                return;
            }
        };
        let mut seen = HashMap::new();
        for path in files {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if let Some(other) = seen.insert(name.clone(), path.clone()) {
                tracing::warn!(file = %path.display(), other = %other.display(), "Two provider files share a name; ignoring the second");
                continue;
            }
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            if self.lock().get(&name).is_some_and(|(old, _)| *old == bytes) {
                continue;
            }
            let status = self.apply(&name, &path, &bytes).await;
            self.lock().insert(name, (bytes, status));
        }
        // Providers whose file is gone: deregister what they registered.
        let snapshot = self.catalog.snapshots().load();
        let mut gone: Vec<String> = snapshot
            .members(&Default::default())
            .filter_map(|m| m.instance.source.strip_prefix("file:").map(str::to_owned))
            .filter(|name| !seen.contains_key(name))
            .collect();
        gone.extend(
            self.lock()
                .keys()
                .filter(|n| !seen.contains_key(*n))
                .cloned(),
        );
        gone.sort();
        gone.dedup();
        for name in gone {
            match self
                .catalog
                .replace_source(&format!("file:{name}"), Vec::new())
                .await
            {
                Ok((_, removed, _)) => {
                    tracing::info!(provider = %name, removed, "Provider file removed; deregistered its instances");
                    self.lock().remove(&name);
                }
                Err(err) => {
                    tracing::warn!(provider = %name, error = %err, "Could not deregister a removed provider")
                }
            }
        }
    }

    async fn apply(&self, name: &str, path: &Path, bytes: &[u8]) -> ProviderStatus {
        let source = format!("file:{name}");
        let file = path.display().to_string();
        let previous = self
            .lock()
            .get(name)
            .map(|(_, s)| (s.instances, s.revision))
            .unwrap_or_default();
        let failed = |error: String| {
            tracing::warn!(provider = %name, error = %error, "Provider file refused; nothing changed");
            ProviderStatus {
                provider: name.to_owned(),
                file: file.clone(),
                error: Some(error),
                instances: previous.0,
                revision: previous.1,
            }
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return failed(located(
                    path,
                    line_of(&String::from_utf8_lossy(bytes), e.valid_up_to()),
                    "not UTF-8",
                ));
            }
        };
        let instances = match parse(path, text, &source, self.catalog.zone()) {
            Ok(instances) => instances,
            Err(error) => return failed(error),
        };
        let count = instances.len();
        match self.catalog.replace_source(&source, instances).await {
            Ok((changed, removed, revision)) => {
                tracing::info!(provider = %name, changed, removed, revision, "Provider file applied");
                ProviderStatus {
                    provider: name.to_owned(),
                    file,
                    error: None,
                    instances: count,
                    revision,
                }
            }
            Err(err) => failed(located(path, 1, err)),
        }
    }
}

async fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Editors and atomic writers leave hidden or temporary files: skip them.
        let wanted = !name.starts_with('.')
            && path.extension().is_some_and(|e| e == "toml" || e == "json")
            && entry.file_type().await.is_ok_and(|t| t.is_file());
        if wanted {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, text: &str, expected: Result<usize, &str>) {
        let got = parse(Path::new(file), text, "file:x", "local");
        match (got, expected) {
            (Ok(v), Ok(n)) => assert_eq!(v.len(), n),
            (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} should contain {want:?}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn provider_files() {
        let ok_toml = "[[instances]]\nid = \"a\"\nproduct = \"p\"\nenv = \"e\"\njob = \"j\"\naddress = \"127.0.0.1\"\nports = { http = 80 }\n";
        check("x.toml", ok_toml, Ok(1));
        check("x.toml", "", Ok(0));
        check(
            "x.toml",
            "[[instances]]\nid = \"a\"\nproduct = \"P\"\nenv = \"e\"\njob = \"j\"\naddress = \"127.0.0.1\"\nports = { http = 80 }\n",
            Err("x.toml:1: product"),
        );
        check("x.toml", "instances = 3\n", Err("x.toml:1:"));
        check(
            "x.toml",
            "bogus = 1\n",
            Err("x.toml:1: unknown field `bogus`"),
        );
        check(
            "x.json",
            "{\"instances\": [\n {\"id\":\"a\",\"product\":\"p\",\"env\":\"e\",\"job\":\"j\",\"address\":\"::1\",\"ports\":{\"http\":1}},\n {\"id\":\"b\",\"product\":\"p\",\"env\":\"e\",\"job\":\"j\",\"address\":\"nope\",\"ports\":{\"http\":1}}]}",
            Err("x.json:3: address"),
        );
        check(
            "x.json",
            "{\"instances\": [\n {\"product\":\"p\",\"env\":\"e\",\"job\":\"j\",\"address\":\"::1\",\"ports\":{\"http\":1}}]}",
            Err("x.json:2: id: required"),
        );
        check("x.json", "{\"instances\": [\n {\"id\": 1", Err("x.json:2:"));
    }
}
