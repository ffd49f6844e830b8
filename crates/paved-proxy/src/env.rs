//! Time and chance for the proxy, injectable so tests can fix both: a [`Clock`] for fault expiry
//! and ejection backoff, and seeded dice for balancing, splits and fault rolls.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to; clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Relaxed);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Random numbers: the thread-local generator, or one seeded generator behind a lock for tests
/// (whose order of draws then depends on request order, which a sequential test fixes).
#[derive(Debug)]
pub(crate) struct Dice {
    seeded: Option<Mutex<StdRng>>,
}

impl Dice {
    pub(crate) fn random() -> Self {
        Dice { seeded: None }
    }

    pub(crate) fn seeded(seed: u64) -> Self {
        Dice {
            seeded: Some(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }

    pub(crate) fn u64(&self) -> u64 {
        match &self.seeded {
            // A poisoned lock only means another thread panicked mid-draw; the generator is fine.
            Some(rng) => rng.lock().unwrap_or_else(|e| e.into_inner()).random(),
            None => rand::rng().random(),
        }
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&self, percent: f64) -> bool {
        let unit = (self.u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < percent
    }
}
