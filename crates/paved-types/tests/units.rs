//! Memory sizes and durations: table-driven cases for each accepted and rejected form, and
//! property tests that formatting and parsing agree.

use std::time::Duration;

use paved_types::units::{UnitError, format_duration, format_memory, parse_duration, parse_memory};
use proptest::prelude::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn check_memory(input: &str, expect: Result<u64, &str>) {
    let got = parse_memory(input).map_err(|e| e.to_string());
    assert_eq!(got, expect.map_err(str::to_owned), "input: {input:?}");
}

#[test]
fn memory_forms() {
    let cases = [
        ("0", 0),
        ("1048576", MIB),
        ("12B", 12),
        ("128MiB", 128 * MIB),
        ("1GiB", GIB),
        ("512Ki", 512 * KIB),
        ("512k", 512 * KIB),
        ("512K", 512 * KIB),
        ("2kb", 2000),
        ("100MB", 100_000_000),
        ("100mb", 100_000_000),
        ("256m", 256 * MIB),
        ("1.5GiB", GIB + GIB / 2),
        ("0.5KiB", 512),
        ("1.0005KB", 1001), // 1000.5 rounds half up
        ("1T", 1 << 40),
        ("1TB", 1_000_000_000_000),
        ("1PiB", 1 << 50),
        ("15EiB", 15 << 60),
        (" 64 MiB ", 64 * MIB),
        ("1.000000000000000000000001GiB", GIB),
        ("18446744073709551615", u64::MAX),
        // Digits past the 18th are dropped: at most one byte off, never an overflow.
        ("15.99999999999999999999EiB", u64::MAX),
    ];
    for (input, bytes) in cases {
        check_memory(input, Ok(bytes));
    }
}

#[test]
fn memory_rejects() {
    let cases = [
        ("", UnitError::EmptyMemory),
        ("   ", UnitError::EmptyMemory),
        ("-1", UnitError::NegativeMemory("-1".into())),
        ("MiB", UnitError::MalformedMemory("MiB".into())),
        (".5G", UnitError::MalformedMemory(".5G".into())),
        ("1.G", UnitError::MalformedMemory("1.G".into())),
        ("1..2G", UnitError::MalformedMemory("1..2G".into())),
        (
            "1e6",
            UnitError::UnknownMemoryUnit {
                input: "1e6".into(),
                unit: "e6".into(),
            },
        ),
        (
            "12 apples",
            UnitError::UnknownMemoryUnit {
                input: "12 apples".into(),
                unit: "apples".into(),
            },
        ),
        (
            "1KiBB",
            UnitError::UnknownMemoryUnit {
                input: "1KiBB".into(),
                unit: "KiBB".into(),
            },
        ),
        (
            "1μB",
            UnitError::UnknownMemoryUnit {
                input: "1μB".into(),
                unit: "μB".into(),
            },
        ),
        ("16EiB", UnitError::MemoryOverflow("16EiB".into())),
        (
            "18446744073709551616",
            UnitError::MemoryOverflow("18446744073709551616".into()),
        ),
        (
            "99999999999999999999999GiB",
            UnitError::MemoryOverflow("99999999999999999999999GiB".into()),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_memory(input), Err(want), "input: {input:?}");
    }
}

#[test]
fn memory_error_lists_accepted_forms() {
    check_memory(
        "lots",
        Err(
            "\"lots\" is not a memory size; write a number and a unit, e.g. \"128MiB\", \"1.5GiB\", \"512Ki\", \"100MB\", or a plain number of bytes, e.g. \"1048576\"; units (any case): B; K, Ki, KiB, M, Mi, MiB, G.., T.., P.., E.. count in 1024s; KB, MB, GB, TB, PB, EB count in 1000s",
        ),
    );
}

#[test]
fn memory_formatting() {
    let cases = [
        (0, "0B"),
        (1, "1B"),
        (1023, "1023B"),
        (KIB, "1KiB"),
        (1536, "1.5KiB"),
        (1_000_000, "976.6KiB"),
        (64 * MIB, "64MiB"),
        (128 * MIB, "128MiB"),
        (GIB + GIB / 2, "1.5GiB"),
        (GIB - 1, "1024.0MiB"),
        (1 << 40, "1TiB"),
        (u64::MAX, "15.9EiB"), // "16.0EiB" would not parse back
    ];
    for (bytes, want) in cases {
        assert_eq!(format_memory(bytes), want, "bytes: {bytes}");
    }
}

