//! Memory sizes and durations as people write them in manifests ("128MiB", "1m30s"): parsed
//! exactly, and formatted short for tables.

use std::time::Duration;

/// Why a memory size or a duration did not parse. Every message lists the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("memory size is empty; {MEMORY_FORMS}")]
    EmptyMemory,
    #[error("memory size {0:?} is negative; {MEMORY_FORMS}")]
    NegativeMemory(String),
    #[error("memory size {input:?} has unknown unit {unit:?}; {MEMORY_FORMS}")]
    UnknownMemoryUnit { input: String, unit: String },
    #[error("{0:?} is not a memory size; {MEMORY_FORMS}")]
    MalformedMemory(String),
    #[error("memory size {0:?} is too large; the largest is 18446744073709551615 bytes (16EiB - 1)")]
    MemoryOverflow(String),
    #[error("duration is empty; {DURATION_FORMS}")]
    EmptyDuration,
    #[error("duration {0:?} is negative; {DURATION_FORMS}")]
    NegativeDuration(String),
    #[error("{input:?} is not a duration ({reason}); {DURATION_FORMS}")]
    MalformedDuration { input: String, reason: String },
}

const MEMORY_FORMS: &str = "write a number and a unit, e.g. \"128MiB\", \"1.5GiB\", \"512Ki\", \
     \"100MB\", or a plain number of bytes, e.g. \"1048576\"; units (any case): B; K, Ki, KiB, M, \
     Mi, MiB, G.., T.., P.., E.. count in 1024s; KB, MB, GB, TB, PB, EB count in 1000s";

const DURATION_FORMS: &str =
    "write numbers with units, e.g. \"250ms\", \"1s\", \"1m30s\" or \"2h\" (ms, s, m, h, d)";

/// Binary units from the largest down, for formatting.
const BINARY_UNITS: [(&str, u64); 7] = [
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Fraction digits that take part in the arithmetic; later ones cannot change the result by
/// more than a rounding step, and the limit keeps the product inside `u128`.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a memory size into bytes. A bare number counts bytes; a bare prefix (`K`, `M`, ...)
/// and the `i`/`iB` forms count in powers of 1024, the same as `docker run --memory 512m`; `KB`,
/// `MB`, ... count in powers of 1000. Fractions round to the nearest byte.
pub fn parse_memory(s: &str) -> Result<u64, UnitError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(UnitError::EmptyMemory);
    }
    if text.starts_with('-') {
        return Err(UnitError::NegativeMemory(s.to_owned()));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(UnitError::MalformedMemory(s.to_owned()));
    }
    let multiplier = memory_unit(unit.trim_start()).ok_or_else(|| UnitError::UnknownMemoryUnit {
        input: s.to_owned(),
        unit: unit.trim_start().to_owned(),
    })?;
    let (whole, fraction) = split_number(number).ok_or_else(|| malformed_or_overflow(s, number))?;
    scale(whole, fraction, multiplier).ok_or_else(|| UnitError::MemoryOverflow(s.to_owned()))
}

/// Formats bytes in the largest binary unit that keeps the number at least 1: exact when the
/// size is a whole number or has one decimal in that unit ("128MiB", "1.5GiB"), otherwise
/// rounded to one decimal ("976.6KiB"). What it prints, `parse_memory` reads back.
pub fn format_memory(bytes: u64) -> String {
    let (unit, size) = BINARY_UNITS
        .into_iter()
        .find(|&(_, size)| bytes >= size)
        .unwrap_or(("B", 1));
    if bytes.is_multiple_of(size) {
        return format!("{}{unit}", bytes / size);
    }
    let (bytes, size) = (u128::from(bytes), u128::from(size));
    let nearest = (bytes * 10 + size / 2) / size;
    // Just under 16EiB, rounding up would print a size that does not fit in a u64.
    let fits = (nearest * size + 5) / 10 <= u128::from(u64::MAX);
    let tenths = if fits { nearest } else { bytes * 10 / size };
    format!("{}.{}{unit}", tenths / 10, tenths % 10)
}

/// Parses a duration such as "250ms", "1s", "1m30s" or "2h" (humantime's syntax).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    if text.starts_with('-') {
        return Err(UnitError::NegativeDuration(s.to_owned()));
    }
    humantime::parse_duration(text).map_err(|e| UnitError::MalformedDuration {
        input: s.to_owned(),
        reason: e.to_string(),
    })
}

/// Formats a duration compactly ("1m30s", "250ms", "0s"); `parse_duration` reads it back.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// Bytes per unit, or `None` for a unit we do not know. Case-insensitive.
fn memory_unit(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let mut chars = unit.chars();
    let Some(prefix) = chars.next() else {
        return Some(1);
    };
    if prefix == 'b' && chars.as_str().is_empty() {
        return Some(1);
    }
    let power = "kmgtpe".find(prefix)? as u32 + 1;
    match chars.as_str() {
        "" | "i" | "ib" => Some(1024u64.pow(power)),
        "b" => Some(1000u64.pow(power)),
        _ => None,
    }
}

/// Splits "12.5" into 12 and "5". `None` when malformed or when the whole part overflows.
fn split_number(number: &str) -> Option<(u64, &str)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = !whole.is_empty() && digits(whole) && digits(fraction);
    let has_fraction = number.contains('.');
    if !well_formed || (has_fraction && fraction.is_empty()) {
        return None;
    }
    Some((whole.parse().ok()?, fraction))
}

/// Tells a too-large whole part from a malformed number, both of which `split_number` rejects.
fn malformed_or_overflow(input: &str, number: &str) -> UnitError {
    let whole = number.split('.').next().unwrap_or_default();
    let shape_ok = number.matches('.').count() <= 1 && !number.ends_with('.') && !whole.is_empty();
    if shape_ok && whole.parse::<u64>().is_err() {
        UnitError::MemoryOverflow(input.to_owned())
    } else {
        UnitError::MalformedMemory(input.to_owned())
    }
}

/// `(whole + 0.fraction) * multiplier`, rounded to the nearest byte; `None` on overflow.
fn scale(whole: u64, fraction: &str, multiplier: u64) -> Option<u64> {
    let whole_bytes = whole.checked_mul(multiplier)?;
    let digits = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS)];
    if digits.is_empty() {
        return Some(whole_bytes);
    }
    let numerator: u128 = digits.parse().ok()?;
    let denominator = 10u128.pow(digits.len() as u32);
    let fraction_bytes = (numerator * u128::from(multiplier) + denominator / 2) / denominator;
    whole_bytes.checked_add(u64::try_from(fraction_bytes).ok()?)
}
