//! `paved up`: the control plane, an agent and the embedded store in one process, on this
//! machine, until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use paved_agent::{Agent, AgentConfig};
use paved_api::v1::{CreateJobRequest, jobs_server::Jobs};
use paved_control::auth::{ADMIN_TOKEN_FILE, Tokens, ensure_admin_token};
use paved_control::{
    Api, ApiError, Caller, Clock, Ids, Repo, ServerInfo, SystemClock, TaskSource, Telemetry,
    reconcile::Reconciler, server,
};
use paved_runtime::Drivers;
use paved_store::{EtcdOptions, EtcdStore, Expect, RedbStore};
use paved_telemetry::SnapshotError;
use paved_telemetry::otlp::OtlpExporter;
use paved_telemetry::tsdb::{Store, StoreConfig};
use paved_telemetry::{Registry, Timestamp};
use paved_types::Task;
use tokio::sync::{Notify, oneshot};

use crate::cli::UpArgs;

/// How long a clean stop waits for in-flight API calls.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The example jobs `--demo` submits, bundled into the binary.
const DEMO_JOBS: [(&str, &str); 2] = [
    (
        "examples/hello-web.toml",
        include_str!("../../../examples/hello-web.toml"),
    ),
    (
        "examples/countdown.toml",
        include_str!("../../../examples/countdown.toml"),
    ),
];

/// A running single-node platform: store, control plane, API server and agent.
pub struct Platform {
    pub listen: SocketAddr,
    /// Where the edge router listens, when it runs.
    pub proxy: Option<SocketAddr>,
    /// Whether the edge router terminates TLS.
    pub proxy_tls: bool,
    stop_proxy: Option<oneshot::Sender<()>>,
    pub data: PathBuf,
    pub token: String,
    api: Api,
    agent: Option<Agent>,
    telemetry: Telemetry,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_server: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

/// What `Platform::start` needs.
pub struct PlatformOptions {
    pub data: PathBuf,
    pub listen: SocketAddr,
    /// The `paved` executable, which runs each task's shim.
    pub shim: PathBuf,
    /// How the embedded time-series store samples and keeps metrics.
    pub metrics: StoreConfig,
    /// An OTLP/gRPC collector to push every metric to, once per metrics step.
    pub otlp_endpoint: Option<String>,
    /// Where the edge router listens; `None`: no edge router.
    pub proxy: Option<SocketAddr>,
    /// Certificate files for the edge router to terminate TLS with; `None`: plain HTTP.
    pub proxy_tls: Option<paved_proxy::TlsConfig>,
    /// Where state lives: `None` for the embedded redb store in the data directory, or an
    /// `etcd://` URL shared by every server of a cluster.
    pub store: Option<String>,
    /// Run an agent in this process (`paved up`); `paved server` runs none.
    pub local_agent: bool,
}

/// The metrics store's snapshot in the data directory: written at a clean stop and every
/// `SNAPSHOT_EVERY`, read at start.
const METRICS_SNAPSHOT: &str = "metrics.snapshot";
/// A crash loses at most this much metric history (besides what a clean stop saves).
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data = args.data.clone().unwrap_or_else(crate::client::default_data_dir);
    let shim = std::env::current_exe().context("cannot find the paved executable to run task shims")?;
    let metrics = StoreConfig {
        step: args.metrics_step,
        retention: args.metrics_retention,
        ..StoreConfig::default()
    };
    metrics
        .validate()
        .context("invalid --metrics-step or --metrics-retention")?;
    let platform = Platform::start(PlatformOptions {
        data,
        listen: args.listen,
        shim,
        metrics,
        otlp_endpoint: args.otlp_endpoint,
        proxy: (!args.no_proxy).then_some(args.proxy),
        proxy_tls: crate::edge::tls(args.proxy_tls_cert, args.proxy_tls_key),
        store: None,
        local_agent: true,
    })
    .await?;
    println!("paved is up on http://{} (gRPC and JSON API)", platform.listen);
    if let Some(proxy) = platform.proxy {
        let scheme = if platform.proxy_tls { "https" } else { "http" };
        println!("  edge router on {scheme}://{proxy} (`paved route add` sends traffic to jobs)");
    }
    println!("  data:  {}", platform.data.display());
    println!("  token: {}", platform.data.join(ADMIN_TOKEN_FILE).display());
    if args.demo {
        platform.submit_demo().await;
    }
    println!("Press Ctrl-C to stop. Try `paved jobs` in another terminal.");
    shutdown_signal().await;
    println!("stopping: closing the API, then stopping tasks...");
    platform.shutdown().await;
    println!("stopped");
    Ok(())
}

