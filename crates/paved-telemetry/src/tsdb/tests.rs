//! Store behaviour: appends and reads, the series cap, retention, and sampling a registry.

use std::time::Duration;

use super::*;
use crate::catalog::{API_REQUEST_DURATION, API_REQUESTS, TASK_MEMORY};
use crate::registry::Registry;

const STEP: i64 = 10_000;

fn store(max_series: usize) -> Store {
    Store::new(StoreConfig {
        max_series_per_metric: max_series,
        ..StoreConfig::default()
    })
    .expect("valid")
}

fn at(step: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + step * STEP)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// `(step, value)` pairs of `metric{tags}` between two steps, relative to `at(0)`.
fn read(store: &Store, metric: &str, tags: &[(&str, &str)], from: i64, to: i64) -> Vec<(i64, f64)> {
    let want = labels(tags);
    let selected = store.select(metric, |l| *l == want, at(from), at(to));
    selected
        .into_iter()
        .flat_map(|s| s.samples)
        .map(|(ms, v)| ((ms - at(0).as_millis()) / STEP, v))
        .collect()
}

#[test]
fn appended_samples_read_back_by_step() {
    let store = store(10);
    let series = store.series("m", &labels(&[("k", "v")])).expect("created");
    for i in 0..100 {
        // Anywhere inside a step lands on the step's start.
        store
            .append(
                series,
                at(i).saturating_add(Duration::from_millis(1234)),
                i as f64,
            )
            .expect("newer");
    }
    assert_eq!(
        read(&store, "m", &[("k", "v")], 10, 12),
        [(10, 10.0), (11, 11.0), (12, 12.0)]
    );
    assert_eq!(
        store.series("m", &labels(&[("k", "v")])),
        Ok(series),
        "found again, not created"
    );
    assert_eq!(
        store.append(series, at(50), 0.0),
        Err(AppendError::NotNewer { at: at(99) }),
        "one sample per step, in order"
    );
    assert_eq!(
        store.append(series, Timestamp::from_millis(-1), 0.0),
        Err(AppendError::BeforeEpoch {
            at: Timestamp::from_millis(-1)
        })
    );
}

#[test]
fn the_series_cap_drops_and_counts_never_blocks() {
    let store = store(3);
    for i in 0..10 {
        let result = store.series("capped", &labels(&[("i", &i.to_string())]));
        assert_eq!(result.is_ok(), i < 3, "series {i}");
        if let Err(e) = result {
            assert!(e.to_string().contains("max_series_per_metric"), "{e}");
        }
    }
    assert!(
        store.series("other", &Labels::new()).is_ok(),
        "the cap is per metric"
    );
    let stats = store.stats();
    let capped = stats.metrics.iter().find(|m| m.name == "capped").expect("listed");
    assert_eq!((capped.series, capped.dropped), (3, 7));
}

#[test]
fn invalid_names_are_refused() {
    let store = store(3);
    assert!(matches!(
        store.series("bad-name", &Labels::new()),
        Err(AppendError::InvalidName { .. })
    ));
    assert!(matches!(
        store.series("ok", &labels(&[("__x", "1")])),
        Err(AppendError::InvalidName { .. })
    ));
}

#[test]
fn retention_drops_old_blocks_and_empty_series() {
    let store = Store::new(StoreConfig {
        retention: Duration::from_secs(2 * 3600),
        ..StoreConfig::default()
    })
    .expect("valid");
    let old = store.series("m", &labels(&[("s", "old")])).expect("created");
    let unused = store
        .series("m", &labels(&[("s", "not yet appended")]))
        .expect("created");
    let live = store.series("m", &labels(&[("s", "live")])).expect("created");
    let hour = 360;
    for i in 0..hour {
        store.append(old, at(i), 1.0).expect("newer");
    }
    for i in 0..5 * hour {
        store.append(live, at(i), 2.0).expect("newer");
    }
    let now = at(5 * hour);
    assert_eq!(store.evict(now), 1, "the old series is gone");
    assert_eq!(store.append(old, now, 1.0), Err(AppendError::UnknownSeries));
    let kept = read(&store, "m", &[("s", "live")], 0, 5 * hour);
    let first = kept.first().map(|s| s.0).unwrap_or(-1);
    // Blocks are whole hours of the epoch: what is kept starts at a block boundary between two
    // and three hours back.
    assert!(
        (2 * hour..=3 * hour).contains(&(5 * hour - first)),
        "first kept step {first}"
    );
    assert_eq!(store.stats().series, 2);
    store
        .append(unused, now, 1.0)
        .expect("a series not yet appended to is kept");
    assert!(
        store.series("m", &labels(&[("s", "old")])).is_ok(),
        "it may come back"
    );
}

