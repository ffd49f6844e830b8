//! What the proxy knows of one endpoint beyond the snapshot: its latency (peak EWMA), requests
//! in flight, and passive health (consecutive failures, ejection). Kept across snapshots by
//! (job, address), so a routing change forgets nothing.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::uri::Authority;

use crate::config::EjectionConfig;

/// How fast the latency estimate forgets: the weight of a sample halves in about 7 s (like
/// linkerd's peak-EWMA default of a 10 s decay).
const DECAY_NS: f64 = 10e9;

/// One endpoint's live state. All fields are atomics: readers never wait, and the races between
/// two updates only blur an estimate.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) task: String,
    pub(crate) addr: SocketAddr,
    /// `ip:port`, ready to put in an upstream URI without formatting per request.
    pub(crate) authority: Authority,
    /// Hash of the task id, for sticky (rendezvous) choice.
    pub(crate) task_hash: u64,
    in_flight: AtomicU32,
    /// Peak-EWMA latency in nanoseconds, as f64 bits; 0 until the first response.
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since [`epoch`].
    updated_ns: AtomicU64,
    failures: AtomicU32,
    /// Ejections in a row (reset by a success), for the exponential backoff.
    ejections: AtomicU32,
    /// Wall-clock ms until which the endpoint gets no requests; 0: never ejected since success.
    ejected_until_ms: AtomicU64,
}

/// What a failure did to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureOutcome {
    Counted,
    Ejected,
}

impl EndpointState {
    pub(crate) fn new(task: &str, addr: SocketAddr) -> Self {
        let authority = Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("0.0.0.0:0"));
        EndpointState {
            task: task.to_owned(),
            addr,
            authority,
            task_hash: crate::balance::hash_str(task),
            in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(0),
            updated_ns: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    pub(crate) fn start_request(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub(crate) fn end_request(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// The balancing cost: peak-EWMA latency times (in flight + 1); `None` before any sample.
    pub(crate) fn cost(&self) -> Option<f64> {
        let ewma = f64::from_bits(self.ewma_ns.load(Relaxed));
        (ewma > 0.0).then(|| ewma * f64::from(self.in_flight() + 1))
    }

    /// Folds in a response time. A sample above the estimate replaces it (the "peak"), so a
    /// slowing endpoint is avoided at once; lower samples pull it down with a time-based decay.
    pub(crate) fn observe_latency(&self, rtt: Duration) {
        let now = elapsed_ns();
        let rtt = (rtt.as_nanos() as f64).max(1.0);
        let prev = f64::from_bits(self.ewma_ns.load(Relaxed));
        let last = self.updated_ns.swap(now, Relaxed);
        let next = if prev == 0.0 || rtt > prev {
            rtt
        } else {
            let w = (-(now.saturating_sub(last) as f64) / DECAY_NS).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Relaxed);
    }

    /// Whether the endpoint takes requests at `now_ms` (reads the clock only after an ejection).
    pub(crate) fn is_admitted(&self, now_ms: impl FnOnce() -> u64) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until == 0 || now_ms() >= until
    }

    pub(crate) fn record_success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.ejected_until_ms.load(Relaxed) != 0 {
            self.ejected_until_ms.store(0, Relaxed);
            self.ejections.store(0, Relaxed);
        }
    }

    /// Counts a failure; at the threshold the endpoint is ejected, unless `may_eject` says it is
    /// the last admitted endpoint of its job: ejecting that one would turn a partial outage
    /// into a total one, so the proxy fails open and keeps sending to it.
    pub(crate) fn record_failure(
        &self,
        now_ms: u64,
        config: &EjectionConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> FailureOutcome {
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < config.consecutive_failures || !may_eject() {
            return FailureOutcome::Counted;
        }
        self.failures.store(0, Relaxed);
        let n = self.ejections.fetch_add(1, Relaxed) + 1;
        let backoff = u64::try_from(config.backoff(n).as_millis()).unwrap_or(u64::MAX);
        self.ejected_until_ms
            .store(now_ms.saturating_add(backoff).max(1), Relaxed);
        FailureOutcome::Ejected
    }
}

/// Nanoseconds since the first call: a monotonic time base that fits in an atomic.
fn elapsed_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> EndpointState {
        EndpointState::new("t1", "127.0.0.1:80".parse().unwrap())
    }

    #[test]
    fn ejects_after_the_threshold_and_readmits_after_backoff() {
        let cfg = EjectionConfig::default();
        let e = ep();
        for _ in 0..4 {
            assert_eq!(e.record_failure(1_000, &cfg, || true), FailureOutcome::Counted);
        }
        assert_eq!(e.record_failure(1_000, &cfg, || true), FailureOutcome::Ejected);
        assert!(!e.is_admitted(|| 10_999));
        assert!(e.is_admitted(|| 11_000));
        // Failing again right after re-admission doubles the backoff.
        for _ in 0..5 {
            e.record_failure(11_000, &cfg, || true);
        }
        assert!(!e.is_admitted(|| 30_999));
        assert!(e.is_admitted(|| 31_000));
        e.record_success();
        assert!(e.is_admitted(|| 0));
    }

    #[test]
    fn the_last_endpoint_is_never_ejected() {
        let cfg = EjectionConfig::default();
        let e = ep();
        for _ in 0..20 {
            assert_eq!(e.record_failure(1_000, &cfg, || false), FailureOutcome::Counted);
        }
        assert!(e.is_admitted(|| 1_000));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let cfg = EjectionConfig::default();
        let e = ep();
        for _ in 0..4 {
            e.record_failure(0, &cfg, || true);
        }
        e.record_success();
        for _ in 0..4 {
            assert_eq!(e.record_failure(0, &cfg, || true), FailureOutcome::Counted);
        }
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let e = ep();
        assert_eq!(e.cost(), None);
        e.observe_latency(Duration::from_millis(1));
        assert_eq!(e.cost(), Some(1e6));
        e.observe_latency(Duration::from_millis(5));
        assert_eq!(e.cost(), Some(5e6));
        e.observe_latency(Duration::from_millis(1));
        let cost = e.cost().unwrap();
        assert!((1e6..=5e6).contains(&cost), "{cost}");
        e.start_request();
        assert_eq!(e.cost(), Some(cost * 2.0));
        e.end_request();
    }
}
