//! Load balancing: pick one healthy, non-ejected endpoint of a route.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use glass_model::{HashOn, LbPolicy};

use crate::endpoint::Endpoint;

/// Virtual nodes per endpoint (times its weight, capped) on the hash ring.
const RING_POINTS: u32 = 64;

/// A route's balancer: the policy plus whatever it precomputed.
#[derive(Debug)]
pub(crate) struct Balancer {
    endpoints: Arc<[Arc<Endpoint>]>,
    policy: LbPolicy,
    next: AtomicUsize,
    /// Weighted: endpoint indexes in smooth weighted round-robin order.
    schedule: Vec<u16>,
    /// Hash: (point, endpoint index), sorted by point.
    ring: Vec<(u64, u16)>,
}

/// The request facts a policy may use.
pub(crate) struct PickKey<'a> {
    pub(crate) header: Option<&'a [u8]>,
    pub(crate) cookie: Option<&'a str>,
    pub(crate) client_ip: std::net::IpAddr,
    /// The instance a sticky cookie names.
    pub(crate) sticky: Option<&'a str>,
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin (as nginx does): spreads each endpoint's
/// turns evenly instead of bunching them.
fn weighted_schedule(endpoints: &[Arc<Endpoint>]) -> Vec<u16> {
    let divisor = endpoints
        .iter()
        .map(|e| e.weight.max(1))
        .fold(0, gcd)
        .max(1);
    let weights: Vec<i64> = endpoints
        .iter()
        .map(|e| i64::from(e.weight.max(1) / divisor))
        .collect();
    let total: i64 = weights.iter().sum();
    let len = total.min(65_536) as usize;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, usize::MAX - i))
            .expect("non-empty");
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn build_ring(endpoints: &[Arc<Endpoint>]) -> Vec<(u64, u16)> {
    let mut ring = Vec::new();
    for (i, e) in endpoints.iter().enumerate() {
        for n in 0..RING_POINTS * e.weight.clamp(1, 16) {
            ring.push((hash_of(&(&*e.instance, n)), i as u16));
        }
    }
    ring.sort_unstable();
    ring
}

impl Balancer {
    pub(crate) fn new(endpoints: Arc<[Arc<Endpoint>]>, policy: LbPolicy) -> Self {
        let schedule = match policy {
            LbPolicy::Weighted if !endpoints.is_empty() => weighted_schedule(&endpoints),
            _ => Vec::new(),
        };
        let ring = match &policy {
            LbPolicy::Hash(on) if *on != HashOn::StickyCookie => build_ring(&endpoints),
            _ => Vec::new(),
        };
        Balancer {
            endpoints,
            policy,
            next: AtomicUsize::new(rand::random::<u16>() as usize),
            schedule,
            ring,
        }
    }

    pub(crate) fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub(crate) fn policy(&self) -> &LbPolicy {
        &self.policy
    }

    /// Picks an endpoint, avoiding `exclude` (already tried) and ejected
    /// ones when others remain. `None` only when there are no endpoints.
    pub(crate) fn pick(&self, key: &PickKey<'_>, exclude: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let usable = |i: usize| !exclude.contains(&i) && !self.endpoints[i].state.is_ejected();
        let preferred = match &self.policy {
            LbPolicy::RoundRobin => None,
            LbPolicy::Weighted => {
                let len = self.schedule.len();
                (0..len.min(64))
                    .map(|_| self.schedule[self.next.fetch_add(1, Relaxed) % len] as usize)
                    .find(|i| usable(*i))
            }
            LbPolicy::LeastRequest => {
                let a = rand::random_range(0..n);
                let b = rand::random_range(0..n);
                let load = |i: usize| self.endpoints[i].state.active.load(Relaxed);
                let best = if load(b) < load(a) { b } else { a };
                usable(best)
                    .then_some(best)
                    .or_else(|| [a, b].into_iter().find(|i| usable(*i)))
            }
            LbPolicy::Hash(HashOn::StickyCookie) => key
                .sticky
                .and_then(|id| self.endpoints.iter().position(|e| &*e.instance == id))
                .filter(|i| usable(*i)),
            LbPolicy::Hash(on) => {
                let point = match on {
                    HashOn::Header(_) => key.header.map(hash_of),
                    HashOn::Cookie(_) => key.cookie.map(hash_of),
                    HashOn::ClientIp => Some(hash_of(&key.client_ip)),
                    HashOn::StickyCookie => None,
                };
                point.and_then(|p| self.walk_ring(p, &usable))
            }
        };
        preferred.or_else(|| self.round_robin(&usable)).or_else(|| {
            // Everything is ejected or excluded: ejection must not take the
            // whole route down, so fall back to any endpoint not yet tried.
            (0..n)
                .find(|i| !exclude.contains(i))
                .or(Some(self.next.fetch_add(1, Relaxed) % n))
        })
    }

    fn round_robin(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Relaxed);
        (0..n).map(|k| (start + k) % n).find(|i| usable(*i))
    }

    fn walk_ring(&self, point: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|(p, _)| *p < point);
        (0..self.ring.len())
            .map(|k| self.ring[(start + k) % self.ring.len()].1 as usize)
            .find(|i| usable(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::EndpointState;

    fn endpoints(weights: &[u32]) -> Arc<[Arc<Endpoint>]> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Endpoint::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    format!("i{i}").into(),
                    *w,
                    Arc::default(),
                ))
            })
            .collect()
    }

    fn key() -> PickKey<'static> {
        PickKey {
            header: None,
            cookie: None,
            client_ip: [127, 0, 0, 1].into(),
            sticky: None,
        }
    }

    #[test]
    fn weighted_split_follows_weights() {
        let b = Balancer::new(endpoints(&[1, 3, 6]), LbPolicy::Weighted);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[b.pick(&key(), &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 3000, 6000]);
    }

    #[test]
    fn round_robin_skips_ejected() {
        let eps = endpoints(&[1, 1, 1]);
        for _ in 0..5 {
            eps[1].state.failed();
        }
        let b = Balancer::new(eps, LbPolicy::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&key(), &[]).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2));
    }

    #[test]
    fn hashing_is_sticky_and_spreads() {
        let b = Balancer::new(
            endpoints(&[1, 1, 1, 1]),
            LbPolicy::Hash(HashOn::Header("x-user".into())),
        );
        let mut seen = std::collections::HashSet::new();
        for user in 0..200 {
            let v = format!("user-{user}");
            let k = PickKey {
                header: Some(v.as_bytes()),
                ..key()
            };
            let first = b.pick(&k, &[]).unwrap();
            assert_eq!(b.pick(&k, &[]).unwrap(), first);
            seen.insert(first);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn least_request_prefers_idle() {
        let eps = endpoints(&[1, 1]);
        eps[0].state.active.store(100, Relaxed);
        let b = Balancer::new(eps, LbPolicy::LeastRequest);
        let ones = (0..1000)
            .filter(|_| b.pick(&key(), &[]).unwrap() == 1)
            .count();
        assert!(ones > 700, "{ones}");
    }

    #[test]
    fn all_ejected_still_answers() {
        let eps = endpoints(&[1]);
        for _ in 0..5 {
            eps[0].state.failed();
        }
        let _ = EndpointState::default();
        let b = Balancer::new(eps, LbPolicy::RoundRobin);
        assert_eq!(b.pick(&key(), &[]), Some(0));
    }
}
