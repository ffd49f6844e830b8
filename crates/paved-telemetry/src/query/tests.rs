//! Data-driven query tests over known series: `check(query, expected)` renders the result one
//! series per line as `name{tags} step:value …`, steps counted from the fixture's first.

use std::time::Duration;

use super::*;
use crate::catalog::API_REQUEST_DURATION;
use crate::registry::Registry;
use crate::tsdb::StoreConfig;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 10_000;

fn at(step: i64) -> Timestamp {
    Timestamp::from_millis(T0 + step * STEP)
}

/// Steps 0..=12 of:
/// - memory of web-1 (100 + 10·step), web-2 (200), db-1 (1000, ended after step 5);
/// - cpu counters: web-1 rises 5 per step, web-2 rises 10 per step and resets to 5 at step 4;
/// - a latency histogram of GetJob: per step 9 observations of 1 ms and 1 of 100 ms.
fn fixture() -> Store {
    let store = Store::new(StoreConfig::default()).expect("valid");
    let task = |job: &str, task: &str, node: &str| {
        Labels::from_pairs([("tenant", "acme"), ("job", job), ("task", task), ("node", node)])
    };
    let put = |metric: &str, labels: &Labels, values: &[(i64, f64)]| {
        let series = store.series(metric, labels).expect("created");
        for (step, v) in values {
            store.append(series, at(*step), *v).expect("newer");
        }
    };
    let steps = |f: &dyn Fn(i64) -> f64| (0..=12).map(|s| (s, f(s))).collect::<Vec<_>>();
    put(
        "paved_task_memory_bytes",
        &task("web", "web-1", "n1"),
        &steps(&|s| 100.0 + 10.0 * s as f64),
    );
    put(
        "paved_task_memory_bytes",
        &task("web", "web-2", "n2"),
        &steps(&|_| 200.0),
    );
    put(
        "paved_task_memory_bytes",
        &task("db", "db-1", "n1"),
        &(0..=5).map(|s| (s, 1000.0)).collect::<Vec<_>>(),
    );
    put(
        "paved_task_cpu_seconds_total",
        &task("web", "web-1", "n1"),
        &steps(&|s| 5.0 * s as f64),
    );
    let reset = |s: i64| {
        if s < 4 {
            10.0 * s as f64
        } else {
            5.0 + 10.0 * (s - 4) as f64
        }
    };
    put(
        "paved_task_cpu_seconds_total",
        &task("web", "web-2", "n2"),
        &steps(&reset),
    );

    let registry = Registry::new();
    let latency = registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", "GetJob")]);
    for step in 0..=12 {
        for _ in 0..9 {
            latency.observe(0.001);
        }
        latency.observe(0.1);
        store.sample(&registry, at(step));
    }
    store
}

