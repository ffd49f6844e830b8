//! The server half of the own HTTP/1.1 codec: client requests decoded from a connection's
//! buffer, responses encoded into one buffer for one write. The connection loop that uses it
//! is `downstream.rs`.
//!
//! It takes only what it can serve whole and simply: a request whose body (by
//! `Content-Length` or chunked) is in memory once read, and that asks for nothing special.
//! Anything else (an upgrade, `Expect`, `CONNECT`, a body larger than [`MAX_BODY`] or a
//! chunked one not all there with its head) is left in the buffer untouched, for hyper to
//! serve the rest of the connection. Framing follows RFC 9112 for a server: a request with
//! both `Transfer-Encoding` and `Content-Length`, with differing lengths, with a transfer
//! coding that does not end in chunked, or with one in HTTP/1.0 is refused with 400, since a
//! server behind the proxy may read its framing otherwise (request smuggling).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri, Version, response};
use http_body::Frame;

use super::{
    Chunk, Framing, HeadSearch, MAX_HEAD, MAX_HEADERS, decode_body, header_map, parse_decimal, push_decimal,
    unsplit,
};

/// The largest request body the own path holds in memory; a larger one streams through hyper.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Room left in a request's header map for what the proxy adds (`x-forwarded-for`,
/// `x-forwarded-proto`, `via`, `traceparent`, `forwarded`): a map that grows rehashes.
const FORWARDING_HEADERS: usize = 5;
/// The start of an HTTP/2 connection with prior knowledge (RFC 9113, section 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the buffer holds, as far as the own path is concerned. Not boxed: it is matched where
/// it is made, once per request, and a box would cost an allocation per request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Decoded {
    /// The head is not all here yet.
    Partial,
    /// The head is here; its body is not yet, and the request takes this many bytes in all.
    Needs(usize),
    /// A request the own path leaves to hyper; the buffer is as it was.
    HandOver,
    /// A whole request, taken out of the buffer.
    Request(ClientRequest),
}

/// A request read whole, with what its connection needs to know to answer it.
#[derive(Debug)]
pub(crate) struct ClientRequest {
    /// Its body in memory (empty when it has none).
    pub(crate) request: Request<Bytes>,
    /// Whether the client will send another request on this connection after this one.
    pub(crate) keep_alive: bool,
    /// Whether the client accepts trailers in a chunked response (`TE: trailers`).
    pub(crate) trailers: bool,
}

/// A request refused before it reached the handler; its connection closes after the answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("the request head is malformed: {0}")]
    Head(httparse::Error),
    #[error("the request head is larger than {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    TooLarge,
    #[error("the request is malformed: {0}")]
    Framing(&'static str),
}

/// How a response body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    /// No body, whatever the headers say (HEAD, 1xx, 204, 304).
    Nothing,
    /// This many bytes, announced by `content-length`.
    Length(u64),
    /// Chunked: a body of unknown length to an HTTP/1.1 client.
    Chunked,
    /// Until the connection closes: a body of unknown length to an HTTP/1.0 client.
    Close,
}

/// What the raw header fields say about a request's framing and connection.
#[derive(Debug, Default)]
struct Fields {
    length: Option<u64>,
    /// A `Transfer-Encoding` field was present, and its last coding was chunked.
    transfer: Option<bool>,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade: bool,
    expect: bool,
    trailers: bool,
}

