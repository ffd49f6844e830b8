//! Header work on the request path: hop-by-hop headers stripped both ways, `x-forwarded-*`,
//! `forwarded` and `via` added, W3C `traceparent` kept or created, and the request's host and
//! sticky value read.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

use crate::env::Dice;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones clients still send.
fn hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::TRAILER,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Removes hop-by-hop headers and those the `connection` header names. `te` is kept only as
/// `te: trailers`, which gRPC needs end to end.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present (most messages carry none, or only
    // `connection: keep-alive`), so that only those cost a lookup each.
    let hop = hop_by_hop();
    let mut present = [false; 7];
    let mut te = false;
    for name in headers.keys() {
        match hop.iter().position(|h| *h == name) {
            Some(i) => present[i] = true,
            None => te |= name == header::TE,
        }
    }
    if !te && !present.contains(&true) {
        return;
    }
    if present[0]
        && let Some(connection) = headers.get(header::CONNECTION).cloned()
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',').map(str::trim) {
            // Options that are no field name, or fields removed below anyway.
            let skip = ["", "trailers", "close", "keep-alive", "upgrade"];
            if !skip.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                te |= name.eq_ignore_ascii_case("te");
                headers.remove(name);
            }
        }
    }
    for (name, present) in hop.into_iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if te
        && let Some(value) = headers.get(header::TE)
        && !value.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` and `Upgrade`,
/// as in a WebSocket handshake); `None` for any other request.
pub(crate) fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    });
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the two headers of an upgrade, after hop-by-hop headers were stripped.
pub(crate) fn ask_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Per connection: the values the forwarding headers get, built once.
#[derive(Debug)]
pub(crate) struct Forwarding {
    /// The client's IP, as `x-forwarded-for` text.
    peer: HeaderValue,
    proto: HeaderValue,
}

impl Forwarding {
    pub(crate) fn new(peer: std::net::IpAddr, tls: bool) -> Self {
        let peer = HeaderValue::try_from(peer.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        Forwarding { peer, proto }
    }

    /// Appends the client to `x-forwarded-for` (and to `forwarded` if the client sent one),
    /// sets `x-forwarded-proto` unless a proxy in front set it, and appends to `via`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, version: Version) {
        append_list(headers, &X_FORWARDED_FOR, &self.peer);
        if let Entry::Vacant(entry) = headers.entry(&X_FORWARDED_PROTO) {
            entry.insert(self.proto.clone());
        }
        if headers.contains_key(header::FORWARDED) {
            let element = forwarded_element(&self.peer, &self.proto);
            append_list(headers, &header::FORWARDED, &element);
        }
        let via = HeaderValue::from_static(if version == Version::HTTP_2 {
            "2 paved"
        } else {
            "1.1 paved"
        });
        append_list(headers, &header::VIA, &via);
    }
}

/// `name: existing, value`, or `name: value` when absent; several fields fold into one. One
/// lookup either way (this runs for two headers of every request).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut entry = match headers.entry(name) {
        Entry::Vacant(entry) => {
            entry.insert(value.clone());
            return;
        }
        Entry::Occupied(entry) => entry,
    };
    let mut joined = Vec::new();
    for existing in entry.iter() {
        joined.extend_from_slice(existing.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        entry.insert(v);
    }
}

fn forwarded_element(peer: &HeaderValue, proto: &HeaderValue) -> HeaderValue {
    let peer = peer.to_str().unwrap_or("unknown");
    // RFC 7239: an IPv6 address is quoted and bracketed.
    let node = if peer.contains(':') {
        format!("\"[{peer}]\"")
    } else {
        peer.to_owned()
    };
    let proto = proto.to_str().unwrap_or("http");
    HeaderValue::try_from(format!("for={node};proto={proto}"))
        .unwrap_or(HeaderValue::from_static("for=unknown"))
}

/// Keeps a valid `traceparent`; replaces an absent or invalid one with a new trace (random
/// trace and span ids, sampled flag set).
pub(crate) fn ensure_traceparent(headers: &mut HeaderMap, dice: &Dice) {
    let entry = headers.entry(&TRACEPARENT);
    if let Entry::Occupied(kept) = &entry
        && valid_traceparent(kept.get().as_bytes())
    {
        return;
    }
    let (hi, lo, span) = (dice.u64() | 1, dice.u64(), dice.u64() | 1);
    // `00-{hi:016x}{lo:016x}-{span:016x}-01`, written without the formatting machinery.
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex16(&mut text[3..19], hi);
    hex16(&mut text[19..35], lo);
    hex16(&mut text[36..52], span);
    if let Ok(value) = HeaderValue::from_bytes(&text) {
        match entry {
            Entry::Vacant(entry) => {
                entry.insert(value);
            }
            Entry::Occupied(mut entry) => {
                entry.insert(value);
            }
        }
    }
}

/// `n` as 16 lowercase hex digits into `out`.
fn hex16(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate().take(16) {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// W3C trace context: `version-traceid-parentid-flags`, lowercase hex, ids not all zero,
/// version `ff` invalid; a future version may append fields after a `-`.
pub(crate) fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let zero = |s: &[u8]| s.iter().all(|&b| b == b'0');
    if v.len() < 55 || (v.len() > 55 && (v[0..2] == *b"00" || v[55] != b'-')) {
        return false;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let dashes = v[2] == b'-' && v[35] == b'-' && v[52] == b'-';
    dashes
        && hex(version)
        && version != b"ff"
        && hex(trace)
        && !zero(trace)
        && hex(parent)
        && !zero(parent)
        && hex(flags)
}

/// The host a request is for, lowercased, without port: from the URI (HTTP/2 `:authority`,
/// absolute-form HTTP/1.1) or else the `host` header.
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, kept with its brackets.
        return rest.find(']').map_or(host, |end| &host[..end + 2]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

/// The value of cookie `name` in the request's `cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn pairs(m: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = m
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let check = |input: &[(&str, &str)], want: &[(&str, &str)]| {
            let mut m = map(input);
            strip_hop_by_hop(&mut m);
            let want: Vec<(String, String)> =
                want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(pairs(&m), want, "{input:?}");
        };
        check(
            &[
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("a", "b"),
            ],
            &[("a", "b")],
        );
        check(
            &[
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
            ],
            &[],
        );
        check(
            &[("te", "trailers"), ("content-type", "application/grpc")],
            &[("content-type", "application/grpc"), ("te", "trailers")],
        );
        check(&[("te", "gzip")], &[]);
        check(
            &[("connection", "close, x-a"), ("x-a", "1"), ("te", "trailers")],
            &[("te", "trailers")],
        );
        check(&[("connection", "te"), ("te", "trailers")], &[]);
        check(
            &[("keep-alive", "timeout=5"), ("via", "1.1 lb")],
            &[("via", "1.1 lb")],
        );
        check(
            &[("proxy-authorization", "basic x"), ("authorization", "bearer y")],
            &[("authorization", "bearer y")],
        );
    }

    #[test]
    fn upgrades_are_http1_requests_asking_for_one() {
        let check = |version, pairs: &[(&str, &str)], want: Option<&str>| {
            let mut b = Request::builder().version(version);
            for (k, v) in pairs {
                b = b.header(*k, *v);
            }
            let got = upgrade_protocol(&b.body(()).unwrap());
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), want, "{pairs:?}");
        };
        let ws = [("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")];
        check(Version::HTTP_11, &ws, Some("websocket"));
        check(Version::HTTP_2, &ws, None);
        check(Version::HTTP_10, &ws, None);
        check(Version::HTTP_11, &[("upgrade", "websocket")], None);
        check(Version::HTTP_11, &[("connection", "upgrade")], None);
        let mut m = map(&ws);
        strip_hop_by_hop(&mut m);
        ask_upgrade(&mut m, HeaderValue::from_static("websocket"));
        assert_eq!(
            pairs(&m),
            [
                ("connection".into(), "upgrade".into()),
                ("upgrade".into(), "websocket".into())
            ]
        );
    }

    #[test]
    fn forwarding_appends() {
        let fwd = Forwarding::new("10.0.0.9".parse().unwrap(), false);
        let check = |input: &[(&str, &str)], version, want: &[(&str, &str)]| {
            let mut m = map(input);
            fwd.apply(&mut m, version);
            let want: Vec<(String, String)> =
                want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(pairs(&m), want);
        };
        check(
            &[],
            Version::HTTP_11,
            &[
                ("via", "1.1 paved"),
                ("x-forwarded-for", "10.0.0.9"),
                ("x-forwarded-proto", "http"),
            ],
        );
        check(
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
                ("x-forwarded-proto", "https"),
                ("via", "1.1 lb"),
            ],
            Version::HTTP_2,
            &[
                ("via", "1.1 lb, 2 paved"),
                ("x-forwarded-for", "1.2.3.4, 5.6.7.8, 10.0.0.9"),
                ("x-forwarded-proto", "https"),
            ],
        );
        let six = Forwarding::new("::1".parse().unwrap(), true);
        let mut m = map(&[("forwarded", "for=1.2.3.4")]);
        six.apply(&mut m, Version::HTTP_11);
        assert_eq!(m["forwarded"], "for=1.2.3.4, for=\"[::1]\";proto=https");
    }

    #[test]
    fn traceparent_rules() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cases = [
            (ok, true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false),
            ("", false),
        ];
        for (v, want) in cases {
            assert_eq!(valid_traceparent(v.as_bytes()), want, "{v}");
        }
        let mut digits = [0u8; 16];
        hex16(&mut digits, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(&digits, b"00f067aa0ba902b7");
        let dice = Dice::seeded(1);
        let mut kept = map(&[("traceparent", ok)]);
        ensure_traceparent(&mut kept, &dice);
        assert_eq!(kept["traceparent"], ok);
        for input in [&[][..], &[("traceparent", "garbage")][..]] {
            let mut m = map(input);
            ensure_traceparent(&mut m, &dice);
            let made = m["traceparent"].as_bytes();
            assert!(valid_traceparent(made), "{made:?}");
        }
    }

    #[test]
    fn hosts_and_cookies() {
        let host = |uri: &str, header: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = header {
                b = b.header("host", h);
            }
            request_host(&b.body(()).unwrap()).map(str::to_owned)
        };
        assert_eq!(
            host("/x", Some("API.example.com:8080")).as_deref(),
            Some("API.example.com")
        );
        assert_eq!(host("http://a.b:1/x", Some("c.d")).as_deref(), Some("a.b"));
        assert_eq!(host("/x", Some("[::1]:80")).as_deref(), Some("[::1]"));
        assert_eq!(host("/x", None), None);
        let m = map(&[("cookie", "a=1; sid=\"xyz\""), ("cookie", "b=2")]);
        assert_eq!(cookie(&m, "sid"), Some("xyz"));
        assert_eq!(cookie(&m, "b"), Some("2"));
        assert_eq!(cookie(&m, "c"), None);
    }
}
