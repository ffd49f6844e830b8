//! The query parser (grammar on the `query` module); errors name the column and say how to fix
//! the query.

use std::time::Duration;

use super::ast::{AggOp, DURATION_UNITS, Expr, MatchOp, Matcher, RateFn, Selector};
use crate::catalog::{self, Kind};
use crate::labels::{is_valid_label_name, is_valid_metric_name};

/// A query that does not parse: where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// Parses query text into an [`Expr`].
pub fn parse(text: &str) -> std::result::Result<Expr, ParseError> {
    let tokens = lex(text)?;
    let mut parser = Parser { text, tokens, pos: 0 };
    let expr = parser.expr()?;
    match parser.peek() {
        Tok::End => Ok(expr),
        other => Err(parser.error_here(format!(
            "unexpected {} after the end of the expression; remove it (arithmetic and comparisons are not supported)",
            describe(other)
        ))),
    }
}

/// Compiles a matcher's pattern anchored at both ends, as PromQL does.
pub(crate) fn anchored(pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Names, numbers and durations alike; the parser reads them by position.
    Word(String),
    Str(String),
    Op(MatchOp),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    End,
}

struct Token {
    tok: Tok,
    at: usize,
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

type Result<T> = std::result::Result<T, ParseError>;

const FUNCTIONS: &str = "rate, increase, sum, avg, min, max, count or histogram_quantile";

impl Parser<'_> {
    fn expr(&mut self) -> Result<Expr> {
        match self.peek().clone() {
            Tok::Word(w) => match w.as_str() {
                "sum" | "avg" | "min" | "max" | "count" => self.aggregate(),
                "rate" | "increase" => self.rate(),
                "histogram_quantile" => self.quantile(),
                "by" | "without" => Err(self.error_here(
                    "`by` belongs after an aggregation: write sum by (tag) (expr)".into(),
                )),
                _ => {
                    let selector = self.selector()?;
                    if self.peek() == &Tok::LBracket {
                        return Err(self.error_here(format!(
                            "a range such as [5m] only goes inside rate(), increase() or histogram_quantile(); remove it or write rate({selector}[5m])"
                        )));
                    }
                    Ok(Expr::Select(selector))
                }
            },
            Tok::LBrace => Err(self.error_here(
                "a selector starts with a metric name: write paved_task_memory_bytes{job=\"web\"}".into(),
            )),
            Tok::End => Err(self.error_here(
                "the query ends where an expression should be; write a metric name such as paved_task_memory_bytes".into(),
            )),
            other => Err(self.error_here(format!(
                "expected a metric name or one of {FUNCTIONS}, found {}",
                describe(&other)
            ))),
        }
    }

    fn aggregate(&mut self) -> Result<Expr> {
        let (name, _) = self.word("an aggregation")?;
        let op = AggOp::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .unwrap_or(AggOp::Sum);
        let before = self.by()?;
        let open = self.open(&name)?;
        let expr = self.expr()?;
        self.close(open, &name)?;
        let by = self.by_once(before)?;
        Ok(Expr::Aggregate {
            op,
            by: by.unwrap_or_default(),
            expr: Box::new(expr),
        })
    }

    fn rate(&mut self) -> Result<Expr> {
        let (name, _) = self.word("a function")?;
        let func = if name == "rate" {
            RateFn::Rate
        } else {
            RateFn::Increase
        };
        let open = self.open(&name)?;
        let selector = self.function_selector(&name, "paved_task_cpu_seconds_total{job=\"web\"}[1m]")?;
        if let Some(def) = catalog::lookup(&selector.metric).filter(|d| d.kind == Kind::Gauge) {
            return Err(self.error_at(
                open + 1,
                format!(
                    "{name}() is for counters and {} is a gauge; query it directly, e.g. avg({})",
                    def.name, def.name
                ),
            ));
        }
        let range = self.range()?;
        self.close(open, &name)?;
        Ok(Expr::Rate {
            func,
            selector,
            range,
        })
    }

    fn quantile(&mut self) -> Result<Expr> {
        let (name, _) = self.word("a function")?;
        let before = self.by()?;
        let open = self.open(&name)?;
        let quantile = match self.peek().clone() {
            Tok::Word(w) => match w.parse::<f64>() {
                Ok(q) if (0.0..=1.0).contains(&q) => {
                    self.pos += 1;
                    q
                }
                _ => {
                    return Err(self.error_here(format!(
                        "quantile {w} is not a number between 0 and 1; write e.g. 0.99"
                    )));
                }
            },
            _ => {
                return Err(self.error_here(
                    "histogram_quantile takes the quantile first: histogram_quantile(0.99, paved_api_request_duration_seconds)".into(),
                ));
            }
        };
        self.expect(&Tok::Comma, "expected `,` after the quantile")?;
        let selector = self.function_selector(&name, "paved_api_request_duration_seconds")?;
        if let Some(def) = catalog::lookup(&selector.metric).filter(|d| d.kind != Kind::Histogram) {
            return Err(self.error_at(
                open + 1,
                format!(
                    "{} is not a histogram; histogram_quantile reads histograms such as paved_api_request_duration_seconds",
                    def.name
                ),
            ));
        }
        let range = self.range()?;
        self.close(open, &name)?;
        let by = self.by_once(before)?;
        Ok(Expr::HistogramQuantile {
            quantile,
            selector,
            range,
            by,
        })
    }

