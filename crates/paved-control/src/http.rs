//! The JSON API under `/v1/`: each route decodes JSON (or query parameters) into the gRPC
//! request message and calls the same handler the gRPC service runs.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use paved_api::v1::{
    self as pb, jobs_server::Jobs, metrics_server::Metrics, nodes_server::Nodes, routing_server::Routing,
    system_server::System, tasks_server::Tasks, tokens_server::Tokens,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tonic::Status;

use crate::api::Api;
use crate::caller::Caller;
use crate::error::{ApiError, http_status, status_code_name};

pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/jobs", get(list_jobs).post(create_job))
        .route("/v1/jobs/{job}", get(get_job).delete(kill_job))
        .route("/v1/jobs/{job}/scale", post(scale_job))
        .route("/v1/jobs/{job}/kill", post(kill_job))
        .route("/v1/watch", get(watch_jobs))
        .route("/v1/validate", post(validate))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{task}", get(get_task))
        .route("/v1/tasks/{task}/kill", post(kill_task))
        .route("/v1/tasks/{task}/logs", get(logs))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/status", get(status))
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/tenants/{tenant}", axum::routing::put(set_tenant))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/v1/routes", get(list_routes).post(create_route))
        .route(
            "/v1/routes/{route}",
            axum::routing::put(set_route).delete(delete_route),
        )
        .route("/v1/faults", get(list_faults).post(add_fault))
        .route("/v1/faults/halt", post(halt_faults))
        .route("/v1/metrics", get(list_metrics))
        .route("/v1/metrics/query", get(query_metrics))
        .route("/metrics", get(prometheus))
        .with_state(api)
}

/// Comma-separated filters in query strings: `?states=running,pending`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    job: String,
    states: String,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LogsQuery {
    stream: String,
    follow: bool,
    tail: u64,
}

/// `?query=...&since=10m&step=10s`, or `start`/`end` in unix milliseconds.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct MetricsQuery {
    query: String,
    start: i64,
    end: i64,
    since: String,
    step: String,
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: String,
    message: String,
    retryable: bool,
}

async fn create_job(State(api): State<Api>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    let req: pb::CreateJobRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    reply(api.create_job(caller.request(req)).await)
}

async fn list_jobs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Response {
    reply(
        api.list_jobs(caller.request(pb::ListJobsRequest {
            states: split(&q.states),
        }))
        .await,
    )
}

async fn get_job(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
) -> Response {
    reply(api.get_job(caller.request(pb::GetJobRequest { job })).await)
}

async fn scale_job(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
    body: Bytes,
) -> Response {
    let req: pb::ScaleJobRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    reply(
        api.scale_job(caller.request(pb::ScaleJobRequest { job, ..req }))
            .await,
    )
}

async fn kill_job(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
) -> Response {
    reply(api.kill_job(caller.request(pb::KillJobRequest { job })).await)
}

async fn validate(State(api): State<Api>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    let req: pb::ValidateManifestRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    reply(api.validate_manifest(caller.request(req)).await)
}

/// Newline-delimited JSON: one `JobEvent` per line.
async fn watch_jobs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Response {
    match api
        .watch_jobs(caller.request(pb::WatchJobsRequest { job: q.job }))
        .await
    {
        Ok(stream) => {
            let lines = stream.into_inner().map(|event| match event {
                Ok(e) => serde_json::to_vec(&e).map(|mut v| {
                    v.push(b'\n');
                    Bytes::from(v)
                }),
                Err(s) => Err(serde_json::Error::io(std::io::Error::other(
                    s.message().to_owned(),
                ))),
            });
            (
                [(http::header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(lines),
            )
                .into_response()
        }
        Err(status) => error_response(&status),
    }
}

async fn list_tasks(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Response {
    let req = pb::ListTasksRequest {
        job: q.job,
        states: split(&q.states),
    };
    reply(api.list_tasks(caller.request(req)).await)
}

async fn get_task(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(task): Path<String>,
) -> Response {
    reply(api.get_task(caller.request(pb::GetTaskRequest { task })).await)
}

async fn kill_task(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(task): Path<String>,
) -> Response {
    reply(api.kill_task(caller.request(pb::KillTaskRequest { task })).await)
}

/// The raw log bytes, streamed as the task writes them with `?follow=true`.
async fn logs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(task): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let req = pb::StreamLogsRequest {
        task,
        stream: q.stream,
        follow: q.follow,
        tail_bytes: q.tail,
    };
    match api.stream_logs(caller.request(req)).await {
        Ok(stream) => {
            let bytes = stream.into_inner().map(|c| match c {
                Ok(chunk) => Ok(Bytes::from(chunk.data)),
                Err(s) => Err(std::io::Error::other(s.message().to_owned())),
            });
            (
                [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                Body::from_stream(bytes),
            )
                .into_response()
        }
        Err(status) => error_response(&status),
    }
}

async fn list_nodes(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.list_nodes(caller.request(pb::ListNodesRequest {})).await)
}

async fn status(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.get_status(caller.request(pb::GetStatusRequest {})).await)
}

async fn list_tenants(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.list_tenants(caller.request(pb::ListTenantsRequest {})).await)
}

