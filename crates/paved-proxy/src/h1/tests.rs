//! The codec against a scripted upstream on loopback: framing, keep-alive, interim responses,
//! malformed answers; and the request encoding.

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
    let no_body = |s: u16| framing(StatusCode::from_u16(s).unwrap(), false, &HeaderMap::new()).unwrap();
    assert_eq!(no_body(204), Framing::Done);
    assert_eq!(no_body(200), Framing::Close);
}
