//! Telemetry through the whole platform: a task's series in the embedded store, queries over
//! the JSON API, `/metrics` read by Prometheus's own tools, history kept across a restart, and
//! the push to an OTLP collector.

#[path = "common/support.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use paved_api::v1 as pb;
use support::{InProcess, wait_for};

/// Burns cpu and grows its memory: appends to a shell variable in a loop.
const GROWER: &str = "name = \"grow\"\nkind = \"service\"\ninstances = 1\n\
                      command = [\"/bin/sh\", \"-c\", \"x=; while :; do x=\\\"$x 0123456789abcdef\\\"; done\"]\n\
                      [resources]\ncpu = 0.5\nmemory = \"256MiB\"\n";

impl InProcess {
    async fn query(&self, query: &str, since: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url("/v1/metrics/query"))
            .query(&[("query", query), ("since", since)])
            .bearer_auth(&self.platform.token)
            .send()
            .await
            .expect("a response")
    }

    async fn series(&self, query: &str, since: &str) -> Vec<pb::Series> {
        let response = self.query(query, since).await;
        assert!(
            response.status().is_success(),
            "{query}: {}",
            response.text().await.unwrap()
        );
        let answer: pb::MetricsQueryResponse = response.json().await.expect("a query answer");
        answer.series
    }

    async fn metrics_text(&self, token: Option<&str>) -> reqwest::Response {
        let request = reqwest::Client::new().get(self.url("/metrics"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.expect("a response")
    }
}

fn values(series: &pb::Series) -> Vec<f64> {
    series.points.iter().map(|p| p.value).collect()
}

#[tokio::test]
async fn a_tasks_cpu_and_memory_series_appear_and_move() {
    let p = InProcess::start().await;
    p.submit(GROWER).await;
    wait_for("the task's memory series to rise", || async {
        let series = p.series(r#"paved_task_memory_bytes{job="grow"}"#, "1m").await;
        series.first().is_some_and(|s| {
            let v = values(s);
            s.labels.get("tenant").map(String::as_str) == Some("default")
                && s.labels.get("task").is_some_and(|t| !t.is_empty())
                && v.len() >= 3
                && v.last() > v.first()
        })
    })
    .await;
    wait_for(
        "the job's cpu rate, summed by job, to show it working",
        || async {
            let series = p
                .series(
                    r#"sum by (job) (rate(paved_task_cpu_seconds_total{job="grow"}[4s]))"#,
                    "1m",
                )
                .await;
            // One series tagged by job alone, near its quota of half a core.
            series.len() == 1
                && series[0].labels.len() == 1
                && values(&series[0])
                    .last()
                    .is_some_and(|cores| *cores > 0.1 && *cores < 0.9)
        },
    )
    .await;
    // The control plane counted the placement, the agent the start.
    for counter in [
        r#"paved_scheduler_placements_total{result="placed"}"#,
        r#"paved_agent_task_starts_total{job="grow",tenant="default"}"#,
    ] {
        let series = p.series(counter, "1m").await;
        let last = series.first().and_then(|s| values(s).last().copied());
        assert!(last.is_some_and(|n| n >= 1.0), "{counter}: {series:?}");
    }
    // The API's own calls are timed: their median is a positive number of seconds.
    let quantile = p
        .series(
            "histogram_quantile(0.5, paved_api_request_duration_seconds)",
            "1m",
        )
        .await;
    assert!(
        quantile
            .iter()
            .flat_map(values)
            .any(|seconds| seconds > 0.0 && seconds < 10.0),
        "{quantile:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn bad_queries_are_refused_with_the_field_and_the_fix() {
    let p = InProcess::start().await;
    let check = |query: &'static str, since: &'static str, expected: &'static str| {
        let p = &p;
        async move {
            let response = p.query(query, since).await;
            assert_eq!(response.status(), 400, "{query}");
            let body = response.text().await.unwrap();
            assert!(body.contains(r#""code":"invalid_argument""#), "{body}");
            assert!(body.contains(expected), "{query}: {body}");
        }
    };
    check("paved_task_pids{", "1m", "query: invalid query at column 17").await;
    check("", "1m", "query: empty").await;
    check("paved_task_pids", "ten minutes", "since:").await;
    check(r#"paved_task_pids{job=~"("}"#, "1m", "invalid regex").await;
    p.stop().await;
}

#[tokio::test]
async fn history_survives_a_clean_restart() {
    let p = InProcess::start().await;
    wait_for("a few samples of the reconciler's timing", || async {
        let series = p
            .series("paved_control_reconcile_duration_seconds_count", "1m")
            .await;
        series.first().is_some_and(|s| s.points.len() >= 4)
    })
    .await;
    let before = p
        .series("paved_control_reconcile_duration_seconds_count", "1m")
        .await;
    let last_seen = before[0].points.last().unwrap().time_ms;
    let p = p.restart().await;
    // The new process samples from its start: points up to the last one seen before the stop
    // come from the snapshot the clean stop saved.
    let after = p
        .series("paved_control_reconcile_duration_seconds_count", "1m")
        .await;
    let kept = after
        .iter()
        .flat_map(|s| &s.points)
        .filter(|point| point.time_ms <= last_seen);
    assert!(
        kept.count() >= 3,
        "samples from before the restart are still there: {before:?}\n{after:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let p = InProcess::start().await;
    p.submit(GROWER).await;
    wait_for("the task's series on /metrics", || async {
        let text = p
            .metrics_text(Some(&p.platform.token))
            .await
            .text()
            .await
            .unwrap();
        text.contains("paved_task_memory_bytes{")
    })
    .await;
    assert_eq!(
        p.metrics_text(None).await.status(),
        401,
        "/metrics needs the token"
    );
    let text = p
        .metrics_text(Some(&p.platform.token))
        .await
        .text()
        .await
        .unwrap();
    promtool_check(&text);

    let prometheus = Prometheus::start(&p);
    let scraped = tokio::time::timeout(Duration::from_secs(30), async {
        while !prometheus
            .query(r#"paved_task_memory_bytes{job="grow"}"#)
            .await
            .is_some_and(|v| v > 0.0)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(
        scraped.await.is_ok(),
        "Prometheus never saw the task's memory:\n{}",
        prometheus.log()
    );
    assert_eq!(
        prometheus.query(r#"up{job="paved"}"#).await,
        Some(1.0),
        "{}",
        prometheus.log()
    );
    p.stop().await;
}

#[tokio::test]
async fn metrics_are_pushed_to_an_otlp_collector() {
    let (endpoint, mut received) = otlp_collector().await;
    let p = InProcess::start_with(tempfile::tempdir().unwrap(), Some(endpoint)).await;
    p.submit(GROWER).await;
    let task_memory = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let request = received.recv().await.expect("the collector runs");
            if let Some(point) = memory_of_grow(&request) {
                return point;
            }
        }
    })
    .await
    .expect("a push with the task's memory within 30 s");
    assert!(task_memory > 0.0);
    p.stop().await;
}

#[tokio::test]
async fn paved_up_sends_its_spans_to_an_otlp_collector() {
    let (endpoint, mut received) = otlp_trace_collector().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut up = Command::new(env!("CARGO_BIN_EXE_paved"))
        .args([
            "up",
            "--listen",
            &listen,
            "--no-proxy",
            "--otlp-endpoint",
            &endpoint,
            "--data",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let token_file = dir.path().join("admin.token");
    let client = reqwest::Client::new();
    let called = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(token) = std::fs::read_to_string(&token_file) {
                let url = format!("http://{listen}/v1/jobs");
                let response = client.get(url).bearer_auth(token.trim()).send().await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(called.await.is_ok(), "paved up answered no API call within 30 s");
    let span = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let request = received.recv().await.expect("the collector runs");
            let spans = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans);
            if let Some(span) = spans.into_iter().find(|s| s.name == "api call") {
                return span.clone();
            }
        }
    })
    .await
    .expect("an `api call` span within 30 s");
    assert_eq!(span.trace_id.len(), 16);
    let _ = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status();
    let _ = up.wait();
}

/// A real OTLP/gRPC trace receiver on loopback; every request it gets comes out of the channel.
async fn otlp_trace_collector() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let endpoint = serve_on_loopback(tonic::service::Routes::new(TraceServiceServer::new(Traces(tx)))).await;
    (endpoint, rx)
}

struct Traces(tokio::sync::mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A real OTLP/gRPC metrics receiver on loopback (the collector's own service definition);
/// every request it gets comes out of the channel.
async fn otlp_collector() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<ExportMetricsServiceRequest>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let endpoint = serve_on_loopback(tonic::service::Routes::new(MetricsServiceServer::new(Collector(
        tx,
    ))))
    .await;
    (endpoint, rx)
}

/// Serves `routes` over gRPC on a free loopback port; returns its `http://` URL.
async fn serve_on_loopback(routes: tonic::service::Routes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    endpoint
}

struct Collector(tokio::sync::mpsc::UnboundedSender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The `paved_task_memory_bytes` gauge of the `grow` job's task in a pushed request.
fn memory_of_grow(request: &ExportMetricsServiceRequest) -> Option<f64> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    let memory = metrics.filter(|m| m.name == "paved_task_memory_bytes");
    let points = memory.filter_map(|m| match &m.data {
        Some(Data::Gauge(g)) => Some(&g.data_points),
        _ => None,
    });
    points.flatten().find_map(|point| {
        let is_grow = point.attributes.iter().any(|kv| {
            kv.key == "job"
                && kv.value.as_ref().and_then(|v| v.value.as_ref()) == Some(&Any::StringValue("grow".into()))
        });
        match point.value {
            Some(Value::AsDouble(v)) if is_grow => Some(v),
            _ => None,
        }
    })
}

/// Prometheus's own checker: parses the exposition and lints it (names, help, units).
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask test` installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// A Prometheus server scraping the platform every second with its admin token; killed on drop.
/// `honor_labels` keeps paved's own `job` tag (the job's name) instead of renaming it
/// `exported_job` in favour of the scrape job's name, as the README advises.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(p: &InProcess) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let token_file = p.platform.data.join("admin.token");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: paved\n    \
             honor_labels: true\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{}']\n",
            token_file.display(),
            p.platform.listen
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's prometheus package; `cargo xtask test` installs it)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Its log and what it says of its scrape target, for failure messages.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default();
        let targets = std::process::Command::new("curl")
            .args(["-s", &format!("{}/api/v1/targets", self.url)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("{log}\ntargets: {targets}")
    }

    /// The first value of an instant query, once Prometheus answers and has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        let value = body.pointer("/data/result/0/value/1")?.as_str()?;
        value.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