impl RequestError {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Decodes the request at the start of `read`. Parsed only once `search` finds that the end of
/// the head may be buffered (see [`HeadSearch`]); `search` belongs to this request and is
/// reset by the caller after one is taken.
pub(crate) fn decode_request(read: &mut BytesMut, search: &mut HeadSearch) -> Result<Decoded, RequestError> {
    let full = read.len() >= MAX_HEAD;
    if !full && !search.may_be_complete(read) {
        return Ok(Decoded::Partial);
    }
    #[cfg(test)]
    {
        search.parses += 1;
    }
    // Parsed from a frozen copy of the buffer (no bytes are copied), so that header values
    // and the body can be slices of it rather than allocations of their own.
    let frozen = read.split().freeze();
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        &frozen,
        &mut fields,
    );
    let len = match status {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if frozen.len() < MAX_HEAD => {
            unsplit(read, frozen);
            search.tried = true;
            return Ok(Decoded::Partial);
        }
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooLarge),
        Err(e) => return Err(RequestError::Head(e)),
    };
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let raw = Fields::read(parsed.headers)?;
    let method = parsed.method.unwrap_or("");
    let special = raw.expect
        || method == "CONNECT"
        || (version == Version::HTTP_11 && raw.upgrade_token && raw.upgrade);
    let body = match raw.framing(version)? {
        _ if special => None,
        Framing::Length(n) if n > MAX_BODY as u64 => None,
        Framing::Length(n) if frozen.len() - len < n as usize => {
            let needs = len + n as usize;
            unsplit(read, frozen);
            // The head is known whole: parse it again as soon as the body is here.
            search.tried = false;
            return Ok(Decoded::Needs(needs));
        }
        Framing::Length(n) => Some((frozen.slice(len..len + n as usize), n as usize)),
        Framing::Chunked(_) => chunked_body(&frozen[len..])?,
        _ => Some((Bytes::new(), 0)),
    };
    let Some((body, body_len)) = body else {
        unsplit(read, frozen);
        return Ok(Decoded::HandOver);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| RequestError::Framing("bad method"))?;
    let path = parsed.path.unwrap_or("/");
    let uri = Uri::from_maybe_shared(frozen.slice_ref(path.as_bytes()))
        .map_err(|_| RequestError::Framing("bad request target"))?;
    let headers = header_map(&frozen, parsed.headers, FORWARDING_HEADERS)
        .map_err(|_| RequestError::Framing("bad header field"))?;
    let keep_alive = match version {
        Version::HTTP_10 => raw.keep_alive && !raw.close,
        _ => !raw.close,
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let rest = len + body_len;
    if rest < frozen.len() {
        // Pipelined requests: the next one stays for the next call.
        read.extend_from_slice(&frozen[rest..]);
    }
    Ok(Decoded::Request(ClientRequest {
        request,
        keep_alive,
        trailers: raw.trailers,
    }))
}

