//! Benchmarks of the issue's goals, on the workload in `support/workload.rs`:
//! - ingest: samples appended per second on one thread, series created beforehand (goal ≥ 2 M/s);
//! - bytes per sample held after 1000 series × 6 h (printed; `tests/memory.rs` asserts ≤ 2);
//! - a `sum by` over 1 h of 1000 series (goal < 10 ms);
//!
//! and, for scale, the registry's hot path and one sampling pass. Besides criterion's means, it
//! prints the fastest of 30 runs of each query, the CPU time per query and per appended sample:
//! on a shared machine these move less with the neighbours' load.
//!
//! `CARGO_TARGET_DIR=… cargo bench -p paved-telemetry`

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use paved_telemetry::catalog::{API_REQUEST_DURATION, API_REQUESTS, TASK_MEMORY};
use paved_telemetry::query::Query;
use paved_telemetry::tsdb::{SeriesRef, Store, StoreConfig};
use paved_telemetry::{Registry, Timestamp};

#[path = "support/workload.rs"]
mod workload;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 10_000;
const HOUR: i64 = 360;

fn at(step: i64) -> Timestamp {
    Timestamp::from_millis(T0 + step * STEP)
}

/// A store with `tasks` × 4 series created, and `steps` steps of their values.
fn prepared(tasks: usize, steps: i64) -> (Store, Vec<SeriesRef>, Vec<f64>) {
    let (mut workload, mut rng) = workload::tasks(tasks, 20, 7);
    let store = Store::new(StoreConfig::default()).expect("valid");
    let refs = workload
        .iter()
        .flat_map(|t| workload::METRICS.map(|m| store.series(m, &t.labels).expect("created")))
        .collect();
    let values = (0..steps)
        .flat_map(|_| {
            workload
                .iter_mut()
                .flat_map(|t| t.step(&mut rng))
                .collect::<Vec<_>>()
        })
        .collect();
    (store, refs, values)
}

fn fill(store: &Store, refs: &[SeriesRef], values: &[f64], first_step: i64) {
    for (i, chunk) in values.chunks(refs.len()).enumerate() {
        let at = at(first_step + i as i64);
        for (r, v) in refs.iter().zip(chunk) {
            store.append(*r, at, *v).expect("newer");
        }
    }
}

fn ingest(c: &mut Criterion) {
    let (_, _, values) = prepared(250, HOUR);
    let mut group = c.benchmark_group("ingest");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(values.len() as u64));
    let (store, refs, _) = prepared(250, 0);
    if let Some(cpu) = cpu_time(|| fill(&store, &refs, &values, 0)) {
        println!(
            "cpu time per sample appended: {:.1} ns",
            cpu.as_nanos() as f64 / values.len() as f64
        );
    }
    group.bench_function("append 1000 series x 1h", |b| {
        b.iter_batched(
            || {
                let (store, refs, _) = prepared(250, 0);
                (store, refs)
            },
            |(store, refs)| fill(&store, &refs, &values, 0),
            BatchSize::LargeInput,
        )
    });

    let registry = Registry::new();
    registry.register_collector(|emit| {
        for i in 0..1000 {
            let task = format!("task-{i}");
            let tags = [
                ("tenant", "t"),
                ("job", "web"),
                ("task", task.as_str()),
                ("node", "n"),
            ];
            emit.gauge(&TASK_MEMORY, &tags, (i * 4096) as f64);
        }
    });
    let store = Store::new(StoreConfig::default()).expect("valid");
    let step = Cell::new(0);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("sample pass of 1000 collected series", |b| {
        b.iter(|| {
            step.set(step.get() + 1);
            black_box(store.sample(&registry, at(step.get())))
        })
    });
    group.finish();
}

fn memory(_: &mut Criterion) {
    let (store, refs, values) = prepared(250, 6 * HOUR);
    fill(&store, &refs, &values, 0);
    let stats = store.stats();
    println!(
        "memory: {} series x 6h at 10s = {} samples in {} bytes: {:.3} bytes per sample",
        stats.series,
        stats.samples,
        stats.memory_bytes,
        stats.memory_bytes as f64 / stats.samples as f64
    );
}

fn query(c: &mut Criterion) {
    // 1000 tasks, each with 4 series, over 6 h; the queries read the last hour of 1000 of them.
    let (store, refs, values) = prepared(1000, 6 * HOUR);
    fill(&store, &refs, &values, 0);
    let end = at(6 * HOUR - 1);
    let start = end.saturating_sub(Duration::from_secs(3600));
    let mut group = c.benchmark_group("query");
    group.sample_size(20);
    for expr in [
        "sum by (job) (paved_task_memory_bytes)",
        "sum by (job) (rate(paved_task_cpu_seconds_total))",
        r#"max by (node) (paved_task_pids{tenant=~"tenant-[0-3]"})"#,
    ] {
        let q = Query::new(expr, start, end, Duration::from_secs(10));
        let rows = store.query(&q).expect("runs");
        assert!(!rows.is_empty());
        let fastest = (0..30)
            .map(|_| {
                let started = std::time::Instant::now();
                black_box(store.query(&q).expect("runs"));
                started.elapsed()
            })
            .min()
            .unwrap_or_default();
        let cpu = cpu_time(|| {
            for _ in 0..30 {
                black_box(store.query(&q).expect("runs"));
            }
        });
        println!(
            "fastest of 30: {:.2} ms, cpu time {:.2} ms per query: {expr}",
            fastest.as_secs_f64() * 1000.0,
            cpu.unwrap_or_default().as_secs_f64() * 1000.0 / 30.0
        );
        group.bench_function(format!("{expr} over 1h of 1000 series"), |b| {
            b.iter(|| black_box(store.query(&q).expect("runs")))
        });
    }
    group.finish();
}

/// The CPU time this thread spent in `f` (Linux: `/proc/thread-self/schedstat`), which a busy
/// shared machine inflates far less than wall time.
fn cpu_time(f: impl FnOnce()) -> Option<Duration> {
    let read = || -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok()
    };
    let before = read()?;
    f();
    Some(Duration::from_nanos(read()?.saturating_sub(before)))
}

fn registry(c: &mut Criterion) {
    let registry = Registry::new();
    let requests = registry.counter(&API_REQUESTS);
    let cached = requests.with(&[("method", "GetJob"), ("status", "ok")]);
    let latency = registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", "GetJob")]);
    let mut group = c.benchmark_group("registry");
    group.bench_function("counter inc, cached handle", |b| b.iter(|| cached.inc()));
    group.bench_function("counter inc, tags looked up", |b| {
        b.iter(|| {
            requests
                .with(black_box(&[("method", "GetJob"), ("status", "ok")]))
                .inc()
        })
    });
    let mut x = 0.0001;
    group.bench_function("histogram observe", |b| {
        b.iter(|| {
            x = if x > 10.0 { 0.0001 } else { x * 1.01 };
            latency.observe(black_box(x))
        })
    });
    group.finish();
}

criterion_group!(benches, memory, ingest, query, registry);
criterion_main!(benches);
