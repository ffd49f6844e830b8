//! Thread per core, nginx's worker model: one OS thread per core, each with a single-threaded
//! tokio runtime, its own `SO_REUSEPORT` listener on the shared address and its own upstream
//! pool. The kernel spreads connections over the listeners; a thread that accepts a connection
//! while it holds more than one above the least loaded thread hands it over (connections are
//! counted, not requests: the SO_REUSEPORT hash alone left threads unevenly loaded). A request
//! and its upstream connection never move between threads, so no request pays for a
//! cross-thread wake-up.
//!
//! Measured with `cargo xtask bench proxy` on 2 cores, this more than doubled requests/s over
//! one multi-threaded runtime, which spent its time waking workers rather than proxying. The
//! routing table, endpoint state, retry budget and metrics stay shared.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::error::ProxyError;
use crate::server::{Proxy, Worker, accept_failed};

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
        let n = self.listeners.len();
        let loads: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let senders: Arc<[Handoff]> = senders.into();
        let threads: Vec<JoinHandle<Result<(), ProxyError>>> = self
            .listeners
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(i, (listener, handed))| {
                let core = Core {
                    index: i,
                    proxy: self.proxy.clone(),
                    loads: loads.clone(),
                    senders: senders.clone(),
                };
                let stopped = stopped.clone();
                std::thread::Builder::new()
                    .name(format!("paved-proxy-{i}"))
                    .spawn(move || core.run(listener, handed, stopped))
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

/// A connection accepted on one thread for another to serve.
type Handoff = mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>;

/// One thread's share: its index, the open connections of every thread, and where to send a
/// connection to another thread.
struct Core {
    index: usize,
    proxy: Proxy,
    loads: Arc<[AtomicUsize]>,
    senders: Arc<[Handoff]>,
}

/// Counts a connection against its thread until dropped.
struct Load {
    loads: Arc<[AtomicUsize]>,
    index: usize,
}

impl Core {
    fn run(
        self,
        listener: std::net::TcpListener,
        mut handed: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), ProxyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ProxyError::Runtime)?;
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).map_err(ProxyError::Listener)?;
            let local = listener.local_addr().map_err(ProxyError::Listener)?;
            let worker = Worker::new(&self.proxy);
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => break,
                    Some((stream, peer)) = handed.recv() => match TcpStream::from_std(stream) {
                        Ok(stream) => worker.spawn_connection(stream, peer, self.counted()),
                        Err(e) => {
                            drop(self.counted());
                            tracing::warn!(error = %e, "cannot take over a connection");
                        }
                    },
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => self.place(&worker, stream, peer),
                        Err(e) => accept_failed(e).await,
                    },
                }
            }
            drop(listener);
            worker.drain(local).await;
            Ok(())
        })
    }

    /// Serves a connection here, or hands it to the thread with the fewest connections when
    /// this one has more than one above it: the kernel's `SO_REUSEPORT` hash spreads
    /// connections evenly only on average, and a few long-lived keep-alive connections can
    /// land unevenly enough to leave a core idle.
    fn place(&self, worker: &Worker, stream: TcpStream, peer: SocketAddr) {
        let (least, fewest) = self
            .loads
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.load(Relaxed)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((self.index, 0));
        if least != self.index && self.loads[self.index].load(Relaxed) > fewest + 1 {
            // Counted now, so that the next connection sees it; the receiver takes the count.
            self.loads[least].fetch_add(1, Relaxed);
            let sent = match stream.into_std() {
                Ok(std) => self.senders[least].send((std, peer)).map_err(|back| back.0.0),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot hand a connection over");
                    self.loads[least].fetch_sub(1, Relaxed);
                    return;
                }
            };
            match sent {
                Ok(()) => return,
                // The other thread is stopping: serve it here.
                Err(std) => {
                    self.loads[least].fetch_sub(1, Relaxed);
                    match TcpStream::from_std(std) {
                        Ok(stream) => worker.spawn_connection(stream, peer, self.load(self.index)),
                        Err(e) => tracing::debug!(%peer, error = %e, "cannot take a connection back"),
                    }
                    return;
                }
            }
        }
        worker.spawn_connection(stream, peer, self.load(self.index));
    }

    /// A connection counted already (handed over by another thread).
    fn counted(&self) -> Load {
        Load {
            loads: self.loads.clone(),
            index: self.index,
        }
    }

    fn load(&self, index: usize) -> Load {
        self.loads[index].fetch_add(1, Relaxed);
        Load {
            loads: self.loads.clone(),
            index,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.loads[self.index].fetch_sub(1, Relaxed);
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
