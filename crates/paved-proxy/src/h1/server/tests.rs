//! The server codec alone: requests decoded from buffers (framing, smuggling refusals,
//! caps, what goes to hyper, pipelining, heads in pieces), response heads encoded, and
//! property tests over random valid requests cut anywhere.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// What the decoder made of a buffer, in a form easy to compare.
#[derive(Debug, PartialEq)]
enum Seen {
    Partial,
    Needs(usize),
    HandOver,
    Refused(u16),
    /// Method, target, body, keep-alive, and the bytes left in the buffer.
    Request(String, String, String, bool, usize),
}

fn decode(input: &[u8]) -> Seen {
    let mut read = BytesMut::from(input);
    let seen = decode_request(&mut read, &mut HeadSearch::default());
    seen_of(seen, &read)
}

fn seen_of(seen: Result<Decoded, RequestError>, read: &BytesMut) -> Seen {
    match seen {
        Ok(Decoded::Partial) => Seen::Partial,
        Ok(Decoded::Needs(n)) => Seen::Needs(n),
        Ok(Decoded::HandOver) => Seen::HandOver,
        Ok(Decoded::Request(r)) => Seen::Request(
            r.request.method().to_string(),
            r.request.uri().to_string(),
            String::from_utf8_lossy(r.request.body()).into_owned(),
            r.keep_alive,
            read.len(),
        ),
        Err(e) => Seen::Refused(e.status().as_u16()),
    }
}

fn request(method: &str, target: &str, body: &str, keep_alive: bool, left: usize) -> Seen {
    Seen::Request(method.into(), target.into(), body.into(), keep_alive, left)
}

#[test]
fn decodes_requests_and_their_framing() {
    let check = |input: &str, want: Seen| assert_eq!(decode(input.as_bytes()), want, "{input:?}");
    check(
        "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        request("GET", "/a?b=1", "", true, 0),
    );
    check("GET / HTTP/1.1\r\nHost: x\r\n", Seen::Partial);
    check("\r\nGET / HTTP/1.1\r\n\r\n", request("GET", "/", "", true, 0));
    check(
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        request("GET", "/", "", false, 0),
    );
    check("GET / HTTP/1.0\r\n\r\n", request("GET", "/", "", false, 0));
    check(
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        request("GET", "/", "", true, 0),
    );
    check(
        "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        request("POST", "/", "hello", true, 0),
    );
    check("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel", Seen::Needs(43));
    check(
        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        request("POST", "/", "hello", true, 0),
    );
    check(
        "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        request("POST", "/", "", true, 0),
    );
    let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    check(
        &format!("{chunked}5\r\nhello\r\n3;x=y\r\n, w\r\n0\r\n\r\n"),
        request("POST", "/", "hello, w", true, 0),
    );
    check(
        &format!("{chunked}5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"),
        request("POST", "/", "hello", true, 0),
    );
    check(&format!("{chunked}5\r\nhel"), Seen::HandOver);
    check(&format!("{chunked}zz\r\n"), Seen::Refused(400));
    check(&format!("{chunked}5\r\nhelloXX0\r\n\r\n"), Seen::Refused(400));
    check(
        "GET http://a.example/x HTTP/1.1\r\n\r\n",
        request("GET", "http://a.example/x", "", true, 0),
    );
}

