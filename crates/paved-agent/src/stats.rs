//! Resource usage of the tasks this agent runs, sampled from their cgroups every few seconds and
//! kept in memory: it is telemetry, not state, so it never goes through the store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use paved_runtime::{Runtime, TaskRecord, TaskStats};
use paved_telemetry::Emitter;
use paved_telemetry::catalog::emit_task_usage;

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

impl Sample {
    /// The sample as the API shows it.
    pub fn to_message(&self) -> paved_api::v1::TaskStats {
        paved_api::v1::TaskStats {
            cpu_cores: self.cpu_cores,
            cpu_usage_ns: self.stats.cpu_usage_ns,
            memory_bytes: self.stats.memory_bytes,
            memory_peak_bytes: self.stats.memory_peak_bytes,
            pids: self.stats.pids,
            sampled_at_ms: self.sampled_at_ms,
        }
    }
}

/// Who a task belongs to, as its metrics are tagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskTags {
    pub(crate) tenant: String,
    /// The job's name.
    pub(crate) job: String,
}

/// The tasks being waited on and their latest samples.
#[derive(Default)]
pub(crate) struct StatsTable {
    running: HashMap<String, (TaskRecord, TaskTags)>,
    samples: HashMap<String, (Sample, Instant)>,
}

impl StatsTable {
    pub(crate) fn track(&mut self, record: &TaskRecord, tags: TaskTags) {
        self.running
            .insert(record.task_id.clone(), (record.clone(), tags));
    }

    pub(crate) fn untrack(&mut self, task_id: &str) {
        self.running.remove(task_id);
        self.samples.remove(task_id);
    }

    pub(crate) fn get(&self, task_id: &str) -> Option<Sample> {
        self.samples.get(task_id).map(|(sample, _)| *sample)
    }

    /// Every sampled task's latest sample.
    pub(crate) fn samples(&self) -> Vec<(String, Sample)> {
        self.samples
            .iter()
            .map(|(task_id, (sample, _))| (task_id.clone(), *sample))
            .collect()
    }

    pub(crate) fn records(&self) -> Vec<TaskRecord> {
        self.running.values().map(|(record, _)| record.clone()).collect()
    }

    /// Each sampled task's latest usage as `paved_task_*` series of `node`: what the
    /// registry's collector emits at every gather, so a task that ended is gone from the next.
    pub(crate) fn emit(&self, node: &str, out: &mut Emitter<'_>) {
        for (task_id, (_, tags)) in &self.running {
            let Some((sample, _)) = self.samples.get(task_id) else {
                continue;
            };
            let labels = [
                ("tenant", tags.tenant.as_str()),
                ("job", tags.job.as_str()),
                ("task", task_id.as_str()),
                ("node", node),
            ];
            let stats = &sample.stats;
            emit_task_usage(
                out,
                &labels,
                stats.cpu_usage_ns,
                stats.memory_bytes,
                stats.memory_peak_bytes,
                stats.pids,
            );
        }
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

    fn tags() -> TaskTags {
        TaskTags {
            tenant: "acme".into(),
            job: "web".into(),
        }
    }

    #[test]
    fn sampled_tasks_become_tagged_series_and_leave_with_their_task() {
        let registry = paved_telemetry::Registry::new();
        let table = std::sync::Arc::new(std::sync::Mutex::new(StatsTable::default()));
        let shared = table.clone();
        registry.register_collector(move |out| shared.lock().unwrap().emit("n1", out));
        let stats = TaskStats {
            cpu_usage_ns: 2_500_000_000,
            memory_bytes: 4096,
            memory_peak_bytes: 8192,
            pids: 3,
        };
        table.lock().unwrap().track(&record("t1"), tags());
        table.lock().unwrap().track(&record("t2"), tags());
        table.lock().unwrap().record("t1", stats, Instant::now(), 0);
        let text = paved_telemetry::prometheus::render(&registry);
        let tagged = r#"{job="web",node="n1",task="t1",tenant="acme"}"#;
        for line in [
            format!("paved_task_cpu_seconds_total{tagged} 2.5"),
            format!("paved_task_memory_bytes{tagged} 4096"),
            format!("paved_task_memory_peak_bytes{tagged} 8192"),
            format!("paved_task_pids{tagged} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("t2"),
            "a task not sampled yet has no series:\n{text}"
        );
        table.lock().unwrap().untrack("t1");
        let text = paved_telemetry::prometheus::render(&registry);
        assert!(!text.contains("t1"), "an ended task's series are gone:\n{text}");
    }

    #[test]
    fn cpu_rate_comes_from_consecutive_samples() {
        let mut table = StatsTable::default();
        table.track(&record("t"), tags());
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
