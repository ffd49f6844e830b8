//! The control plane's view of time and chance, injectable so tests can fix both.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Makes ids: jobs get 12 hex digits (48 bits: collisions stay rare at millions of jobs, and the
/// create path retries the rare one), tasks `<job-id>-<4 hex digits>`.
#[derive(Clone)]
pub struct Ids {
    rng: Arc<Mutex<StdRng>>,
}

impl Ids {
    pub fn from_entropy() -> Self {
        Self::seeded(rand::rng().random())
    }

    pub fn seeded(seed: u64) -> Self {
        Ids {
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }

    pub fn job_id(&self) -> String {
        format!("{:012x}", self.next() >> 16)
    }

    pub fn task_id(&self, job_id: &str) -> String {
        // 24 bits: a 10,000-task job draws a taken id about three times (the creator then
        // draws again), rather than a thousand times with 16.
        format!("{job_id}-{:06x}", self.next() & 0xff_ffff)
    }

    /// A secret for an API token: 32 random bytes, hex.
    pub fn secret(&self) -> String {
        let mut rng = rand::rng();
        (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
    }

    fn next(&self) -> u64 {
        // A poisoned lock only means another thread panicked mid-draw; the generator is fine.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.random()
    }
}
