//! The client side over raw sockets: what the own HTTP/1.1 server codec answers to exact bytes
//! (pipelining, bodies, HTTP/1.0, `Connection: close`, smuggling attempts, oversize heads),
//! and what it leaves to hyper (`Expect`, large bodies).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// What the echo upstream saw.
    fn echo(&self) -> serde_json::Value {
        echo(&self.body)
    }
}

/// A client connection speaking raw bytes.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response, framed by content-length.
    async fn answer(&mut self) -> Answer {
        self.answer_to(false).await
    }

    /// The next response; to a HEAD request (`head`), it has no body whatever it says.
    async fn answer_to(&mut self, head: bool) -> Answer {
        tokio::time::timeout(Duration::from_secs(10), self.read_answer(head))
            .await
            .expect("no response within 10s")
    }

    async fn read_answer(&mut self, head: bool) -> Answer {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = parsed.parse(&self.read).unwrap() {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length") && !head)
                    .map_or(0, |(_, v)| v.parse().unwrap());
                if self.read.len() >= len + length {
                    let body = String::from_utf8_lossy(&self.read[len..len + length]).into_owned();
                    self.read.drain(..len + length);
                    return Answer {
                        status,
                        headers,
                        body,
                    };
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&self.read)
            );
            self.read.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for the proxy to close the connection, with nothing more sent.
    async fn closed(&mut self) {
        let mut rest = Vec::new();
        let read = self.stream.read_to_end(&mut rest);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the connection stayed open")
            .unwrap();
        assert!(self.read.is_empty() && rest.is_empty(), "more came: {rest:?}");
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_up, proxy) = web_proxy().await;
    let mut c = Raw::connect(proxy.addr).await;
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
          HEAD /3 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /4 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    let (one, two) = (c.answer().await, c.answer().await);
    assert_eq!((one.status, one.echo()["uri"].as_str()), (200, Some("/1")));
    assert_eq!(two.echo()["uri"], "/2");
    assert_eq!(two.echo()["body"], "abc");
    // HEAD: the length of the body it would have, and no body.
    let three = c.answer_to(true).await;
    assert_eq!(three.status, 200);
    assert!(
        three.header("content-length").is_some_and(|l| l != "0"),
        "{three:?}"
    );
    let four = c.answer().await;
    assert_eq!(four.echo()["uri"], "/4");
    let echo = four.echo();
    for header in ["x-forwarded-for", "via", "traceparent"] {
        assert!(echo["headers"][header].is_string(), "{header} missing: {echo}");
    }
    assert!(four.header("date").is_some());
}

#[tokio::test]
async fn bodies_chunked_or_late_reach_the_upstream() {
    let (_up, proxy) = web_proxy().await;
    let mut c = Raw::connect(proxy.addr).await;
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n")
        .await;
    let chunked = c.answer().await;
    assert_eq!(chunked.echo()["body"], "abcde");
    // The body after its head, in another packet: the proxy waits for it.
    c.send(b"PUT /late HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"llo").await;
    let late = c.answer().await;
    assert_eq!(
        (late.echo()["method"].as_str(), late.echo()["body"].as_str()),
        (Some("PUT"), Some("hello"))
    );
    // A chunked body still coming, and one too large to hold: hyper streams them.
    c.send(b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"0\r\n\r\n").await;
    assert_eq!(c.answer().await.echo()["body"], "abc");
    let big = "b".repeat(200 * 1024);
    c.send(
        format!(
            "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        c.answer().await.echo()["body"].as_str().map(str::len),
        Some(big.len())
    );
}

#[tokio::test]
async fn http_1_0_and_connection_close_end_the_connection() {
    let (_up, proxy) = web_proxy().await;
    let mut c = Raw::connect(proxy.addr).await;
    c.send(b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let answer = c.answer().await;
    assert_eq!((answer.status, answer.header("connection")), (200, None));
    c.closed().await;

    let mut c = Raw::connect(proxy.addr).await;
    c.send(b"GET /b HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(c.answer().await.header("connection"), Some("keep-alive"));
    c.send(b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let answer = c.answer().await;
    assert_eq!(
        (answer.echo()["uri"].as_str(), answer.header("connection")),
        (Some("/c"), Some("close"))
    );
    c.closed().await;
}

#[tokio::test]
async fn smuggling_attempts_and_oversize_heads_are_refused() {
    let (up, proxy) = web_proxy().await;
    let check = async |input: &[u8], status: u16| {
        let mut c = Raw::connect(proxy.addr).await;
        c.send(input).await;
        let answer = c.answer().await;
        assert_eq!(answer.status, status, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(answer.header("connection"), Some("close"));
        c.closed().await;
    };
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    )
    .await;
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        400,
    )
    .await;
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    )
    .await;
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
        400,
    )
    .await;
    check(
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    )
    .await;
    check(b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n", 400).await;
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    check(long.as_bytes(), 431).await;
    let many: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
    check(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(), 431).await;
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");
}

#[tokio::test]
async fn expect_continue_goes_through_hyper() {
    let (_up, proxy) = web_proxy().await;
    let mut c = Raw::connect(proxy.addr).await;
    c.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.answer().await.echo()["uri"], "/first");
    c.send(b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    assert_eq!(c.answer().await.status, 100);
    c.send(b"hello").await;
    assert_eq!(c.answer().await.echo()["body"], "hello");
    // The connection stays hyper's, and keeps serving.
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.answer().await.echo()["uri"], "/after");
}