#[test]
fn sampling_stores_every_registry_series() {
    let store = store(100);
    let registry = Registry::new();
    let requests = registry
        .counter(&API_REQUESTS)
        .with(&[("method", "GetJob"), ("status", "ok")]);
    let latency = registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", "GetJob")]);
    registry.register_collector(|emit| {
        emit.gauge(
            &TASK_MEMORY,
            &[("tenant", "t"), ("job", "web"), ("task", "web-1"), ("node", "n")],
            512.0,
        );
    });
    requests.inc_by(5);
    latency.observe(0.5);
    latency.observe(2.0);
    let report = store.sample(&registry, at(1));
    // counter + gauge + 2 buckets + sum + count
    assert_eq!((report.appended, report.dropped, report.rejected), (6, 0, 0));
    assert!(
        store
            .sample(&registry, at(1).saturating_add(Duration::from_secs(3)))
            .already_sampled
    );
    requests.inc();
    store.sample(&registry, at(2));

    let tags = [("method", "GetJob"), ("status", "ok")];
    assert_eq!(
        read(&store, "paved_api_requests_total", &tags, 0, 2),
        [(0, 0.0), (1, 5.0), (2, 6.0)]
    );
    let memory = [("job", "web"), ("node", "n"), ("task", "web-1"), ("tenant", "t")];
    assert_eq!(
        read(&store, "paved_task_memory_bytes", &memory, 0, 2),
        [(1, 512.0), (2, 512.0)],
        "no zero for gauges"
    );
    let bucket = [("bucket", "0.5"), ("method", "GetJob")];
    assert_eq!(
        read(&store, "paved_api_request_duration_seconds", &bucket, 0, 2),
        [(0, 0.0), (1, 1.0), (2, 1.0)]
    );
    let count = read(
        &store,
        "paved_api_request_duration_seconds_count",
        &[("method", "GetJob")],
        0,
        2,
    );
    assert_eq!(count, [(0, 0.0), (1, 2.0), (2, 2.0)]);
    let sum = read(
        &store,
        "paved_api_request_duration_seconds_sum",
        &[("method", "GetJob")],
        2,
        2,
    );
    assert_eq!(sum, [(2, 2.5)]);
}

#[test]
fn collected_series_that_disappear_stop_getting_samples() {
    let store = store(100);
    let registry = Registry::new();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = running.clone();
    registry.register_collector(move |emit| {
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            emit.gauge(
                &TASK_MEMORY,
                &[("tenant", "t"), ("job", "j"), ("task", "x"), ("node", "n")],
                1.0,
            );
        }
    });
    store.sample(&registry, at(0));
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(store.sample(&registry, at(1)).appended, 0);
    let memory = [("job", "j"), ("node", "n"), ("task", "x"), ("tenant", "t")];
    assert_eq!(read(&store, "paved_task_memory_bytes", &memory, 0, 5), [(0, 1.0)]);
}

#[test]
fn sampling_past_the_cap_counts_drops() {
    let store = store(2);
    let registry = Registry::new();
    let requests = registry.counter(&API_REQUESTS);
    for method in ["a", "b", "c", "d"] {
        requests.with(&[("method", method), ("status", "ok")]).inc();
    }
    let report = store.sample(&registry, at(0));
    assert_eq!((report.appended, report.dropped), (2, 2));
    let report = store.sample(&registry, at(1));
    assert_eq!((report.appended, report.dropped), (2, 2));
    let stats = store.stats();
    assert_eq!(stats.metrics[0].dropped, 4);
}

#[test]
fn the_store_reports_itself() {
    let store = store(100);
    let registry = Registry::new();
    registry.register_collector(store.collector());
    registry
        .counter(&API_REQUESTS)
        .with(&[("method", "a"), ("status", "ok")])
        .inc();
    store.sample(&registry, at(0));
    store.sample(&registry, at(1));
    let text = crate::prometheus::render(&registry);
    assert!(
        text.contains("paved_tsdb_series{metric=\"paved_api_requests_total\"} 1"),
        "{text}"
    );
    assert!(text.contains("paved_tsdb_samples_total "), "{text}");
    assert!(text.contains("paved_tsdb_memory_bytes "), "{text}");
}

#[test]
fn queries_and_appends_run_side_by_side() {
    let store = store(1000);
    let refs: Vec<SeriesRef> = (0..50)
        .map(|i| {
            store
                .series("m", &labels(&[("i", &i.to_string())]))
                .expect("created")
        })
        .collect();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for step in 0..2000 {
                for r in &refs {
                    store.append(*r, at(step), step as f64).expect("newer");
                }
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let selected = store.select("m", |_| true, at(0), at(2000));
        for s in &selected {
            assert!(s.samples.windows(2).all(|w| w[0].0 < w[1].0));
        }
        reads += 1;
    }
    writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    assert!(reads > 0);
    assert_eq!(store.stats().samples, 50 * 2000);
}
