//! Histogram buckets in the style of Prometheus native histograms, schema 3: every power of two
//! is split into 8 buckets whose bounds grow by 2^(1/8) (≈ 9 %), so a quantile read from them is
//! within ±4.5 % of the true value however far in the tail it lies. Buckets are sparse: a
//! histogram takes memory (one cache line of 8 counters) only for the powers of two it has seen.
//!
//! The finite buckets span (2^-30, 2^34]: about a nanosecond to 500 years when observing
//! seconds, a byte to 16 GiB when observing bytes. Observations at or below 2^-30 (including
//! zero and negatives) share a zero bucket; those above 2^34 share an overflow bucket whose upper
//! bound is +Inf. NaN observations are ignored.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The tag the store puts on each bucket series of a histogram: the bucket's upper bound.
pub const BUCKET_LABEL: &str = "bucket";

/// Observations at or below this (2^-30) land in the zero bucket.
pub const ZERO_THRESHOLD: f64 = 1.0 / (1u64 << 30) as f64;

/// A histogram's state at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramValue {
    /// Observations recorded (the sum of every bucket's count).
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
    /// Non-empty buckets in ascending order of bound; counts are per bucket, not cumulative.
    pub buckets: Vec<Bucket>,
}

/// One bucket: the observations in (the previous bound, `upper`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    pub upper: f64,
    pub count: u64,
}

impl HistogramValue {
    /// The `q`-quantile (0 ≤ q ≤ 1) of the observations, interpolated within its bucket; `None`
    /// when there are none.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let buckets: Vec<(f64, f64)> = self.buckets.iter().map(|b| (b.upper, b.count as f64)).collect();
        quantile(q, &buckets)
    }
}

