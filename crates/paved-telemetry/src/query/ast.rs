//! The query syntax tree, and its canonical text (which parses back to the same tree).

use std::fmt;
use std::time::Duration;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `name{matchers}`: the series' values.
    Select(Selector),
    /// `rate(name{…}[range])` or `increase(…)`: how much counters grew per window.
    Rate {
        func: RateFn,
        selector: Selector,
        /// The window; the query step (at least one store step) when absent.
        range: Option<Duration>,
    },
    /// `sum by (k) (expr)`: series combined at each instant, grouped by the `by` tags (all
    /// together when `by` is empty).
    Aggregate {
        op: AggOp,
        by: Vec<String>,
        expr: Box<Expr>,
    },
    /// `histogram_quantile(0.99, name{…}[range]) [by (k)]`: the quantile of the observations
    /// a histogram recorded in each window, per series or (with `by`) across the series of
    /// each group.
    HistogramQuantile {
        quantile: f64,
        selector: Selector,
        range: Option<Duration>,
        /// `None`: per series; `Some(keys)`: grouped by those tags.
        by: Option<Vec<String>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateFn {
    /// Per second.
    Rate,
    /// Per window.
    Increase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

/// A metric name and tag matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

/// One tag condition. A missing tag matches as the empty string, as in PromQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`, a regex anchored at both ends
    Regex,
    /// `!~`
    NotRegex,
}

impl AggOp {
    pub const ALL: [AggOp; 5] = [AggOp::Sum, AggOp::Avg, AggOp::Min, AggOp::Max, AggOp::Count];

    pub fn name(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Count => "count",
        }
    }
}

impl RateFn {
    pub fn name(self) -> &'static str {
        match self {
            RateFn::Rate => "rate",
            RateFn::Increase => "increase",
        }
    }
}

impl MatchOp {
    pub fn symbol(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Select(selector) => write!(f, "{selector}"),
            Expr::Rate {
                func,
                selector,
                range,
            } => {
                write!(f, "{}({selector}{})", func.name(), Range(*range))
            }
            Expr::Aggregate { op, by, expr } if by.is_empty() => write!(f, "{}({expr})", op.name()),
            Expr::Aggregate { op, by, expr } => write!(f, "{} by ({}) ({expr})", op.name(), by.join(", ")),
            Expr::HistogramQuantile {
                quantile,
                selector,
                range,
                by,
            } => {
                f.write_str("histogram_quantile")?;
                if let Some(by) = by {
                    write!(f, " by ({}) ", by.join(", "))?;
                }
                write!(f, "({quantile}, {selector}{})", Range(*range))
            }
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if self.matchers.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}{}{}", m.label, m.op.symbol(), Quoted(&m.value))?;
        }
        f.write_str("}")
    }
}

/// `[5m]`, or nothing.
struct Range(Option<Duration>);

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "[{}]", format_duration(d)),
            None => Ok(()),
        }
    }
}

/// A double-quoted string with `\`, `"`, newline and tab escaped.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        for c in self.0.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c => out.push(c),
            }
        }
        out.push('"');
        f.write_str(&out)
    }
}

/// Largest units first: `1d2h`, `1m30s`, `250ms`.
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in DURATION_UNITS {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Units of a range, largest first, in milliseconds.
pub(crate) const DURATION_UNITS: [(&str, u128); 6] = [
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];
