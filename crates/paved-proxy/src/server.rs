//! `Proxy`: the listener side. Accepts connections (TLS when configured), serves HTTP/1.1 and
//! HTTP/2 on each (detected by preface or ALPN; `downstream.rs`), keeps the routing table in
//! step with the snapshot channel, and stops gracefully: no new connections, idle ones closed,
//! in-flight requests finished.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use paved_telemetry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::budget::RetryBudget;
use crate::config::{ProxyConfig, TlsConfig};
use crate::downstream::{self, HEADER_READ_TIMEOUT};
use crate::env::{Clock, Dice};
use crate::error::ProxyError;
use crate::handler::{Conn, Shared};
use crate::headers::Forwarding;
use crate::snapshot::Snapshot;
use crate::table::Table;
use crate::upstream::Upstreams;

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The edge proxy. Cheap to clone: clones share the routing table, pools and state, so one
/// proxy can serve several listeners (say plain and TLS).
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    tls: Option<TlsAcceptor>,
}

impl Proxy {
    /// Validates `config`, loads TLS files if configured, and compiles the current snapshot.
    /// Metrics go to `registry`; `clock` decides fault expiry and ejection backoff.
    pub fn new(
        config: ProxyConfig,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> Result<Proxy, ProxyError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let snapshot = snapshots.borrow().clone();
        let table = Table::compile(&snapshot, None, &registry);
        let shared = Shared {
            table: ArcSwap::from_pointee(table),
            compiled: Mutex::new(snapshot),
            budget: RetryBudget::new(&config.retry_budget),
            config,
            clock,
            dice: Dice::random(),
            registry,
        };
        Ok(Proxy {
            shared: Arc::new(shared),
            snapshots,
            tls,
        })
    }

    /// Draws every random choice (balancing, splits, fault rolls, trace ids) from a generator
    /// seeded with `seed`, for reproducible tests. Call before cloning or serving.
    pub fn with_seed(mut self, seed: u64) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.dice = Dice::seeded(seed);
        }
        self
    }

    /// Serves connections from `listener` until `shutdown` completes, then stops accepting,
    /// closes idle connections and waits for in-flight requests to finish. Each call keeps its
    /// own pool of upstream connections; everything else is shared.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProxyError> {
        let local = listener.local_addr().map_err(ProxyError::Listener)?;
        tracing::info!(addr = %local, tls = self.tls.is_some(), "proxy listening");
        let worker = Worker::new(&self);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => worker.spawn_connection(stream, peer, ()),
                    Err(e) => accept_failed(e).await,
                },
            }
        }
        drop(listener);
        worker.drain(local).await;
        Ok(())
    }
}

/// What one listener's thread serves with: its upstream pool, the HTTP settings, and the
/// connections it must finish on shutdown. Create it inside the runtime that serves it.
pub(crate) struct Worker {
    proxy: Proxy,
    upstreams: Arc<Upstreams>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Set to `true` to drain; every connection holds a receiver until it closes.
    drain: watch::Sender<bool>,
    updater: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub(crate) fn new(proxy: &Proxy) -> Worker {
        Worker {
            proxy: proxy.clone(),
            upstreams: Arc::new(Upstreams::new(&proxy.shared.config.pool)),
            builder: Arc::new(http_builder()),
            drain: watch::Sender::new(false),
            updater: tokio::spawn(follow(proxy.snapshots.clone(), proxy.shared.clone())),
        }
    }

    /// Serves one accepted connection on this thread; `guard` is dropped when it closes.
    pub(crate) fn spawn_connection(&self, stream: TcpStream, peer: SocketAddr, guard: impl Send + 'static) {
        // Small requests and responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            shared: self.proxy.shared.clone(),
            forwarding: Forwarding::new(peer.ip(), self.proxy.tls.is_some()),
            upstreams: self.upstreams.clone(),
        });
        let (builder, tls, drain) = (
            self.builder.clone(),
            self.proxy.tls.clone(),
            self.drain.subscribe(),
        );
        tokio::spawn(async move {
            match tls {
                None => downstream::serve(stream, conn, &builder, drain, false).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            downstream::serve(tls, conn, &builder, drain, h2).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
            drop(guard);
        });
    }

    /// Closes idle connections and waits for in-flight requests to finish.
    pub(crate) async fn drain(self, local: SocketAddr) {
        self.updater.abort();
        let connections = self.drain.receiver_count();
        tracing::info!(addr = %local, connections, "proxy draining");
        self.drain.send_replace(true);
        self.drain.closed().await;
    }
}

/// Recompiles the table on every new snapshot; connections pick it up on their next request.
/// Every listener runs one of these; the first to see a snapshot compiles it.
async fn follow(mut snapshots: watch::Receiver<Arc<Snapshot>>, shared: Arc<Shared>) {
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let mut compiled = shared.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&compiled, &snapshot) {
            continue;
        }
        let previous = shared.table.load();
        let table = Table::compile(&snapshot, Some(&previous), &shared.registry);
        previous.forget_removed(&table, &shared.registry);
        shared.table.store(Arc::new(table));
        let (routes, faults) = (snapshot.routes.len(), snapshot.faults.len());
        *compiled = snapshot;
        tracing::debug!(routes, faults, "routing table updated");
    }
}

/// Accept errors are per connection (the client gave up) or resource exhaustion (too many open
/// files), which a short pause lets clear instead of spinning.
pub(crate) async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, ProxyError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ProxyError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let chain_pem = read("certificate chain", &config.cert_chain)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        let path = config.cert_chain.clone();
        return Err(ProxyError::TlsEmpty {
            what: "certificate chain",
            path,
            expected: "CERTIFICATE blocks",
        });
    }
    let key_pem = read("private key", &config.private_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| ProxyError::TlsEmpty {
        what: "private key",
        path: config.private_key.clone(),
        expected: "a PRIVATE KEY block",
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ProxyError::TlsConfig)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(ProxyError::TlsConfig)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