impl Platform {
    pub async fn start(opts: PlatformOptions) -> anyhow::Result<Platform> {
        let data = opts.data;
        prepare_data_dir(&data)?;
        let (store, etcd): (Arc<dyn paved_store::Store>, Option<EtcdStore>) = match &opts.store {
            None => {
                let redb = RedbStore::open(&data.join("paved.redb")).map_err(|e| anyhow::anyhow!("{e}"))?;
                (Arc::new(redb), None)
            }
            Some(url) => {
                let etcd = EtcdStore::connect_url(url, EtcdOptions::default())
                    .await
                    .with_context(|| format!("cannot use the store {url}; check --store"))?;
                (Arc::new(etcd.clone()), Some(etcd))
            }
        };
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}: is another paved up running? choose another address with --listen",
                    opts.listen
                )
            })?;
        let listen = listener.local_addr()?;

        let repo = Repo::new(store);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ids = Ids::from_entropy();
        let tokens = Tokens::load(&repo).await?;
        adopt_cluster_admin_token(&repo, &data).await?;
        let token = ensure_admin_token(&repo, &tokens, &data, &ids, clock.now_ms()).await?;
        share_admin_token(&repo, &token).await?;
        // Tokens created or revoked through another server sharing the store reach this one.
        let follow_tokens = tokio::spawn(tokens.clone().follow(repo.clone()));

        let telemetry = open_telemetry(&data, opts.metrics)?;
        let agent = if opts.local_agent {
            let runtime = Arc::new(Drivers::new(opts.shim));
            let agent = Agent::new(
                agent_config(&data),
                repo.clone(),
                runtime,
                clock.clone(),
                telemetry.registry.clone(),
            );
            agent.start().await?;
            Some(agent)
        } else {
            None
        };

        let wake = Arc::new(Notify::new());
        let info = ServerInfo {
            listen: listen.to_string(),
            data_dir: data.clone(),
            started_at_ms: clock.now_ms(),
        };
        let logs = agent
            .clone()
            .map(|agent| Arc::new(AgentLogs(agent)) as Arc<dyn TaskSource>);
        let api = Api::new(
            repo.clone(),
            clock.clone(),
            ids.clone(),
            logs,
            info,
            wake.clone(),
            telemetry.clone(),
            tokens.clone(),
        );
        // Remote agents' task usage, as the local agent's collector emits its own.
        let agents = api.agents().clone();
        telemetry.registry.register_collector(move |out| agents.emit(out));
        let router = server::router(api.clone(), tokens).await?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server::serve(router, listener, shutdown).await {
                tracing::error!(error = %e, "API server failed");
            }
        });
        let reconciler = Reconciler::new(repo.clone(), clock, ids, wake).record_into(&telemetry.registry);
        let reconciler = tokio::spawn(crate::server::control_loops(reconciler, etcd, listen));
        let sampler = tokio::spawn(sample_metrics(telemetry.clone(), data.join(METRICS_SNAPSHOT)));
        let mut tasks = vec![sampler, follow_tokens];
        if let Some(endpoint) = &opts.otlp_endpoint {
            let node = agent
                .as_ref()
                .map_or_else(|| listen.to_string(), |a| a.node_name().to_owned());
            let resource = [("service.name", "paved"), ("host.name", node.as_str())];
            let exporter = OtlpExporter::new(endpoint, &resource).context("invalid --otlp-endpoint")?;
            let every = telemetry.store.config().step;
            tasks.push(tokio::spawn(push_metrics(
                exporter,
                telemetry.registry.clone(),
                every,
            )));
        }
        tasks.push(reconciler);
        if let Some(agent) = agent.clone() {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = agent.run().await {
                    tracing::error!(error = %e, "agent stopped");
                }
            }));
        }
        let (proxy, stop_proxy) = match opts.proxy {
            Some(addr) => {
                let tls = opts.proxy_tls.clone();
                let (addr, stop, serving) = start_proxy(addr, tls, &repo, &telemetry).await?;
                tasks.push(serving.0);
                tasks.push(serving.1);
                (Some(addr), Some(stop))
            }
            None => (None, None),
        };
        Ok(Platform {
            listen,
            proxy,
            proxy_tls: opts.proxy_tls.is_some(),
            stop_proxy,
            data,
            token,
            api,
            agent,
            telemetry,
            tasks,
            stop_server: Some(stop_server),
            server,
        })
    }

    /// Submits the bundled example jobs.
    pub async fn submit_demo(&self) {
        for (source, manifest) in DEMO_JOBS {
            let req = CreateJobRequest {
                manifest: manifest.to_owned(),
                source: source.to_owned(),
            };
            match self.api.create_job(Caller::admin("demo").request(req)).await {
                Ok(job) => {
                    let job = job.into_inner();
                    println!("  demo: submitted {} job {} ({})", job.kind, job.name, job.id);
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    println!("  demo: {source} already running")
                }
                Err(s) => println!("  demo: cannot submit {source}: {}", s.message()),
            }
        }
    }

    /// Clean stop: closes the API (in-flight calls finish), stops the control loops, then
    /// stops every task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.stop_proxy.take() {
            let _ = stop.send(());
        }
        // Streams (`logs -f`, watches) never finish by themselves: give calls a moment, then go.
        if tokio::time::timeout(DRAIN, &mut self.server).await.is_err() {
            self.server.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
        if let Some(agent) = &self.agent {
            agent.shutdown().await;
        }
        save_metrics(&self.telemetry, &self.data.join(METRICS_SNAPSHOT));
    }

    /// The store, as this platform's control plane reads and writes it.
    pub fn repo(&self) -> &Repo {
        self.api.repo()
    }

    /// The metrics registry and the store it is sampled into.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

