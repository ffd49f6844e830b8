//! Tests of the health checks: the failure counting as a table of cases, and each probe against
//! a real server on loopback.

use std::sync::Arc;

use paved_store::{Expect, RedbStore};
use paved_types::Task;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

/// Feeds `steps` to a tracker with `threshold`: `o` a success, `x` a failure that counts, `g` a
/// failure during the grace period. `expect` has one character per step: `.` no change, `H`
/// healthy, `U` unhealthy.
fn check(threshold: u32, steps: &str, expect: &str) {
    let mut tracker = Tracker::new(threshold);
    let got: String = steps
        .chars()
        .map(|step| {
            let result = if step == 'o' {
                Ok(())
            } else {
                Err("down".to_owned())
            };
            match tracker.observe(result, step != 'g') {
                None => '.',
                Some(v) if v.health == Health::Healthy => 'H',
                Some(_) => 'U',
            }
        })
        .collect();
    assert_eq!(got, expect, "threshold {threshold}, steps {steps}");
}

#[test]
fn consecutive_failures_decide() {
    check(3, "xxx", "..U");
    check(3, "xxxx", "..U.");
    check(3, "xxxo", "..UH");
    check(3, "oxxo", "H...");
    check(3, "xxoxxx", "..H..U");
    check(1, "xox", "UHU");
    check(2, "ggggxx", ".....U");
    // Successes count during the grace period too.
    check(2, "gogx", ".H..");
    check(1, "", "");
}

#[test]
fn verdicts_say_what_failed_and_how_often() {
    let mut tracker = Tracker::new(2);
    assert_eq!(tracker.observe(Err("a".into()), true), None);
    let verdict = tracker.observe(Err("GET /: status 500".into()), true).unwrap();
    assert_eq!(
        (verdict.health, verdict.detail.as_str()),
        (Health::Unhealthy, "GET /: status 500")
    );
    assert_eq!(
        verdict.reason(),
        "unhealthy: GET /: status 500 (2 consecutive failures)"
    );
    let mut tracker = Tracker::new(1);
    let verdict = tracker.observe(Err("x".into()), true).unwrap();
    assert_eq!(verdict.reason(), "unhealthy: x (1 consecutive failure)");
}

/// Answers every connection once, as an HTTP/1.0 server that closes after its answer: the
/// status is the request path's number ("/204" answers 204).
async fn http_server() -> u16 {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buffer).await.unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&buffer[..n]);
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split(' ').nth(1).unwrap_or_default();
            let status = path.trim_start_matches('/');
            let answer = format!("HTTP/1.0 {status} X\r\nContent-Length: 2\r\n\r\nhi");
            conn.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    port
}

/// A port nothing listens on (for as long as nothing else takes it).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn probe(probe: Probe) -> Result<(), String> {
    probe.attempt(Duration::from_secs(5)).await
}

#[tokio::test]
async fn http_checks_want_2xx_or_3xx() {
    let port = http_server().await;
    let get = |status: &str| Probe::Http {
        port,
        path: format!("/{status}"),
    };
    for ok in ["200", "204", "302"] {
        assert_eq!(probe(get(ok)).await, Ok(()), "{ok}");
    }
    assert_eq!(probe(get("404")).await, Err("GET /404: status 404".into()));
    assert_eq!(probe(get("500")).await, Err("GET /500: status 500".into()));
    let port = closed_port().await;
    let refused = format!("GET /: connect 127.0.0.1:{port}: connection refused");
    let path = "/".to_owned();
    assert_eq!(probe(Probe::Http { port, path }).await, Err(refused));
}

/// A server that accepts but never answers fails the check when its timeout is up.
#[tokio::test]
async fn silence_fails_at_the_timeout() {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let path = "/healthz".to_owned();
    let got = Probe::Http { port, path }
        .attempt(Duration::from_millis(200))
        .await;
    assert_eq!(got, Err("GET /healthz: no answer within 200ms".into()));
    let got = Probe::Grpc {
        port,
        service: String::new(),
    }
    .attempt(Duration::from_millis(200))
    .await;
    assert_eq!(
        got,
        Err("grpc health of the server: no answer within 200ms".into())
    );
}

#[tokio::test]
async fn tcp_checks_connect() {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(probe(Probe::Tcp { port }).await, Ok(()));
    drop(listener);
    let refused = format!("connect 127.0.0.1:{port}: connection refused");
    assert_eq!(probe(Probe::Tcp { port }).await, Err(refused));
}

#[tokio::test]
async fn grpc_checks_ask_grpc_health_v1() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("app.Sick", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder().add_service(service);
    tokio::spawn(server.serve_with_incoming(incoming));
    let grpc = |service: &str| Probe::Grpc {
        port,
        service: service.to_owned(),
    };
    assert_eq!(probe(grpc("")).await, Ok(()));
    let sick = probe(grpc("app.Sick")).await;
    assert_eq!(sick, Err("grpc health of \"app.Sick\": NOT_SERVING".into()));
    let unknown = probe(grpc("app.Nope")).await.unwrap_err();
    assert!(
        unknown.starts_with("grpc health of \"app.Nope\": NotFound"),
        "{unknown}"
    );
    let port = closed_port().await;
    let refused = probe(Probe::Grpc {
        port,
        service: String::new(),
    })
    .await
    .unwrap_err();
    let want = format!("grpc health of the server: connect 127.0.0.1:{port}: ");
    assert!(
        refused.starts_with(&want) && refused.contains("connection refused"),
        "{refused}"
    );
}

/// A monitor writes the verdict to the stored task once, and tells the supervisor why.
#[tokio::test]
async fn monitor_records_health_and_reports_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    let repo = Repo::new(Arc::new(store));
    let task = Task {
        id: "a1-b2".into(),
        job_id: "a1".into(),
        job_name: "web".into(),
        tenant: "default".into(),
        index: 0,
        node: "n".into(),
        state: TaskState::Running,
        desired: paved_types::Desired::Run,
        reason: String::new(),
        restarts: 0,
        exit_code: None,
        signal: None,
        pid: None,
        ports: Default::default(),
        created_at_ms: 0,
        started_at_ms: None,
        finished_at_ms: None,
        health: Health::Unknown,
        health_detail: String::new(),
    };
    repo.put_task(&task, Expect::Absent).await.unwrap();
    let port = closed_port().await;
    let spec = HealthSpec {
        check: HealthCheck::Tcp,
        port: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        grace: Duration::ZERO,
        threshold: 2,
    };
    let counters = HealthCounters {
        healthy: paved_telemetry::Counter::default(),
        unhealthy: paved_telemetry::Counter::default(),
    };
    let unhealthy = counters.unhealthy.clone();
    let mut monitor = Monitor::start(repo.clone(), &task.id, spec, Probe::Tcp { port }, counters);
    let reason = tokio::time::timeout(Duration::from_secs(20), Monitor::unhealthy(Some(&mut monitor)))
        .await
        .expect("a verdict");
    let refused = format!("connect 127.0.0.1:{port}: connection refused");
    assert_eq!(reason, format!("unhealthy: {refused} (2 consecutive failures)"));
    monitor.stop().await;
    assert_eq!(unhealthy.get(), 1.0, "the change is counted");
    let stored = repo.task(&task.id).await.unwrap().unwrap().value;
    assert_eq!(
        (stored.health, stored.health_detail),
        (Health::Unhealthy, refused)
    );
}