#[test]
fn refuses_what_another_reader_could_frame_otherwise() {
    let check =
        |input: &str, want: u16| assert_eq!(decode(input.as_bytes()), Seen::Refused(want), "{input:?}");
    check(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        400,
    );
    check(
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    check(
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
    check("POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd", 400);
    check("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400);
    check("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400);
    check("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 400);
    check("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
    check(
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    check("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
    check("GET /\x01 HTTP/1.1\r\n\r\n", 400);
    check("GET / HTTP/2.0\r\n\r\n", 400);
}

#[test]
fn leaves_what_it_does_not_serve_to_hyper_untouched() {
    let check = |input: &str| {
        let mut read = BytesMut::from(input);
        let seen = decode_request(&mut read, &mut HeadSearch::default());
        assert_eq!(seen_of(seen, &read), Seen::HandOver, "{input:?}");
        assert_eq!(&read[..], input.as_bytes(), "the buffer changed");
    };
    check("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    check("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    check("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
    check(&format!(
        "PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\nabc",
        MAX_BODY + 1
    ));
    let big = format!("{:x}\r\n{}\r\n0\r\n\r\n", MAX_BODY + 1, "a".repeat(MAX_BODY + 1));
    check(&format!(
        "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{big}"
    ));
    // An upgrade in HTTP/1.0 means nothing; the request is an ordinary one.
    let ten = "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(decode(ten.as_bytes()), request("GET", "/", "", false, 0));
}

#[test]
fn caps_heads_with_431() {
    let long = format!("GET / HTTP/1.1\r\nx-a: {}\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(decode(long.as_bytes()), Seen::Refused(431));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(decode(many.as_bytes()), Seen::Refused(431));
    let most: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let most = format!("GET / HTTP/1.1\r\n{most}\r\n");
    assert_eq!(decode(most.as_bytes()), request("GET", "/", "", true, 0));
}

#[test]
fn pipelined_requests_come_one_at_a_time() {
    let two = "POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET /2 HTTP/1.1\r\n\r\n";
    let mut read = BytesMut::from(two);
    let first = decode_request(&mut read, &mut HeadSearch::default());
    assert_eq!(seen_of(first, &read), request("POST", "/1", "ab", true, 19));
    let second = decode_request(&mut read, &mut HeadSearch::default());
    assert_eq!(seen_of(second, &read), request("GET", "/2", "", true, 0));
}

#[test]
fn a_head_in_single_bytes_is_parsed_about_once() {
    let head = format!("GET / HTTP/1.1\r\n{}\r\n", "x-a: b\r\n".repeat(100));
    let (mut read, mut search) = (BytesMut::new(), HeadSearch::default());
    let mut seen = Seen::Partial;
    for &b in head.as_bytes() {
        read.extend_from_slice(&[b]);
        seen = seen_of(decode_request(&mut read, &mut search), &read);
        if seen != Seen::Partial {
            break;
        }
    }
    assert_eq!(seen, request("GET", "/", "", true, 0));
    // Once at the first byte, then only at line ends that may end the head.
    assert!(search.parses <= 2 + 101, "parsed {} times", search.parses);
}

#[test]
fn encodes_response_heads() {
    let check = |status: u16, headers: &[(&str, &str)], out: Out, version, close, want: &str| {
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            response.headers_mut().append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let (parts, ()) = response.into_parts();
        let mut buf = Vec::new();
        encode_response_head(&mut buf, &parts, out, version, close);
        assert_eq!(String::from_utf8(buf).unwrap(), want);
    };
    let date = ("date", "Sun, 06 Nov 1994 08:49:37 GMT");
    let v11 = Version::HTTP_11;
    check(
        200,
        &[("x-a", "1"), date],
        Out::Length(2),
        v11,
        false,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\n",
    );
    check(
        200,
        &[("content-length", "9"), ("transfer-encoding", "chunked"), date],
        Out::Chunked,
        v11,
        true,
        "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    // HEAD and 304 keep the stated length of the body they omit; 204 has none.
    check(
        304,
        &[("content-length", "9"), date],
        Out::Nothing,
        v11,
        false,
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    );
    check(
        204,
        &[("content-length", "0"), date],
        Out::Nothing,
        v11,
        false,
        "HTTP/1.1 204 No Content\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    );
    check(
        200,
        &[date],
        Out::Length(0),
        Version::HTTP_10,
        false,
        "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n",
    );
    check(
        200,
        &[date],
        Out::Close,
        Version::HTTP_10,
        true,
        "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    );
    let mut buf = Vec::new();
    let (parts, ()) = http::Response::new(()).into_parts();
    encode_response_head(&mut buf, &parts, Out::Length(0), v11, false);
    let text = String::from_utf8(buf).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: "),
        "{text}"
    );
}

#[test]
fn frames_responses() {
    let check = |status: u16, head: bool, version, declared: Option<&str>, length: Option<u64>, want: Out| {
        let mut headers = HeaderMap::new();
        if let Some(d) = declared {
            headers.insert(header::CONTENT_LENGTH, d.parse().unwrap());
        }
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(out_framing(status, head, version, &headers, length), want);
    };
    let v11 = Version::HTTP_11;
    check(200, false, v11, None, Some(2), Out::Length(2));
    check(200, false, v11, Some("7"), None, Out::Length(7));
    check(200, false, v11, None, None, Out::Chunked);
    check(200, false, Version::HTTP_10, None, None, Out::Close);
    check(200, true, v11, Some("7"), Some(0), Out::Nothing);
    check(204, false, v11, None, None, Out::Nothing);
    check(304, false, v11, None, None, Out::Nothing);
}

#[test]
fn formats_dates() {
    let check = |secs, want: &str| assert_eq!(std::str::from_utf8(&http_date(secs)).unwrap(), want);
    check(0, "Thu, 01 Jan 1970 00:00:00 GMT");
    check(784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT");
    check(951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT");
    check(4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT");
    let mut chunk = Vec::new();
    encode_chunk(&mut chunk, &Frame::data(Bytes::from_static(b"0123456789abcdefg")));
    encode_last_chunk(&mut chunk, None);
    assert_eq!(chunk, b"11\r\n0123456789abcdefg\r\n0\r\n\r\n");
}

/// A request as a client may validly send it.
#[derive(Debug, Clone)]
struct Sent {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunked, cut at these body offsets; else by content-length (absent when empty).
    chunks: Option<Vec<Index>>,
}

impl Sent {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        match &self.chunks {
            None if self.body.is_empty() => out.extend_from_slice(b"\r\n"),
            None => {
                out.extend_from_slice(format!("content-length: {}\r\n\r\n", self.body.len()).as_bytes());
                out.extend_from_slice(&self.body);
            }
            Some(cuts) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(self.body.len() + 1)).collect();
                at.extend([0, self.body.len()]);
                at.sort_unstable();
                at.dedup();
                for w in at.windows(2) {
                    out.extend_from_slice(format!("{:x}\r\n", w[1] - w[0]).as_bytes());
                    out.extend_from_slice(&self.body[w[0]..w[1]]);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }
}

fn sent() -> impl Strategy<Value = Sent> {
    let field = ("x-[a-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?");
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        "/[a-z0-9/?=&]{0,20}",
        prop::collection::vec(field, 0..6),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::option::of(prop::collection::vec(any::<Index>(), 0..4)),
    )
        .prop_map(|(method, target, headers, body, chunks)| Sent {
            method,
            target,
            headers,
            body,
            chunks,
        })
}

proptest! {
    /// Pipelined valid requests, arriving in pieces cut anywhere, come out whole and in order.
    #[test]
    fn valid_requests_in_pieces_decode_in_order(
        requests in prop::collection::vec(sent(), 1..4),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let wire: Vec<u8> = requests.iter().flat_map(Sent::encode).collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        at.extend([0, wire.len()]);
        at.sort_unstable();
        let (mut read, mut search, mut got) = (BytesMut::new(), HeadSearch::default(), Vec::new());
        for w in at.windows(2) {
            read.extend_from_slice(&wire[w[0]..w[1]]);
            loop {
                match decode_request(&mut read, &mut search) {
                    Ok(Decoded::Request(r)) => {
                        search = HeadSearch::default();
                        got.push(r);
                    }
                    // A chunked body not all there goes to hyper in the proxy; here, wait.
                    Ok(Decoded::HandOver) | Ok(Decoded::Partial) | Ok(Decoded::Needs(_)) => break,
                    Err(e) => panic!("refused a valid request: {e}"),
                }
            }
        }
        prop_assert_eq!(got.len(), requests.len());
        for (r, s) in got.iter().zip(&requests) {
            prop_assert_eq!(r.request.method().as_str(), s.method);
            prop_assert_eq!(r.request.uri().to_string(), s.target.clone());
            prop_assert_eq!(&r.request.body()[..], &s.body[..]);
            for (k, v) in &s.headers {
                prop_assert!(r.request.headers().get_all(k.as_str()).iter().any(|x| x == v.as_str()));
            }
        }
        prop_assert!(read.is_empty());
    }

    /// No input, however broken, makes the decoder panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut read = BytesMut::from(&bytes[..]);
        let _ = decode_request(&mut read, &mut HeadSearch::default());
    }
}
