//! The Prometheus text exposition format, version 0.0.4, as served at `/metrics`: `# HELP` and
//! `# TYPE` once per metric, escaped tag values, and histograms as classic cumulative
//! `_bucket{le=…}` series (only non-empty buckets, plus `+Inf`), `_sum` and `_count`.

use std::fmt::Write;

use crate::catalog::Kind;
use crate::collector::{MetricFamily, Value};
use crate::histogram::{HistogramValue, format_bound};
use crate::labels::{Labels, escape_value};
use crate::registry::Registry;

/// The `Content-Type` of a response carrying [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of `registry`, collectors included.
pub fn render(registry: &Registry) -> String {
    render_families(&registry.gather())
}

/// Renders gathered families (as [`Registry::gather`] returns them).
pub fn render_families(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let def = family.def;
        out.push_str("# HELP ");
        out.push_str(def.name);
        out.push(' ');
        escape_help(def.help, &mut out);
        out.push('\n');
        let kind = match def.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# TYPE {} {kind}", def.name);
        for series in &family.series {
            match &series.value {
                Value::Counter(v) | Value::Gauge(v) => line(&mut out, def.name, "", &series.labels, None, *v),
                Value::Histogram(h) => histogram(&mut out, def.name, &series.labels, h),
            }
        }
    }
    out
}

fn histogram(out: &mut String, name: &str, labels: &Labels, h: &HistogramValue) {
    let mut cumulative = 0;
    for bucket in h.buckets.iter().filter(|b| b.upper.is_finite()) {
        cumulative += bucket.count;
        let le = format_bound(bucket.upper);
        line(out, name, "_bucket", labels, Some(&le), cumulative as f64);
    }
    line(out, name, "_bucket", labels, Some("+Inf"), h.count as f64);
    line(out, name, "_sum", labels, None, h.sum);
    line(out, name, "_count", labels, None, h.count as f64);
}

/// One sample line: `name_suffix{k="v",le="…"} value`.
fn line(out: &mut String, name: &str, suffix: &str, labels: &Labels, le: Option<&str>, value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    let pairs = labels.iter().chain(le.map(|le| ("le", le)));
    for (i, (k, v)) in pairs.enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(k);
        out.push_str("=\"");
        escape_value(v, out);
        out.push('"');
    }
    if !labels.is_empty() || le.is_some() {
        out.push('}');
    }
    out.push(' ');
    format_value(value, out);
    out.push('\n');
}

/// Go's float syntax, which Prometheus parses: `NaN`, `+Inf`, `-Inf`, plain decimals in the
/// everyday range and exponent notation outside it.
fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == 0.0 || (1e-4..1e15).contains(&v.abs()) {
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:e}");
    }
}

/// Help text escapes only `\` and newline.
fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{API_REQUEST_DURATION, API_REQUESTS, TASK_MEMORY, TSDB_SAMPLES};

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let registry = Registry::new();
        registry.counter(&TSDB_SAMPLES).with(&[]).inc_by(3);
        registry
            .counter(&API_REQUESTS)
            .with(&[("method", "GetJob"), ("status", "ok")])
            .inc();
        let h = registry
            .histogram(&API_REQUEST_DURATION)
            .with(&[("method", "GetJob")]);
        h.observe(0.5);
        h.observe(0.5);
        h.observe(3.0);
        let text = render(&registry);
        let expected = "\
# HELP paved_api_request_duration_seconds Time to handle an API call, from request to response, by gRPC method.
# TYPE paved_api_request_duration_seconds histogram
paved_api_request_duration_seconds_bucket{method=\"GetJob\",le=\"0.5\"} 2
paved_api_request_duration_seconds_bucket{method=\"GetJob\",le=\"3.0844216508158815\"} 3
paved_api_request_duration_seconds_bucket{method=\"GetJob\",le=\"+Inf\"} 3
paved_api_request_duration_seconds_sum{method=\"GetJob\"} 4
paved_api_request_duration_seconds_count{method=\"GetJob\"} 3
# HELP paved_api_requests_total API calls handled, by gRPC method and outcome (ok or the error code).
# TYPE paved_api_requests_total counter
paved_api_requests_total{method=\"GetJob\",status=\"ok\"} 1
# HELP paved_tsdb_samples_total Samples appended to the embedded store.
# TYPE paved_tsdb_samples_total counter
paved_tsdb_samples_total 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn escapes_tag_values_and_formats_special_floats() {
        let registry = Registry::new();
        let memory = registry.gauge(&TASK_MEMORY);
        let tags = |task| {
            [
                ("tenant", "a\"b"),
                ("job", "c\\d"),
                ("task", task),
                ("node", "e\nf"),
            ]
        };
        memory.with(&tags("nan")).set(f64::NAN);
        memory.with(&tags("inf")).set(f64::NEG_INFINITY);
        memory.with(&tags("big")).set(2e20);
        memory.with(&tags("small")).set(1.5e-7);
        let text = render(&registry);
        for expected in [
            r#"paved_task_memory_bytes{job="c\\d",node="e\nf",task="nan",tenant="a\"b"} NaN"#,
            r#"paved_task_memory_bytes{job="c\\d",node="e\nf",task="inf",tenant="a\"b"} -Inf"#,
            r#"paved_task_memory_bytes{job="c\\d",node="e\nf",task="big",tenant="a\"b"} 2e20"#,
            r#"paved_task_memory_bytes{job="c\\d",node="e\nf",task="small",tenant="a\"b"} 1.5e-7"#,
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} not in\n{text}");
        }
    }

    #[test]
    fn an_empty_registry_renders_nothing() {
        assert_eq!(render(&Registry::new()), "");
    }
}
