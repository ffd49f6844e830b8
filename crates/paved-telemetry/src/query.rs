//! Queries over the store: a small PromQL-like language, evaluated on a grid of instants
//! `start, start + step, …` up to `end`.
//!
//! ```text
//! paved_task_memory_bytes{job="web", task=~"web-.*"}
//! sum by (job) (rate(paved_task_cpu_seconds_total[1m]))
//! max(paved_task_pids{tenant!="system"})
//! histogram_quantile(0.99, paved_api_request_duration_seconds{method="CreateJob"}[5m]) by (method)
//! ```
//!
//! # Grammar
//!
//! Whitespace may go anywhere between tokens; [`parse`] errors name the column and the fix.
//!
//! ```text
//! expr      = aggregate | rate | quantile | selector
//! aggregate = ("sum" | "avg" | "min" | "max" | "count") [by] "(" expr ")" [by]
//! rate      = ("rate" | "increase") "(" selector [range] ")"
//! quantile  = "histogram_quantile" [by] "(" number "," selector [range] ")" [by]
//! selector  = metric-name [ "{" [matcher ("," matcher)* [","]] "}" ]
//! matcher   = tag-name ("=" | "!=" | "=~" | "!~") string
//! by        = "by" "(" [tag-name ("," tag-name)* [","]] ")"
//! range     = "[" duration "]"            e.g. [30s], [5m], [1h30m]; units ms s m h d w
//! string    = "…" or '…' with \\ \" \' \n \t escapes
//! ```
//!
//! `histogram_quantile` without `by` gives one result per histogram series (its tags without
//! `bucket`); `by (k)` adds up the buckets of the series in each group first, and `by ()` adds
//! up all of them.
//!
//! # Semantics
//!
//! - A selector's value at `t` is its newest sample in `(t - lookback, t]`, where the lookback is
//!   the query step or the store step, whichever is longer: a series that stopped (a task that
//!   ended) drops out of the result within one step.
//! - `increase` over a window `(t - w, t]` sums the growth between each pair of consecutive
//!   samples whose later sample lies in the window; a drop counts as a reset from zero (the
//!   later value is the growth). `rate` divides that by `w` in seconds. With the default window
//!   (the query step), windows tile the range exactly, so increases add up to the total. Growth
//!   across a gap longer than the window (or one store step, if longer) before the first window
//!   is not counted, and nothing is extrapolated.
//! - `histogram_quantile` applies `increase` to each bucket series, adds the buckets of each
//!   group bound by bound, and reads the quantile from them (see [`crate::histogram`]).
//! - Aggregations combine the series present at each instant; `by ()` or no `by` combines all.
//!   A matcher on a tag a series lacks compares against the empty string, as in PromQL.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::time::{Timestamp, millis};
use crate::tsdb::Store;

mod ast;
mod eval;
mod parse;

pub use ast::{AggOp, Expr, MatchOp, Matcher, RateFn, Selector};
pub use parse::{ParseError, parse};

/// The most instants one query may evaluate (as in Prometheus).
pub const MAX_POINTS: usize = 11_000;

/// A query over a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub expr: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Time between result points.
    pub step: Duration,
}

/// One result series. Serialises as `{"name": …, "labels": {…}, "points": [[ms, value], …]}`
/// (a NaN value becomes `null` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The metric, for plain selectors; absent once a function or aggregation combined series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub labels: Labels,
    /// Instants with a value, in order.
    pub points: Vec<(Timestamp, f64)>,
}

/// Why a query cannot run. None of these is helped by retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query at {0}")]
    Parse(#[from] ParseError),
    #[error("query ends at {end} before it starts at {start}; swap start and end")]
    Range { start: Timestamp, end: Timestamp },
    #[error("query step must be at least 1ms; use e.g. 10s")]
    Step,
    #[error(
        "query would return {points} points per series, more than {MAX_POINTS}; raise the step or shorten the range"
    )]
    TooManyPoints { points: u128 },
    #[error("invalid regex for tag `{label}`: {reason}")]
    Regex { label: String, reason: String },
}

impl Query {
    pub fn new(expr: impl Into<String>, start: Timestamp, end: Timestamp, step: Duration) -> Self {
        Query {
            expr: expr.into(),
            start,
            end,
            step,
        }
    }
}

impl QueryError {
    /// A stable identifier for API errors; never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Parse(_) => "query.parse",
            QueryError::Range { .. } => "query.range",
            QueryError::Step => "query.step",
            QueryError::TooManyPoints { .. } => "query.too_many_points",
            QueryError::Regex { .. } => "query.regex",
        }
    }

    /// Whether the same query may succeed if sent again unchanged: never.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl Store {
    /// Parses and runs `query`. Results are sorted by name, then tags.
    pub fn query(&self, query: &Query) -> Result<Vec<Series>, QueryError> {
        let expr = parse(&query.expr)?;
        self.query_expr(&expr, query.start, query.end, query.step)
    }

    /// Runs an already parsed query.
    pub fn query_expr(
        &self,
        expr: &Expr,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<Series>, QueryError> {
        if end < start {
            return Err(QueryError::Range { start, end });
        }
        let step_ms = millis(step);
        if step_ms < 1 {
            return Err(QueryError::Step);
        }
        let span = i128::from(end.as_millis()) - i128::from(start.as_millis());
        let points = (span / i128::from(step_ms) + 1) as u128;
        if points > MAX_POINTS as u128 {
            return Err(QueryError::TooManyPoints { points });
        }
        let grid = eval::Grid {
            start: start.as_millis(),
            step: step_ms,
            len: points as usize,
        };
        let mut series: Vec<Series> = eval::eval(self, expr, grid)?
            .into_iter()
            .filter_map(|v| {
                let points: Vec<(Timestamp, f64)> = v
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, value)| {
                        value.map(|x| (Timestamp::from_millis(grid.start + i as i64 * step_ms), x))
                    })
                    .collect();
                (!points.is_empty()).then(|| Series {
                    name: v.name,
                    labels: Arc::unwrap_or_clone(v.labels),
                    points,
                })
            })
            .collect();
        series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        Ok(series)
    }
}

#[cfg(test)]
mod tests;
