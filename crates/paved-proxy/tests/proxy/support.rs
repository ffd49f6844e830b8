//! Test support: real upstream HTTP servers (HTTP/1.1 and h2c, on loopback), a proxy started
//! on its own port with a snapshot channel, and small clients.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use paved_proxy::{Clock, Endpoint, ManualClock, Proxy, ProxyConfig, Snapshot};
use paved_telemetry::Registry;
use paved_types::{Backend, Fault, Route};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// A real HTTP server standing in for one task. It answers:
/// - `/status/<code>`: that status;
/// - `/slow/<ms>`: the echo, after that many milliseconds;
/// - `/stream`: one chunk, then a second once `release` is notified;
/// - anything else: a JSON echo of the request (task, method, uri, headers, body).
pub struct Upstream {
    pub task: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub release: Arc<Notify>,
    killed: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(task: &str) -> Upstream {
        Upstream::serve(task, None).await
    }

    /// An upstream that answers every request with `status`.
    pub async fn failing(task: &str, status: u16) -> Upstream {
        Upstream::serve(task, Some(status)).await
    }

    async fn serve(task: &str, fail: Option<u16>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let state = (task.to_owned(), hits.clone(), release.clone(), fail);
        let (killed, kill) = watch::channel(false);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, mut kill) = (state.clone(), kill.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                        _ = kill.wait_for(|k| *k) => {}
                    }
                });
            }
        });
        Upstream {
            task: task.to_owned(),
            addr,
            hits,
            release,
            killed,
            server,
        }
    }

    /// Dies like a killed process: the port closes and every open connection is cut, requests
    /// in progress included.
    pub fn kill(&self) {
        self.server.abort();
        self.killed.send_replace(true);
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            task: self.task.clone(),
            addr: self.addr,
            port_name: "http".into(),
            draining: false,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(
    (task, hits, release, fail): (String, Arc<AtomicUsize>, Arc<Notify>, Option<u16>),
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    hits.fetch_add(1, SeqCst);
    // A healthy upstream that is slow to answer, for tests that need a failing one preferred.
    if fail.is_none() && req.uri().path() == "/slow" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let path = match fail {
        Some(status) => format!("/status/{status}"),
        None => req.uri().path().to_owned(),
    };
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return Ok(Response::builder()
            .status(status)
            .header("x-task", &task)
            .body(full(code.to_owned()))
            .unwrap());
    }
    if path == "/stream" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first;")))).await;
            release.notified().await;
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"second")))).await;
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(Response::builder()
            .header("x-task", &task)
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let echo = json!({
        "task": task,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let response = Response::builder()
        .header("x-task", &task)
        .header("content-type", "application/json")
        .header("keep-alive", "timeout=5")
        .body(full(echo.to_string()))
        .unwrap();
    Ok(response)
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A proxy on a loopback port, its snapshot channel and registry.
pub struct Harness {
    pub addr: SocketAddr,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    pub registry: Registry,
    pub clock: ManualClock,
    stop: Option<oneshot::Sender<()>>,
    pub served: Option<JoinHandle<Result<(), paved_proxy::ProxyError>>>,
}

impl Harness {
    pub async fn start(snapshot: Snapshot) -> Harness {
        Harness::with_config(snapshot, ProxyConfig::default()).await
    }

    pub async fn with_config(snapshot: Snapshot, config: ProxyConfig) -> Harness {
        let (snapshots, rx) = watch::channel(Arc::new(snapshot));
        let registry = Registry::new();
        let clock = ManualClock::new(1_000_000);
        let as_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let proxy = Proxy::new(config, rx, registry.clone(), as_clock)
            .unwrap()
            .with_seed(42);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(proxy.serve(listener, async {
            let _ = stopped.await;
        }));
        Harness {
            addr,
            snapshots,
            registry,
            clock,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Publishes a new snapshot; the proxy applies it moments later.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting; `served` completes once in-flight requests are done.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The Prometheus text of the registry.
    pub fn metrics(&self) -> String {
        paved_telemetry::prometheus::render(&self.registry)
    }

    /// The value of the series `name{labels}` as rendered, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn route(name: &str, backends: &[(&str, u32)]) -> Route {
    Route {
        name: name.into(),
        hosts: vec![],
        path_prefix: "/".into(),
        backends: backends
            .iter()
            .map(|(job, weight)| Backend {
                job: (*job).into(),
                port: String::new(),
                weight: *weight,
            })
            .collect(),
        sticky: None,
        timeout: Duration::from_secs(5),
        retries: 2,
    }
}

pub fn snapshot(routes: Vec<Route>, jobs: &[(&str, &[&Upstream])], faults: Vec<Fault>) -> Snapshot {
    let endpoints = jobs
        .iter()
        .map(|(job, ups)| ((*job).to_owned(), ups.iter().map(|u| u.endpoint()).collect()))
        .collect();
    Snapshot {
        routes,
        endpoints,
        faults,
    }
}

/// An endpoint nothing listens on: connects are refused.
pub async fn dead_endpoint(task: &str) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Endpoint {
        task: task.into(),
        addr,
        port_name: "http".into(),
        draining: false,
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` and reads the whole answer: status, headers, body text.
pub async fn send(
    client: &Client<HttpConnector, Body>,
    req: Request<Body>,
) -> (StatusCode, http::HeaderMap, String) {
    let response = client.request(req).await.expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a whole body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

pub async fn get(client: &Client<HttpConnector, Body>, url: &str) -> (StatusCode, http::HeaderMap, String) {
    send(client, Request::get(url).body(full("")).unwrap()).await
}

/// GETs `url` and returns which task answered (the `x-task` header), or the status.
pub async fn task_of(client: &Client<HttpConnector, Body>, url: &str) -> Result<String, StatusCode> {
    let (status, headers, _) = get(client, url).await;
    match headers.get("x-task") {
        Some(t) if status.is_success() => Ok(t.to_str().unwrap().to_owned()),
        _ => Err(status),
    }
}

pub fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an echo ({e}): {body}"))
}

/// Polls `check` every 10 ms until it holds, failing after 5 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy with one route, `web`, to one upstream, `web-1`.
pub async fn web_proxy() -> (Upstream, Harness) {
    let up = Upstream::start("web-1").await;
    let proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &[&up])],
        vec![],
    ))
    .await;
    (up, proxy)
}
