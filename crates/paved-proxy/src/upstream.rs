//! Connections to upstream tasks. HTTP/1.1 goes through the listener's own pool (one pool per
//! thread in the thread-per-core proxy, so its locks are never contended): free lists per
//! endpoint, most recently used first. A request whose body is in memory (empty, or small and
//! kept for retries) and that asks for no upgrade, nearly every request, goes through the
//! proxy's own codec (`h1.rs`) on a connection of its own free list, inside the request's task;
//! a streamed request body or an upgrade goes through hyper's `client::conn::http1`, whose
//! connection task writes the body while the response is read. gRPC goes over HTTP/2 cleartext
//! (h2c, prior knowledge) through hyper-util's pooled client, which multiplexes requests on one
//! connection per endpoint.
//!
//! Why not hyper-util's client for HTTP/1.1 too: per request it hashes a pool key, races a
//! checkout against a lazy connect, and spawns a task that waits for the connection to be ready
//! again before putting it back; profiled under `cargo xtask bench proxy`, that was a tenth of
//! the proxy's CPU. Here a connection goes back to its free list when its response has ended
//! (for the own codec, as soon as the response head arrived with the whole body), and the next
//! checkout checks that it is still usable.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderMap;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpSocket, TcpStream};

use crate::body::ProxyBody;
use crate::config::PoolConfig;
use crate::h1::{self, H1Error, Received};
use crate::metrics::ErrorKind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often idle HTTP/1.1 connections past their idle timeout are closed, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Upstreams {
    http1: Arc<Http1Pool>,
    h2c: Client<HttpConnector, ProxyBody>,
}

/// An upstream's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// From hyper's client (h2c, streamed request bodies, upgrades), with the HTTP/1.1
    /// connection to give back once the body has ended.
    Hyper(Response<Incoming>, Option<Checkin>),
    /// From the proxy's own HTTP/1.1 codec.
    Own(Response<()>, OwnBody),
}

/// The body of a response read by the own codec.
#[derive(Debug)]
pub(crate) enum OwnBody {
    /// All of it came with the head; its connection is already back in the pool.
    Whole(Bytes),
    /// It follows on its connection, which goes back to the pool when it ends.
    Stream(h1::ResponseBody),
}

/// Where a connection of the own codec goes back when its response body ends.
#[derive(Debug)]
pub(crate) struct Release {
    pool: Weak<Http1Pool>,
    addr: SocketAddr,
}

/// A failed upstream attempt.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// The request, when it never left the proxy (so any method may be sent again).
    pub(crate) unsent: Option<Request<ProxyBody>>,
    /// The request never left the proxy, and the caller still has it (the own codec sends
    /// from the caller's copy).
    pub(crate) never_left: bool,
}

/// An HTTP/1.1 connection lent to one request. [`Checkin::release`] returns it to the free
/// list once its response has ended; dropped otherwise, it closes.
#[derive(Debug)]
pub(crate) struct Checkin {
    pool: Weak<Http1Pool>,
    addr: SocketAddr,
    sender: http1::SendRequest<ProxyBody>,
}

#[derive(Debug)]
struct Http1Pool {
    /// Connections of the own codec.
    own: Mutex<HashMap<SocketAddr, Vec<Idle<h1::Conn>>>>,
    /// Connections of hyper's client.
    idle: Mutex<HashMap<SocketAddr, Vec<Idle<http1::SendRequest<ProxyBody>>>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Debug)]
struct Idle<T> {
    conn: T,
    since: Instant,
}

impl Upstreams {
    /// Call inside a tokio runtime: it spawns the task that closes idle connections.
    pub(crate) fn new(config: &PoolConfig) -> Self {
        let http1 = Arc::new(Http1Pool {
            own: Mutex::default(),
            idle: Mutex::default(),
            max_idle: config.max_idle_per_endpoint,
            idle_timeout: config.idle_timeout,
            connect_timeout: config.connect_timeout,
        });
        tokio::spawn(sweep(Arc::downgrade(&http1)));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let mut h2c = Client::builder(TokioExecutor::new());
        h2c.pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // The request's own host header goes upstream, not the endpoint's address.
            .set_host(false)
            .http2_only(true);
        Upstreams {
            http1,
            h2c: h2c.build(connector),
        }
    }

