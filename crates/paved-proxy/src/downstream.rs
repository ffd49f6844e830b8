//! One client connection: plain HTTP/1.1 keep-alive requests through the own server codec
//! (`h1/server.rs`), everything else through hyper's server.
//!
//! Why not hyper for all of it: profiled under `cargo xtask bench proxy`, hyper's server
//! connection (its dispatcher, buffered I/O, header encoding and the moves of the service's
//! future) was the largest share of the proxy's user CPU per request once the upstream side
//! had its own codec. Here the connection's task reads a head, runs the handler in place and
//! writes the response's head and body in one write.
//!
//! hyper keeps what is rare or stateful: HTTP/2 (prior knowledge, or ALPN `h2` on TLS), and on
//! HTTP/1.1 the first request the own codec does not take (an upgrade, `Expect`, `CONNECT`, a
//! streamed or large body): from there on the whole connection, its buffered bytes first, is
//! hyper's. Requests are answered in order (pipelined ones too: the next head is read only
//! once the previous response is written).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response, Version};
use http_body::{Body as _, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::h1::HeadSearch;
use crate::h1::server::{self, ClientRequest, Decoded, H2_PREFACE, Out};
use crate::handler::{self, Conn};
use crate::timer::Timer;

/// A client that has not sent a whole request head by then (counted from the end of the
/// previous response, so idle keep-alive connections too) is dropped (slowloris).
pub(crate) const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// A response body frame up to this size is copied next to its chunk header; a larger one is
/// written apart, uncopied.
const COPY_FRAME: usize = 16 * 1024;

/// What tells a connection to finish: `true` once the proxy drains. Connections hold
/// receivers; the proxy waits for all of them to be dropped.
pub(crate) type Drain = watch::Receiver<bool>;

/// Serves one connection until it closes: the own codec first, hyper if the connection needs it
/// (`h2`: the client chose HTTP/2 by ALPN).
pub(crate) async fn serve<I>(
    io: I,
    conn: Arc<Conn>,
    builder: &auto::Builder<TokioExecutor>,
    drain: Drain,
    h2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        return serve_hyper(io, conn, builder, drain).await;
    }
    let mut client = Client {
        io,
        read: BytesMut::with_capacity(READ_CHUNK),
        write: Vec::with_capacity(1024),
        deadline: Instant::now() + HEADER_READ_TIMEOUT,
        timer: Timer::default(),
        route_timer: Timer::default(),
        drained: Box::pin(drained(drain.clone())),
        drain,
    };
    match client.run(&conn).await {
        Ok(End::Closed) => {}
        Ok(End::HandOver) => {
            let Client { io, read, drain, .. } = client;
            let io = Rewind {
                prefix: read.freeze(),
                io,
            };
            serve_hyper(io, conn, builder, drain).await;
        }
        Err(e) => tracing::debug!(error = %e, "client connection ended with an error"),
    }
}

/// Serves the connection with hyper (HTTP/1.1 or HTTP/2 by preface); on drain, hyper finishes
/// the requests under way and closes.
async fn serve_hyper<I>(io: I, conn: Arc<Conn>, builder: &auto::Builder<TokioExecutor>, drain: Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handler::handle(conn.clone(), req));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = drained(drain) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// The own codec's side of a connection.
struct Client<I> {
    io: I,
    /// Bytes read and not consumed yet.
    read: BytesMut,
    /// The response being written, reused across requests.
    write: Vec<u8>,
    /// When the head being waited for must be in.
    deadline: Instant,
    /// Waits for heads; one per connection, so that a request costs no timer registration.
    timer: Timer,
    /// Bounds each request's time to response headers (the route's timeout); apart from
    /// `timer`, so that each only ever moves later.
    route_timer: Timer,
    drain: Drain,
    /// Completes when the proxy drains: made once per connection, so that a wait for the next
    /// request does not register with the channel and leave it again each time.
    drained: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// How the own codec left a connection.
enum End {
    Closed,
    /// To hyper, with the bytes in `read`.
    HandOver,
}

/// One read's outcome.
enum Read {
    Bytes,
    /// End of stream, timeout, or drain while idle: close without answering.
    Stop,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Client<I> {
    async fn run(&mut self, conn: &Conn) -> io::Result<End> {
        let mut first = true;
        loop {
            let taken = match self.next_request(first).await? {
                Next::Request(taken) => taken,
                Next::HandOver => return Ok(End::HandOver),
                Next::Stop => return Ok(End::Closed),
            };
            first = false;
            let ClientRequest {
                request,
                keep_alive,
                trailers,
            } = taken;
            let head_request = request.method() == Method::HEAD;
            let version = request.version();
            let request = request.map(|body| match body.is_empty() {
                true => ProxyBody::Empty,
                false => ProxyBody::Full(Some(body)),
            });
            let response = handler::serve(conn, request, None, &mut self.route_timer).await;
            let close = !keep_alive || *self.drain.borrow();
            let reusable = self
                .respond(response, head_request, version, close, trailers)
                .await?;
            if close || !reusable {
                // Best effort: the client has its answer, or the connection is broken anyway.
                let _ = self.io.shutdown().await;
                return Ok(End::Closed);
            }
            self.deadline = Instant::now() + HEADER_READ_TIMEOUT;
        }
    }

    /// Reads until a request is whole, or the connection is to be closed or handed over.
    async fn next_request(&mut self, first: bool) -> io::Result<Next> {
        let mut search = HeadSearch::default();
        let mut needs = 0;
        loop {
            if self.read.len() >= needs.max(1) {
                // HTTP/2 with prior knowledge starts with its preface, which is no HTTP/1 head.
                let start = &self.read[..self.read.len().min(H2_PREFACE.len())];
                let preface = first && H2_PREFACE.starts_with(start);
                if preface && start.len() == H2_PREFACE.len() {
                    return Ok(Next::HandOver);
                }
                if !preface {
                    match server::decode_request(&mut self.read, &mut search) {
                        Ok(Decoded::Request(taken)) => return Ok(Next::Request(taken)),
                        Ok(Decoded::HandOver) => return Ok(Next::HandOver),
                        Ok(Decoded::Needs(n)) => needs = n,
                        Ok(Decoded::Partial) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "refused a client request");
                            self.write.clear();
                            server::encode_refusal(&mut self.write, e.status());
                            self.io.write_all(&self.write).await?;
                            let _ = self.io.shutdown().await;
                            return Ok(Next::Stop);
                        }
                    }
                }
            }
            match self.fill().await? {
                Read::Bytes => {}
                Read::Stop => return Ok(Next::Stop),
            }
        }
    }