impl Fields {
    fn read(headers: &[httparse::Header<'_>]) -> Result<Fields, RequestError> {
        let mut f = Fields::default();
        for h in headers {
            let (name, value) = (h.name, h.value);
            if name.eq_ignore_ascii_case("content-length") {
                for part in value.split(|&b| b == b',') {
                    let n = parse_decimal(part.trim_ascii())
                        .ok_or(RequestError::Framing("bad content-length"))?;
                    if f.length.is_some_and(|l| l != n) {
                        return Err(RequestError::Framing("conflicting content-length values"));
                    }
                    f.length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                f.transfer = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    f.upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                f.upgrade = true;
            } else if name.eq_ignore_ascii_case("expect") {
                f.expect = true;
            } else if name.eq_ignore_ascii_case("te") {
                f.trailers |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
            }
        }
        Ok(f)
    }

    /// RFC 9112, section 6.3, for a server, refusing whatever another reader could frame
    /// differently.
    fn framing(&self, version: Version) -> Result<Framing, RequestError> {
        match (self.transfer, self.length) {
            (Some(_), Some(_)) => Err(RequestError::Framing("both transfer-encoding and content-length")),
            (Some(_), None) if version == Version::HTTP_10 => {
                Err(RequestError::Framing("transfer-encoding in HTTP/1.0"))
            }
            (Some(false), None) => Err(RequestError::Framing("transfer-encoding not ending in chunked")),
            (Some(true), None) => Ok(Framing::Chunked(Chunk::Size)),
            (None, Some(0) | None) => Ok(Framing::Done),
            (None, Some(n)) => Ok(Framing::Length(n)),
        }
    }
}

/// A chunked body that is all in `raw`, decoded, with the bytes it took; `None` when it is not
/// all there or is larger than [`MAX_BODY`]. Decoded from a copy, so that the buffer stays
/// whole for hyper when the own path cannot take it. Trailers are dropped.
fn chunked_body(raw: &[u8]) -> Result<Option<(Bytes, usize)>, RequestError> {
    let mut copy = BytesMut::from(&raw[..raw.len().min(MAX_HEAD + MAX_BODY)]);
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut body = BytesMut::new();
    while framing != Framing::Done {
        match decode_body(&mut framing, &mut copy) {
            Ok(Some(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            Ok(None) if framing == Framing::Done => break,
            Ok(None) => return Ok(None),
            Err(_) => return Err(RequestError::Framing("bad chunked body")),
        }
        if body.len() > MAX_BODY {
            return Ok(None);
        }
    }
    Ok(Some((
        body.freeze(),
        raw.len().min(MAX_HEAD + MAX_BODY) - copy.len(),
    )))
}

/// How a response goes out: `length` is the body's size when known (in memory), `declared`
/// the headers' `content-length`.
pub(crate) fn out_framing(
    status: StatusCode,
    head_request: bool,
    version: Version,
    headers: &HeaderMap,
    length: Option<u64>,
) -> Out {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Out::Nothing;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| parse_decimal(v.as_bytes()));
    match (length, declared) {
        (Some(n), _) | (None, Some(n)) => Out::Length(n),
        (None, None) if version == Version::HTTP_10 => Out::Close,
        (None, None) => Out::Chunked,
    }
}

/// Writes a response head into `buf`: the status line, the headers but their framing ones
/// (which `out` states), `connection` when it differs from the default for `version`, and
/// `date` when the upstream gave none.
pub(crate) fn encode_response_head(
    buf: &mut Vec<u8>,
    parts: &response::Parts,
    out: Out,
    version: Version,
    close: bool,
) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(parts.status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    // A HEAD or 304 response keeps the length the upstream stated for the body it omits.
    let keep_length =
        out == Out::Nothing && parts.status != StatusCode::NO_CONTENT && !parts.status.is_informational();
    for (name, value) in &parts.headers {
        if (name == header::CONTENT_LENGTH && !keep_length) || name == header::TRANSFER_ENCODING {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match out {
        Out::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            push_decimal(buf, n);
            buf.extend_from_slice(b"\r\n");
        }
        Out::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::Nothing | Out::Close => {}
    }
    if close && version == Version::HTTP_11 {
        buf.extend_from_slice(b"connection: close\r\n");
    } else if !close && version == Version::HTTP_10 {
        buf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        buf.extend_from_slice(b"date: ");
        push_date(buf);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// Writes a data frame of a chunked body as one chunk (none for empty data, which would end
/// the body).
pub(crate) fn encode_chunk(buf: &mut Vec<u8>, frame: &Frame<Bytes>) {
    if let Some(data) = frame.data_ref()
        && !data.is_empty()
    {
        encode_chunk_size(buf, data.len());
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
    }
}

/// The line before a chunk's data; the CRLF after the data is the caller's.
pub(crate) fn encode_chunk_size(buf: &mut Vec<u8>, len: usize) {
    push_hex(buf, len);
    buf.extend_from_slice(b"\r\n");
}

/// The end of a chunked body, with `trailers` when the client accepts them.
pub(crate) fn encode_last_chunk(buf: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    buf.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// A bare answer to a request refused before the handler; the connection closes after it.
pub(crate) fn encode_refusal(buf: &mut Vec<u8>, status: StatusCode) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\ndate: ");
    push_date(buf);
    buf.extend_from_slice(b"\r\n\r\n");
}

fn push_hex(buf: &mut Vec<u8>, n: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

thread_local! {
    /// The `date` value of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// The current time as an IMF-fixdate (RFC 9110, section 5.6.7).
fn push_date(buf: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(second, text)| {
        if *second != now {
            *text = http_date(now);
            *second = now;
        }
        buf.extend_from_slice(text);
    });
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since the epoch (days to the civil date as in
/// Howard Hinnant's `civil_from_days`).
fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
    ];
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8], n: u64| {
        out[0] = b'0' + (n / 10 % 10) as u8;
        out[1] = b'0' + (n % 10) as u8;
    };
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out[12..14], year / 100);
    two(&mut out[14..16], year % 100);
    two(&mut out[17..19], rem / 3600);
    two(&mut out[20..22], rem / 60 % 60);
    two(&mut out[23..25], rem % 60);
    out
}

#[cfg(test)]
mod tests;
