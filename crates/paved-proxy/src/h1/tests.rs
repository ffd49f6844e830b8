//! The codec against a scripted upstream on loopback: framing, keep-alive, interim responses,
//! malformed answers; the decoder alone on answers fed to it in pieces; and the request
//! encoding.

use std::time::Duration;

use http::header::HeaderMap;
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::Release;

/// What the codec made of an answer.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    body: String,
    trailers: Vec<(String, String)>,
    /// Whether the connection could serve another request afterwards.
    reusable: bool,
}

/// Sends a GET (or HEAD) to an upstream that answers with `parts` (written apart, 20 ms
/// between them) and then closes if `close`; reads the answer whole.
async fn exchange(method: Method, parts: &[&str], close: bool) -> Result<Seen, H1Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let parts: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            request.push(byte[0]);
        }
        for part in parts {
            stream.write_all(part.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !close {
            // Keep the connection open until the client is done with it.
            let _ = stream.read(&mut [0u8; 1]).await;
        }
    });
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    conn.write_request(&method, "/", &HeaderMap::new(), b"").await?;
    let head = conn.read_head(method == Method::HEAD).await?;
    let status = head.response.status().as_u16();
    let (body, reusable) = match conn.receive(&head, Release::nowhere) {
        Received::Whole(bytes, mut conn) => (collect(bytes).await?, conn.is_reusable()),
        Received::WholeLast(bytes) => (collect(bytes).await?, false),
        Received::Stream(body) => {
            let keep = body.keep_alive;
            let collected = body.collect().await?;
            let trailers = collected.trailers().map(pairs).unwrap_or_default();
            let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
            drop(server);
            return Ok(Seen {
                status,
                body: text,
                trailers,
                reusable: keep,
            });
        }
    };
    drop(server);
    Ok(Seen {
        status,
        body,
        trailers: vec![],
        reusable,
    })
}