fn render(series: &[Series]) -> String {
    series
        .iter()
        .map(|s| {
            let points: Vec<String> = s
                .points
                .iter()
                .map(|(t, v)| format!("{}:{}", (t.as_millis() - T0) / STEP, round(*v)))
                .collect();
            let series = format!("{}{}", s.name.as_deref().unwrap_or(""), s.labels);
            let series = if series.is_empty() {
                "{}".to_owned()
            } else {
                series
            };
            format!("{series} {}", points.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Six significant digits: enough to compare quantiles without pinning float noise.
fn round(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(5 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Runs `query` over steps `from..=to` every `every` steps.
fn check_range(store: &Store, query: &str, from: i64, to: i64, every: i64, expected: &str) {
    let q = Query::new(
        query,
        at(from),
        at(to),
        Duration::from_millis((every * STEP) as u64),
    );
    let got = store
        .query(&q)
        .map(|s| render(&s))
        .unwrap_or_else(|e| format!("error: {e}"));
    assert_eq!(got, expected.trim(), "query: {query}");
}

#[test]
fn selectors() {
    let store = fixture();
    let check = |query, expected| check_range(&store, query, 0, 3, 1, expected);
    check(
        r#"paved_task_memory_bytes{task="web-1"}"#,
        r#"paved_task_memory_bytes{job="web", node="n1", task="web-1", tenant="acme"} 0:100 1:110 2:120 3:130"#,
    );
    check(
        r#"paved_task_memory_bytes{job!="web"}"#,
        r#"paved_task_memory_bytes{job="db", node="n1", task="db-1", tenant="acme"} 0:1000 1:1000 2:1000 3:1000"#,
    );
    check(
        r#"paved_task_memory_bytes{task=~"web-.*", node="n2"}"#,
        r#"paved_task_memory_bytes{job="web", node="n2", task="web-2", tenant="acme"} 0:200 1:200 2:200 3:200"#,
    );
    check(
        r#"paved_task_memory_bytes{task!~"web-1|db-1", missing=""}"#,
        r#"paved_task_memory_bytes{job="web", node="n2", task="web-2", tenant="acme"} 0:200 1:200 2:200 3:200"#,
    );
    check(r#"paved_task_memory_bytes{task=~"web"}"#, ""); // anchored: matches whole values only
    check(r#"paved_task_memory_bytes{missing="x"}"#, "");
    check("paved_nothing", "");
}

#[test]
fn series_that_end_drop_out_within_a_step() {
    let store = fixture();
    check_range(
        &store,
        r#"paved_task_memory_bytes{job="db"}"#,
        4,
        8,
        1,
        r#"paved_task_memory_bytes{job="db", node="n1", task="db-1", tenant="acme"} 4:1000 5:1000"#,
    );
    // Instants between steps see the latest sample; a query step finer than the store's too.
    let q = Query::new(
        r#"paved_task_memory_bytes{task="web-1"}"#,
        at(1),
        at(2),
        Duration::from_secs(5),
    );
    let got = store.query(&q).map(|s| render(&s)).unwrap_or_default();
    assert_eq!(
        got,
        r#"paved_task_memory_bytes{job="web", node="n1", task="web-1", tenant="acme"} 1:110 1:110 2:120"#
    );
}

#[test]
fn aggregations() {
    let store = fixture();
    let check = |query, expected| check_range(&store, query, 4, 7, 1, expected);
    check(
        "sum by (job) (paved_task_memory_bytes)",
        r#"
{job="db"} 4:1000 5:1000
{job="web"} 4:340 5:350 6:360 7:370"#,
    );
    check(
        "sum(paved_task_memory_bytes) by (job)",
        r#"
{job="db"} 4:1000 5:1000
{job="web"} 4:340 5:350 6:360 7:370"#,
    );
    check("count(paved_task_memory_bytes)", "{} 4:3 5:3 6:2 7:2");
    check("max(paved_task_memory_bytes)", "{} 4:1000 5:1000 6:200 7:200");
    check(
        "min by (node) (paved_task_memory_bytes)",
        r#"
{node="n1"} 4:140 5:150 6:160 7:170
{node="n2"} 4:200 5:200 6:200 7:200"#,
    );
    check(
        r#"avg by (job) (paved_task_memory_bytes{job="web"})"#,
        r#"{job="web"} 4:170 5:175 6:180 7:185"#,
    );
    check(
        "sum by (job, nope) (paved_task_memory_bytes{job=\"web\"})",
        r#"{job="web"} 4:340 5:350 6:360 7:370"#,
    );
    check(
        "max(sum by (node) (paved_task_memory_bytes))",
        "{} 4:1140 5:1150 6:200 7:200",
    );
}

#[test]
fn rates_and_increases() {
    let store = fixture();
    let check = |query, from, to, every, expected| check_range(&store, query, from, to, every, expected);
    check(
        r#"rate(paved_task_cpu_seconds_total{task="web-1"})"#,
        0,
        3,
        1,
        r#"{job="web", node="n1", task="web-1", tenant="acme"} 1:0.5 2:0.5 3:0.5"#,
    );
    // A drop is a reset: the new value is the growth.
    check(
        r#"increase(paved_task_cpu_seconds_total{task="web-2"})"#,
        2,
        6,
        1,
        r#"{job="web", node="n2", task="web-2", tenant="acme"} 2:10 3:10 4:5 5:10 6:10"#,
    );
    // Default windows are the query step and tile the range: increases add up.
    check(
        r#"increase(paved_task_cpu_seconds_total{task="web-2"})"#,
        0,
        12,
        4,
        r#"{job="web", node="n2", task="web-2", tenant="acme"} 4:35 8:40 12:40"#,
    );
    check(
        r#"rate(paved_task_cpu_seconds_total{task="web-1"}[1m])"#,
        6,
        6,
        1,
        r#"{job="web", node="n1", task="web-1", tenant="acme"} 6:0.5"#,
    );
    check(
        "sum(rate(paved_task_cpu_seconds_total[20s]))",
        2,
        5,
        1,
        "{} 2:1.5 3:1.5 4:1.25 5:1.25",
    );
    check(
        "sum by (node) (increase(paved_task_cpu_seconds_total))",
        12,
        12,
        1,
        r#"
{node="n1"} 12:5
{node="n2"} 12:10"#,
    );
}

#[test]
fn histogram_quantiles() {
    let store = fixture();
    let check = |query, expected| check_range(&store, query, 1, 3, 1, expected);
    // 9 of 10 observations per step are 1 ms, 1 is 100 ms; bucket bounds are powers of 2^(1/8).
    check(
        "histogram_quantile(0.5, paved_api_request_duration_seconds)",
        r#"{method="GetJob"} 1:0.00102472 2:0.00102472 3:0.00102472"#,
    );
    check(
        "histogram_quantile(0.99, paved_api_request_duration_seconds{method=\"GetJob\"}[30s]) by (method)",
        r#"{method="GetJob"} 1:0.104205 2:0.104205 3:0.104205"#,
    );
    check(
        "histogram_quantile by () (1, paved_api_request_duration_seconds)",
        "{} 1:0.105112 2:0.105112 3:0.105112",
    );
    check(
        r#"histogram_quantile(0.5, paved_api_request_duration_seconds{method="other"})"#,
        "",
    );
    check(
        "rate(paved_api_request_duration_seconds_count)",
        r#"{method="GetJob"} 1:1 2:1 3:1"#,
    );
}

#[test]
fn query_ranges_are_checked() {
    let store = fixture();
    let run = |start, end, step| {
        store
            .query(&Query::new("paved_task_pids", start, end, step))
            .map(|_| ())
    };
    assert!(matches!(
        run(at(2), at(1), Duration::from_secs(1)),
        Err(QueryError::Range { .. })
    ));
    assert_eq!(
        run(at(1), at(2), Duration::from_micros(10)),
        Err(QueryError::Step)
    );
    let err = run(at(0), at(100_000), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.code(), "query.too_many_points");
    let err = store
        .query(&Query::new("sum(", at(0), at(1), Duration::from_secs(1)))
        .unwrap_err();
    assert_eq!(err.code(), "query.parse");
    assert!(!err.is_retryable());
}

#[test]
fn results_serialise_for_the_json_api() {
    let store = fixture();
    let q = Query::new(
        r#"sum by (job) (paved_task_memory_bytes{job="web"})"#,
        at(0),
        at(1),
        Duration::from_secs(10),
    );
    let json = serde_json::to_string(&store.query(&q).expect("runs")).expect("serialises");
    assert_eq!(
        json,
        format!(
            r#"[{{"labels":{{"job":"web"}},"points":[[{},300.0],[{},310.0]]}}]"#,
            T0,
            T0 + STEP
        )
    );
}
