//! Test support: a platform started in-process on a temporary data dir, clients that carry its
//! token, manifests, and polling with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use paved::up::{Platform, PlatformOptions};
use paved_api::v1::{
    self as pb, jobs_client::JobsClient, metrics_client::MetricsClient, routing_client::RoutingClient,
    system_client::SystemClient, tasks_client::TasksClient, tokens_client::TokensClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct InProcess {
    pub platform: Platform,
    pub dir: tempfile::TempDir,
    channel: Channel,
}

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

impl Bearer {
    #[allow(dead_code)]
    pub fn new(token: &str) -> Bearer {
        Bearer(Some(format!("Bearer {token}").parse().unwrap()))
    }
}

/// Clients that carry one token: `p.as_token(&secret).jobs()`.
pub struct As {
    channel: Channel,
    bearer: Bearer,
    pub token: String,
}

impl As {
    pub fn jobs(&self) -> JobsClient<Authed> {
        JobsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn tasks(&self) -> TasksClient<Authed> {
        TasksClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn tokens(&self) -> TokensClient<Authed> {
        TokensClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn metrics(&self) -> MetricsClient<Authed> {
        MetricsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn system(&self) -> SystemClient<Authed> {
        SystemClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn routing(&self) -> RoutingClient<Authed> {
        RoutingClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// Creates a job from manifest text; panics if the server refuses it.
    pub async fn submit(&self, manifest: impl Into<String>) -> pb::Job {
        let request = pb::CreateJobRequest {
            manifest: manifest.into(),
            source: String::new(),
        };
        self.jobs()
            .create_job(request)
            .await
            .expect("create the job")
            .into_inner()
    }
}

impl InProcess {
    pub async fn start() -> InProcess {
        InProcess::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Stops cleanly and starts again on the same data directory.
    pub async fn restart(self) -> InProcess {
        let dir = self.dir;
        self.platform.shutdown().await;
        InProcess::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> InProcess {
        InProcess::start_with(dir, None).await
    }

    /// Started with its metrics also pushed to the OTLP collector at `otlp_endpoint`.
    pub async fn start_with(dir: tempfile::TempDir, otlp_endpoint: Option<String>) -> InProcess {
        InProcess::start_configured(dir, |opts| opts.otlp_endpoint = otlp_endpoint).await
    }

    /// Started with the test defaults as `configure` changes them.
    pub async fn start_configured(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut PlatformOptions),
    ) -> InProcess {
        let mut opts = PlatformOptions {
            otlp_endpoint: None,
            proxy: Some("127.0.0.1:0".parse().unwrap()),
            proxy_tls: None,
            store: None,
            local_agent: true,
            data: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            shim: env!("CARGO_BIN_EXE_paved").into(),
            // Fast enough for a test to see series appear and move within seconds.
            metrics: paved_telemetry::tsdb::StoreConfig {
                step: std::time::Duration::from_secs(1),
                ..paved_telemetry::tsdb::StoreConfig::default()
            },
        };
        configure(&mut opts);
        let platform = Platform::start(opts).await.unwrap();
        let channel = Channel::from_shared(format!("http://{}", platform.listen))
            .unwrap()
            .connect()
            .await
            .unwrap();
        InProcess {
            platform,
            dir,
            channel,
        }
    }

    pub async fn stop(self) {
        self.platform.shutdown().await;
    }

    pub async fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.platform.listen)
    }

    fn bearer(&self) -> Bearer {
        Bearer(Some(format!("Bearer {}", self.platform.token).parse().unwrap()))
    }

    pub fn jobs(&self) -> JobsClient<Authed> {
        JobsClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    /// Clients that carry `token` instead of the admin token.
    pub fn as_token(&self, token: &str) -> As {
        As {
            channel: self.channel.clone(),
            bearer: Bearer(Some(format!("Bearer {token}").parse().unwrap())),
            token: token.to_owned(),
        }
    }

    /// Clients that carry the admin token.
    pub fn as_admin(&self) -> As {
        self.as_token(&self.platform.token)
    }

    /// Creates a token through the API with the admin token; returns its secret.
    pub async fn create_token(&self, role: &str, tenant: &str, name: &str) -> String {
        let req = pb::CreateTokenRequest {
            role: role.into(),
            tenant: tenant.into(),
            name: name.into(),
        };
        let created = self
            .as_admin()
            .tokens()
            .create_token(req)
            .await
            .expect("create the token")
            .into_inner();
        assert_eq!(created.token.as_ref().map(|t| t.name.as_str()), Some(name));
        created.secret
    }

    pub fn jobs_with_token(&self, token: Option<&str>) -> JobsClient<Authed> {
        let bearer = Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()));
        JobsClient::with_interceptor(self.channel.clone(), bearer)
    }

    /// GETs `path` from the JSON API with the admin token and decodes the answer.
    #[allow(dead_code)]
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.platform.token)
            .send()
            .await
            .expect("a response")
            .json()
            .await
            .expect("JSON of the expected shape")
    }

    /// Creates a job from manifest text; panics if the server refuses it.
    #[allow(dead_code)]
    pub async fn submit(&self, manifest: impl Into<String>) -> pb::Job {
        let request = pb::CreateJobRequest {
            manifest: manifest.into(),
            source: String::new(),
        };
        self.jobs()
            .create_job(request)
            .await
            .expect("create the job")
            .into_inner()
    }

    pub fn tasks_client(&self) -> TasksClient<Authed> {
        TasksClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub async fn tasks(&self, job: &str) -> Vec<pb::Task> {
        let req = pb::ListTasksRequest {
            job: job.into(),
            states: vec![],
        };
        self.tasks_client()
            .list_tasks(req)
            .await
            .unwrap()
            .into_inner()
            .tasks
    }

    pub async fn running(&self, job: &str) -> Vec<pb::Task> {
        self.tasks(job)
            .await
            .into_iter()
            .filter(|t| t.state == "running")
            .collect()
    }

    /// The whole log of a task so far.
    pub async fn logs(&self, task: &str, stream: &str) -> String {
        let req = pb::StreamLogsRequest {
            task: task.into(),
            stream: stream.into(),
            follow: false,
            tail_bytes: 0,
        };
        let mut s = self.tasks_client().stream_logs(req).await.unwrap().into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = s.message().await.unwrap() {
            out.extend(chunk.data);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Polls the job until `done` holds.
    pub async fn wait_job(&self, job: &str, done: impl Fn(&pb::Job) -> bool) -> pb::Job {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = self
                .jobs()
                .get_job(pb::GetJobRequest { job: job.into() })
                .await
                .unwrap()
                .into_inner();
            if done(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job never reached the awaited state: {j:?}\ntasks: {:?}",
                self.tasks(job).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` every 50 ms for up to 30 s.
pub async fn wait_for<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_within(what, Duration::from_secs(30), check).await
}

pub async fn wait_for_within<F, Fut>(what: &str, within: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn service(name: &str, instances: u32, sh: &str) -> String {
    manifest(name, "service", instances, sh)
}

pub fn batch(name: &str, instances: u32, sh: &str) -> String {
    manifest(name, "batch", instances, sh)
}

fn manifest(name: &str, kind: &str, instances: u32, sh: &str) -> String {
    let sh = sh.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "name = \"{name}\"\nkind = \"{kind}\"\ninstances = {instances}\ncommand = [\"/bin/sh\", \"-c\", \"{sh}\"]\n"
    )
}

/// Whether a process runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `signal` (a name like "TERM") to `pid` with kill(1).
#[allow(dead_code)]
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Service names listed by server reflection, through v1 and through v1alpha.
pub async fn reflected_services(p: &InProcess) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};
    let channel = p.channel().await;
    let mut c1 =
        v1::server_reflection_client::ServerReflectionClient::with_interceptor(channel.clone(), p.bearer());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = c1
        .server_reflection_info(tokio_stream::once(req))
        .await
        .unwrap()
        .into_inner();
    let mut names1 = Vec::new();
    if let Some(resp) = stream.message().await.unwrap()
        && let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            resp.message_response
    {
        names1 = list.service.into_iter().map(|s| s.name).collect();
    }
    let mut c2 =
        v1alpha::server_reflection_client::ServerReflectionClient::with_interceptor(channel, p.bearer());
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = c2
        .server_reflection_info(tokio_stream::once(req))
        .await
        .unwrap()
        .into_inner();
    let mut names2 = Vec::new();
    if let Some(resp) = stream.message().await.unwrap()
        && let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            resp.message_response
    {
        names2 = list.service.into_iter().map(|s| s.name).collect();
    }
    (names1, names2)
}

/// The Prometheus text a server at `base` (`http://host:port`) serves on `/metrics`.
#[allow(dead_code)]
pub async fn scrape(base: &str, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("a response")
        .text()
        .await
        .expect("a text body")
}

pub fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
