//! The routing table: built from a snapshot, immutable, swapped atomically.
//!
//! Precedence, most specific first: an exact host beats a wildcard host
//! (longer suffix first), which beats no host; within a host, an exact
//! path beats a prefix, a longer prefix beats a shorter one, which beats
//! no path; then routes with more method/header conditions first; then
//! by name. The first route whose conditions all hold wins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use glass_model::{HealthStatus, Revision, Route, Target};
use glass_snapshot::Snapshot;
use http::Method;

use crate::balance::Balancer;
use crate::endpoint::{Endpoint, EndpointState};
use crate::headers::Fields;
use crate::metrics::RouteMetrics;
use crate::upstream::{Clients, UpstreamClient};

/// One route, ready to serve.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) route: Arc<Route>,
    pub(crate) name: Arc<str>,
    pub(crate) balancer: Balancer,
    pub(crate) metrics: Arc<RouteMetrics>,
    /// `glass-sticky-<route>`, for `hash_on = "sticky_cookie"`.
    pub(crate) sticky_cookie: String,
    pub(crate) client: UpstreamClient,
    /// The route's header edits, parsed once per table build.
    pub(crate) request_edits: Edits,
    pub(crate) response_edits: Edits,
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Header edits ready to apply: names and values already parsed (the
/// route was validated, so nothing is dropped here).
#[derive(Debug, Default)]
pub(crate) struct Edits {
    remove: Vec<http::HeaderName>,
    add: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Edits {
    fn new(edits: &glass_model::HeaderEdits) -> Self {
        Edits {
            remove: edits.remove.iter().filter_map(|n| n.parse().ok()).collect(),
            add: edits
                .add
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
                .collect(),
        }
    }

    /// Removes, then sets (replacing any value).
    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.add {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Whether a received field named `name` (any case) is dropped: the
    /// same outcome as [`Edits::apply`] for a message kept as bytes.
    pub(crate) fn drops(&self, name: &[u8]) -> bool {
        let is = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        self.remove.iter().any(is) || self.add.iter().any(|(n, _)| is(n))
    }

    /// The fields the edits set, to be written after the kept ones.
    pub(crate) fn added(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.add
    }
}

impl RouteEntry {
    fn matches(&self, path: &str, method: &Method, headers: &impl Fields) -> bool {
        let m = &self.route.spec.matcher;
        let path_ok = match (&m.path, &m.path_prefix) {
            (Some(exact), _) => path == exact,
            (None, Some(prefix)) => prefix_matches(prefix, path),
            (None, None) => true,
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(name, value)| headers.first(name.as_str()) == Some(value.as_bytes()))
    }

    fn specificity(&self) -> (u8, usize, usize) {
        let m = &self.route.spec.matcher;
        let (kind, len) = match (&m.path, &m.path_prefix) {
            (Some(p), _) => (2, p.len()),
            (None, Some(p)) => (1, p.len()),
            (None, None) => (0, 0),
        };
        (kind, len, self.methods.len().min(1) + self.headers.len())
    }
}

/// `/v1` takes `/v1`, `/v1/` and `/v1/x`, but not `/v10`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes()[prefix.len()] == b'/')
}

/// All routes of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    pub(crate) revision: Revision,
    exact: HashMap<String, Vec<Arc<RouteEntry>>>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(String, Vec<Arc<RouteEntry>>)>,
    any: Vec<Arc<RouteEntry>>,
    pub(crate) entries: Vec<Arc<RouteEntry>>,
}

impl RouteTable {
    /// Builds the table for `snapshot`, carrying endpoint state and route
    /// metrics over from `previous` so they outlive rebuilds.
    pub(crate) fn build(
        snapshot: &Snapshot,
        previous: &RouteTable,
        local_zone: &str,
        clients: &Clients,
    ) -> RouteTable {
        let old_states: HashMap<SocketAddr, Arc<EndpointState>> = previous
            .entries
            .iter()
            .flat_map(|e| {
                e.balancer
                    .endpoints()
                    .iter()
                    .map(|ep| (ep.addr, ep.state.clone()))
            })
            .collect();
        let old_metrics: HashMap<&str, Arc<RouteMetrics>> = previous
            .entries
            .iter()
            .map(|e| (&*e.name, e.metrics.clone()))
            .collect();
        let mut table = RouteTable {
            revision: snapshot.revision,
            ..RouteTable::default()
        };
        for route in snapshot.routes() {
            let endpoints = endpoints(snapshot, route, local_zone, &old_states);
            let name: Arc<str> = route.spec.name.as_str().into();
            let metrics = old_metrics.get(&*name).cloned().unwrap_or_default();
            let entry = Arc::new(RouteEntry {
                balancer: Balancer::new(endpoints, route.lb.clone()),
                sticky_cookie: format!("glass-sticky-{name}"),
                client: clients.get(route.protocol, route.timeouts.connect),
                request_edits: Edits::new(&route.spec.request_headers),
                response_edits: Edits::new(&route.spec.response_headers),
                methods: route
                    .spec
                    .matcher
                    .methods
                    .iter()
                    .filter_map(|m| m.parse().ok())
                    .collect(),
                headers: route
                    .spec
                    .matcher
                    .headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
                    .collect(),
                route: route.clone(),
                name,
                metrics,
            });
            match route.host.as_deref() {
                Some(host) if host.starts_with("*.") => {
                    let suffix = host[1..].to_owned();
                    match table.wildcard.iter_mut().find(|(s, _)| *s == suffix) {
                        Some((_, list)) => list.push(entry.clone()),
                        None => table.wildcard.push((suffix, vec![entry.clone()])),
                    }
                }
                Some(host) => table
                    .exact
                    .entry(host.to_owned())
                    .or_default()
                    .push(entry.clone()),
                None => table.any.push(entry.clone()),
            }
            table.entries.push(entry);
        }
        let order = |list: &mut Vec<Arc<RouteEntry>>| {
            list.sort_by(|a, b| {
                b.specificity()
                    .cmp(&a.specificity())
                    .then_with(|| a.name.cmp(&b.name))
            });
        };
        table.exact.values_mut().for_each(order);
        table.wildcard.iter_mut().for_each(|(_, l)| order(l));
        table.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        order(&mut table.any);
        table
    }

    /// The route for a request, if any. `host` is lowercase, without port.
    pub(crate) fn find(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &impl Fields,
    ) -> Option<&Arc<RouteEntry>> {
        if let Some(hit) = self
            .exact
            .get(host)
            .and_then(|l| first_match(l, path, method, headers))
        {
            return Some(hit);
        }
        for (suffix, list) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(hit) = first_match(list, path, method, headers)
            {
                return Some(hit);
            }
        }
        first_match(&self.any, path, method, headers)
    }

    /// Every endpoint state, for metrics.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = (&Arc<RouteEntry>, &Arc<Endpoint>)> {
        self.entries
            .iter()
            .flat_map(|e| e.balancer.endpoints().iter().map(move |ep| (e, ep)))
    }
}

