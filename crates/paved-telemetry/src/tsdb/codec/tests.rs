//! Round trips of the block encoding, bit for bit, and the sizes it reaches on typical series.

use proptest::prelude::*;

use super::*;

/// Encodes `steps` (the first must be a sample) and decodes them back.
fn round_trip(steps: &[Step], float_only: bool) -> (Vec<Step>, Encoder) {
    let Some(Step::Sample(first)) = steps.first() else {
        panic!("a block starts with a sample")
    };
    let mut encoder = Encoder::new(*first, float_only);
    for step in &steps[1..] {
        match step {
            Step::Sample(v) => encoder.push(*v),
            Step::Skip => encoder.skip(),
        }
    }
    (decode(&encoder), encoder)
}

fn decode(encoder: &Encoder) -> Vec<Step> {
    let mut decoder = Decoder::new(encoder.bits().words(), encoder.bits().len());
    let mut out = Vec::new();
    while let Some(step) = decoder.next_step().expect("decodes") {
        out.push(step);
    }
    out
}

/// Bit patterns, so NaN payloads and -0.0 compare as themselves.
fn bits(steps: &[Step]) -> Vec<Option<u64>> {
    steps
        .iter()
        .map(|s| match s {
            Step::Sample(v) => Some(v.to_bits()),
            Step::Skip => None,
        })
        .collect()
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        1 => prop_oneof![
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::from_bits(0x7ff0_0000_dead_beef)),
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MIN_POSITIVE),
            Just(f64::MAX),
            Just(9_007_199_254_740_993.0),
        ],
        4 => (-(1i64 << 53)..=(1i64 << 53), 0u8..=9).prop_map(|(n, s)| n as f64 / 10f64.powi(i32::from(s))),
        4 => (-1000i64..1000, 0u8..=3).prop_map(|(n, s)| n as f64 / 10f64.powi(i32::from(s))),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![6 => value().prop_map(Step::Sample), 1 => Just(Step::Skip)];
    (value(), prop::collection::vec(step, 0..300)).prop_map(|(first, rest)| {
        let mut steps = vec![Step::Sample(first)];
        steps.extend(rest);
        steps
    })
}