    /// Sends `req` to `addr` through hyper: over h2c when `h2` (the URI must then name the
    /// endpoint), else over a pooled HTTP/1.1 connection (the URI is the path). What
    /// [`Upstreams::send_own`] can send goes there instead.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        h2: bool,
        req: Request<ProxyBody>,
    ) -> Result<Answer, UpstreamError> {
        if h2 {
            return self
                .h2c
                .request(req)
                .await
                .map(|r| Answer::Hyper(r, None))
                .map_err(|e| {
                    let kind = if e.is_connect() {
                        ErrorKind::Connect
                    } else {
                        ErrorKind::Reset
                    };
                    UpstreamError::new(kind, &e, None)
                });
        }
        self.send_http1(addr, req).await
    }

    /// Over the own codec (`h1.rs`): the request is written and the response head read right
    /// here, from the caller's request, which stays whole for another attempt. Only for a
    /// body in memory and no upgrade.
    pub(crate) async fn send_own(
        &self,
        addr: SocketAddr,
        method: &Method,
        path: &PathAndQuery,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Answer, UpstreamError> {
        let failed = |kind, e: &dyn std::error::Error, never_left| UpstreamError {
            never_left,
            ..UpstreamError::new(kind, e, None)
        };
        let mut conn = loop {
            let (mut conn, reused) = match self.http1.checkout_own(addr) {
                Some(conn) => (conn, true),
                None => match Box::pin(self.http1.connect_own(addr)).await {
                    Ok(conn) => (conn, false),
                    Err((kind, e)) => return Err(failed(kind, &*e, true)),
                },
            };
            match conn.write_request(method, path.as_str(), headers, body).await {
                Ok(()) => break conn,
                // A pooled connection the upstream had closed: the request never left, so it
                // goes out on a fresh connection without counting as a retry.
                Err(H1Error::Write { started: false, .. }) if reused => {}
                Err(e @ H1Error::Write { started: false, .. }) => {
                    return Err(failed(ErrorKind::Reset, &e, true));
                }
                Err(e) => return Err(failed(ErrorKind::Reset, &e, false)),
            }
        };
        let head = conn
            .read_head(method == Method::HEAD)
            .await
            .map_err(|e| failed(ErrorKind::Reset, &e, false))?;
        let release = || Release {
            pool: Arc::downgrade(&self.http1),
            addr,
        };
        let body = match conn.receive(&head, release) {
            Received::Whole(bytes, conn) => {
                self.http1.checkin_own(addr, conn);
                OwnBody::Whole(bytes)
            }
            Received::WholeLast(bytes) => OwnBody::Whole(bytes),
            Received::Stream(body) => OwnBody::Stream(body),
        };
        Ok(Answer::Own(head.response, body))
    }

    /// Over hyper's client, whose connection task writes a streamed body while the response
    /// is read, and hands over an upgraded connection.
    async fn send_http1(
        &self,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<Answer, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.http1.checkout(addr).await {
                Some(sender) => (sender, true),
                None => match Box::pin(self.http1.connect(addr)).await {
                    Ok(sender) => (sender, false),
                    Err((kind, e)) => return Err(UpstreamError::new(kind, &*e, Some(req))),
                },
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let pool = Arc::downgrade(&self.http1);
                    return Ok(Answer::Hyper(response, Some(Checkin { pool, addr, sender })));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection the upstream had closed: the request never left, so
                    // it goes out on a fresh connection without counting as a retry.
                    Some(back) if reused => req = back,
                    unsent => {
                        let e = e.into_error();
                        return Err(UpstreamError::new(ErrorKind::Reset, &e, unsent));
                    }
                },
            }
        }
    }
}

impl UpstreamError {
    fn new(kind: ErrorKind, e: &dyn std::error::Error, unsent: Option<Request<ProxyBody>>) -> Self {
        let message = match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        };
        UpstreamError {
            kind,
            message,
            unsent,
            never_left: false,
        }
    }
}

impl Answer {
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            Answer::Hyper(response, _) => response.status(),
            Answer::Own(head, _) => head.status(),
        }
    }
}