    /// The selector a function takes as its argument.
    fn function_selector(&mut self, func: &str, example: &str) -> Result<Selector> {
        match self.peek() {
            Tok::Word(w) if !is_keyword(w) => self.selector(),
            _ => Err(self.error_here(format!(
                "{func}() takes a metric selector such as {func}({example}); to aggregate, put the aggregation outside: sum({func}(…))"
            ))),
        }
    }

    fn selector(&mut self) -> Result<Selector> {
        let (metric, at) = self.word("a metric name")?;
        if !is_valid_metric_name(&metric) || is_keyword(&metric) {
            return Err(self.error_at(
                at,
                format!("`{metric}` is not a metric name; names look like paved_task_memory_bytes"),
            ));
        }
        if self.peek() == &Tok::LParen {
            return Err(self.error_at(at, format!("unknown function `{metric}`; use {FUNCTIONS}")));
        }
        let mut matchers = Vec::new();
        if self.peek() == &Tok::LBrace {
            self.pos += 1;
            while self.peek() != &Tok::RBrace {
                matchers.push(self.matcher()?);
                match self.peek() {
                    Tok::Comma => self.pos += 1,
                    Tok::RBrace => {}
                    other => {
                        return Err(self.error_here(format!(
                            "expected `,` or `}}` after a matcher, found {}",
                            describe(other)
                        )));
                    }
                }
            }
            self.pos += 1;
        }
        Ok(Selector { metric, matchers })
    }

    fn matcher(&mut self) -> Result<Matcher> {
        let label = self.tag_name()?;
        let op = match self.peek() {
            Tok::Op(op) => *op,
            other => {
                return Err(self.error_here(format!(
                    "expected =, !=, =~ or !~ after tag `{label}`, found {}",
                    describe(other)
                )));
            }
        };
        self.pos += 1;
        let at = self.here();
        let value = match self.peek().clone() {
            Tok::Str(s) => s,
            Tok::Word(w) => {
                return Err(self.error_here(format!(
                    "tag values are quoted: write {label}{}\"{w}\"",
                    op.symbol()
                )));
            }
            other => {
                return Err(self.error_here(format!(
                    "expected a quoted value after `{label}{}`, found {}",
                    op.symbol(),
                    describe(&other)
                )));
            }
        };
        self.pos += 1;
        if matches!(op, MatchOp::Regex | MatchOp::NotRegex)
            && let Err(e) = anchored(&value)
        {
            let reason = e.to_string();
            let reason = reason
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid");
            return Err(self.error_at(
                at,
                format!(
                    "invalid regex for tag `{label}`: {}; fix the pattern (it must match the whole value)",
                    reason.trim()
                ),
            ));
        }
        Ok(Matcher { label, op, value })
    }

    /// `by (…)` if present.
    fn by(&mut self) -> Result<Option<Vec<String>>> {
        match self.peek() {
            Tok::Word(w) if w == "by" => {}
            Tok::Word(w) if w == "without" => {
                return Err(
                    self.error_here("`without` is not supported; list the tags to keep with by (…)".into())
                );
            }
            _ => return Ok(None),
        }
        self.pos += 1;
        self.expect(&Tok::LParen, "expected `(` after `by`: write by (tag, …)")?;
        let mut keys = Vec::new();
        while self.peek() != &Tok::RParen {
            keys.push(self.tag_name()?);
            match self.peek() {
                Tok::Comma => self.pos += 1,
                Tok::RParen => {}
                other => {
                    return Err(self.error_here(format!(
                        "expected `,` or `)` in by (…), found {}",
                        describe(other)
                    )));
                }
            }
        }
        self.pos += 1;
        Ok(Some(keys))
    }

    /// A trailing `by (…)`, refused when one came before the arguments too.
    fn by_once(&mut self, before: Option<Vec<String>>) -> Result<Option<Vec<String>>> {
        let at = self.here();
        match (before, self.by()?) {
            (Some(_), Some(_)) => Err(self.error_at(at, "`by` appears twice; keep one".into())),
            (before, after) => Ok(before.or(after)),
        }
    }

    fn range(&mut self) -> Result<Option<Duration>> {
        if self.peek() != &Tok::LBracket {
            return Ok(None);
        }
        self.pos += 1;
        let (text, at) = self.word("a duration")?;
        let duration = parse_duration(&text).ok_or_else(|| {
            self.error_at(at, format!("invalid duration `{text}`; write a number and a unit (ms, s, m, h, d, w), e.g. 5m or 1h30m"))
        })?;
        self.expect(&Tok::RBracket, "expected `]` after the duration")?;
        Ok(Some(duration))
    }

