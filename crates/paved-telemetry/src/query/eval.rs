//! Evaluation of a parsed query over the store, at each instant of a grid; the semantics are
//! documented on the `query` module.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;

use super::QueryError;
use super::ast::{AggOp, Expr, MatchOp, RateFn, Selector};
use super::parse::anchored;
use crate::histogram::{BUCKET_LABEL, parse_bound, quantile};
use crate::labels::Labels;
use crate::time::{Timestamp, millis};
use crate::tsdb::{Selected, Store};

/// The instants a query is evaluated at: `start + i * step` for `i < len`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub(crate) start: i64,
    pub(crate) step: i64,
    pub(crate) len: usize,
}

/// One result series on the grid.
pub(crate) struct Vector {
    pub(crate) name: Option<String>,
    /// Shared with the store's index until an aggregation makes new ones.
    pub(crate) labels: Arc<Labels>,
    pub(crate) values: Vec<Option<f64>>,
}

pub(crate) fn eval(store: &Store, expr: &Expr, grid: Grid) -> Result<Vec<Vector>, QueryError> {
    match expr {
        Expr::Select(selector) => select_instants(store, selector, grid),
        Expr::Rate {
            func,
            selector,
            range,
        } => {
            let window = window(store, grid, *range);
            let per = if *func == RateFn::Rate {
                window as f64 / 1000.0
            } else {
                1.0
            };
            let vectors = select_window(store, selector, grid, window)?
                .into_iter()
                .map(|s| Vector {
                    name: None,
                    values: increases(&s.samples, grid, window, per),
                    labels: s.labels,
                })
                .collect();
            Ok(vectors)
        }
        Expr::Aggregate { op, by, expr } => Ok(aggregate(*op, by, eval(store, expr, grid)?, grid)),
        Expr::HistogramQuantile {
            quantile,
            selector,
            range,
            by,
        } => histogram_quantile(
            store,
            *quantile,
            selector,
            grid,
            window(store, grid, *range),
            by.as_deref(),
        ),
    }
}

fn select_instants(store: &Store, selector: &Selector, grid: Grid) -> Result<Vec<Vector>, QueryError> {
    let lookback = grid.step.max(store.step_ms());
    let from = grid.start.saturating_sub(lookback - 1);
    Ok(select(store, selector, from, grid.end())?
        .into_iter()
        .map(|s| Vector {
            name: Some(selector.metric.clone()),
            values: instants(&s.samples, grid, lookback),
            labels: s.labels,
        })
        .collect())
}

/// Samples for windows of `window` ms ending on the grid, with room for the pair before each.
fn select_window(
    store: &Store,
    selector: &Selector,
    grid: Grid,
    window: i64,
) -> Result<Vec<Selected>, QueryError> {
    let gap = window.max(store.step_ms());
    select(
        store,
        selector,
        grid.start.saturating_sub(window).saturating_sub(gap),
        grid.end(),
    )
}

