//! The proxy's own HTTP/1.1 codec. This file is its client half and what both halves share
//! (the search for a head's end, the caps on heads, body framing and chunked decoding); the
//! server half, for client connections, is `h1/server.rs`.
//!
//! The client half serves upstream requests whose body is already in
//! memory (empty, or small and buffered for retries) and that ask for no upgrade: nearly every
//! request. The request's task writes the request and reads the response head itself, on a
//! pooled connection it owns for the time of the exchange; a response body that came with its
//! head (the usual small answer) is handed on whole and the connection goes back to the pool at
//! once, a longer one is streamed from the connection by [`ResponseBody`].
//!
//! Why not hyper's client here: hyper runs every connection as a task of its own, reached
//! through a channel, and hands the response back through another channel and a body channel;
//! profiled under `cargo xtask bench proxy`, its dispatcher and those hops were most of the
//! difference in CPU per request between paved and nginx. Streamed request bodies (which need
//! the request written while the response is read) and upgrades stay on hyper's client.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::upstream::Release;

/// The most header fields a response head (or a chunked body's trailer) may carry.
const MAX_HEADERS: usize = 128;
/// The most bytes a response head may take; a larger one is refused rather than buffered.
const MAX_HEAD: usize = 64 * 1024;
/// The most bytes a chunk-size line (with extensions) or a trailer line may take.
const MAX_LINE: usize = 8 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// An upstream connection with its buffers, idle in the pool or lent to one request.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not consumed yet.
    read: BytesMut,
    /// The request being written, reused across requests.
    write: Vec<u8>,
}

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("cannot write the request upstream: {source}")]
    Write {
        source: io::Error,
        /// Whether any byte of the request reached the socket.
        started: bool,
    },
    #[error("cannot read the upstream's response: {0}")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before the response ended")]
    Closed,
    #[error("the upstream's response head is malformed: {0}")]
    Head(#[from] httparse::Error),
    #[error("the upstream's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the upstream's response is malformed: {0}")]
    Framing(&'static str),
}

/// A response head read from a connection, with how its body is framed.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

/// What the response body turned out to be once the head was read.
#[derive(Debug)]
pub(crate) enum Received {
    /// The whole body (possibly empty) is in memory; the connection is free again.
    Whole(Bytes, Conn),
    /// The whole body is in memory; the connection cannot serve another request.
    WholeLast(Bytes),
    /// The body follows on the connection.
    Stream(ResponseBody),
}

/// A response body read from its connection as it comes; the connection goes back to the pool
/// (through `release`) once the body has ended, or closes if the body is dropped before.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    release: Option<Release>,
}

/// How far the search for the end of a head (a response's here, a request's in `server.rs`) has
/// come, kept across reads: a head that
/// arrives in small pieces is then searched once rather than parsed again from its start after
/// every read, which costs time quadratic in its size (about 2·10⁹ byte scans for a 64 KiB
/// head sent a byte per packet).
#[derive(Debug, Default)]
pub(crate) struct HeadSearch {
    /// Bytes of the interim (1xx) responses dropped so far: with the final head they make one
    /// header section, capped at [`MAX_HEAD`].
    interim: usize,
    /// Whether this head was parsed once already and found incomplete. The first read usually
    /// brings the whole head, so it is parsed at once, without a search first.
    tried: bool,
    /// Bytes at the start of the buffer searched for the end of the head.
    searched: usize,
    /// Where the searched bytes left the search.
    at: Scan,
    /// Full parses of a head so far, for tests to check that they stay few.
    #[cfg(test)]
    parses: usize,
}