/// Binds the edge router and starts it and the store follower that feeds it; returns its
/// address, what stops it, and the two tasks.
async fn start_proxy(
    addr: SocketAddr,
    tls: Option<paved_proxy::TlsConfig>,
    repo: &Repo,
    telemetry: &Telemetry,
) -> anyhow::Result<(
    SocketAddr,
    oneshot::Sender<()>,
    (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>),
)> {
    let mirror = paved_control::mirror::Mirror::start(repo).await?;
    let first = paved_control::edge::snapshot(&mirror);
    let (snapshots, follow) = tokio::sync::watch::channel(Arc::new(first));
    let per_core = crate::edge::bind(addr, tls, follow, telemetry.registry.clone())
        .await
        .context("choose another address with --proxy, or run without the edge router: --no-proxy")?;
    let bound = per_core.local_addr();
    let feeder = tokio::spawn(crate::edge::feed_from_store(mirror, snapshots));
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = per_core.serve(shutdown).await {
            tracing::error!(error = %e, "edge router failed");
        }
    });
    Ok((bound, stop, (feeder, serving)))
}

/// The metrics store, with the history a previous run saved when there is a readable
/// snapshot: an unreadable one is set aside (`.bad`) and history starts afresh, since
/// restoring service matters more than old samples.
fn open_telemetry(data: &Path, config: StoreConfig) -> anyhow::Result<Telemetry> {
    let path = data.join(METRICS_SNAPSHOT);
    let store = match Store::load(&path, config.clone()) {
        Ok(store) => store,
        Err(SnapshotError::Missing { .. }) => Store::new(config)?,
        Err(e) => {
            tracing::warn!(error = %e, "metric history lost: the snapshot cannot be read; starting empty");
            let _ = std::fs::rename(&path, path.with_extension("snapshot.bad"));
            Store::new(config)?
        }
    };
    let registry = Registry::new();
    registry.register_collector(store.collector());
    Ok(Telemetry {
        registry,
        store: Arc::new(store),
    })
}

