//! Parser tests: canonical forms, errors that name the column and the fix, and a property test
//! that printing any tree parses back to the same tree.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// Parses `text` and prints it canonically, or the error.
fn check(text: &str, expected: &str) {
    let got = match parse(text) {
        Ok(expr) => expr.to_string(),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expected, "input: {text}");
}

#[test]
fn canonical_forms() {
    check("  paved_task_pids ", "paved_task_pids");
    check(
        r#"m{a="1",b!='2',c=~"x.*", d!~"y",}"#,
        r#"m{a="1", b!="2", c=~"x.*", d!~"y"}"#,
    );
    check(r#"m{a="q\"uote\\ \n\t"}"#, r#"m{a="q\"uote\\ \n\t"}"#);
    check(r#"m{a='it\'s'}"#, r#"m{a="it's"}"#);
    check("sum(m)", "sum(m)");
    check("sum by () (m)", "sum(m)");
    check("sum(m) by (a,b,)", "sum by (a, b) (m)");
    check("avg by (a) (max by (a, b) (m))", "avg by (a) (max by (a, b) (m))");
    check("rate(m[90s])", "rate(m[1m30s])");
    check("increase(m{a=\"1\"}[1h])", "increase(m{a=\"1\"}[1h])");
    check("rate(m[1500ms])", "rate(m[1s500ms])");
    check("histogram_quantile(0.99, h)", "histogram_quantile(0.99, h)");
    check(
        "histogram_quantile(.5, h[5m]) by (method)",
        "histogram_quantile by (method) (0.5, h[5m])",
    );
    check(
        "histogram_quantile by () (1e-1, h)",
        "histogram_quantile by () (0.1, h)",
    );
    check("count(paved:recorded:rule)", "count(paved:recorded:rule)");
}

#[test]
fn errors_name_the_column_and_the_fix() {
    let cases = [
        (
            "",
            "error: column 1: the query ends where an expression should be; write a metric name such as paved_task_memory_bytes",
        ),
        (
            "sum(m",
            "error: column 6: expected `)` to close `sum(` at column 4, found the end of the query; add `)`",
        ),
        (
            "rat(m)",
            "error: column 1: unknown function `rat`; use rate, increase, sum, avg, min, max, count or histogram_quantile",
        ),
        (
            "m{job=web}",
            "error: column 7: tag values are quoted: write job=\"web\"",
        ),
        (
            "m{job==\"web\"}",
            "error: column 6: use `=` to compare a tag, not `==`",
        ),
        (
            "m{job=\"web}",
            "error: column 7: this string is not closed; end it with \"",
        ),
        (
            "m{job=~\"(\"}",
            "error: column 8: invalid regex for tag `job`: error: unclosed group; fix the pattern (it must match the whole value)",
        ),
        (
            "m[5m]",
            "error: column 2: a range such as [5m] only goes inside rate(), increase() or histogram_quantile(); remove it or write rate(m[5m])",
        ),
        (
            "rate(m[5x])",
            "error: column 8: invalid duration `5x`; write a number and a unit (ms, s, m, h, d, w), e.g. 5m or 1h30m",
        ),
        (
            "rate(sum(m))",
            "error: column 6: rate() takes a metric selector such as rate(paved_task_cpu_seconds_total{job=\"web\"}[1m]); to aggregate, put the aggregation outside: sum(rate(…))",
        ),
        (
            "rate(paved_task_memory_bytes)",
            "error: column 6: rate() is for counters and paved_task_memory_bytes is a gauge; query it directly, e.g. avg(paved_task_memory_bytes)",
        ),
        (
            "histogram_quantile(99, h)",
            "error: column 20: quantile 99 is not a number between 0 and 1; write e.g. 0.99",
        ),
        (
            "histogram_quantile(0.9, paved_task_pids)",
            "error: column 20: paved_task_pids is not a histogram; histogram_quantile reads histograms such as paved_api_request_duration_seconds",
        ),
        (
            "sum by (a) (m) by (b)",
            "error: column 16: `by` appears twice; keep one",
        ),
        (
            "sum without (a) (m)",
            "error: column 5: `without` is not supported; list the tags to keep with by (…)",
        ),
        (
            "m + 1",
            "error: column 3: unexpected `+`; arithmetic and comparisons are not supported, only selectors and rate, increase, sum, avg, min, max, count or histogram_quantile",
        ),
        (
            "m m",
            "error: column 3: unexpected `m` after the end of the expression; remove it (arithmetic and comparisons are not supported)",
        ),
        (
            "{job=\"x\"}",
            "error: column 1: a selector starts with a metric name: write paved_task_memory_bytes{job=\"web\"}",
        ),
        (
            "m{__name__=\"x\"}",
            "error: column 3: `__name__` is not a tag name; tags look like job or tenant",
        ),
        (
            "m{a=\"\\q\"}",
            "error: column 7: unknown escape `\\q`; use \\\\, \\\", \\', \\n or \\t",
        ),
        (
            "sum(m) by job",
            "error: column 11: expected `(` after `by`: write by (tag, …), found `job`",
        ),
        (
            "héllo{",
            "error: column 2: unexpected `é`; arithmetic and comparisons are not supported, only selectors and rate, increase, sum, avg, min, max, count or histogram_quantile",
        ),
    ];
    for (text, expected) in cases {
        check(text, expected);
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_:][a-z0-9_:]{0,8}".prop_filter("not a keyword", |n| !is_keyword(n))
}

fn tag() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,6}".prop_filter("not reserved", |n| !n.starts_with("__"))
}