async fn collect(bytes: Bytes) -> Result<String, H1Error> {
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

async fn check(parts: &[&str], close: bool, want: (u16, &str, bool)) {
    let seen = exchange(Method::GET, parts, close).await.unwrap();
    let got = (seen.status, seen.body.as_str(), seen.reusable);
    assert_eq!(got, want, "{parts:?}");
}

#[tokio::test]
async fn reads_every_framing() {
    let ok = "HTTP/1.1 200 OK\r\n";
    check(
        &[&format!("{ok}content-length: 5\r\nx-a: b\r\n\r\nhello")],
        false,
        (200, "hello", true),
    )
    .await;
    // The body after the head, in two writes.
    check(
        &[&format!("{ok}content-length: 11\r\n\r\nhello"), " world"],
        false,
        (200, "hello world", true),
    )
    .await;
    check(
        &[&format!("{ok}content-length: 0\r\n\r\n")],
        false,
        (200, "", true),
    )
    .await;
    let chunked = format!("{ok}transfer-encoding: chunked\r\n\r\n");
    check(
        &[&format!("{chunked}5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")],
        false,
        (200, "hello world", true),
    )
    .await;
    // Chunks split anywhere, even inside a size line and its CRLF.
    check(
        &[&chunked, "5\r", "\nhel", "lo\r", "\n1", "\r\n!\r\n0\r", "\n\r\n"],
        false,
        (200, "hello!", true),
    )
    .await;
    // Until the upstream closes: the connection cannot be reused.
    check(&[&format!("{ok}\r\nbye")], true, (200, "bye", false)).await;
    check(
        &[&format!("{ok}transfer-encoding: gzip\r\n\r\nzz")],
        true,
        (200, "zz", false),
    )
    .await;
    check(
        &[&format!("{ok}connection: close\r\ncontent-length: 2\r\n\r\nhi")],
        true,
        (200, "hi", false),
    )
    .await;
    check(
        &["HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi"],
        true,
        (200, "hi", false),
    )
    .await;
    let kept = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi";
    check(&[kept], false, (200, "hi", true)).await;
    // Interim responses are skipped; 204 and 304 have no body whatever they say.
    check(
        &["HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n"],
        false,
        (204, "", true),
    )
    .await;
    check(
        &["HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"],
        false,
        (304, "", true),
    )
    .await;
    // Bytes beyond the response: the connection is not reused.
    check(
        &[&format!("{ok}content-length: 2\r\n\r\nhiXX")],
        false,
        (200, "hi", false),
    )
    .await;
}

#[tokio::test]
async fn a_head_response_has_no_body() {
    let seen = exchange(
        Method::HEAD,
        &["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"],
        false,
    )
    .await
    .unwrap();
    assert_eq!((seen.status, seen.body.as_str(), seen.reusable), (200, "", true));
}

#[tokio::test]
async fn chunked_trailers_come_as_a_trailer_frame() {
    let answer = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nx-check: 7\r\n\r\n";
    let seen = exchange(Method::GET, &[answer], false).await.unwrap();
    assert_eq!(seen.body, "hi");
    assert_eq!(seen.trailers, vec![("x-check".to_owned(), "7".to_owned())]);
}

#[tokio::test]
async fn malformed_or_cut_answers_are_errors() {
    let fails = async |parts: &[&str]| {
        let result = exchange(Method::GET, parts, true).await;
        assert!(result.is_err(), "{parts:?} gave {result:?}");
    };
    fails(&["HTTP/1.1 abc\r\n\r\n"]).await;
    fails(&["HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nhi"]).await;
    fails(&["HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"]).await;
    fails(&["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]).await;
    fails(&["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"]).await;
    fails(&["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"]).await;
    fails(&["HTTP/1.1 200 OK\r\ncontent-le"]).await;
    fails(&[]).await;
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let (server, _) = listener.accept().await.unwrap();
    assert!(conn.is_reusable());
    drop(server);
    // The close reaches the socket's readiness once the runtime has polled it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while conn.is_reusable() {
        assert!(tokio::time::Instant::now() < deadline, "close never seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn requests_are_encoded_with_their_own_framing() {
    let check = |method: Method, headers: &[(&str, &str)], body: &str, want: &str| {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut buf = Vec::new();
        encode_request(&mut buf, &method, "/p?q=1", &map, body.as_bytes());
        assert_eq!(String::from_utf8(buf).unwrap(), want);
    };
    check(
        Method::GET,
        &[("host", "a"), ("x-b", "1"), ("x-b", "2")],
        "",
        "GET /p?q=1 HTTP/1.1\r\nhost: a\r\nx-b: 1\r\nx-b: 2\r\n\r\n",
    );
    check(
        Method::POST,
        &[("content-length", "99"), ("transfer-encoding", "chunked")],
        "",
        "POST /p?q=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    );
    check(
        Method::PUT,
        &[("host", "a")],
        "hello",
        "PUT /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
    );
    check(Method::DELETE, &[], "", "DELETE /p?q=1 HTTP/1.1\r\n\r\n");
}

#[test]
fn decimals_and_statuses() {
    let mut buf = Vec::new();
    for n in [0u64, 7, 10, 1234567890123] {
        buf.clear();
        push_decimal(&mut buf, n);
        assert_eq!(String::from_utf8_lossy(&buf), n.to_string());
        assert_eq!(parse_decimal(n.to_string().as_bytes()), Some(n));
    }
    assert_eq!(parse_decimal(b""), None);
    assert_eq!(parse_decimal(b"1a"), None);
    assert_eq!(parse_decimal(b"99999999999999999999"), None);
    let no_body = |s: u16| {
        let status = StatusCode::from_u16(s).unwrap();
        framing(status, Version::HTTP_11, false, &mut HeaderMap::new()).unwrap()
    };
    assert_eq!(no_body(204), (Framing::Done, false));
    assert_eq!(no_body(200), (Framing::Close, false));
}

/// What the decoder made of an answer fed to it in pieces, the stream ending after them.
#[derive(Debug)]
pub(super) struct Decoded {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
    pub(super) trailers: Option<HeaderMap>,
    /// Whether the connection would go back to the pool: nothing beyond the response came.
    pub(super) reusable: bool,
    /// Times the head (or heads, with interim responses) was parsed in full.
    pub(super) parses: usize,
}

/// Feeds `pieces` to the decoder one at a time, as reads from a connection would.
pub(super) fn decode<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    head_request: bool,
) -> Result<Decoded, H1Error> {
    let mut pieces = pieces.into_iter();
    let mut read = BytesMut::new();
    let mut search = HeadSearch::default();
    let head = loop {
        if let Some(head) = decode_head(&mut read, head_request, &mut search)? {
            break head;
        }
        match pieces.next() {
            Some(piece) => read.extend_from_slice(piece),
            None => return Err(search.closed(&mut read)),
        }
    };
    let (mut body, mut trailers, mut framing) = (Vec::new(), None, head.framing);
    loop {
        match decode_body(&mut framing, &mut read)? {
            Some(frame) => match frame.into_data() {
                Ok(data) => {
                    assert!(!data.is_empty(), "an empty data frame");
                    body.extend_from_slice(&data);
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            None if framing == Framing::Done => break,
            None => match pieces.next() {
                Some(piece) => read.extend_from_slice(piece),
                None => decode_eof(&mut framing)?,
            },
        }
    }
    let beyond = read.len() + pieces.map(<[u8]>::len).sum::<usize>();
    Ok(Decoded {
        status: head.response.status().as_u16(),
        headers: head.response.headers().clone(),
        body,
        trailers,
        reusable: head.keep_alive && beyond == 0,
        parses: search.parses,
    })
}

/// Decodes `answer` fed a byte at a time and whole, expecting the same either way:
/// `Ok((status, body, reusable))` or an error whose message contains the given text.
fn check_decode(answer: &str, head_request: bool, want: Result<(u16, &str, bool), &str>) {
    // Byte by byte only when short: each piece parses a trailer section again from its start.
    for bytewise in [answer.len() < 4096, false] {
        let whole = [answer.as_bytes()];
        let got = match bytewise {
            true => decode(answer.as_bytes().chunks(1), head_request),
            false => decode(whole, head_request),
        };
        let got = got
            .map(|d| {
                (
                    d.status,
                    String::from_utf8_lossy(&d.body).into_owned(),
                    d.reusable,
                )
            })
            .map_err(|e| e.to_string());
        match (&got, want) {
            (Ok((status, body, reusable)), Ok(want)) if (*status, body.as_str(), *reusable) == want => {}
            (Err(e), Err(want)) if e.contains(want) => {}
            _ => {
                let answer: String = answer.chars().take(200).collect();
                panic!("{answer:?} (bytewise {bytewise}): got {got:?}, want {want:?}")
            }
        }
    }
}

#[test]
fn transfer_encoding_overrides_content_length() {
    let ok = "HTTP/1.1 200 OK\r\n";
    let body = "5\r\nhello\r\n0\r\n\r\n";
    // Chunked wins; the content-length is not forwarded and the connection not reused.
    let answer = format!("{ok}content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n{body}");
    check_decode(&answer, false, Ok((200, "hello", false)));
    let decoded = decode([answer.as_bytes()], false).unwrap();
    assert_eq!(decoded.headers.get(header::CONTENT_LENGTH), None);
    let answer = format!("{ok}transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n{body}");
    check_decode(&answer, false, Ok((200, "hello", false)));
    // Chunked not last: the body runs until the upstream closes.
    let gzip = format!("{ok}transfer-encoding: chunked, gzip\r\ncontent-length: 2\r\n\r\nzzzz");
    check_decode(&gzip, false, Ok((200, "zzzz", false)));
    let gzip = format!("{ok}transfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\nzz");
    check_decode(&gzip, false, Ok((200, "zz", false)));
    let last = format!("{ok}transfer-encoding: gzip, Chunked\r\n\r\n{body}");
    check_decode(&last, false, Ok((200, "hello", true)));
    // HTTP/1.0 has no transfer codings: read as chunked, but the connection closes after.
    let old =
        format!("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n{body}");
    check_decode(&old, false, Ok((200, "hello", false)));
}

#[test]
fn content_length_values_must_agree() {
    let ok = "HTTP/1.1 200 OK\r\n";
    check_decode(
        &format!("{ok}content-length: 2, 3\r\n\r\nhi"),
        false,
        Err("conflicting"),
    );
    let answer = format!("{ok}content-length: 2\r\ncontent-length: 3\r\n\r\nhi");
    check_decode(&answer, false, Err("conflicting"));
    check_decode(
        &format!("{ok}content-length: 2,\r\n\r\nhi"),
        false,
        Err("bad content-length"),
    );
    check_decode(
        &format!("{ok}content-length: +2\r\n\r\nhi"),
        false,
        Err("bad content-length"),
    );
    check_decode(
        &format!("{ok}content-length: -1\r\n\r\nhi"),
        false,
        Err("bad content-length"),
    );
    let huge = format!("{ok}content-length: 99999999999999999999\r\n\r\n");
    check_decode(&huge, false, Err("bad content-length"));
    // Values that agree are one, forwarded once.
    let answer = format!("{ok}content-length: 2\r\ncontent-length: 2, 2\r\n\r\nhi");
    check_decode(&answer, false, Ok((200, "hi", true)));
    let decoded = decode([answer.as_bytes()], false).unwrap();
    let lengths: Vec<_> = decoded.headers.get_all(header::CONTENT_LENGTH).iter().collect();
    assert_eq!(lengths, ["2"]);
}

#[test]
fn chunk_size_lines_are_strict() {
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    let check = |chunks: &str, want: Result<(u16, &str, bool), &str>| {
        check_decode(&format!("{head}{chunks}"), false, want);
    };
    check(
        "5;a=b;c=\"d e\"\r\nhello\r\n0;x\r\n\r\n",
        Ok((200, "hello", true)),
    );
    check("5 ; a=b\r\nhello\r\n0\r\n\r\n", Ok((200, "hello", true)));
    check("5 \r\nhello\r\n0\r\n\r\n", Ok((200, "hello", true)));
    check("A\r\n0123456789\r\n0\r\n\r\n", Ok((200, "0123456789", true)));
    check(
        "00000000000000000005\r\nhello\r\n0\r\n\r\n",
        Ok((200, "hello", true)),
    );
    check("zz\r\n", Err("bad chunk size"));
    check("0x5\r\nhello\r\n0\r\n\r\n", Err("bad chunk extension"));
    check("-5\r\nhello\r\n0\r\n\r\n", Err("bad chunk size"));
    check(" 5\r\nhello\r\n0\r\n\r\n", Err("bad chunk size"));
    // An empty line is no last chunk (httparse reads it as size 0).
    check("\r\n\r\n", Err("bad chunk size"));
    check("10000000000000000\r\n", Err("overflows"));
    check("5\nhello\r\n0\r\n\r\n", Err("not ended by CRLF"));
    check("5;a\nb\r\nhello\r\n0\r\n\r\n", Err("not ended by CRLF"));
    check("5;a\x00b\r\nhello\r\n0\r\n\r\n", Err("bad chunk extension"));
    check("5;a\rb\r\nhello\r\n0\r\n\r\n", Err("bad chunk extension"));
    check("5\r\nhello\n0\r\n\r\n", Err("not followed by CRLF"));
    check("5\r\nhelloXX0\r\n\r\n", Err("not followed by CRLF"));
    check(
        &format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_LINE)),
        Err("too long"),
    );
    assert_eq!(
        parse_chunk_size(b"ffffffffffffffff\r\n").unwrap(),
        Some((18, u64::MAX))
    );
    let trailed = decode([format!("{head}0;e\r\nx-t: 1\r\n\r\n").as_bytes()], false).unwrap();
    assert_eq!(trailed.trailers.unwrap()["x-t"], "1");
    assert_eq!(parse_chunk_size(b"ff").unwrap(), None);
    assert_eq!(parse_chunk_size(b"ff;ext").unwrap(), None);
}

#[test]
fn header_sections_are_capped() {
    let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    check_decode(&big, false, Err("larger than"));
    // Interim responses count too: an endless stream of them is refused.
    let flood = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_HEAD / 20);
    check_decode(&flood, false, Err("larger than"));
    let fields: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    check_decode(
        &format!("HTTP/1.1 200 OK\r\n{fields}\r\n"),
        false,
        Err("too many headers"),
    );
    let trailers = format!("{}\r\n", "x-t: v\r\n".repeat(MAX_HEAD / 8 + 1));
    let answer = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{trailers}");
    check_decode(&answer, false, Err("too many headers"));
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_parsed_once_it_has_ended() {
    // 60 KiB of fields, within both caps.
    let value = "v".repeat(480);
    let fields: String = (0..MAX_HEADERS - 1)
        .map(|i| format!("x-{i:03}: {value}\r\n"))
        .collect();
    let big = format!("HTTP/1.1 200 OK\r\n{fields}content-length: 2\r\n\r\nhi");
    assert!(big.len() > 60 * 1024 && big.len() < MAX_HEAD, "{}", big.len());
    let hints = "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
    // Bare LFs end lines and the head too; empty lines before the status line are skipped.
    let bare = "\r\n\n\nHTTP/1.1 200 OK\nx-a: b\r\ncontent-length: 2\n\nhi";
    let hinted = format!("{hints}{hints}{big}");
    for (answer, heads, fields) in [
        (big.as_str(), 1, MAX_HEADERS),
        (&hinted, 3, MAX_HEADERS),
        (bare, 1, 2),
    ] {
        let decoded = decode(answer.as_bytes().chunks(1), false).unwrap();
        let got = (decoded.status, decoded.headers.len(), decoded.body.as_slice());
        assert_eq!(got, (200, fields, b"hi".as_slice()), "{answer:.80?}");
        // Each head is parsed on its first byte and once it has ended; the decoder's first
        // look, at an empty buffer, is one more.
        assert!(decoded.parses <= 2 * heads + 1, "{} parses", decoded.parses);
    }
    // A head that never ends is still refused at the cap, and a malformed one that the
    // upstream cut short still says what was wrong with it.
    let endless = format!("HTTP/1.1 200 OK\r\nx-a: {}", "a".repeat(MAX_HEAD));
    check_decode(&endless, false, Err("larger than"));
    let flood = "\n".repeat(MAX_HEAD);
    check_decode(&flood, false, Err("larger than"));
    check_decode("HTTP/1.1 200 OK\r\nbad field\r\n", false, Err("malformed"));
    check_decode("HTTP/1.1 abc", false, Err("malformed"));
    check_decode("HTTP/1.1 200 OK\r\nx-a: b\r\n", false, Err("closed"));
}

#[test]
fn interim_responses_are_skipped_but_101_is_refused() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
    check_decode(
        &format!("HTTP/1.1 100 Continue\r\n\r\n{ok}"),
        false,
        Ok((200, "hi", true)),
    );
    let hints = "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
    check_decode(&format!("{hints}{hints}{ok}"), false, Ok((200, "hi", true)));
    let switch = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
    check_decode(&format!("{switch}{ok}"), false, Err("101"));
    check_decode("HTTP/1.1 099 Low\r\n\r\n", false, Err("bad status code"));
}

#[test]
fn some_responses_have_no_body_whatever_they_say() {
    let cl = "content-length: 5\r\n";
    let te = "transfer-encoding: chunked\r\n";
    for (head_request, status) in [
        (true, "200 OK"),
        (false, "204 No Content"),
        (false, "304 Not Modified"),
    ] {
        for framing in [cl, te, ""] {
            let answer = format!("HTTP/1.1 {status}\r\n{framing}\r\n");
            let code = status[..3].parse().unwrap();
            check_decode(&answer, head_request, Ok((code, "", true)));
            // A body sent anyway: the connection is not reused.
            check_decode(&format!("{answer}hello"), head_request, Ok((code, "", false)));
        }
    }
    // A HEAD response keeps its content-length, which describes the GET's body.
    let decoded = decode([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".as_slice()], true).unwrap();
    assert_eq!(decoded.headers.get(header::CONTENT_LENGTH).unwrap(), "5");
}

#[test]
fn keep_alive_follows_the_response() {
    let cl = "content-length: 2\r\n\r\nhi";
    check_decode(&format!("HTTP/1.1 200 OK\r\n{cl}"), false, Ok((200, "hi", true)));
    check_decode(
        &format!("HTTP/1.1 200 OK\r\nconnection: close\r\n{cl}"),
        false,
        Ok((200, "hi", false)),
    );
    let both = format!("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\n{cl}");
    check_decode(&both, false, Ok((200, "hi", false)));
    check_decode(&format!("HTTP/1.0 200 OK\r\n{cl}"), false, Ok((200, "hi", false)));
    let kept = format!("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n{cl}");
    check_decode(&kept, false, Ok((200, "hi", true)));
    check_decode(
        "HTTP/1.1 200 OK\r\n\r\nuntil close",
        false,
        Ok((200, "until close", false)),
    );
    // Bytes beyond the response, or a response cut short.
    check_decode(
        &format!("HTTP/1.1 200 OK\r\n{cl}XX"),
        false,
        Ok((200, "hi", false)),
    );
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    check_decode(&format!("{chunked}HTTP/1.1"), false, Ok((200, "hi", false)));
    check_decode(
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi",
        false,
        Err("closed"),
    );
    check_decode(&chunked[..chunked.len() - 2], false, Err("closed"));
}

/// An answer's body as the connection streams it.
async fn stream(answer: &'static str) -> ResponseBody {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(answer.as_bytes()).await.unwrap();
        // Then keep the connection open, so that only the codec can end it.
        let _ = stream.read(&mut [0u8; 1024]).await;
    });
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let head = conn.read_head(false).await.unwrap();
    match conn.receive(&head, Release::nowhere) {
        Received::Stream(body) => body,
        other => panic!("not streamed: {other:?}"),
    }
}

#[tokio::test]
async fn a_body_that_failed_gives_up_its_connection() {
    let mut body = stream("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\nzz\r\n").await;
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        failed |= frame.is_err();
    }
    assert!(failed);
    assert!(body.conn.is_none(), "the connection outlived the error");
    assert!(body.frame().await.is_none());
}
