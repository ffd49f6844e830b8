//! OTLP push: every series of the registry, sent as OpenTelemetry metrics to a collector over
//! gRPC, for sites that keep their telemetry in an OpenTelemetry pipeline.
//!
//! Built on `opentelemetry-proto`, the message and client crate under `opentelemetry-otlp`:
//! that crate exports what the OpenTelemetry SDK aggregated, which would be a second registry
//! beside ours; the messages are the protocol, so the registry's own values are sent as they are.
//! Counters go as cumulative monotonic sums, gauges as gauges, histograms as explicit-bucket
//! histograms over their non-empty buckets.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::transport::{Channel, Endpoint};

use crate::catalog::Unit;
use crate::collector::{MetricFamily, SeriesValue, Source, Value};
use crate::histogram::HistogramValue;
use crate::registry::Registry;

/// Pushes the registry to one OTLP/gRPC endpoint.
pub struct OtlpExporter {
    endpoint: String,
    client: MetricsServiceClient<Channel>,
    resource: Resource,
    /// When this process began counting: the start of every cumulative series it recorded.
    started: SystemTime,
}

/// Why a push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "invalid OTLP endpoint {endpoint:?}: {reason}; give an http:// URL such as http://127.0.0.1:4317"
    )]
    Endpoint { endpoint: String, reason: String },
    #[error("OTLP export to {endpoint} failed: {status}; the next push sends current values again")]
    Export { endpoint: String, status: String },
}

impl OtlpError {
    /// A stable identifier; never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            OtlpError::Endpoint { .. } => "otlp.endpoint",
            OtlpError::Export { .. } => "otlp.export",
        }
    }

    /// Whether pushing again may succeed: a refused or failed export may, a bad endpoint not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, OtlpError::Export { .. })
    }
}

impl OtlpExporter {
    /// An exporter to `endpoint` (`http://host:port`) describing this process with `resource`
    /// attributes such as `service.name`. Connects at the first push, so a collector that
    /// starts later is no error; must be called within a tokio runtime.
    pub fn new(endpoint: &str, resource: &[(&str, &str)]) -> Result<Self, OtlpError> {
        let invalid = |reason: String| OtlpError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        if !endpoint.starts_with("http://") {
            return Err(invalid("only plain http:// is supported (no TLS)".to_owned()));
        }
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| invalid(e.to_string()))?
            .connect_lazy();
        Ok(OtlpExporter {
            endpoint: endpoint.to_owned(),
            client: MetricsServiceClient::new(channel),
            resource: Resource {
                attributes: resource.iter().map(|(k, v)| attribute(k, v)).collect(),
                ..Resource::default()
            },
            started: SystemTime::now(),
        })
    }

    /// Sends every series' current value; returns how many data points went.
    pub async fn push(&mut self, registry: &Registry) -> Result<usize, OtlpError> {
        let families = registry.gather();
        let request = request(&families, &self.resource, self.started, SystemTime::now());
        let points = data_points(&request);
        self.client
            .export(request)
            .await
            .map_err(|status| OtlpError::Export {
                endpoint: self.endpoint.clone(),
                status: status.to_string(),
            })?;
        Ok(points)
    }
}

/// The export request for `families` at `now`; recorded cumulative series start at `started`.
pub fn request(
    families: &[MetricFamily],
    resource: &Resource,
    started: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let times = Times {
        started: unix_nanos(started),
        now: unix_nanos(now),
    };
    let metrics = families.iter().filter_map(|f| metric(f, times)).collect();
    let scope = ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: "paved".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..InstrumentationScope::default()
        }),
        metrics,
        ..ScopeMetrics::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![scope],
            ..ResourceMetrics::default()
        }],
    }
}

#[derive(Clone, Copy)]
struct Times {
    started: u64,
    now: u64,
}

fn metric(family: &MetricFamily, times: Times) -> Option<Metric> {
    let def = family.def;
    let series = &family.series;
    let numbers = |value: fn(&Value) -> Option<f64>| -> Vec<NumberDataPoint> {
        series
            .iter()
            .filter_map(|s| value(&s.value).map(|v| number_point(s, v, times)))
            .collect()
    };
    let data = match series.first().map(|s| &s.value)? {
        Value::Counter(_) => metric::Data::Sum(Sum {
            data_points: numbers(|v| match v {
                Value::Counter(x) => Some(*x),
                _ => None,
            }),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Value::Gauge(_) => metric::Data::Gauge(Gauge {
            data_points: numbers(|v| match v {
                Value::Gauge(x) => Some(*x),
                _ => None,
            }),
        }),
        Value::Histogram(_) => metric::Data::Histogram(Histogram {
            data_points: series
                .iter()
                .filter_map(|s| match &s.value {
                    Value::Histogram(h) => Some(histogram_point(s, h, times)),
                    _ => None,
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    };
    Some(Metric {
        name: def.name.to_owned(),
        description: def.help.to_owned(),
        unit: ucum(def.unit),
        data: Some(data),
        ..Metric::default()
    })
}

fn number_point(series: &SeriesValue, value: f64, times: Times) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(series),
        start_time_unix_nano: start_of(series, times),
        time_unix_nano: times.now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..NumberDataPoint::default()
    }
}

/// Explicit bounds are the non-empty buckets' upper bounds; the last count is the overflow
/// bucket's (above the last finite bound), as OTLP wants one count more than bounds.
fn histogram_point(series: &SeriesValue, h: &HistogramValue, times: Times) -> HistogramDataPoint {
    let (mut bounds, mut counts) = (Vec::new(), Vec::new());
    let mut overflow = 0;
    for bucket in &h.buckets {
        if bucket.upper.is_finite() {
            bounds.push(bucket.upper);
            counts.push(bucket.count);
        } else {
            overflow += bucket.count;
        }
    }
    counts.push(overflow);
    HistogramDataPoint {
        attributes: attributes(series),
        start_time_unix_nano: start_of(series, times),
        time_unix_nano: times.now,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: counts,
        explicit_bounds: bounds,
        ..HistogramDataPoint::default()
    }
}

/// A recorded series counted from this process's start; a collected one (a task's cpu
/// seconds) from a start it does not know, which OTLP writes as 0.
fn start_of(series: &SeriesValue, times: Times) -> u64 {
    match series.source {
        Source::Recorded => times.started,
        Source::Collected => 0,
    }
}

fn attributes(series: &SeriesValue) -> Vec<KeyValue> {
    series.labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// The unit in UCUM, as OpenTelemetry's semantic conventions write it.
fn ucum(unit: Unit) -> String {
    match unit {
        Unit::Seconds => "s".to_owned(),
        Unit::Bytes => "By".to_owned(),
        Unit::Ratio => "1".to_owned(),
        Unit::Count(noun) => format!("{{{noun}}}"),
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Data points in a request, for the push's report.
fn data_points(request: &ExportMetricsServiceRequest) -> usize {
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    metrics
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests;
