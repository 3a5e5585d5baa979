//! The store key layout of the catalog.
//!
//! `/glass/instances/<product>/<env>/<job>/<id>` holds an [`Instance`] as JSON,
//! `/glass/health/<product>/<env>/<job>/<id>` its [`Health`] as JSON. Labels
//! cannot contain `/`, so a key parses back unambiguously.

use glass_model::InstanceKey;

/// Prefix of everything the catalog stores.
pub(crate) const ROOT: &str = "/glass/";
/// Prefix of instance records.
pub(crate) const INSTANCES: &str = "/glass/instances/";
/// Prefix of health records.
pub(crate) const HEALTH: &str = "/glass/health/";
/// Prefix of route records.
pub(crate) const ROUTES: &str = "/glass/routes/";

/// The store key of a route.
pub(crate) fn route(name: &str) -> String {
    format!("{ROUTES}{name}")
}

/// The store key of an instance record.
pub(crate) fn instance(key: &InstanceKey) -> String {
    format!("{INSTANCES}{key}")
}

/// The store key of a health record.
pub(crate) fn health(key: &InstanceKey) -> String {
    format!("{HEALTH}{key}")
}

/// What a store key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    Instance(InstanceKey),
    Health(InstanceKey),
    Route(String),
}

/// Parses a store key; `None` for keys the catalog does not own.
pub(crate) fn decode(key: &[u8]) -> Option<Decoded> {
    let key = std::str::from_utf8(key).ok()?;
    if let Some(rest) = key.strip_prefix(INSTANCES) {
        return InstanceKey::parse_path(rest).map(Decoded::Instance);
    }
    if let Some(name) = key.strip_prefix(ROUTES) {
        return (!name.is_empty() && !name.contains('/')).then(|| Decoded::Route(name.to_owned()));
    }
    key.strip_prefix(HEALTH)
        .and_then(InstanceKey::parse_path)
        .map(Decoded::Health)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = InstanceKey {
            product: "a".into(),
            env: "b".into(),
            job: "c".into(),
            id: "d".into(),
        };
        assert_eq!(
            decode(instance(&k).as_bytes()),
            Some(Decoded::Instance(k.clone()))
        );
        assert_eq!(decode(health(&k).as_bytes()), Some(Decoded::Health(k)));
        assert_eq!(decode(b"/glass/instances/a/b"), None);
        assert_eq!(decode(b"/other"), None);
    }
}
