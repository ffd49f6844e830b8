//! The request built from a registry: kinds, values, tags, units, times and buckets.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::catalog::{API_REQUEST_DURATION, API_REQUESTS, TASK_CPU, TSDB_MEMORY};

fn find<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    let resource = &request.resource_metrics[0];
    let metrics = &resource.scope_metrics[0].metrics;
    metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn tags(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => panic!("not a string: {other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

#[test]
fn a_registry_becomes_sums_gauges_and_histograms_with_their_tags_and_units() {
    let registry = Registry::new();
    let calls = registry
        .counter(&API_REQUESTS)
        .with(&[("method", "List"), ("status", "ok")]);
    calls.inc_by(3);
    registry.gauge(&TSDB_MEMORY).with(&[]).set(2048.0);
    let latency = registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", "List")]);
    for seconds in [0.001, 0.002, 0.004] {
        latency.observe(seconds);
    }
    registry.register_collector(|out| {
        let tags = [("tenant", "t"), ("job", "web"), ("task", "x1"), ("node", "n")];
        out.counter(&TASK_CPU, &tags, 1.5);
    });
    let started = UNIX_EPOCH + Duration::from_secs(100);
    let now = UNIX_EPOCH + Duration::from_secs(160);
    let resource = Resource {
        attributes: vec![attribute("service.name", "paved")],
        ..Resource::default()
    };
    let request = request(&registry.gather(), &resource, started, now);
    assert_eq!(
        tags(&request.resource_metrics[0].resource.as_ref().unwrap().attributes),
        [("service.name".to_owned(), "paved".to_owned())]
    );

    let counter = find(&request, "paved_api_requests_total");
    let Some(metric::Data::Sum(sum)) = &counter.data else {
        panic!("{counter:?}")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let point = &sum.data_points[0];
    assert_eq!(point.value, Some(number_data_point::Value::AsDouble(3.0)));
    assert_eq!(
        tags(&point.attributes),
        [("method".into(), "List".into()), ("status".into(), "ok".into())]
    );
    assert_eq!(
        (point.start_time_unix_nano, point.time_unix_nano),
        (100_000_000_000, 160_000_000_000)
    );
    assert_eq!(counter.unit, "{requests}");

    let gauge = find(&request, "paved_tsdb_memory_bytes");
    let Some(metric::Data::Gauge(g)) = &gauge.data else {
        panic!("{gauge:?}")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsDouble(2048.0))
    );
    assert_eq!(gauge.unit, "By");

    let histogram = find(&request, "paved_api_request_duration_seconds");
    let Some(metric::Data::Histogram(h)) = &histogram.data else {
        panic!("{histogram:?}")
    };
    let point = &h.data_points[0];
    assert_eq!((point.count, point.sum), (3, Some(0.007)));
    assert_eq!(point.explicit_bounds.len() + 1, point.bucket_counts.len());
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), 3);
    assert!(point.explicit_bounds.windows(2).all(|w| w[0] < w[1]));
    assert!(point.explicit_bounds.iter().all(|b| b.is_finite()));
    assert_eq!(histogram.unit, "s");

    // A collected counter has counted since a start this process does not know.
    let cpu = find(&request, "paved_task_cpu_seconds_total");
    let Some(metric::Data::Sum(sum)) = &cpu.data else {
        panic!("{cpu:?}")
    };
    assert_eq!(sum.data_points[0].start_time_unix_nano, 0);
    assert_eq!(data_points(&request), 4);
}

#[tokio::test]
async fn endpoints_must_be_plain_http_urls() {
    for bad in ["127.0.0.1:4317", "https://collector:4317", "http://bad host:1"] {
        let e = OtlpExporter::new(bad, &[])
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(e.code(), "otlp.endpoint", "{bad}");
        assert!(!e.is_retryable());
    }
    assert!(OtlpExporter::new("http://127.0.0.1:4317", &[]).is_ok());
}

#[tokio::test]
async fn a_push_to_nothing_fails_and_may_be_retried() {
    let mut exporter = OtlpExporter::new("http://127.0.0.1:9", &[]).unwrap();
    let e = exporter.push(&Registry::new()).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
}