/// Samples the registry into the store once per step, and snapshots it now and then.
async fn sample_metrics(telemetry: Telemetry, snapshot: PathBuf) {
    let mut ticks = tokio::time::interval(telemetry.store.config().step);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut saved = tokio::time::Instant::now();
    loop {
        ticks.tick().await;
        let report = telemetry.store.sample(&telemetry.registry, Timestamp::now());
        if report.dropped > 0 {
            tracing::debug!(dropped = report.dropped, "metric series over the per-metric cap");
        }
        if saved.elapsed() >= SNAPSHOT_EVERY {
            let (telemetry, snapshot) = (telemetry.clone(), snapshot.clone());
            let _ = tokio::task::spawn_blocking(move || save_metrics(&telemetry, &snapshot)).await;
            saved = tokio::time::Instant::now();
        }
    }
}

/// Pushes every metric to an OTLP collector once per `every`; says so when pushes start or stop
/// failing, not at each failure.
async fn push_metrics(mut exporter: OtlpExporter, registry: Registry, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match exporter.push(&registry).await {
            Ok(points) => {
                if failing {
                    tracing::info!(points, "OTLP export works again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "OTLP export failing; retrying every step");
                }
                failing = true;
            }
        }
    }
}

fn save_metrics(telemetry: &Telemetry, path: &Path) {
    if let Err(e) = telemetry.store.save(path) {
        tracing::warn!(error = %e, "cannot save the metrics snapshot; history since the last one will not survive a restart");
    }
}

/// Creates the data directory, refusing a path that is a file.
/// Where the servers of one cluster keep the admin token they all write to their data
/// directories. Reading the store is already everything an admin token grants.
const CLUSTER_ADMIN_TOKEN: &str = "/cluster/admin-token";

/// A server joining a cluster (no token file yet, one in the store) takes the cluster's token,
/// so every server's `admin.token` holds the same one.
async fn adopt_cluster_admin_token(repo: &Repo, data: &Path) -> anyhow::Result<()> {
    let path = data.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok(());
    }
    if let Some(kv) = repo.store().get(CLUSTER_ADMIN_TOKEN).await? {
        let token = String::from_utf8_lossy(&kv.value).into_owned();
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write the admin token to {}", path.display()))?;
        file.write_all(token.as_bytes())?;
    }
    Ok(())
}

/// Records the first server's admin token for the servers that join later.
async fn share_admin_token(repo: &Repo, token: &str) -> anyhow::Result<()> {
    match repo
        .store()
        .put(CLUSTER_ADMIN_TOKEN, token.as_bytes().to_vec(), Expect::Absent)
        .await
    {
        Ok(_) | Err(paved_store::StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn prepare_data_dir(data: &Path) -> anyhow::Result<()> {
    if data.exists() && !data.is_dir() {
        bail!(
            "data directory {} is a file, not a directory; pass another with --data",
            data.display()
        );
    }
    std::fs::create_dir_all(data).with_context(|| {
        format!(
            "cannot create data directory {}; pass another with --data",
            data.display()
        )
    })
}

fn agent_config(data: &Path) -> AgentConfig {
    AgentConfig {
        node: crate::server::hostname(),
        data_dir: data.join("agent"),
        cpu: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        memory_bytes: total_memory().unwrap_or(1 << 30),
        ..AgentConfig::default()
    }
}

pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Task logs and stats, read from the local agent.
struct AgentLogs(Agent);

#[async_trait]
impl TaskSource for AgentLogs {
    async fn open(
        &self,
        task: &Task,
        stderr: bool,
        tail_bytes: u64,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, String>>, ApiError> {
        self.0
            .logs(task, stderr, tail_bytes, follow)
            .map_err(|e| ApiError::FailedPrecondition(e.to_string()))
    }

    fn stats(&self, task: &Task) -> Option<paved_api::v1::TaskStats> {
        self.0.stats(&task.id).map(|sample| sample.to_message())
    }
}