fn matcher() -> impl Strategy<Value = Matcher> {
    let plain = (
        prop_oneof![Just(MatchOp::Equal), Just(MatchOp::NotEqual)],
        any::<String>(),
    );
    let regex = (
        prop_oneof![Just(MatchOp::Regex), Just(MatchOp::NotRegex)],
        prop_oneof![
            Just(".*".to_owned()),
            Just("a|b".to_owned()),
            Just("[0-9]+\\.x".to_owned()),
            "[a-z]{0,5}"
        ],
    );
    (tag(), prop_oneof![plain, regex]).prop_map(|(label, (op, value))| Matcher { label, op, value })
}

fn selector() -> impl Strategy<Value = Selector> {
    (name(), prop::collection::vec(matcher(), 0..3))
        .prop_map(|(metric, matchers)| Selector { metric, matchers })
}

fn range() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((1u64..10_000_000_000).prop_map(Duration::from_millis))
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        selector().prop_map(Expr::Select),
        (
            prop_oneof![Just(RateFn::Rate), Just(RateFn::Increase)],
            selector(),
            range()
        )
            .prop_map(|(func, selector, range)| Expr::Rate {
                func,
                selector,
                range
            }),
        (
            0.0..=1.0f64,
            selector(),
            range(),
            prop::option::of(prop::collection::vec(tag(), 0..3))
        )
            .prop_map(|(quantile, selector, range, by)| Expr::HistogramQuantile {
                quantile,
                selector,
                range,
                by
            }),
    ];
    leaf.prop_recursive(3, 12, 1, |inner| {
        (
            prop::sample::select(AggOp::ALL.to_vec()),
            prop::collection::vec(tag(), 0..3),
            inner,
        )
            .prop_map(|(op, by, expr)| Expr::Aggregate {
                op,
                by,
                expr: Box::new(expr),
            })
    })
}

proptest! {
    #[test]
    fn printed_trees_parse_back(expr in expr()) {
        let text = expr.to_string();
        prop_assert_eq!(parse(&text), Ok(expr), "text: {}", text);
    }

    #[test]
    fn any_text_parses_or_errors_without_panicking(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn near_misses_never_panic(text in r#"[a-z(){}\[\],=!~"' 0-9.]{0,30}"#) {
        if let Err(e) = parse(&text) {
            prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1);
        }
    }
}