#[test]
fn durations() {
    let cases = [
        ("1s", Duration::from_secs(1)),
        ("250ms", Duration::from_millis(250)),
        ("1m30s", Duration::from_secs(90)),
        ("1m 30s", Duration::from_secs(90)),
        ("2h", Duration::from_secs(7200)),
        (" 10ms ", Duration::from_millis(10)),
        ("1d", Duration::from_secs(86_400)),
    ];
    for (input, want) in cases {
        assert_eq!(parse_duration(input), Ok(want), "input: {input:?}");
    }
    let forms = "write numbers with units, e.g. \"250ms\", \"1s\", \"1m30s\" or \"2h\" (ms, s, m, h, d)";
    let rejects = [
        ("", format!("duration is empty; {forms}")),
        ("-1s", format!("duration \"-1s\" is negative; {forms}")),
        (
            "5",
            format!("\"5\" is not a duration (time unit needed, for example 5sec or 5ms); {forms}"),
        ),
        (
            "1x",
            format!(
                "\"1x\" is not a duration (unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); {forms}"
            ),
        ),
    ];
    for (input, want) in rejects {
        assert_eq!(
            parse_duration(input).map_err(|e| e.to_string()),
            Err(want),
            "input: {input:?}"
        );
    }
}

#[test]
fn duration_formatting() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_millis(250), "250ms"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(600), "10m"),
        (Duration::from_millis(1500), "1s500ms"),
        (Duration::from_secs(7200), "2h"),
    ];
    for (d, want) in cases {
        assert_eq!(format_duration(d), want);
    }
}

/// Binary unit sizes and the spellings that mean them.
const BINARY: [(u64, &[&str]); 6] = [
    (KIB, &["K", "Ki", "KiB", "k", "kib"]),
    (MIB, &["M", "Mi", "MiB", "m", "MIB"]),
    (GIB, &["G", "Gi", "GiB", "g"]),
    (1 << 40, &["T", "Ti", "TiB"]),
    (1 << 50, &["P", "Pi", "PiB"]),
    (1 << 60, &["E", "Ei", "EiB"]),
];

proptest! {
    /// Formatting is exact to one decimal or rounds by at most 5% (half a tenth of a unit at
    /// least 1), and what it prints parses back.
    #[test]
    fn format_then_parse_is_close(bytes in any::<u64>()) {
        let text = format_memory(bytes);
        let back = parse_memory(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(u128::from(back.abs_diff(bytes)) * 20 <= u128::from(bytes), "{bytes} -> {text} -> {back}");
    }

    /// Just under 16EiB, where rounding up would overflow.
    #[test]
    fn format_near_the_top_parses(bytes in (u64::MAX - (1 << 57))..=u64::MAX) {
        let text = format_memory(bytes);
        prop_assert!(parse_memory(&text).is_ok(), "{bytes} -> {text}");
    }

    /// Whole and half units format exactly and parse back to the same bytes.
    #[test]
    fn exact_sizes_round_trip(
        (unit, n) in (0usize..6).prop_flat_map(|u| (Just(u), 1u64..if u == 5 { 16 } else { 1024 })),
        half in any::<bool>(),
    ) {
        let size = BINARY[unit].0;
        let bytes = n * size + if half { size / 2 } else { 0 };
        prop_assert_eq!(parse_memory(&format_memory(bytes)), Ok(bytes));
    }

    /// Every spelling of a unit multiplies; products beyond u64 are overflow errors.
    #[test]
    fn spellings_multiply(n in any::<u32>(), unit in 0usize..6, spelling in 0usize..3) {
        let (size, names) = BINARY[unit];
        let text = format!("{n}{}", names[spelling]);
        let want = u64::from(n).checked_mul(size).ok_or(UnitError::MemoryOverflow(text.clone()));
        prop_assert_eq!(parse_memory(&text), want);
    }

    #[test]
    fn parse_memory_never_panics(s in any::<String>()) {
        let _ = parse_memory(&s);
    }

    #[test]
    fn durations_round_trip(nanos in any::<u64>()) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn parse_duration_never_panics(s in any::<String>()) {
        let _ = parse_duration(&s);
    }
}