fn first_match<'a>(
    list: &'a [Arc<RouteEntry>],
    path: &str,
    method: &Method,
    headers: &impl Fields,
) -> Option<&'a Arc<RouteEntry>> {
    list.iter().find(|e| e.matches(path, method, headers))
}

/// The endpoints a route may use now: healthy instances of the target
/// port, those of the local zone only when there are any; or the static list.
fn endpoints(
    snapshot: &Snapshot,
    route: &Route,
    local_zone: &str,
    old: &HashMap<SocketAddr, Arc<EndpointState>>,
) -> Arc<[Arc<Endpoint>]> {
    let state = |addr: &SocketAddr| old.get(addr).cloned().unwrap_or_default();
    match &route.target {
        Target::Static(addrs) => addrs
            .iter()
            .map(|a| Arc::new(Endpoint::new(*a, a.to_string().into(), 1, state(a))))
            .collect(),
        Target::Service {
            product,
            env,
            job,
            port,
        } => {
            let healthy: Vec<_> = snapshot
                .job_members(product, env, job)
                .filter(|m| {
                    m.health.status == HealthStatus::Passing && m.instance.ports.contains_key(port)
                })
                .collect();
            let local = healthy.iter().any(|m| m.instance.zone == local_zone);
            healthy
                .into_iter()
                .filter(|m| !local || m.instance.zone == local_zone)
                .map(|m| {
                    let addr = SocketAddr::new(m.instance.address, m.instance.ports[port]);
                    let state = state(&addr);
                    // A new passing health record (the active check saw it
                    // recover) ends any ejection.
                    if state.health_since.swap(m.health.since_ms, Relaxed) != m.health.since_ms {
                        state.restore();
                    }
                    Arc::new(Endpoint::new(
                        addr,
                        m.instance.id.as_str().into(),
                        u32::from(m.instance.weight()),
                        state,
                    ))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glass_model::RouteSpec;
    use glass_snapshot::SnapshotState;

    fn table(routes: &[&str]) -> RouteTable {
        let mut state = SnapshotState::default();
        for json in routes {
            let spec: RouteSpec = serde_json::from_str(json).unwrap();
            state.put_route(spec.validate().unwrap());
        }
        RouteTable::build(
            &state.snapshot(),
            &RouteTable::default(),
            "local",
            &Clients::default(),
        )
    }

    fn check(t: &RouteTable, host: &str, path: &str, method: &str, expected: Option<&str>) {
        let got = t
            .find(
                host,
                path,
                &method.parse().unwrap(),
                &http::HeaderMap::new(),
            )
            .map(|e| e.name.to_string());
        assert_eq!(got.as_deref(), expected, "{method} {host}{path}");
    }

    #[test]
    fn most_specific_route_wins() {
        let r = |name: &str, matcher: &str| {
            format!(
                r#"{{"name": "{name}", "match": {matcher}, "target": {{"addresses": ["127.0.0.1:1"]}}}}"#
            )
        };
        let t = table(&[
            &r("catch-all", "{}"),
            &r("v1", r#"{"path_prefix": "/v1"}"#),
            &r("v1-users", r#"{"path_prefix": "/v1/users"}"#),
            &r("v1-exact", r#"{"path": "/v1/users/me"}"#),
            &r("api-host", r#"{"host": "api.example.com"}"#),
            &r("wild", r#"{"host": "*.example.com", "path_prefix": "/"}"#),
            &r("posts", r#"{"path_prefix": "/v1", "methods": ["POST"]}"#),
        ]);
        check(&t, "other", "/", "GET", Some("catch-all"));
        check(&t, "other", "/v1", "GET", Some("v1"));
        check(&t, "other", "/v10", "GET", Some("catch-all"));
        check(&t, "other", "/v1/users/7", "GET", Some("v1-users"));
        check(&t, "other", "/v1/users/me", "GET", Some("v1-exact"));
        check(&t, "other", "/v1/x", "POST", Some("posts"));
        check(&t, "api.example.com", "/v1", "GET", Some("api-host"));
        check(&t, "www.example.com", "/v1", "GET", Some("wild"));
        check(&t, "example.com", "/v1", "GET", Some("v1"));
        let none = table(&[&r("only", r#"{"path": "/a"}"#)]);
        check(&none, "x", "/b", "GET", None);
    }

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/v1", "/v1"));
        assert!(prefix_matches("/v1", "/v1/a"));
        assert!(!prefix_matches("/v1", "/v10"));
        assert!(prefix_matches("/v1/", "/v1/a"));
        assert!(prefix_matches("/", "/anything"));
    }
}
