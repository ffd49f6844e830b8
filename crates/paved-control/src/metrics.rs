//! Telemetry in the control plane: the `Metrics` service (queries of the embedded time-series
//! store, the metric catalog) and the middleware that counts and times every API call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use paved_api::v1::{self as pb, metrics_server::Metrics};
use paved_telemetry::catalog::{self, API_REQUEST_DURATION, API_REQUESTS};
use paved_telemetry::query::{Expr, MatchOp, Matcher, Query, QueryError, Selector};
use paved_telemetry::tsdb::Store;
use paved_telemetry::{Kind, Registry, Timestamp};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::api::Api;
use crate::caller::Caller;
use crate::error::ApiError;

/// The registry every component records into and the store it is sampled into; cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    pub registry: Registry,
    pub store: Arc<Store>,
}

/// A query's default range: the last hour.
const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

#[tonic::async_trait]
impl Metrics for Api {
    async fn query(
        &self,
        req: GrpcRequest<pb::MetricsQueryRequest>,
    ) -> Result<GrpcResponse<pb::MetricsQueryResponse>, Status> {
        let caller = Caller::user(&req)?;
        let req = req.into_inner();
        let telemetry = self.telemetry();
        let query = range(&req, self.now(), telemetry.store.config().step)?;
        let mut expr = paved_telemetry::query::parse(&query.expr).map_err(|e| query_error(e.into()))?;
        if let Some(tenant) = &caller.tenant {
            confine(&mut expr, tenant);
        }
        let series = telemetry
            .store
            .query_expr(&expr, query.start, query.end, query.step)
            .map_err(query_error)?;
        let series = series
            .into_iter()
            .map(|s| {
                let mut labels: std::collections::HashMap<String, String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                if let Some(name) = s.name {
                    labels.insert("__name__".to_owned(), name);
                }
                let points = s
                    .points
                    .into_iter()
                    .map(|(t, value)| pb::Point {
                        time_ms: t.as_millis(),
                        value,
                    })
                    .collect();
                pb::Series { labels, points }
            })
            .collect();
        Ok(GrpcResponse::new(pb::MetricsQueryResponse {
            series,
            start_ms: query.start.as_millis(),
            end_ms: query.end.as_millis(),
            step_ms: u64::try_from(query.step.as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn list_metrics(
        &self,
        req: GrpcRequest<pb::ListMetricsRequest>,
    ) -> Result<GrpcResponse<pb::ListMetricsResponse>, Status> {
        Caller::user(&req)?;
        let metrics = catalog::ALL
            .iter()
            .map(|m| pb::MetricInfo {
                name: m.name.to_owned(),
                kind: kind_name(m.kind).to_owned(),
                unit: m.unit.suffix().to_owned(),
                tags: m.labels.iter().map(|t| (*t).to_owned()).collect(),
                help: m.help.to_owned(),
            })
            .collect();
        Ok(GrpcResponse::new(pb::ListMetricsResponse { metrics }))
    }
}

/// The request's time range and step, checked: `start`/`end` in unix ms (end 0: now; start 0:
/// `since` before the end), step 0: the store's.
fn range(req: &pb::MetricsQueryRequest, now_ms: u64, store_step: Duration) -> Result<Query, ApiError> {
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid(
            "query",
            "empty; give a metric name, e.g. paved_task_memory_bytes{job=\"web\"} (`paved metrics list` shows them)",
        ));
    }
    if req.start_ms < 0 || req.end_ms < 0 {
        return Err(ApiError::invalid(
            "start_ms",
            "negative; give unix milliseconds, or 0 for the default",
        ));
    }
    let end = if req.end_ms == 0 {
        i64::try_from(now_ms).unwrap_or(i64::MAX)
    } else {
        req.end_ms
    };
    let since = if req.since_ms == 0 {
        DEFAULT_SINCE
    } else {
        Duration::from_millis(req.since_ms)
    };
    let start = if req.start_ms == 0 {
        end.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
            .max(0)
    } else {
        req.start_ms
    };
    let step = if req.step_ms == 0 {
        store_step
    } else {
        Duration::from_millis(req.step_ms)
    };
    Ok(Query::new(
        req.query.clone(),
        Timestamp::from_millis(start),
        Timestamp::from_millis(end),
        step,
    ))
}

/// Adds `tenant="<tenant>"` to every selector of `expr`, so a tenant's query sees only its
/// own tasks' series: the platform's own metrics have no `tenant` tag and drop out too.
fn confine(expr: &mut Expr, tenant: &str) {
    let add = |selector: &mut Selector| {
        selector.matchers.push(Matcher {
            label: "tenant".to_owned(),
            op: MatchOp::Equal,
            value: tenant.to_owned(),
        })
    };
    match expr {
        Expr::Select(selector) | Expr::Rate { selector, .. } | Expr::HistogramQuantile { selector, .. } => {
            add(selector)
        }
        Expr::Aggregate { expr, .. } => confine(expr, tenant),
    }
}

fn query_error(e: QueryError) -> Status {
    let field = match e {
        QueryError::Range { .. } => "start_ms",
        QueryError::Step | QueryError::TooManyPoints { .. } => "step_ms",
        QueryError::Parse(_) | QueryError::Regex { .. } => "query",
    };
    ApiError::invalid(field, e.to_string()).into()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

/// Counts and times every call, gRPC and JSON alike, in `paved_api_requests_total{method,
/// status}` and `paved_api_request_duration_seconds{method}`. A gRPC call's method is its path
/// (`paved.v1.Jobs/CreateJob`) and its status the gRPC code name; a JSON call's method is its
/// route (`GET /v1/jobs/{job}`) and its status the HTTP status. Streams are timed to their
/// first response, which is when their status is known.
pub async fn record_call(State(registry): State<Registry>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_of(&request);
    // One span per call, which `paved up --otlp-endpoint` exports as a trace.
    let span = tracing::info_span!("api call", method = %method, path = %request.uri().path());
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let status = status_of(&response);
    // Anyone can send any path: only calls that reached a handler name their method, so the
    // tag cannot be made to grow without bound.
    let method = if reached_a_handler(&status) {
        method
    } else {
        OTHER_METHOD.to_owned()
    };
    registry
        .counter(&API_REQUESTS)
        .with(&[("method", &method), ("status", &status)])
        .inc();
    registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", &method)])
        .observe_duration(started.elapsed());
    response
}

/// The method tag of calls refused before any handler ran (no token, no such method).
const OTHER_METHOD: &str = "other";

fn reached_a_handler(status: &str) -> bool {
    !matches!(
        status,
        "401" | "404" | "405" | "Unauthenticated" | "Unimplemented"
    )
}

/// What the call asked for, with ids left out so the tag's values stay few.
fn method_of(request: &Request) -> String {
    let path = request.uri().path();
    if is_grpc(request.headers()) {
        return path.trim_start_matches('/').to_owned();
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    format!("{} {route}", request.method())
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A gRPC error comes back in the headers (tonic answers unary failures trailers-only); a gRPC
/// response without it succeeded as far as its first frame shows.
fn status_of(response: &Response) -> String {
    if !is_grpc(response.headers()) {
        return response.status().as_u16().to_string();
    }
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from);
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start_ms: i64, end_ms: i64, since_ms: u64, step_ms: u64) -> pb::MetricsQueryRequest {
        pb::MetricsQueryRequest {
            query: "up".to_owned(),
            start_ms,
            end_ms,
            since_ms,
            step_ms,
        }
    }

    #[test]
    fn ranges_default_to_the_last_hour_at_the_store_step() {
        let check = |r: pb::MetricsQueryRequest, expected: (i64, i64, u64)| {
            let q = range(&r, 10_000_000, Duration::from_secs(10)).unwrap();
            let step = u64::try_from(q.step.as_millis()).unwrap();
            assert_eq!((q.start.as_millis(), q.end.as_millis(), step), expected, "{r:?}");
        };
        check(req(0, 0, 0, 0), (10_000_000 - 3_600_000, 10_000_000, 10_000));
        check(req(0, 0, 600_000, 0), (10_000_000 - 600_000, 10_000_000, 10_000));
        check(req(0, 5_000_000, 600_000, 1000), (4_400_000, 5_000_000, 1000));
        check(req(1000, 2000, 0, 0), (1000, 2000, 10_000));
        check(req(0, 1000, 0, 0), (0, 1000, 10_000));
    }

    #[test]
    fn tenant_queries_are_confined_to_the_tenant() {
        let check = |query: &str, expected: &str| {
            let mut expr = paved_telemetry::query::parse(query).unwrap();
            confine(&mut expr, "a");
            assert_eq!(expr.to_string(), expected, "{query}");
        };
        check("up", r#"up{tenant="a"}"#);
        check(r#"up{tenant="b"}"#, r#"up{tenant="b", tenant="a"}"#);
        check(r#"up{tenant=~".*"}"#, r#"up{tenant=~".*", tenant="a"}"#);
        check(
            "sum by (job) (rate(paved_task_cpu_seconds_total[1m]))",
            r#"sum by (job) (rate(paved_task_cpu_seconds_total{tenant="a"}[1m]))"#,
        );
        check("max(avg by (job) (m))", r#"max(avg by (job) (m{tenant="a"}))"#);
        check(
            "histogram_quantile(0.5, h)",
            r#"histogram_quantile(0.5, h{tenant="a"})"#,
        );
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let check = |r: pb::MetricsQueryRequest, field: &str| {
            let e = range(&r, 10_000_000, Duration::from_secs(10)).unwrap_err();
            assert!(e.to_string().starts_with(field), "{e}");
        };
        check(pb::MetricsQueryRequest::default(), "query");
        check(req(-1, 0, 0, 0), "start_ms");
    }
}
