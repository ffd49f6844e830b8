//! Registry behaviour: handles, tags, removal, collectors and gathering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::catalog::{API_REQUEST_DURATION, API_REQUESTS, TASK_CPU, TASK_MEMORY, TSDB_SAMPLES};

fn assert_send_sync<T: Send + Sync + Clone>() {}

#[test]
fn handles_are_send_sync_and_cheap_to_clone() {
    assert_send_sync::<Registry>();
    assert_send_sync::<Family<Counter>>();
    assert_send_sync::<Counter>();
    assert_send_sync::<Gauge>();
    assert_send_sync::<Histogram>();
}

#[test]
fn cached_handles_and_fresh_lookups_share_one_series() {
    let registry = Registry::new();
    let requests = registry.counter(&API_REQUESTS);
    let ok = requests.with(&[("method", "CreateJob"), ("status", "ok")]);
    ok.inc();
    ok.inc_by(2);
    // Same tags in another order, through another family handle and a clone of the registry.
    registry
        .clone()
        .counter(&API_REQUESTS)
        .with(&[("status", "ok"), ("method", "CreateJob")])
        .inc();
    assert_eq!(ok.get(), 4.0);
    assert_eq!(requests.len(), 1);
}

#[test]
fn counters_take_fractions_and_refuse_to_go_down() {
    let registry = Registry::new();
    let cpu =
        registry
            .counter(&TASK_CPU)
            .with(&[("tenant", "t"), ("job", "j"), ("task", "x"), ("node", "n")]);
    cpu.add(0.25);
    cpu.add(2.0);
    cpu.add(-5.0);
    cpu.add(f64::NAN);
    assert_eq!(cpu.get(), 2.25);
}

#[test]
fn gauges_move_both_ways() {
    let registry = Registry::new();
    let g = registry
        .gauge(&TASK_MEMORY)
        .with(&[("tenant", "t"), ("job", "j"), ("task", "x"), ("node", "n")]);
    g.set(10.0);
    g.inc();
    g.sub(4.0);
    g.dec();
    assert_eq!(g.get(), 6.0);
}

#[test]
fn wrong_tags_are_reported() {
    let registry = Registry::new();
    let requests = registry.counter(&API_REQUESTS);
    for bad in [
        &[("method", "x")][..],
        &[("method", "x"), ("status", "ok"), ("extra", "1")],
        &[("method", "x"), ("code", "ok")],
    ] {
        let err = requests.try_with(bad).map(|_| ()).unwrap_err();
        assert_eq!(err.metric, "paved_api_requests_total");
        assert!(
            err.to_string().contains("pass exactly the declared tags"),
            "{err}"
        );
    }
    assert!(requests.is_empty());
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "takes the tags")]
fn wrong_tags_panic_in_debug_builds() {
    Registry::new().counter(&API_REQUESTS).with(&[("method", "x")]);
}

#[test]
fn removed_series_leave_the_gather() {
    let registry = Registry::new();
    let requests = registry.counter(&API_REQUESTS);
    let kept = requests.with(&[("method", "A"), ("status", "ok")]);
    let gone = requests.with(&[("method", "B"), ("status", "ok")]);
    kept.inc();
    gone.inc();
    assert!(requests.remove(&[("method", "B"), ("status", "ok")]));
    assert!(!requests.remove(&[("method", "B"), ("status", "ok")]));
    gone.inc(); // records nowhere
    let gathered = registry.gather();
    assert_eq!(gathered.len(), 1);
    assert_eq!(gathered[0].series.len(), 1);
    assert_eq!(gathered[0].series[0].labels.get("method"), Some("A"));
    requests.retain(|_| false);
    assert!(registry.gather().is_empty());
}

#[test]
fn gather_merges_collectors_sorted_and_recorded_first() {
    let registry = Registry::new();
    registry.counter(&TSDB_SAMPLES).with(&[]).inc_by(7);
    let memory = registry.gauge(&TASK_MEMORY);
    memory
        .with(&[("tenant", "t"), ("job", "web"), ("task", "web-1"), ("node", "n")])
        .set(1.0);
    let id = registry.register_collector(|emit| {
        for task in ["web-2", "web-1"] {
            emit.gauge(
                &TASK_MEMORY,
                &[("tenant", "t"), ("job", "web"), ("task", task), ("node", "n")],
                99.0,
            );
        }
    });
    let gathered = registry.gather();
    let names: Vec<&str> = gathered.iter().map(|f| f.def.name).collect();
    assert_eq!(names, ["paved_task_memory_bytes", "paved_tsdb_samples_total"]);
    let series = &gathered[0].series;
    let summary: Vec<(&str, &Value, Source)> = series
        .iter()
        .map(|s| (s.labels.get("task").unwrap_or(""), &s.value, s.source))
        .collect();
    assert_eq!(
        summary,
        [
            ("web-1", &Value::Gauge(1.0), Source::Recorded),
            ("web-2", &Value::Gauge(99.0), Source::Collected)
        ]
    );
    assert!(registry.unregister_collector(id));
    assert!(!registry.unregister_collector(id));
    assert_eq!(registry.gather()[0].series.len(), 1);
}

#[test]
fn collectors_run_at_each_gather() {
    let registry = Registry::new();
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    registry.register_collector(move |emit| {
        if flag.load(Ordering::Relaxed) {
            emit.counter(
                &TASK_CPU,
                &[("tenant", "t"), ("job", "j"), ("task", "x"), ("node", "n")],
                1.5,
            );
        }
    });
    assert_eq!(registry.gather().len(), 1);
    alive.store(false, Ordering::Relaxed);
    assert!(registry.gather().is_empty(), "the task ended: its series is gone");
}

#[test]
fn histograms_gather_their_buckets() {
    let registry = Registry::new();
    let h = registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", "GetJob")]);
    h.observe(0.001);
    h.observe_duration(Duration::from_millis(1));
    h.observe(2.0);
    let gathered = registry.gather();
    let Value::Histogram(value) = &gathered[0].series[0].value else {
        panic!("not a histogram")
    };
    assert_eq!(value.count, 3);
    assert_eq!(value.buckets.len(), 2);
    assert_eq!(value.buckets[0].count, 2);
    assert!((value.sum - 2.002).abs() < 1e-12);
}

#[test]
fn concurrent_increments_are_all_counted() {
    let registry = Registry::new();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                let c = registry
                    .counter(&API_REQUESTS)
                    .with(&[("method", "m"), ("status", "ok")]);
                for _ in 0..10_000 {
                    c.inc();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|_| panic!("thread panicked"));
    }
    assert_eq!(
        registry
            .counter(&API_REQUESTS)
            .with(&[("method", "m"), ("status", "ok")])
            .get(),
        40_000.0
    );
}
