//! Thread per core, nginx's worker model: one OS thread per core, each with a single-threaded
//! tokio runtime, its own `SO_REUSEPORT` listener on the shared address and its own upstream
//! pool. The kernel spreads connections over the listeners, and a request and its upstream
//! connection never move between threads, so no request pays for a cross-thread wake-up.
//!
//! Measured with `cargo xtask bench proxy` on 2 cores, this more than doubled requests/s over
//! one multi-threaded runtime, which spent its time waking workers rather than proxying. The
//! routing table, endpoint state, retry budget and metrics stay shared.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::error::ProxyError;
use crate::server::Proxy;

/// A proxy bound on every core, ready to serve.
pub struct PerCore {
    proxy: Proxy,
    local: SocketAddr,
    listeners: Vec<std::net::TcpListener>,
}

impl Proxy {
    /// Binds `addr` once per thread (`threads` = 0: one per core) with `SO_REUSEPORT`. Call it
    /// inside a tokio runtime; the listeners move to their own threads in
    /// [`PerCore::serve`]. Port 0 picks one free port for all.
    pub async fn bind_per_core(self, addr: SocketAddr, threads: usize) -> Result<PerCore, ProxyError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let first = bind(addr).map_err(|source| ProxyError::Bind { addr, source })?;
        let local = first.local_addr().map_err(ProxyError::Listener)?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(bind(local).map_err(|source| ProxyError::Bind { addr: local, source })?);
        }
        let listeners = listeners
            .into_iter()
            .map(|l| l.into_std().map_err(ProxyError::Listener))
            .collect::<Result<_, _>>()?;
        Ok(PerCore {
            proxy: self,
            local,
            listeners,
        })
    }
}

impl PerCore {
    /// The address every thread listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves on every thread until `shutdown` completes, then stops them all gracefully (see
    /// [`Proxy::serve`]) and returns once each has finished its in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let (stop, stopped) = watch::channel(false);
        let threads: Vec<JoinHandle<Result<(), ProxyError>>> = self
            .listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (proxy, mut stopped) = (self.proxy.clone(), stopped.clone());
                std::thread::Builder::new()
                    .name(format!("paved-proxy-{i}"))
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(ProxyError::Runtime)?;
                        runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener).map_err(ProxyError::Listener)?;
                            let stop = async move {
                                let _ = stopped.wait_for(|s| *s).await;
                            };
                            proxy.serve(listener, stop).await
                        })
                    })
                    .map_err(ProxyError::Runtime)
            })
            .collect::<Result<_, _>>()?;
        shutdown.await;
        stop.send_replace(true);
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or(Err(ProxyError::ThreadPanicked)))
                .collect::<Result<Vec<()>, _>>()
        });
        joined.await.map_err(|_| ProxyError::ThreadPanicked)?.map(|_| ())
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // One listener per thread on the same port: the kernel hashes each connection to one.
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
