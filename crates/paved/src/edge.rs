//! Runs the edge router: `paved up` feeds it from its own store in-process; `paved proxy`
//! follows a server's `Routing.WatchEdge` stream and keeps routing by the last snapshot it got
//! while the server is away.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use paved_api::v1 as pb;
use paved_control::edge;
use paved_control::mirror::Mirror;
use paved_proxy::{PerCore, Proxy, ProxyConfig, Snapshot, TlsConfig};
use paved_telemetry::Registry;
use tokio::sync::{oneshot, watch};

use crate::cli::ProxyArgs;
use crate::client::{Client, TokenSource};

/// After a broken watch, before trying again; doubles up to `MAX_RETRY`.
const RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// TLS for the edge listener, from `--tls-cert` and `--tls-key` (clap makes them come as a
/// pair).
pub fn tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsConfig> {
    Some(TlsConfig {
        cert_chain: cert?,
        private_key: key?,
    })
}

/// Binds the proxy, one listener and thread per core, routing by `snapshots`.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<TlsConfig>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Registry,
) -> anyhow::Result<PerCore> {
    let config = ProxyConfig {
        tls,
        ..ProxyConfig::default()
    };
    let clock: Arc<dyn paved_proxy::Clock> = Arc::new(paved_proxy::SystemClock);
    let proxy = Proxy::new(config, snapshots, registry, clock)?;
    // One single-threaded runtime and listener per core: measured faster than one shared
    // runtime (BENCHMARKS.md).
    proxy
        .bind_per_core(addr, 0)
        .await
        .with_context(|| format!("cannot listen on {addr} for the edge router: choose another address"))
}

/// Keeps `snapshots` current from the store until the process ends, starting from `mirror`.
pub async fn feed_from_store(mirror: Mirror, snapshots: watch::Sender<Arc<Snapshot>>) {
    let repo = mirror.repo().clone();
    let mut mirror = Some(mirror);
    loop {
        let started = match mirror.take() {
            Some(mirror) => Ok(mirror),
            None => Mirror::start(&repo).await,
        };
        let publish = |snapshot| {
            snapshots.send_replace(Arc::new(snapshot));
            true
        };
        let outcome = match started {
            Ok(mirror) => edge::follow(mirror, publish).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "edge router lost the store's watch; listing again");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Keeps `snapshots` current from the server's `WatchEdge` stream until the process ends,
/// reconnecting after every break. The last good snapshot stays in force meanwhile: a proxy
/// that lost its control plane keeps serving what it knew.
pub async fn feed_from_server(server: String, token: TokenSource, snapshots: watch::Sender<Arc<Snapshot>>) {
    let mut wait = RETRY;
    loop {
        match follow_server(&server, &token, &snapshots).await {
            Ok(()) => wait = RETRY,
            Err(e) => tracing::warn!(server, error = %format!("{e:#}"), "edge watch broke; reconnecting"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// One connection's worth of snapshots. Returns `Ok` when the server ended the stream.
async fn follow_server(
    server: &str,
    token: &TokenSource,
    snapshots: &watch::Sender<Arc<Snapshot>>,
) -> anyhow::Result<()> {
    let client = Client::connect(server, token).await?;
    let mut stream = client
        .routing()
        .watch_edge(pb::WatchEdgeRequest {})
        .await
        .map_err(|s| client.explain(s))?
        .into_inner();
    tracing::info!(server, "following the server's routes");
    while let Some(message) = stream.next().await {
        let message = message.map_err(|s| client.explain(s))?;
        match edge::snapshot_of(&message) {
            Ok(snapshot) => {
                snapshots.send_replace(Arc::new(snapshot));
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unusable snapshot from the server"),
        }
    }
    Ok(())
}

/// `paved proxy`: an edge router of its own, following a server's routes.
pub async fn run(args: ProxyArgs, server: String, token: TokenSource) -> anyhow::Result<()> {
    let (snapshots, follow) = watch::channel(Arc::new(Snapshot::default()));
    let registry = Registry::new();
    let tls = tls(args.tls_cert, args.tls_key);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let per_core = bind(args.listen, tls, follow, registry).await?;
    let bound = per_core.local_addr();
    let feeder = tokio::spawn(feed_from_server(server.clone(), token, snapshots));
    println!("paved proxy routing {scheme}://{bound} by the routes of {server}; Ctrl-C stops it");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        per_core
            .serve(async {
                let _ = stopped.await;
            })
            .await
    });
    crate::up::shutdown_signal().await;
    let _ = stop.send(());
    feeder.abort();
    serving.await??;
    Ok(())
}