/// The search for the end of a head, after a byte. The head ends with an empty line (`\r\n`
/// or a bare `\n`, which httparse accepts too) after the status or request line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Only empty lines so far, which httparse skips before the status line.
    #[default]
    Leading,
    /// Inside a line.
    Line,
    /// Just after a line's LF.
    LineEnd,
    /// After a line's LF and a CR.
    LineEndCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
        }
    }

    /// Whether an idle connection can carry another request: the upstream has not closed it
    /// and sent nothing unasked. Costs a syscall only when the socket has turned readable.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes a request (head and body in one write): `headers` must already be the upstream's
    /// (hop-by-hop ones removed); the framing headers are the codec's own.
    pub(crate) async fn write_request(
        &mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), H1Error> {
        encode_request(&mut self.write, method, path, headers, body);
        let written = self
            .io
            .write(&self.write)
            .await
            .map_err(|source| H1Error::Write {
                source,
                started: false,
            })?;
        if written < self.write.len() {
            self.io
                .write_all(&self.write[written..])
                .await
                .map_err(|source| H1Error::Write {
                    source,
                    started: true,
                })?;
        }
        Ok(())
    }

    /// Reads the response head, skipping interim (1xx) responses; `head_request`: the request
    /// was a HEAD, so the response has no body whatever its headers say.
    pub(crate) async fn read_head(&mut self, head_request: bool) -> Result<Head, H1Error> {
        let mut search = HeadSearch::default();
        loop {
            if !self.read.is_empty()
                && let Some(head) = decode_head(&mut self.read, head_request, &mut search)?
            {
                return Ok(head);
            }
            self.read.reserve(READ_CHUNK);
            let n = self.io.read_buf(&mut self.read).await.map_err(H1Error::Read)?;
            if n == 0 {
                return Err(search.closed(&mut self.read));
            }
        }
    }

    /// Takes the body that follows `head` if it is all here, else makes a streamed body.
    pub(crate) fn receive(mut self, head: &Head, release: impl FnOnce() -> Release) -> Received {
        if let Framing::Length(n) = head.framing
            && n <= self.read.len() as u64
        {
            let body = self.read.split_to(n as usize).freeze();
            // Bytes beyond the response were never asked for: the connection is unusable.
            if head.keep_alive && self.read.is_empty() {
                return Received::Whole(body, self);
            }
            return Received::WholeLast(body);
        }
        if head.framing == Framing::Done {
            return match head.keep_alive && self.read.is_empty() {
                true => Received::Whole(Bytes::new(), self),
                false => Received::WholeLast(Bytes::new()),
            };
        }
        Received::Stream(ResponseBody {
            conn: Some(self),
            framing: head.framing,
            keep_alive: head.keep_alive,
            release: Some(release()),
        })
    }

    /// Reads more into the buffer; `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_CHUNK);
        // `read_buf` keeps no state between polls, so a fresh one per poll is the same future.
        let read = self.io.read_buf(&mut self.read);
        std::pin::pin!(read).poll(cx)
    }
}

impl HeadSearch {
    /// Whether the end of the head may be in `buf`, searching only the bytes not searched yet.
    fn may_be_complete(&mut self, buf: &[u8]) -> bool {
        if !self.tried {
            return true;
        }
        let start = self.searched.min(buf.len());
        for (i, &b) in buf[start..].iter().enumerate() {
            self.at = match (self.at, b) {
                (Scan::LineEnd | Scan::LineEndCr, b'\n') => {
                    // Should the parse still find the head incomplete, the search goes on
                    // after this line end.
                    self.searched = start + i + 1;
                    self.at = Scan::LineEnd;
                    return true;
                }
                (Scan::Leading, b'\r' | b'\n') => Scan::Leading,
                (Scan::LineEnd, b'\r') => Scan::LineEndCr,
                (_, b'\n') => Scan::LineEnd,
                _ => Scan::Line,
            };
        }
        self.searched = buf.len();
        false
    }

    /// An interim response was dropped from the buffer: the search starts again on what follows.
    fn restart(&mut self, interim: usize) {
        self.interim += interim;
        self.tried = false;
        self.searched = 0;
        self.at = Scan::Leading;
    }

    /// The connection ended before the head: the error that parsing what came gives (as
    /// parsing after every read would have found), else [`H1Error::Closed`].
    fn closed(&mut self, read: &mut BytesMut) -> H1Error {
        if read.is_empty() {
            return H1Error::Closed;
        }
        self.tried = false;
        match decode_head(read, false, self) {
            Err(e) => e,
            Ok(_) => H1Error::Closed,
        }
    }
}