fn select(store: &Store, selector: &Selector, from: i64, to: i64) -> Result<Vec<Selected>, QueryError> {
    let matchers = selector
        .matchers
        .iter()
        .map(|m| {
            let regex = |value: &str| {
                anchored(value).map_err(|e| QueryError::Regex {
                    label: m.label.clone(),
                    reason: e.to_string(),
                })
            };
            Ok(match m.op {
                MatchOp::Equal => Compiled::Equal(m.value.clone()),
                MatchOp::NotEqual => Compiled::NotEqual(m.value.clone()),
                MatchOp::Regex => Compiled::Regex(regex(&m.value)?),
                MatchOp::NotRegex => Compiled::NotRegex(regex(&m.value)?),
            }
            .with(&m.label))
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    let keep = |labels: &Labels| {
        matchers
            .iter()
            .all(|(label, m)| m.matches(labels.get(label).unwrap_or("")))
    };
    Ok(store.select(
        &selector.metric,
        keep,
        Timestamp::from_millis(from),
        Timestamp::from_millis(to),
    ))
}

enum Compiled {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl Compiled {
    fn with(self, label: &str) -> (String, Compiled) {
        (label.to_owned(), self)
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Compiled::Equal(v) => value == v,
            Compiled::NotEqual(v) => value != v,
            Compiled::Regex(r) => r.is_match(value),
            Compiled::NotRegex(r) => !r.is_match(value),
        }
    }
}

/// The newest sample in `(t - lookback, t]` for each instant `t`.
fn instants(samples: &[(i64, f64)], grid: Grid, lookback: i64) -> Vec<Option<f64>> {
    let mut next = 0;
    (0..grid.len)
        .map(|i| {
            let t = grid.at(i);
            while next < samples.len() && samples[next].0 <= t {
                next += 1;
            }
            let (ts, v) = *samples.get(next.checked_sub(1)?)?;
            (ts > t - lookback).then_some(v)
        })
        .collect()
}

/// The counter growth in `(t - window, t]` for each instant `t`, divided by `per`; `None` where
/// no pair of samples ends in the window. One pass: the window's sum drops growth that leaves
/// before it adds growth that enters, and restarts from zero whenever the window empties, so
/// tiled windows add no rounding at all.
fn increases(samples: &[(i64, f64)], grid: Grid, window: i64, per: f64) -> Vec<Option<f64>> {
    // The growth ending at sample k (k ≥ 1); a drop is a reset from zero.
    let growth = |k: usize| {
        let (before, now) = (samples[k - 1].1, samples[k].1);
        let g = if now >= before { now - before } else { now };
        if g.is_finite() { g } else { 0.0 }
    };
    let (mut lo, mut hi, mut sum) = (1, 1, 0.0);
    let mut out = Vec::with_capacity(grid.len);
    for i in 0..grid.len {
        let t = grid.at(i);
        let after = t - window;
        while lo < hi && samples[lo].0 <= after {
            sum -= growth(lo);
            lo += 1;
        }
        if lo == hi {
            sum = 0.0;
        }
        while hi < samples.len() && samples[hi].0 <= t {
            if samples[hi].0 > after {
                sum += growth(hi);
            } else {
                lo = hi + 1;
            }
            hi += 1;
        }
        out.push((lo < hi).then(|| sum / per));
    }
    out
}

fn aggregate(op: AggOp, by: &[String], inner: Vec<Vector>, grid: Grid) -> Vec<Vector> {
    let mut groups: HashMap<Labels, Vec<Acc>> = HashMap::new();
    for vector in inner {
        let accs = groups
            .entry(vector.labels.keep(by))
            .or_insert_with(|| vec![Acc::default(); grid.len]);
        for (acc, v) in accs.iter_mut().zip(vector.values) {
            if let Some(v) = v {
                acc.add(op, v);
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, accs)| Vector {
            name: None,
            labels: Arc::new(labels),
            values: accs.iter().map(|a| a.result(op)).collect(),
        })
        .collect()
}

fn histogram_quantile(
    store: &Store,
    q: f64,
    selector: &Selector,
    grid: Grid,
    window: i64,
    by: Option<&[String]>,
) -> Result<Vec<Vector>, QueryError> {
    let mut groups: HashMap<Labels, Vec<BucketIncreases>> = HashMap::new();
    for series in select_window(store, selector, grid, window)? {
        let Some(upper) = series.labels.get(BUCKET_LABEL).and_then(parse_bound) else {
            continue;
        };
        let key = match by {
            Some(keys) => series.labels.keep(keys),
            None => series.labels.without(BUCKET_LABEL),
        };
        groups
            .entry(key)
            .or_default()
            .push((upper, increases(&series.samples, grid, window, 1.0)));
    }
    Ok(groups
        .into_iter()
        .map(|(labels, mut buckets)| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let values = (0..grid.len)
                .map(|i| {
                    let mut counts: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
                    for (upper, incs) in &buckets {
                        let Some(count) = incs[i] else { continue };
                        match counts.last_mut() {
                            Some(last) if last.0 == *upper => last.1 += count,
                            _ => counts.push((*upper, count)),
                        }
                    }
                    quantile(q, &counts)
                })
                .collect();
            Vector {
                name: None,
                labels: Arc::new(labels),
                values,
            }
        })
        .collect())
}

/// A bucket's upper bound and its increase at each instant.
type BucketIncreases = (f64, Vec<Option<f64>>);

/// One instant of one group: the value folded so far and how many series gave one.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    value: f64,
    count: u32,
}

impl Acc {
    /// Folds `v` in; min and max skip NaN, as `f64::min` does, unless every value is NaN.
    #[inline]
    fn add(&mut self, op: AggOp, v: f64) {
        self.value = match (self.count, op) {
            (0, _) => v,
            (_, AggOp::Sum | AggOp::Avg) => self.value + v,
            (_, AggOp::Min) => self.value.min(v),
            (_, AggOp::Max) => self.value.max(v),
            (_, AggOp::Count) => 0.0,
        };
        self.count += 1;
    }

    fn result(&self, op: AggOp) -> Option<f64> {
        (self.count > 0).then(|| match op {
            AggOp::Avg => self.value / f64::from(self.count),
            AggOp::Count => f64::from(self.count),
            _ => self.value,
        })
    }
}

impl Grid {
    fn at(&self, i: usize) -> i64 {
        self.start.saturating_add((i as i64).saturating_mul(self.step))
    }

    fn end(&self) -> i64 {
        self.at(self.len.saturating_sub(1))
    }
}

/// The window of `rate`, `increase` and `histogram_quantile`: the given range, else the query
/// step, at least one store step.
fn window(store: &Store, grid: Grid, range: Option<std::time::Duration>) -> i64 {
    range.map_or(grid.step.max(store.step_ms()), millis).max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The definition, window by window.
    fn naive(samples: &[(i64, f64)], grid: Grid, window: i64) -> Vec<Option<f64>> {
        (0..grid.len)
            .map(|i| {
                let t = grid.at(i);
                let ends: Vec<usize> = (1..samples.len())
                    .filter(|&k| samples[k].0 > t - window && samples[k].0 <= t)
                    .collect();
                (!ends.is_empty()).then(|| {
                    ends.iter()
                        .map(|&k| {
                            let (b, v) = (samples[k - 1].1, samples[k].1);
                            if v >= b { v - b } else { v }
                        })
                        .sum()
                })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn one_pass_increases_match_the_definition(
            gaps in prop::collection::vec(1i64..5, 0..60),
            values in prop::collection::vec(0u32..1000, 60),
            start in -5i64..20,
            step in 1i64..8,
            len in 1usize..40,
            window in 1i64..15,
        ) {
            let mut ts = 0;
            let samples: Vec<(i64, f64)> = gaps
                .iter()
                .zip(&values)
                .map(|(gap, v)| {
                    ts += gap;
                    (ts, f64::from(*v) / 8.0)
                })
                .collect();
            let grid = Grid { start, step, len };
            let fast = increases(&samples, grid, window, 1.0);
            let slow = naive(&samples, grid, window);
            prop_assert_eq!(fast.iter().map(Option::is_some).collect::<Vec<_>>(), slow.iter().map(Option::is_some).collect::<Vec<_>>());
            for (f, s) in fast.iter().zip(&slow) {
                if let (Some(f), Some(s)) = (f, s) {
                    prop_assert!((f - s).abs() <= 1e-9 * s.abs().max(1.0), "{} vs {}", f, s);
                }
            }
        }
    }
}
