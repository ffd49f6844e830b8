//! The roles of a cluster: `paved server` (the control plane without an agent, on the embedded
//! store or on etcd shared with other servers) and `paved agent` (a node that runs the tasks a
//! server places on it).
//!
//! Every server serves the whole API: the store (etcd) is shared and linearizable and every
//! write is a compare-and-set, so any server can take any write. Only the control loops must
//! run once per cluster: the server that holds the `control` election runs them, and stops the
//! moment it may have lost the lease; another takes over within the lease's TTL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use paved_agent::{Agent, AgentConfig, RemoteStore, keep_sessions};
use paved_control::reconcile::Reconciler;
use paved_control::{Clock, Repo, SystemClock};
use paved_runtime::Drivers;
use paved_store::EtcdStore;
use paved_telemetry::Registry;
use tracing::{info, warn};

use crate::cli::{AgentArgs, ServerArgs};
use crate::client::{TokenSource, endpoint};
use crate::up::{Platform, PlatformOptions, shutdown_signal};

/// How long a leader's lease lasts: the longest the control loops stand still after a leader
/// dies.
const LEADER_TTL: Duration = Duration::from_secs(3);
/// Longest an agent waits for a server to answer a call (a watch's stream may last longer).
const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two campaigns that failed (etcd unreachable).
const CAMPAIGN_RETRY: Duration = Duration::from_secs(1);

/// Runs the reconciler: always on the embedded store (one server), only while leading on etcd.
pub async fn control_loops(reconciler: Reconciler, etcd: Option<EtcdStore>, listen: SocketAddr) {
    let Some(etcd) = etcd else {
        return reconciler.run().await;
    };
    let reconciler = Arc::new(reconciler);
    let candidate = format!("{}@{listen}", hostname());
    loop {
        let election = match etcd.election("control") {
            Ok(election) => election,
            Err(e) => {
                warn!(error = %e, "cannot set up the leader election");
                tokio::time::sleep(CAMPAIGN_RETRY).await;
                continue;
            }
        };
        let leadership = match election.campaign(&candidate, LEADER_TTL).await {
            Ok(leadership) => leadership,
            Err(e) => {
                warn!(error = %e, "leader campaign failed; trying again");
                tokio::time::sleep(CAMPAIGN_RETRY).await;
                continue;
            }
        };
        info!(candidate, "leading: running the control loops");
        let looping = reconciler.clone();
        tokio::select! {
            () = leadership.lost() => warn!(candidate, "leadership lost: control loops stopped"),
            () = async move { looping.run().await } => {}
        }
    }
}

/// `paved server`: the API and, while leading, the control loops; no agent.
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let data = args.data.clone().unwrap_or_else(crate::client::default_data_dir);
    let store = match args.store.as_deref() {
        None | Some("embedded") => None,
        Some(url) => Some(url.to_owned()),
    };
    let platform = Platform::start(PlatformOptions {
        data,
        listen: args.listen,
        shim: std::env::current_exe().context("cannot find the paved executable")?,
        metrics: paved_telemetry::tsdb::StoreConfig::default(),
        otlp_endpoint: None,
        proxy: args.proxy,
        proxy_tls: None,
        store: store.clone(),
        local_agent: false,
    })
    .await?;
    println!(
        "paved server on http://{} (gRPC and JSON API), store {}",
        platform.listen,
        store.as_deref().unwrap_or("embedded")
    );
    if let Some(proxy) = platform.proxy {
        println!("  edge router on http://{proxy}");
    }
    println!(
        "  token: {}",
        platform
            .data
            .join(paved_control::auth::ADMIN_TOKEN_FILE)
            .display()
    );
    println!(
        "Agents join with: paved agent --server http://{} --token <agent token>",
        platform.listen
    );
    shutdown_signal().await;
    platform.shutdown().await;
    Ok(())
}

/// `paved agent`: registers this node with a server and runs the tasks placed on it.
pub async fn run_agent(args: AgentArgs, server: String, token: TokenSource) -> anyhow::Result<()> {
    let token = token.read()?;
    let mut channels = Vec::new();
    for url in server.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        // Pings find a connection a partition killed in seconds, so the watch breaks and the
        // agent reconnects once the network heals, rather than waiting on a dead socket.
        let endpoint = endpoint(url)?
            .timeout(AGENT_CALL_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true);
        channels.push((url.to_owned(), endpoint.connect_lazy()));
    }
    let name = args.name.clone().unwrap_or_else(hostname);
    let store = RemoteStore::new(channels, &token, &name)?;
    let repo = Repo::new(Arc::new(store.clone()));
    let data = args.data.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let config = AgentConfig {
        node: name.clone(),
        region: args.region.clone(),
        zone: args.zone.clone(),
        labels: args.label.iter().cloned().collect(),
        data_dir: data.join("agent"),
        cpu: args
            .cpu
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)),
        memory_bytes: match &args.memory {
            Some(m) => paved_types::units::parse_memory(m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
            None => crate::up::total_memory().unwrap_or(1 << 30),
        },
        address: args.advertise.to_string(),
        heartbeat: args.heartbeat,
        ..AgentConfig::default()
    };
    let shim = std::env::current_exe().context("cannot find the paved executable to run task shims")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let agent = Agent::new(config, repo, Arc::new(Drivers::new(shim)), clock, Registry::new());
    agent
        .start()
        .await
        .with_context(|| format!("cannot register node {name} with {server}"))?;
    println!("paved agent: node {name} joined {server}; Ctrl-C stops it and its tasks");
    // Task usage and logs go up these; every server can then answer for this node.
    let sessions = keep_sessions(&agent, &store);
    let running = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = agent.run().await {
                    warn!(error = %e, "lost the server; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    shutdown_signal().await;
    running.abort();
    agent.shutdown().await;
    for session in sessions {
        session.abort();
    }
    Ok(())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}