impl ResponseBody {
    /// The body has ended: the connection goes back unless it must close.
    fn finish(&mut self) {
        let conn = self.conn.take();
        if let (Some(conn), Some(release)) = (conn, self.release.take())
            && self.keep_alive
            && conn.read.is_empty()
        {
            release.release(conn);
        }
    }

    /// The body failed: its connection closes, whatever may still come on it.
    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.conn = None;
        self.release = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match decode_body(&mut this.framing, &mut conn.read) {
                Ok(frame) => frame,
                Err(e) => return this.fail(e),
            };
            if this.framing == Framing::Done {
                this.finish();
            }
            if let Some(frame) = frame {
                return Poll::Ready(Some(Ok(frame)));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => match decode_eof(&mut this.framing) {
                    Ok(()) => this.conn = None,
                    Err(e) => return this.fail(e),
                },
                Ok(_) => {}
                Err(e) => return this.fail(H1Error::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Whether a request with this method means something by a body, so that an empty one is
/// announced with `content-length: 0` (as hyper does).
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT | Method::OPTIONS | Method::TRACE
    )
}

fn encode_request(buf: &mut Vec<u8>, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) {
    buf.clear();
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // The body's framing is the codec's to state.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || has_payload_semantics(method) {
        buf.extend_from_slice(b"content-length: ");
        push_decimal(buf, body.len() as u64);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(body);
}

fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Decodes the response head at the start of `read`, dropping interim (1xx) responses before
/// it; `None` until it is all buffered. Parsed only once `search` finds that the end of the
/// head may be buffered, or the buffer is full.
fn decode_head(
    read: &mut BytesMut,
    head_request: bool,
    search: &mut HeadSearch,
) -> Result<Option<Head>, H1Error> {
    loop {
        let full = search.interim + read.len() >= MAX_HEAD;
        if !full && !search.may_be_complete(read) {
            return Ok(None);
        }
        #[cfg(test)]
        {
            search.parses += 1;
        }
        // Parsed from a frozen copy of the buffer (no bytes are copied), so that header
        // values can be slices of it rather than allocations of their own.
        let frozen = read.split().freeze();
        let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, &frozen, &mut fields)? {
            httparse::Status::Complete(len) if search.interim + len <= MAX_HEAD => len,
            httparse::Status::Partial if search.interim + frozen.len() < MAX_HEAD => {
                unsplit(read, frozen);
                search.tried = true;
                return Ok(None);
            }
            _ => return Err(H1Error::HeadTooLarge),
        };
        let code = parsed.code.unwrap_or(0);
        // The codec never asks for an upgrade, so a 101 would leave the connection speaking
        // a protocol nobody asked for.
        if code == 101 {
            return Err(H1Error::Framing(
                "101 switching protocols to a request that asked for no upgrade",
            ));
        }
        if (100..200).contains(&code) {
            search.restart(len);
            read.extend_from_slice(&frozen[len..]);
            if read.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::Framing("bad status code"))?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut headers = header_map(&frozen, parsed.headers, 0)?;
        let (framing, must_close) = framing(status, version, head_request, &mut headers)?;
        let keep_alive = !must_close && framing != Framing::Close && keep_alive(version, &headers);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if len < frozen.len() {
            read.extend_from_slice(&frozen[len..]);
        }
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

/// Puts bytes split off by [`decode_head`] back, without a copy when nothing else holds them.
fn unsplit(read: &mut BytesMut, frozen: Bytes) {
    match frozen.try_into_mut() {
        Ok(mut back) => {
            back.unsplit(std::mem::take(read));
            *read = back;
        }
        Err(frozen) => {
            let rest = std::mem::take(read);
            *read = BytesMut::from(&frozen[..]);
            read.unsplit(rest);
        }
    }
}

/// Header fields as a map whose values share `frozen`'s bytes, with room for `spare` more.
fn header_map(frozen: &Bytes, fields: &[httparse::Header<'_>], spare: usize) -> Result<HeaderMap, H1Error> {
    let mut headers = HeaderMap::with_capacity(fields.len() + spare);
    for field in fields {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| H1Error::Framing("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(frozen.slice_ref(field.value))
            .map_err(|_| H1Error::Framing("bad header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// How the body of a response is delimited (RFC 9112, section 6.3), and whether the
/// connection must close after it whatever the response says. `content-length` is left in
/// `headers` only as one value that describes the body as sent, since it is forwarded.
fn framing(
    status: StatusCode,
    version: Version,
    head_request: bool,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), H1Error> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Done, false));
    }
    let Some(last) = headers.get_all(header::TRANSFER_ENCODING).iter().next_back() else {
        return Ok((content_length(headers)?, false));
    };
    let chunked = last
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    // Transfer-Encoding overrides Content-Length, which then is not forwarded; a response
    // with both (a sign of smuggling) or with a transfer coding in HTTP/1.0 has framing the
    // upstream may see otherwise, so its connection carries no other request (RFC 9112,
    // sections 6.1 and 6.3).
    let both = headers.remove(header::CONTENT_LENGTH).is_some();
    let framing = match chunked {
        true => Framing::Chunked(Chunk::Size),
        false => Framing::Close,
    };
    Ok((framing, both || version == Version::HTTP_10))
}

/// The framing a response's `content-length` fields give; several that agree become one.
fn content_length(headers: &mut HeaderMap) -> Result<Framing, H1Error> {
    let mut length = None;
    let mut values = 0;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or(H1Error::Framing("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Framing("conflicting content-length values"));
            }
            length = Some(n);
            values += 1;
        }
    }
    if values > 1
        && let Some(n) = length
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(match length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    match version {
        Version::HTTP_10 => keep && !close,
        _ => !close,
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// One step of decoding a body from `read`: a frame, or `None` when more bytes are needed or
/// the body has ended (`*framing` is then [`Framing::Done`]). A body's last frame leaves
/// `*framing` done when what follows it (a chunked body's end) is already buffered.
fn decode_body(framing: &mut Framing, read: &mut BytesMut) -> Result<Option<Frame<Bytes>>, H1Error> {
    match *framing {
        Framing::Length(left) if !read.is_empty() => {
            let n = left.min(read.len() as u64);
            *framing = match left - n {
                0 => Framing::Done,
                left => Framing::Length(left),
            };
            Ok(Some(Frame::data(read.split_to(n as usize).freeze())))
        }
        Framing::Close if !read.is_empty() => Ok(Some(Frame::data(read.split().freeze()))),
        Framing::Chunked(_) => decode_chunked(framing, read),
        _ => Ok(None),
    }
}

/// The connection reached its end: fine only for a body delimited by it.
fn decode_eof(framing: &mut Framing) -> Result<(), H1Error> {
    match *framing {
        Framing::Close | Framing::Done => {
            *framing = Framing::Done;
            Ok(())
        }
        _ => Err(H1Error::Closed),
    }
}

fn decode_chunked(framing: &mut Framing, read: &mut BytesMut) -> Result<Option<Frame<Bytes>>, H1Error> {
    settle_chunked(framing, read)?;
    match *framing {
        Framing::Chunked(Chunk::Data(left)) if !read.is_empty() => {
            let n = left.min(read.len() as u64);
            let data = read.split_to(n as usize).freeze();
            *framing = Framing::Chunked(match left - n {
                0 => Chunk::DataEnd,
                left => Chunk::Data(left),
            });
            settle_chunked(framing, read)?;
            Ok(Some(Frame::data(data)))
        }
        Framing::Chunked(Chunk::Trailers) => match take_trailers(read)? {
            Some(trailers) => {
                *framing = Framing::Done;
                Ok(Some(Frame::trailers(trailers)))
            }
            None if read.len() > MAX_HEAD => Err(H1Error::HeadTooLarge),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Steps over what follows a chunk's data when it is already buffered (CRLF, the last
/// chunk, an empty trailer section), so that the body reports its end with its last data.
fn settle_chunked(framing: &mut Framing, read: &mut BytesMut) -> Result<(), H1Error> {
    loop {
        match *framing {
            Framing::Chunked(Chunk::DataEnd) => match take_crlf(read)? {
                true => *framing = Framing::Chunked(Chunk::Size),
                false => return Ok(()),
            },
            Framing::Chunked(Chunk::Size) => match take_chunk_size(read)? {
                Some(0) => *framing = Framing::Chunked(Chunk::Trailers),
                Some(n) => {
                    *framing = Framing::Chunked(Chunk::Data(n));
                    return Ok(());
                }
                None => return Ok(()),
            },
            Framing::Chunked(Chunk::Trailers) => {
                if read.starts_with(b"\r\n") {
                    read.advance(2);
                    *framing = Framing::Done;
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
}

/// Consumes the CRLF after a chunk's data; `false` if not buffered yet. A bare LF is refused,
/// as hyper does: leniency in framing is where proxies and servers come to disagree.
fn take_crlf(buf: &mut BytesMut) -> Result<bool, H1Error> {
    match buf.first() {
        None => Ok(false),
        Some(b'\r') => match buf.get(1) {
            None => Ok(false),
            Some(b'\n') => {
                buf.advance(2);
                Ok(true)
            }
            Some(_) => Err(H1Error::Framing("chunk data not followed by CRLF")),
        },
        Some(_) => Err(H1Error::Framing("chunk data not followed by CRLF")),
    }
}

/// Consumes a chunk-size line (extensions ignored); `None` if not buffered yet.
fn take_chunk_size(buf: &mut BytesMut) -> Result<Option<u64>, H1Error> {
    match parse_chunk_size(buf)? {
        Some((len, _)) if len > MAX_LINE => Err(H1Error::Framing("chunk-size line too long")),
        Some((len, size)) => {
            buf.advance(len);
            Ok(Some(size))
        }
        None if buf.len() < MAX_LINE => Ok(None),
        None => Err(H1Error::Framing("chunk-size line too long")),
    }
}

/// A chunk-size line (RFC 9112, section 7.1): its length and the size, `None` if incomplete.
/// Stricter than httparse's, which reads an empty or blank line as the last chunk and lets a
/// bare LF or control bytes into an extension.
fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, H1Error> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let Some(lf) = buf[digits..].iter().position(|&b| b == b'\n') else {
        return match digits == 0 && !buf.is_empty() {
            true => Err(H1Error::Framing("bad chunk size")),
            false => Ok(None),
        };
    };
    if digits == 0 {
        return Err(H1Error::Framing("bad chunk size"));
    }
    let size = buf[..digits].iter().try_fold(0u64, |n, &d| {
        let digit = (d as char).to_digit(16).map(u64::from)?;
        n.checked_mul(16)?.checked_add(digit)
    });
    let size = size.ok_or(H1Error::Framing("chunk size overflows 64 bits"))?;
    let Some(ext) = buf[digits..digits + lf].strip_suffix(b"\r") else {
        return Err(H1Error::Framing("chunk-size line not ended by CRLF"));
    };
    let ext = ext.trim_ascii_start();
    let printable = |&b: &u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
    if !ext.is_empty() && (ext[0] != b';' || !ext.iter().all(printable)) {
        return Err(H1Error::Framing("bad chunk extension"));
    }
    Ok(Some((digits + lf + 1, size)))
}

/// Consumes the trailer section after the last chunk (the caller has checked it is not just
/// an empty line); `None` if not all buffered yet.
fn take_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let (len, parsed) = match httparse::parse_headers(buf, &mut fields)? {
        httparse::Status::Complete(done) => done,
        httparse::Status::Partial => return Ok(None),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| H1Error::Framing("bad trailer name"))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| H1Error::Framing("bad trailer value"))?;
        trailers.append(name, value);
    }
    buf.advance(len);
    Ok(Some(trailers))
}

#[cfg(test)]
mod props;
pub(crate) mod server;
#[cfg(test)]
mod tests;
