//! Upstream endpoints and their passive health: in-flight requests,
//! consecutive failures, outlier ejection with a growing interval.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// Consecutive failures (connect errors, 5xx) that eject an endpoint.
const EJECT_AFTER: u32 = 5;
/// First ejection; each further one doubles it, up to [`MAX_EJECTION`].
const BASE_EJECTION: Duration = Duration::from_secs(5);
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// One upstream address of a route.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// `addr` as a URI authority, made once rather than per request.
    pub(crate) authority: http::uri::Authority,
    /// The instance id (or the address for static targets), for logs and sticky cookies.
    pub(crate) instance: Arc<str>,
    pub(crate) weight: u32,
    pub(crate) state: Arc<EndpointState>,
}

impl Endpoint {
    pub(crate) fn new(
        addr: SocketAddr,
        instance: Arc<str>,
        weight: u32,
        state: Arc<EndpointState>,
    ) -> Self {
        let authority = addr
            .to_string()
            .parse()
            .expect("a socket address is a valid authority");
        Endpoint {
            addr,
            authority,
            instance,
            weight,
            state,
        }
    }
}

/// What the gateway has seen of one address; survives route-table rebuilds.
#[derive(Debug)]
pub(crate) struct EndpointState {
    epoch: Instant,
    pub(crate) active: AtomicU32,
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) ejections_total: AtomicU64,
    /// `Health::since_ms` of the instance when the table was last built.
    pub(crate) health_since: AtomicU64,
    /// Idle HTTP/1.1 connections of the gateway's own upstream path.
    pub(crate) idle: crate::h1::IdlePool,
}

impl Default for EndpointState {
    fn default() -> Self {
        EndpointState {
            epoch: Instant::now(),
            active: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            health_since: AtomicU64::new(0),
            idle: Default::default(),
        }
    }
}

impl EndpointState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the endpoint is ejected right now.
    pub(crate) fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// A request succeeded: the failure streak ends.
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// A request failed; returns true when this failure ejected the endpoint.
    pub(crate) fn failed(&self) -> bool {
        self.errors.fetch_add(1, Relaxed);
        let streak = self.failures.fetch_add(1, Relaxed) + 1;
        if streak < EJECT_AFTER || self.is_ejected() {
            return false;
        }
        let n = self.ejections.fetch_add(1, Relaxed).min(16);
        let duration = BASE_EJECTION.saturating_mul(1 << n).min(MAX_EJECTION);
        self.ejected_until_ms
            .store(self.now_ms() + duration.as_millis() as u64, Relaxed);
        self.failures.store(0, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        tracing::warn!(ejected_for = ?duration, "Ejecting an upstream after consecutive failures");
        true
    }

    /// The catalog's active check says the instance passes again: forget
    /// the ejection (the growing interval resets too).
    pub(crate) fn restore(&self) {
        self.ejected_until_ms.store(0, Relaxed);
        self.ejections.store(0, Relaxed);
        self.failures.store(0, Relaxed);
    }
}

/// Counts a request in flight on an endpoint while it lives.
pub(crate) struct InFlight(Arc<EndpointState>);

impl InFlight {
    /// Takes a slot, or `None` when the endpoint has `limit` requests already.
    pub(crate) fn acquire(state: &Arc<EndpointState>, limit: u32) -> Option<InFlight> {
        let previous = state.active.fetch_add(1, Relaxed);
        if previous >= limit {
            state.active.fetch_sub(1, Relaxed);
            return None;
        }
        state.requests.fetch_add(1, Relaxed);
        Some(InFlight(state.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_and_expires() {
        let s = EndpointState::default();
        for _ in 0..4 {
            assert!(!s.failed());
        }
        assert!(s.failed(), "the fifth consecutive failure ejects");
        assert!(s.is_ejected());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!s.is_ejected(), "5 s first");
        for _ in 0..5 {
            s.failed();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(s.is_ejected(), "then 10 s");
        s.restore();
        assert!(!s.is_ejected());
    }

    #[test]
    fn breaker_limits_in_flight() {
        let s = Arc::new(EndpointState::default());
        let a = InFlight::acquire(&s, 2).unwrap();
        let _b = InFlight::acquire(&s, 2).unwrap();
        assert!(InFlight::acquire(&s, 2).is_none());
        drop(a);
        assert!(InFlight::acquire(&s, 2).is_some());
    }
}