async fn set_tenant(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let req = match decode::<pb::SetTenantRequest>(&body) {
        Ok(req) => pb::SetTenantRequest { name: tenant, ..req },
        Err(response) => return response,
    };
    reply(api.set_tenant(caller.request(req)).await)
}

async fn list_tokens(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.list_tokens(caller.request(pb::ListTokensRequest {})).await)
}

/// `POST /v1/tokens` with `{"role": …, "tenant": …, "name": …}`: the answer holds the secret.
async fn create_token(State(api): State<Api>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    match decode::<pb::CreateTokenRequest>(&body) {
        Ok(req) => reply(api.create_token(caller.request(req)).await),
        Err(response) => response,
    }
}

async fn revoke_token(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    reply(
        api.revoke_token(caller.request(pb::RevokeTokenRequest { name }))
            .await,
    )
}

async fn list_routes(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.list_routes(caller.request(pb::ListRoutesRequest {})).await)
}

/// `POST /v1/routes` with a `Route`: creates it, 409 if it exists.
async fn create_route(State(api): State<Api>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    match decode::<pb::Route>(&body) {
        Ok(route) => put_route(api, caller, route, false).await,
        Err(response) => response,
    }
}

/// `PUT /v1/routes/{name}` with a `Route`: creates or replaces it.
async fn set_route(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    match decode::<pb::Route>(&body) {
        Ok(route) => put_route(api, caller, pb::Route { name, ..route }, true).await,
        Err(response) => response,
    }
}

async fn put_route(api: Api, caller: Caller, route: pb::Route, replace: bool) -> Response {
    let req = pb::PutRouteRequest {
        route: Some(route),
        replace,
    };
    reply(api.put_route(caller.request(req)).await)
}

async fn delete_route(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    reply(
        api.delete_route(caller.request(pb::DeleteRouteRequest { name }))
            .await,
    )
}

async fn list_faults(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.list_faults(caller.request(pb::ListFaultsRequest {})).await)
}

async fn add_fault(State(api): State<Api>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    match decode::<pb::AddFaultRequest>(&body) {
        Ok(req) => reply(api.add_fault(caller.request(req)).await),
        Err(response) => response,
    }
}

async fn halt_faults(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.halt_faults(caller.request(pb::HaltFaultsRequest {})).await)
}

async fn list_metrics(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    reply(api.list_metrics(caller.request(pb::ListMetricsRequest {})).await)
}

async fn query_metrics(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<MetricsQuery>,
) -> Response {
    let (since_ms, step_ms) = match (millis("since", &q.since), millis("step", &q.step)) {
        (Ok(since), Ok(step)) => (since, step),
        (Err(e), _) | (_, Err(e)) => return error_response(&e.into()),
    };
    let req = pb::MetricsQueryRequest {
        query: q.query,
        start_ms: q.start,
        end_ms: q.end,
        since_ms,
        step_ms,
    };
    reply(api.query(caller.request(req)).await)
}

/// A duration parameter (`10m`, `30s`) in milliseconds; absent: 0, the default.
fn millis(field: &'static str, text: &str) -> Result<u64, ApiError> {
    if text.is_empty() {
        return Ok(0);
    }
    humantime::parse_duration(text)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|e| ApiError::invalid(field, format!("{e}; give a duration such as 10m or 30s")))
}

/// Every metric's current value in the Prometheus text format, for scrapers (which send the
/// token as `authorization: Bearer`, e.g. Prometheus's `authorization.credentials_file`).
/// Admin only: it holds every tenant's series.
async fn prometheus(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = caller.require_role(crate::caller::Role::Admin) {
        return error_response(&e.into());
    }
    let text = paved_telemetry::prometheus::render(&api.telemetry().registry);
    (
        [(
            http::header::CONTENT_TYPE,
            paved_telemetry::prometheus::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

fn reply<T: Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(r) => Json(r.into_inner()).into_response(),
        Err(status) => error_response(&status),
    }
}

/// Decodes a JSON body; an empty body is the empty request.
#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = Status::invalid_argument(format!("request body is not valid JSON for this call: {e}"));
        error_response(&status)
    })
}

fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: status_code_name(status),
            message: status.message().to_owned(),
            retryable: matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Aborted),
        },
    };
    (http_status(status.code()), Json(body)).into_response()
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
