//! Retries: a budget so retries cannot multiply an outage, and
//! exponential backoff with full jitter.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use http::Method;

/// Methods that may be sent again without changing the outcome
/// (RFC 9110 §9.2.2).
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Each request earns this share of a retry (in thousandths): 20%.
const EARN_PER_REQUEST: i64 = 200;
/// One retry costs a whole token.
const RETRY_COST: i64 = 1000;
/// The budget never holds more than 100 retries, and starts with 10.
const CAP: i64 = 100 * RETRY_COST;
const START: i64 = 10 * RETRY_COST;

/// Retries may add at most ~20% to the requests sent upstream.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: AtomicI64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            tokens: AtomicI64::new(START),
        }
    }
}

impl RetryBudget {
    /// A first attempt: earns part of a retry.
    pub(crate) fn deposit(&self) {
        if self.tokens.load(Relaxed) < CAP {
            self.tokens.fetch_add(EARN_PER_REQUEST, Relaxed);
        }
    }

    /// Takes one retry from the budget, if there is one.
    pub(crate) fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Relaxed, Relaxed, |t| {
                (t >= RETRY_COST).then_some(t - RETRY_COST)
            })
            .is_ok()
    }
}

/// Backoff before retry number `attempt` (1-based): up to 10 ms × 2^(attempt-1), at most 250 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(10)
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(Duration::from_millis(250));
    ceiling.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_limits_retries_to_a_fifth() {
        let b = RetryBudget::default();
        let mut granted = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                granted += 1;
            }
        }
        assert!((200..=215).contains(&granted), "{granted}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= Duration::from_millis(250));
        }
        assert!(backoff(1) <= Duration::from_millis(10));
    }
}