/// The lock-free state behind a [`crate::Histogram`] handle.
pub(crate) struct HistogramCell {
    octaves: [OnceLock<Box<[AtomicU64; 8]>>; OCTAVES],
    zero: AtomicU64,
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl HistogramCell {
    pub(crate) fn new() -> Self {
        HistogramCell {
            octaves: std::array::from_fn(|_| OnceLock::new()),
            zero: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub(crate) fn observe(&self, v: f64) {
        let counter = match slot_of(v) {
            None => return,
            Some(Slot::Zero) => &self.zero,
            Some(Slot::Overflow) => &self.overflow,
            Some(Slot::Key(key)) => {
                let index = (key - MIN_KEY) as usize;
                let octave =
                    self.octaves[index / 8].get_or_init(|| Box::new([const { AtomicU64::new(0) }; 8]));
                &octave[index % 8]
            }
        };
        counter.fetch_add(1, Relaxed);
        add_f64(&self.sum, v);
    }

    pub(crate) fn value(&self) -> HistogramValue {
        let mut buckets = Vec::new();
        let mut push = |upper: f64, count: u64| {
            if count > 0 {
                buckets.push(Bucket { upper, count });
            }
        };
        push(ZERO_THRESHOLD, self.zero.load(Relaxed));
        for (o, octave) in self.octaves.iter().enumerate() {
            let Some(octave) = octave.get() else { continue };
            for (i, counter) in octave.iter().enumerate() {
                push(upper_bound(MIN_KEY + (o * 8 + i) as i32), counter.load(Relaxed));
            }
        }
        push(f64::INFINITY, self.overflow.load(Relaxed));
        HistogramValue {
            count: buckets.iter().map(|b| b.count).sum(),
            sum: f64::from_bits(self.sum.load(Relaxed)),
            buckets,
        }
    }
}

impl std::fmt::Debug for HistogramCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

/// The `q`-quantile of per-bucket counts given as (upper bound, count) in ascending order of
/// bound: the bucket holding the rank, interpolated geometrically inside it (the buckets are
/// log-spaced), linearly inside the zero bucket. A rank in the overflow bucket gives its lower
/// bound, 2^34: the value is at least that. `None` when every count is zero.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total: f64 = buckets.iter().map(|(_, c)| c.max(0.0)).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut below = 0.0;
    let mut last = None;
    for &(upper, count) in buckets {
        if count.is_nan() || count <= 0.0 {
            continue;
        }
        last = Some(upper);
        if below + count >= rank {
            return Some(interpolate(upper, ((rank - below) / count).clamp(0.0, 1.0)));
        }
        below += count;
    }
    last.map(|upper| interpolate(upper, 1.0))
}

/// The upper bound of the bucket below the one whose upper bound is `upper`.
pub(crate) fn lower_bound(upper: f64) -> f64 {
    match slot_of(upper) {
        None | Some(Slot::Zero) => 0.0,
        Some(Slot::Overflow) => upper_bound(MAX_KEY),
        Some(Slot::Key(key)) if key == MIN_KEY => ZERO_THRESHOLD,
        Some(Slot::Key(key)) => upper_bound(key - 1),
    }
}

/// Formats a bucket bound as the `bucket` tag value and the `le` of the exposition: the
/// shortest decimal that reads back as the same f64, `+Inf` for the overflow bucket.
pub(crate) fn format_bound(upper: f64) -> String {
    if upper == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        format!("{upper}")
    }
}

/// Reads a bound written by [`format_bound`].
pub(crate) fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

/// Adds `x` to an f64 kept as bits in an atomic.
pub(crate) fn add_f64(cell: &AtomicU64, x: f64) {
    let mut current = cell.load(Relaxed);
    loop {
        let next = (f64::from_bits(current) + x).to_bits();
        match cell.compare_exchange_weak(current, next, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

const OCTAVES: usize = 64;
/// The first bucket above the zero bucket: (2^-30, 2^(-239/8)].
const MIN_KEY: i32 = -30 * 8 + 1;
/// The last finite bucket: (2^(271/8), 2^34].
const MAX_KEY: i32 = 34 * 8;

/// 2^(j/8) for j in 0..8.
const ROOTS: [f64; 8] = [
    1.0,
    1.0905077326652577,
    1.189207115002721,
    1.2968395546510096,
    std::f64::consts::SQRT_2,
    1.5422108254079407,
    1.681792830507429,
    1.8340080864093424,
];

enum Slot {
    Zero,
    Key(i32),
    Overflow,
}

fn slot_of(v: f64) -> Option<Slot> {
    if v.is_nan() {
        None
    } else if v <= ZERO_THRESHOLD {
        Some(Slot::Zero)
    } else if v > upper_bound(MAX_KEY) {
        Some(Slot::Overflow)
    } else {
        Some(Slot::Key(key_of(v)))
    }
}

/// The bucket key of a normal, positive `v`: the k with 2^((k-1)/8) < v ≤ 2^(k/8). Splits `v`
/// into frac × 2^exp with frac in [0.5, 1) and finds frac among the halved roots, as the
/// Prometheus client does; scaling by powers of two is exact, so bounds land in their own bucket.
fn key_of(v: f64) -> i32 {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1022u64 << 52));
    let j = ROOTS.iter().position(|r| r * 0.5 >= frac).unwrap_or(8);
    j as i32 + (exp - 1) * 8
}

/// 2^(key/8).
fn upper_bound(key: i32) -> f64 {
    let power = f64::from_bits(((key.div_euclid(8) + 1023) as u64) << 52);
    ROOTS[key.rem_euclid(8) as usize] * power
}

/// A value at `frac` (0..=1) of the way through the bucket ending at `upper`.
fn interpolate(upper: f64, frac: f64) -> f64 {
    let lower = lower_bound(upper);
    if upper.is_infinite() {
        lower
    } else if lower <= 0.0 {
        upper * frac
    } else {
        lower * (upper / lower).powf(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_the_bucket_that_bounds_it() {
        let mut v = ZERO_THRESHOLD * 1.0001;
        while v < 1e10 {
            let Some(Slot::Key(k)) = slot_of(v) else {
                panic!("{v} has no key")
            };
            assert!(v <= upper_bound(k) && v > upper_bound(k - 1), "{v} in bucket {k}");
            v *= 1.013;
        }
        for k in MIN_KEY..=MAX_KEY {
            let b = upper_bound(k);
            assert_eq!(key_of(b), k, "bound {b} is in its own bucket");
            assert_eq!(key_of(b * (1.0 + f64::EPSILON)), k + 1, "just above {b}");
        }
    }

    #[test]
    fn bounds_are_those_of_prometheus_schema_3() {
        assert_eq!(upper_bound(0), 1.0);
        assert_eq!(upper_bound(8), 2.0);
        assert_eq!(upper_bound(-8), 0.5);
        assert_eq!(upper_bound(1), 1.0905077326652577);
        assert_eq!(upper_bound(MAX_KEY), 17179869184.0);
    }

    #[test]
    fn buckets_are_sparse_and_edge_values_have_a_home() {
        let h = HistogramCell::new();
        for v in [0.0, -1.0, 1e-12, 0.003, 0.003, 1.0, 1e12, f64::INFINITY, f64::NAN] {
            h.observe(v);
        }
        let value = h.value();
        let bounds: Vec<f64> = value.buckets.iter().map(|b| b.upper).collect();
        assert_eq!(
            bounds,
            [ZERO_THRESHOLD, upper_bound(key_of(0.003)), 1.0, f64::INFINITY]
        );
        assert_eq!(
            value.buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
            [3, 2, 1, 2]
        );
        assert_eq!(value.count, 8);
        assert_eq!(h.octaves.iter().filter(|o| o.get().is_some()).count(), 2);
    }

    #[test]
    fn quantiles_are_within_the_bucket_resolution() {
        let h = HistogramCell::new();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.0001).collect();
        for v in &values {
            h.observe(*v);
        }
        let value = h.value();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = values[(q * values.len() as f64) as usize - 1];
            let got = value.quantile(q).unwrap_or(f64::NAN);
            assert!((got / exact - 1.0).abs() < 0.045, "q{q}: {got} vs {exact}");
        }
        assert_eq!(HistogramCell::new().value().quantile(0.5), None);
    }

    #[test]
    fn bounds_format_and_parse_back() {
        for k in MIN_KEY..=MAX_KEY {
            let b = upper_bound(k);
            assert_eq!(parse_bound(&format_bound(b)), Some(b));
        }
        assert_eq!(parse_bound("+Inf"), Some(f64::INFINITY));
    }
}
