//! Property tests of the response decoder: any valid response, cut into reads anywhere,
//! decodes to what was encoded; and no input, however broken, makes it panic.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::Index;

use super::tests::decode;

/// A response as an upstream may validly send it.
#[derive(Debug, Clone)]
struct Answer {
    /// 100 Continue responses before the final one.
    interim: usize,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// Chunks cut at these body offsets, sizes in upper-case hex or not, with an extension
    /// on each or not, and these trailer fields.
    Chunked {
        cuts: Vec<Index>,
        upper: bool,
        ext: bool,
        trailers: Vec<(String, String)>,
    },
    /// Until the upstream closes.
    Close,
}

fn field() -> impl Strategy<Value = (String, String)> {
    // `x-` keeps clear of the fields that frame the body; values have no edge whitespace,
    // which the parser trims.
    ("x-[a-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?")
}

fn answer() -> impl Strategy<Value = Answer> {
    let chunked = (
        prop::collection::vec(any::<Index>(), 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(cuts, upper, ext)| {
            prop::collection::vec(field(), 0..3).prop_map(move |trailers| Framing::Chunked {
                cuts: cuts.clone(),
                upper,
                ext,
                trailers,
            })
        });
    let framing = prop_oneof![Just(Framing::Length), chunked, Just(Framing::Close)];
    let status = (200u16..600).prop_filter("no body", |s| *s != 204 && *s != 304);
    let headers = prop::collection::vec(field(), 0..6);
    let body = prop::collection::vec(any::<u8>(), 0..400);
    (0usize..3, status, headers, body, framing).prop_map(|(interim, status, headers, body, framing)| Answer {
        interim,
        status,
        headers,
        body,
        framing,
    })
}

impl Answer {
    fn encode(&self) -> Vec<u8> {
        let mut out = "HTTP/1.1 100 Continue\r\n\r\n".repeat(self.interim).into_bytes();
        out.extend_from_slice(format!("HTTP/1.1 {} Whatever\r\n", self.status).as_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match &self.framing {
            Framing::Length => {
                out.extend_from_slice(format!("content-length: {}\r\n\r\n", self.body.len()).as_bytes())
            }
            Framing::Chunked { .. } => out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
            Framing::Close => out.extend_from_slice(b"\r\n"),
        }
        match &self.framing {
            Framing::Chunked {
                cuts,
                upper,
                ext,
                trailers,
            } => {
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(self.body.len() + 1)).collect();
                at.extend([0, self.body.len()]);
                at.sort_unstable();
                at.dedup();
                for pair in at.windows(2) {
                    let size = pair[1] - pair[0];
                    let line = match upper {
                        true => format!("{size:X}"),
                        false => format!("{size:x}"),
                    };
                    out.extend_from_slice(line.as_bytes());
                    if *ext {
                        out.extend_from_slice(b" ; name=\"a value\";flag");
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&self.body[pair[0]..pair[1]]);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(&self.body),
        }
        out
    }

    /// The header fields the decoder should give, framing fields included.
    fn header_map(&self) -> HeaderMap {
        let mut map = map(&self.headers);
        match &self.framing {
            Framing::Length => {
                map.append("content-length", HeaderValue::from(self.body.len()));
            }
            Framing::Chunked { .. } => {
                map.append("transfer-encoding", HeaderValue::from_static("chunked"));
            }
            _ => {}
        }
        map
    }
}

fn map(fields: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// `input` cut at `cuts` (offsets), or into single bytes when `bytewise`.
fn pieces<'a>(input: &'a [u8], cuts: &[Index], bytewise: bool) -> Vec<&'a [u8]> {
    if bytewise {
        return input.chunks(1).collect();
    }
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    at.extend([0, input.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

/// Inputs for the decoder that no upstream should send: noise, a valid head followed by
/// noise, and valid answers with bytes overwritten.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..600);
    let heads = prop_oneof![
        Just("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        Just("HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n"),
        Just("HTTP/1.1 200 OK\r\n\r\n"),
        Just("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5"),
    ];
    let after_head = (heads, noise.clone()).prop_map(|(head, noise)| [head.as_bytes(), &noise].concat());
    let mutated = (
        answer(),
        prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(a, edits)| {
            let mut bytes = a.encode();
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            bytes
        });
    prop_oneof![noise, after_head, mutated]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn valid_answers_decode_to_what_was_sent(
        answer in answer(),
        cuts in prop::collection::vec(any::<Index>(), 0..40),
        bytewise in any::<bool>(),
    ) {
        let input = answer.encode();
        let decoded = decode(pieces(&input, &cuts, bytewise), false)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(decoded.status, answer.status);
        prop_assert_eq!(&decoded.headers, &answer.header_map());
        prop_assert_eq!(&decoded.body, &answer.body);
        let trailers = match &answer.framing {
            Framing::Chunked { trailers, .. } if !trailers.is_empty() => Some(map(trailers)),
            _ => None,
        };
        prop_assert_eq!(decoded.trailers, trailers);
        // Close-delimited answers end their connection; the others leave it reusable.
        prop_assert_eq!(decoded.reusable, !matches!(answer.framing, Framing::Close));
        // However the answer is cut, each head is parsed at most on its first piece and
        // once it has ended (and once more at the decoder's first look, at nothing).
        prop_assert!(decoded.parses <= 2 * (answer.interim + 1) + 1, "{} parses", decoded.parses);
    }

    #[test]
    fn no_input_makes_the_decoder_panic(
        input in garbage(),
        cuts in prop::collection::vec(any::<Index>(), 0..20),
        head_request in any::<bool>(),
    ) {
        let _ = decode(pieces(&input, &cuts, false), head_request);
        let mut read = BytesMut::from(&input[..]);
        let _ = super::take_chunk_size(&mut read);
    }
}