/// A counter rising by a varying amount, or a gauge walking: the series int mode is for.
fn walk() -> impl Strategy<Value = Vec<Step>> {
    (
        0i64..1 << 40,
        prop::collection::vec(-50i64..5000, 1..400),
        0u8..=9,
    )
        .prop_map(|(start, deltas, scale)| {
            let mut n = start;
            deltas
                .iter()
                .map(|d| {
                    n += d;
                    Step::Sample(n as f64 / 10f64.powi(i32::from(scale)))
                })
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_values_round_trip_bit_for_bit(steps in steps(), float_only in any::<bool>()) {
        let (decoded, _) = round_trip(&steps, float_only);
        prop_assert_eq!(bits(&decoded), bits(&steps));
    }

    #[test]
    fn walks_round_trip(steps in walk()) {
        let (decoded, encoder) = round_trip(&steps, false);
        prop_assert_eq!(bits(&decoded), bits(&steps));
        let float = reencode_float(encoder.bits().words(), encoder.bits().len()).expect("re-encodes");
        prop_assert_eq!(bits(&decode(&float)), bits(&steps));
    }

    #[test]
    fn float_reencoding_keeps_every_step(steps in steps()) {
        let (_, encoder) = round_trip(&steps, false);
        let float = reencode_float(encoder.bits().words(), encoder.bits().len()).expect("re-encodes");
        prop_assert!(float.is_float());
        prop_assert_eq!(bits(&decode(&float)), bits(&steps));
    }

    #[test]
    fn damaged_blocks_never_panic(words in prop::collection::vec(any::<u64>(), 0..8), len in 0u64..600) {
        let mut decoder = Decoder::new(&words, len);
        for _ in 0..1000 {
            match decoder.next_step() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Bits per sample after the first, for `values` encoded as the store would keep them.
fn bits_per_sample(values: impl IntoIterator<Item = f64>) -> f64 {
    let steps: Vec<Step> = values.into_iter().map(Step::Sample).collect();
    let (_, encoder) = round_trip(&steps, false);
    let float = reencode_float(encoder.bits().words(), encoder.bits().len()).expect("re-encodes");
    let bits = encoder.bits().len().min(float.bits().len()) - 65;
    bits as f64 / (steps.len() - 1) as f64
}

#[test]
fn typical_series_compress_to_a_few_bits() {
    let constant = bits_per_sample((0..360).map(|_| 42.0));
    let steady_counter = bits_per_sample((0..360).map(|i| f64::from(i) * 1000.0));
    let noisy_counter = bits_per_sample((0..360).map(|i| f64::from(i * 1000 + (i * 7919) % 61)));
    let cpu_ms = bits_per_sample((0..360).map(|i| f64::from(i * 250 + (i * 7919) % 97) / 1000.0));
    let pages = bits_per_sample((0..360).map(|i| f64::from(20_000 + (i * 7919) % 13) * 4096.0));
    for (name, got, limit) in [
        ("constant", constant, 1.0),
        ("steady counter", steady_counter, 1.1),
        ("noisy counter", noisy_counter, 9.0),
        ("cpu seconds in ms", cpu_ms, 15.0),
        ("page-aligned bytes", pages, 15.0),
    ] {
        eprintln!("{name}: {got:.2} bits per sample");
        assert!(
            got <= limit,
            "{name}: {got:.2} bits per sample, expected ≤ {limit}"
        );
    }
}

#[test]
fn rescaling_and_switching_are_exact() {
    let steps: Vec<Step> = [0.0, 1.0, 1.5, 1.25, 1.125, 0.1 + 0.2, f64::NAN, 7.0]
        .into_iter()
        .map(Step::Sample)
        .chain([Step::Skip, Step::Sample(-0.0)])
        .collect();
    let (decoded, encoder) = round_trip(&steps, false);
    assert_eq!(bits(&decoded), bits(&steps));
    assert!(encoder.is_float(), "0.1 + 0.2 has no short decimal form");
}

#[test]
fn truncated_blocks_are_errors() {
    let steps: Vec<Step> = (0..50).map(|i| Step::Sample(f64::from(i) * 1.5)).collect();
    let (_, encoder) = round_trip(&steps, false);
    let words = encoder.bits().words();
    let mut decoder = Decoder::new(words, encoder.bits().len() + 64);
    let outcome = std::iter::from_fn(|| decoder.next_step().transpose()).find(Result::is_err);
    assert!(outcome.is_some(), "reading past the real end is an error");
}

/// What [`decode_all`] reports, as steps: samples where it called back, skips elsewhere.
fn decode_fast(words: &[u64], len: u64) -> Result<Vec<Step>, CodecError> {
    let mut out = Vec::new();
    let steps = decode_all(words, len, |step, v| {
        out.resize(step as usize, Step::Skip);
        out.push(Step::Sample(v));
    })?;
    out.resize(steps as usize, Step::Skip);
    Ok(out)
}

fn decode_slow(words: &[u64], len: u64) -> Result<Vec<Step>, CodecError> {
    let mut decoder = Decoder::new(words, len);
    std::iter::from_fn(|| decoder.next_step().transpose()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_fast_decoder_agrees_with_the_step_decoder(steps in steps(), float_only in any::<bool>()) {
        let (_, encoder) = round_trip(&steps, float_only);
        let (words, len) = (encoder.bits().words(), encoder.bits().len());
        let fast = decode_fast(words, len).expect("decodes");
        prop_assert_eq!(bits(&fast), bits(&steps));
    }

    #[test]
    fn the_fast_decoder_fails_where_the_step_decoder_does(words in prop::collection::vec(any::<u64>(), 0..6), len in 0u64..400) {
        let fast = decode_fast(&words, len).map(|s| bits(&s));
        let slow = decode_slow(&words, len).map(|s| bits(&s));
        prop_assert_eq!(fast.is_ok(), slow.is_ok());
        if let (Ok(fast), Ok(slow)) = (fast, slow) {
            prop_assert_eq!(fast, slow);
        }
    }
}
