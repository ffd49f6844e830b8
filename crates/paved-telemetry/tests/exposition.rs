//! `/metrics` as a Prometheus server reads it: the rendered text goes through the
//! `prometheus-parse` crate, and through `promtool check metrics` (Prometheus' own parser and
//! linter) when promtool is installed (Debian package `prometheus`; CI must have it).

use std::io::Write;
use std::process::{Command, Stdio};

use paved_telemetry::catalog::{
    API_REQUEST_DURATION, API_REQUESTS, CONTROL_RECONCILE_DURATION, TASK_CPU, TASK_MEMORY, TASK_PIDS,
    TSDB_SAMPLES,
};
use paved_telemetry::{Registry, prometheus};
use prometheus_parse::{LineInfo, Scrape, Value};

/// A registry as a busy control plane and agent would fill it.
fn busy_registry() -> Registry {
    let registry = Registry::new();
    let requests = registry.counter(&API_REQUESTS);
    requests
        .with(&[("method", "CreateJob"), ("status", "ok")])
        .inc_by(41);
    requests
        .with(&[("method", "CreateJob"), ("status", "invalid_argument")])
        .inc();
    let latency = registry.histogram(&API_REQUEST_DURATION);
    for (method, base) in [("CreateJob", 0.004), ("GetJob", 0.0002)] {
        let h = latency.with(&[("method", method)]);
        for i in 0..1000 {
            h.observe(base * (1.0 + (i % 97) as f64 / 10.0));
        }
    }
    registry
        .histogram(&CONTROL_RECONCILE_DURATION)
        .with(&[("loop", "jobs")])
        .observe(0.0);
    registry.counter(&TSDB_SAMPLES).with(&[]).inc_by(123_456);
    registry.register_collector(|emit| {
        for task in ["web-1", "web-2"] {
            let tags = [
                ("tenant", "acme corp"),
                ("job", "web.v2"),
                ("task", task),
                ("node", "node-1"),
            ];
            emit.counter(&TASK_CPU, &tags, 12.345678);
            emit.gauge(&TASK_MEMORY, &tags, 64.0 * 1024.0 * 1024.0);
            emit.gauge(&TASK_PIDS, &tags, 3.0);
        }
    });
    registry
}

#[test]
fn every_line_is_understood_by_prometheus_parse() {
    let text = prometheus::render(&busy_registry());
    for line in text.lines() {
        let parsed = LineInfo::parse(line);
        assert!(
            !matches!(parsed, LineInfo::Ignored | LineInfo::Empty),
            "not understood: {line:?}"
        );
    }
}

#[test]
fn prometheus_parse_reads_back_the_values() {
    let text = prometheus::render(&busy_registry());
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let find = |metric: &str, key: &str, value: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get(key) == Some(value))
            .unwrap_or_else(|| panic!("no {metric}{{{key}={value:?}}} in\n{text}"))
    };
    assert_eq!(
        find("paved_api_requests_total", "status", "ok").value,
        Value::Counter(41.0)
    );
    assert_eq!(find("paved_task_pids", "task", "web-2").value, Value::Gauge(3.0));
    assert_eq!(
        find("paved_task_cpu_seconds_total", "tenant", "acme corp").value,
        Value::Counter(12.345678)
    );
    assert_eq!(
        scrape.docs.get("paved_task_pids").map(String::as_str),
        Some(TASK_PIDS.def().help)
    );

    let Value::Histogram(buckets) = &find("paved_api_request_duration_seconds", "method", "GetJob").value
    else {
        panic!("not a histogram");
    };
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count)
    );
    let last = buckets.last().expect("buckets");
    assert_eq!((last.less_than, last.count), (f64::INFINITY, 1000.0));
    let count = find("paved_api_request_duration_seconds_count", "method", "GetJob");
    assert!(matches!(count.value, Value::Untyped(c) if c == 1000.0));
}

/// Prometheus' own parser, with its lint rules (naming, units, help) on top.
#[test]
fn promtool_accepts_the_exposition() {
    assert!(
        on_path("promtool"),
        "promtool is missing: `cargo xtask test` installs it (Debian package `prometheus`)"
    );
    let registry = busy_registry();
    // Tag values that need escaping, which prometheus-parse does not unescape.
    registry
        .gauge(&TASK_PIDS)
        .with(&[
            ("tenant", "a\"b"),
            ("job", "c\\d"),
            ("task", "e\nf"),
            ("node", "g,h=i"),
        ])
        .set(1.0);
    let text = prometheus::render(&registry);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool ends");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{text}"
    );
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
}
