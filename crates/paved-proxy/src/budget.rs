//! The retry budget shared by every route: each request earns `ratio` of a retry, each retry
//! spends one, and `min_per_second` retries are free every second, so retries stay a bounded
//! share of load however badly upstreams fail (Finagle's and linkerd's retry budget).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::config::RetryBudgetConfig;

/// Milli-retries, so that earning a fraction of a retry per request is one integer add.
const MILLI: i64 = 1000;
/// Earned retries saved at most: a long quiet spell cannot bank a storm.
const MAX_SAVED: i64 = 100 * MILLI;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    earn_per_request: i64,
    min_per_second: u64,
    balance: AtomicI64,
    started: Instant,
    /// The second (since `started`) the free retries were counted in, and how many were used:
    /// `second << 32 | used`.
    free: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(config: &RetryBudgetConfig) -> Self {
        RetryBudget {
            earn_per_request: (config.ratio * MILLI as f64).round() as i64,
            min_per_second: u64::from(config.min_per_second),
            balance: AtomicI64::new(0),
            started: Instant::now(),
            free: AtomicU64::new(0),
        }
    }

    /// A request arrived.
    pub(crate) fn deposit(&self) {
        if self.earn_per_request == 0 {
            return;
        }
        let before = self.balance.fetch_add(self.earn_per_request, Relaxed);
        if before >= MAX_SAVED {
            self.balance.fetch_sub(self.earn_per_request, Relaxed);
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let spent = self
            .balance
            .fetch_update(Relaxed, Relaxed, |b| (b >= MILLI).then_some(b - MILLI));
        spent.is_ok() || self.take_free()
    }

    fn take_free(&self) -> bool {
        if self.min_per_second == 0 {
            return false;
        }
        let second = self.started.elapsed().as_secs();
        self.free
            .fetch_update(Relaxed, Relaxed, |word| {
                let (at, used) = (word >> 32, word & 0xffff_ffff);
                match at == second {
                    true if used >= self.min_per_second => None,
                    true => Some(word + 1),
                    false => Some(second << 32 | 1),
                }
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            ratio,
            min_per_second,
        })
    }

    #[test]
    fn earns_a_share_of_requests() {
        let b = budget(0.2, 0);
        assert!(!b.withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn free_retries_per_second() {
        let b = budget(0.0, 10);
        let granted = (0..100).filter(|_| b.withdraw()).count();
        // The test may straddle a second boundary, which grants another ten.
        assert!(granted == 10 || granted == 20, "{granted}");
    }

    #[test]
    fn savings_are_capped() {
        let b = budget(1.0, 0);
        for _ in 0..1_000 {
            b.deposit();
        }
        let granted = (0..1_000).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 100);
    }
}
