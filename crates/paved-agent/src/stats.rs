//! Resource usage of the tasks this agent runs, sampled from their cgroups every few seconds and
//! kept in memory: it is telemetry, not state, so it never goes through the store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use paved_runtime::{Runtime, TaskRecord, TaskStats};

/// How often running tasks are sampled.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// One task's latest sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub stats: TaskStats,
    /// Cores used on average since the previous sample (0 for the first one).
    pub cpu_cores: f64,
    pub sampled_at_ms: u64,
}

/// The tasks being waited on and their latest samples.
#[derive(Default)]
pub(crate) struct StatsTable {
    running: HashMap<String, TaskRecord>,
    samples: HashMap<String, (Sample, Instant)>,
}

impl StatsTable {
    pub(crate) fn track(&mut self, record: &TaskRecord) {
        self.running.insert(record.task_id.clone(), record.clone());
    }

    pub(crate) fn untrack(&mut self, task_id: &str) {
        self.running.remove(task_id);
        self.samples.remove(task_id);
    }

    pub(crate) fn get(&self, task_id: &str) -> Option<Sample> {
        self.samples.get(task_id).map(|(sample, _)| *sample)
    }

    pub(crate) fn records(&self) -> Vec<TaskRecord> {
        self.running.values().cloned().collect()
    }

    /// Stores a new reading of `task_id`, deriving its cpu rate from the previous one.
    pub(crate) fn record(&mut self, task_id: &str, stats: TaskStats, at: Instant, now_ms: u64) {
        if !self.running.contains_key(task_id) {
            return; // ended while it was read
        }
        let cpu_cores = match self.samples.get(task_id) {
            Some((previous, then)) if at > *then => {
                let used = stats.cpu_usage_ns.saturating_sub(previous.stats.cpu_usage_ns);
                used as f64 / (at - *then).as_nanos() as f64
            }
            _ => 0.0,
        };
        let sample = Sample {
            stats,
            cpu_cores,
            sampled_at_ms: now_ms,
        };
        self.samples.insert(task_id.to_owned(), (sample, at));
    }
}

/// Reads every record's stats; those a backend cannot measure are left out.
pub(crate) async fn read_all(runtime: &dyn Runtime, records: Vec<TaskRecord>) -> Vec<(String, TaskStats)> {
    let mut read = Vec::with_capacity(records.len());
    for record in records {
        if let Some(stats) = runtime.stats(&record).await {
            read.push((record.task_id, stats));
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            dir: "/x".into(),
            pid: 2,
            shim_pid: 3,
            shim_start_time: 0,
            runtime: "sandbox".into(),
        }
    }

    #[test]
    fn cpu_rate_comes_from_consecutive_samples() {
        let mut table = StatsTable::default();
        table.track(&record("t"));
        let start = Instant::now();
        let usage = |ns| TaskStats {
            cpu_usage_ns: ns,
            ..TaskStats::default()
        };
        table.record("t", usage(1_000_000_000), start, 0);
        assert_eq!(table.get("t").unwrap().cpu_cores, 0.0);
        table.record("t", usage(1_500_000_000), start + Duration::from_secs(2), 2000);
        assert!((table.get("t").unwrap().cpu_cores - 0.25).abs() < 1e-9);
        table.untrack("t");
        assert!(table.get("t").is_none());
        table.record("t", usage(5), start, 0);
        assert!(table.get("t").is_none(), "an untracked task is not sampled");
    }
}
