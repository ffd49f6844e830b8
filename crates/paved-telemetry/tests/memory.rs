//! Bytes per sample the store holds, measured on the shared benchmark workload: 1000 series
//! (250 tasks × 4 metrics) over 6 hours at the default 10 s step. Sizes are deterministic, so
//! this asserts the goal of at most 2 bytes per sample; timings are left to the benches.

#[path = "../benches/support/workload.rs"]
mod workload;

use paved_telemetry::Timestamp;
use paved_telemetry::tsdb::{Store, StoreConfig};

const T0: i64 = 1_700_000_000_000;

#[test]
fn a_realistic_mix_holds_under_two_bytes_per_sample() {
    let steps = 6 * 360;
    let (mut tasks, mut rng) = workload::tasks(250, 20, 42);
    let store = Store::new(StoreConfig::default()).expect("valid");
    let refs: Vec<[_; 4]> = tasks
        .iter()
        .map(|t| workload::METRICS.map(|m| store.series(m, &t.labels).expect("created")))
        .collect();
    for step in 0..steps {
        let at = Timestamp::from_millis(T0 + step * 10_000);
        for (task, series) in tasks.iter_mut().zip(&refs) {
            for (r, v) in series.iter().zip(task.step(&mut rng)) {
                store.append(*r, at, v).expect("newer");
            }
        }
    }
    let stats = store.stats();
    assert_eq!(stats.samples, 1000 * steps as u64);
    let per_sample = stats.memory_bytes as f64 / stats.samples as f64;
    eprintln!(
        "{} series, {} samples, {} bytes held: {per_sample:.3} bytes per sample",
        stats.series, stats.samples, stats.memory_bytes
    );
    for metric in workload::METRICS {
        eprintln!(
            "  {metric}: {:.3} bytes per sample",
            bytes_per_sample_of(metric, &tasks)
        );
    }
    assert!(
        per_sample <= 2.0,
        "{per_sample:.3} bytes per sample, the goal is at most 2"
    );
}

/// The same workload for one metric alone, to show where the bytes go.
fn bytes_per_sample_of(metric: &str, tasks: &[workload::Task]) -> f64 {
    let index = workload::METRICS.iter().position(|m| *m == metric).unwrap_or(0);
    let (mut fresh, mut rng) = workload::tasks(tasks.len(), 20, 42);
    let store = Store::new(StoreConfig::default()).expect("valid");
    let refs: Vec<_> = fresh
        .iter()
        .map(|t| store.series(metric, &t.labels).expect("created"))
        .collect();
    for step in 0..6 * 360 {
        let at = Timestamp::from_millis(T0 + step * 10_000);
        for (task, r) in fresh.iter_mut().zip(&refs) {
            store.append(*r, at, task.step(&mut rng)[index]).expect("newer");
        }
    }
    let stats = store.stats();
    stats.memory_bytes as f64 / stats.samples as f64
}