    /// Reads more into `read`, unless the head's deadline passes or the proxy drains while
    /// nothing of a request is here.
    async fn fill(&mut self) -> io::Result<Read> {
        if *self.drain.borrow() && self.read.is_empty() {
            return Ok(Read::Stop);
        }
        let idle = self.read.is_empty();
        self.read.reserve(READ_CHUNK);
        // Most reads find bytes waiting or come before anything else: the timer and the
        // drain signal are looked at only when the read has to wait.
        let read = poll_fn(|cx| poll_read_buf(&mut self.io, &mut self.read, cx));
        tokio::pin!(read);
        if let Poll::Ready(n) = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            return Ok(if n? == 0 { Read::Stop } else { Read::Bytes });
        }
        tokio::select! {
            biased;
            n = read.as_mut() => Ok(if n? == 0 { Read::Stop } else { Read::Bytes }),
            () = self.timer.until(self.deadline) => {
                tracing::debug!("client sent no request head in time");
                Ok(Read::Stop)
            }
            () = self.drained.as_mut(), if idle => Ok(Read::Stop),
        }
    }

    /// Writes a response; `false` when the connection cannot carry another one (its body
    /// broke off, or it was delimited by the close).
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        head_request: bool,
        version: Version,
        close: bool,
        trailers: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let whole = match &mut body {
            ProxyBody::Empty => Some(Bytes::new()),
            ProxyBody::Full(bytes) => Some(bytes.take().unwrap_or_default()),
            _ => None,
        };
        let length = whole.as_ref().map(|b| b.len() as u64);
        let out = server::out_framing(parts.status, head_request, version, &parts.headers, length);
        let close = close || out == Out::Close;
        self.write.clear();
        server::encode_response_head(&mut self.write, &parts, out, version, close);
        match (out, whole) {
            (Out::Nothing, _) => {}
            (_, Some(bytes)) => self.write.extend_from_slice(&bytes),
            (_, None) => return self.stream(body, out, trailers).await.map(|ok| ok && !close),
        }
        self.io.write_all(&self.write).await?;
        self.io.flush().await?;
        Ok(true)
    }

    /// Writes the head in `write` and a streamed body after it, frame by frame as they come;
    /// `false` when the body ended short of its stated length or broke off.
    async fn stream(&mut self, mut body: ProxyBody, out: Out, trailers: bool) -> io::Result<bool> {
        let mut left = match out {
            Out::Length(n) => Some(n),
            _ => None,
        };
        let mut last = None;
        while left != Some(0) {
            // What is ready goes out with what is already encoded; a wait flushes first.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush_write().await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body broke off");
                    self.flush_write().await?;
                    return Ok(false);
                }
            };
            match frame.into_data() {
                Ok(mut data) => {
                    if let Some(l) = left.as_mut() {
                        // Never more than stated: the client would read it as the next response.
                        data.truncate(usize::try_from(*l).unwrap_or(usize::MAX));
                        *l -= data.len() as u64;
                    }
                    self.put_data(data, out).await?;
                }
                Err(frame) => last = frame.into_trailers().ok(),
            }
        }
        if out == Out::Chunked {
            server::encode_last_chunk(&mut self.write, last.as_ref().filter(|_| trailers));
        }
        self.flush_write().await?;
        Ok(left.is_none_or(|l| l == 0))
    }

    async fn put_data(&mut self, data: Bytes, out: Out) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if data.len() <= COPY_FRAME {
            match out {
                Out::Chunked => server::encode_chunk(&mut self.write, &Frame::data(data)),
                _ => self.write.extend_from_slice(&data),
            }
            return Ok(());
        }
        if out == Out::Chunked {
            server::encode_chunk_size(&mut self.write, data.len());
        }
        self.flush_write().await?;
        self.io.write_all(&data).await?;
        if out == Out::Chunked {
            self.write.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    async fn flush_write(&mut self) -> io::Result<()> {
        if !self.write.is_empty() {
            self.io.write_all(&self.write).await?;
            self.write.clear();
        }
        self.io.flush().await
    }
}

/// What the connection does next (not boxed, as [`Decoded`] is not).
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(ClientRequest),
    HandOver,
    Stop,
}

/// Completes once the proxy drains (or is gone).
async fn drained(mut drain: Drain) {
    let _ = drain.wait_for(|d| *d).await;
}

fn poll_read_buf<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // `read_buf` keeps no state between polls, so a fresh one per poll is the same future.
    let read = io.read_buf(buf);
    std::pin::pin!(read).poll(cx)
}

/// A connection with bytes already read from it in front, for hyper to read first.
struct Rewind<I> {
    prefix: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