    fn tag_name(&mut self) -> Result<String> {
        let (name, at) = self.word("a tag name")?;
        if !is_valid_label_name(&name) {
            return Err(self.error_at(
                at,
                format!("`{name}` is not a tag name; tags look like job or tenant"),
            ));
        }
        Ok(name)
    }

    fn word(&mut self, what: &str) -> Result<(String, usize)> {
        match self.peek().clone() {
            Tok::Word(w) => {
                let at = self.here();
                self.pos += 1;
                Ok((w, at))
            }
            other => Err(self.error_here(format!("expected {what}, found {}", describe(&other)))),
        }
    }

    /// Consumes `(` after `name`; returns where it was, for the error if it is never closed.
    fn open(&mut self, name: &str) -> Result<usize> {
        let at = self.here();
        self.expect(&Tok::LParen, &format!("expected `(` after `{name}`"))?;
        Ok(at)
    }

    fn close(&mut self, open: usize, name: &str) -> Result<()> {
        if self.peek() == &Tok::RParen {
            self.pos += 1;
            return Ok(());
        }
        let column = self.column(open);
        Err(self.error_here(format!(
            "expected `)` to close `{name}(` at column {column}, found {}; add `)`",
            describe(self.peek())
        )))
    }

    fn expect(&mut self, tok: &Tok, message: &str) -> Result<()> {
        if self.peek() == tok {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error_here(format!("{message}, found {}", describe(self.peek()))))
        }
    }

    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::End, |t| &t.tok)
    }

    fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.text.len(), |t| t.at)
    }

    fn column(&self, at: usize) -> usize {
        self.text.get(..at).map_or(0, |s| s.chars().count()) + 1
    }

    fn error_here(&self, message: String) -> ParseError {
        self.error_at(self.here(), message)
    }

    fn error_at(&self, at: usize, message: String) -> ParseError {
        ParseError {
            column: self.column(at),
            message,
        }
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "sum"
            | "avg"
            | "min"
            | "max"
            | "count"
            | "rate"
            | "increase"
            | "histogram_quantile"
            | "by"
            | "without"
    )
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(_) => "a quoted string".into(),
        Tok::Op(op) => format!("`{}`", op.symbol()),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
        Tok::End => "the end of the query".into(),
    }
}

/// `1h30m` and the like; `None` if malformed or zero.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let size = DURATION_UNITS.iter().find(|(u, _)| *u == &rest[..unit_len])?.1;
        total = total.checked_add(number.checked_mul(size)?)?;
        rest = &rest[unit_len..];
    }
    let millis = u64::try_from(total).ok().filter(|ms| *ms > 0)?;
    Some(Duration::from_millis(millis))
}

fn lex(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    let error = |at: usize, message: String| ParseError {
        column: text[..at].chars().count() + 1,
        message,
    };
    while let Some((at, c)) = chars.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '=' => match chars.peek() {
                Some((_, '~')) => {
                    chars.next();
                    Tok::Op(MatchOp::Regex)
                }
                Some((_, '=')) => return Err(error(at, "use `=` to compare a tag, not `==`".into())),
                _ => Tok::Op(MatchOp::Equal),
            },
            '!' => match chars.next() {
                Some((_, '=')) => Tok::Op(MatchOp::NotEqual),
                Some((_, '~')) => Tok::Op(MatchOp::NotRegex),
                _ => return Err(error(at, "`!` must be followed by `=` or `~`".into())),
            },
            '"' | '\'' => Tok::Str(lex_string(&mut chars, at, c).map_err(|(at, m)| error(at, m))?),
            c if is_word_char(c) => {
                let numeric = c.is_ascii_digit() || c == '.';
                let mut word = String::from(c);
                while let Some(&(_, next)) = chars.peek() {
                    let sign = numeric && (next == '+' || next == '-') && word.ends_with(['e', 'E']);
                    if !is_word_char(next) && !sign {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                Tok::Word(word)
            }
            c => {
                return Err(error(
                    at,
                    format!(
                        "unexpected `{c}`; arithmetic and comparisons are not supported, only selectors and {FUNCTIONS}"
                    ),
                ));
            }
        };
        tokens.push(Token { tok, at });
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.'
}

/// The rest of a string opened by `quote` at byte `open`; errors carry their byte offset.
fn lex_string(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    open: usize,
    quote: char,
) -> std::result::Result<String, (usize, String)> {
    let mut out = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            c if c == quote => return Ok(out),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((at, other)) => {
                    return Err((
                        at,
                        format!("unknown escape `\\{other}`; use \\\\, \\\", \\', \\n or \\t"),
                    ));
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err((open, format!("this string is not closed; end it with {quote}")))
}

#[cfg(test)]
mod tests;