impl Release {
    /// A release into no pool: the connection closes.
    #[cfg(test)]
    pub(crate) fn nowhere() -> Release {
        Release {
            pool: Weak::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    pub(crate) fn release(self, conn: h1::Conn) {
        if let Some(pool) = self.pool.upgrade() {
            pool.checkin_own(self.addr, conn);
        }
    }
}

impl Checkin {
    /// Back to the free list: call once the response has been read to its end.
    pub(crate) fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.checkin(self.addr, self.sender);
        }
    }
}

impl Http1Pool {
    /// The most recently used idle connection to `addr` that is ready, closing those that
    /// are closed or idle too long; `None`: connect.
    async fn checkout(&self, addr: SocketAddr) -> Option<http1::SendRequest<ProxyBody>> {
        let mut yielded = false;
        loop {
            let mut busy = Vec::new();
            let mut found = None;
            while let Some(Idle {
                conn: mut sender,
                since,
            }) = self.pop(addr)
            {
                if since.elapsed() > self.idle_timeout {
                    continue;
                }
                // A connection whose last response just ended may not have noticed yet.
                match poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await {
                    Poll::Ready(Ok(())) => {
                        found = Some(sender);
                        break;
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => busy.push(sender),
                }
            }
            let waited = !busy.is_empty();
            for sender in busy.into_iter().rev() {
                self.checkin(addr, sender);
            }
            if found.is_some() || !waited || yielded {
                return found;
            }
            // Let their connection tasks run once, then look again.
            tokio::task::yield_now().await;
            yielded = true;
        }
    }

    /// The most recently used idle connection of the own codec to `addr` that the upstream
    /// has not closed. Idle timeouts are left to the sweep: the upstream closing a connection
    /// is what matters here, and it is seen without a clock read.
    fn checkout_own(&self, addr: SocketAddr) -> Option<h1::Conn> {
        let mut idle = self.own.lock().unwrap_or_else(|e| e.into_inner());
        // An empty list stays until the sweep, so that busy endpoints do not reallocate it.
        let list = idle.get_mut(&addr)?;
        while let Some(Idle { mut conn, .. }) = list.pop() {
            if conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin_own(&self, addr: SocketAddr, conn: h1::Conn) {
        let mut idle = self.own.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect_own(&self, addr: SocketAddr) -> Result<h1::Conn, (ErrorKind, BoxError)> {
        let stream = tokio::time::timeout(self.connect_timeout, tcp_connect(addr))
            .await
            .map_err(|_| (ErrorKind::Connect, "connect timed out".into()))?
            .map_err(|e| (ErrorKind::Connect, e.into()))?;
        Ok(h1::Conn::new(stream))
    }

    fn pop(&self, addr: SocketAddr) -> Option<Idle<http1::SendRequest<ProxyBody>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        let popped = list.pop();
        if list.is_empty() {
            idle.remove(&addr);
        }
        popped
    }

    fn checkin(&self, addr: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle {
            list.push(Idle {
                conn: sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<http1::SendRequest<ProxyBody>, (ErrorKind, BoxError)> {
        let stream = tokio::time::timeout(self.connect_timeout, tcp_connect(addr))
            .await
            .map_err(|_| (ErrorKind::Connect, "connect timed out".into()))?
            .map_err(|e| (ErrorKind::Connect, e.into()))?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (ErrorKind::Connect, e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Drops idle connections past the idle timeout or closed by the upstream.
    fn sweep(&self) {
        let fresh = |since: Instant| since.elapsed() <= self.idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|i| !i.conn.is_closed() && fresh(i.since));
            !list.is_empty()
        });
        drop(idle);
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        own.retain(|_, list| {
            list.retain_mut(|i| fresh(i.since) && i.conn.is_reusable());
            !list.is_empty()
        });
    }
}

async fn tcp_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_keepalive(true)?;
    let stream = socket.connect(addr).await?;
    // Small requests must not wait for Nagle's algorithm.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Closes idle connections past their timeout until the pool is gone.
async fn sweep(pool: Weak<Http1Pool>) {
    let every = match pool.upgrade() {
        Some(pool) => pool.idle_timeout.min(SWEEP_EVERY),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

/// The URI of a request to `authority` over h2c (hyper-util's client needs the whole URI).
pub(crate) fn h2c_uri(authority: &http::uri::Authority, path: &http::uri::PathAndQuery) -> Option<Uri> {
    Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path.clone())
        .build()
        .ok()
}
