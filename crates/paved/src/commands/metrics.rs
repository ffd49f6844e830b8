//! `paved metrics`: queries of the embedded time-series store, printed as a table with a
//! sparkline per series, and the catalog of metrics paved records.

use std::time::Duration;

use paved_api::v1::{ListMetricsRequest, MetricInfo, MetricsQueryRequest, MetricsQueryResponse, Series};

use super::Ctx;
use crate::cli::MetricsAction;
use crate::client::Answer as _;
use crate::output::{self, Table};

/// Widest sparkline; longer series are averaged down to it.
const SPARK_WIDTH: usize = 40;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub async fn run(ctx: &Ctx, action: MetricsAction) -> anyhow::Result<()> {
    match action {
        MetricsAction::Query { query, since, step } => {
            let request = MetricsQueryRequest {
                query,
                since_ms: millis(since),
                step_ms: step.map_or(0, millis),
                ..MetricsQueryRequest::default()
            };
            let client = ctx.client().await?;
            let answer = client.metrics().query(request).await.answer(&client)?;
            if ctx.json() {
                return output::print_json(&answer);
            }
            if answer.series.is_empty() {
                eprintln!("no series matched in that range; `paved metrics list` shows what paved records");
                return Ok(());
            }
            Ok(output::print(&series_table(&answer).render())?)
        }
        MetricsAction::List => {
            let client = ctx.client().await?;
            let metrics = client
                .metrics()
                .list_metrics(ListMetricsRequest {})
                .await
                .answer(&client)?
                .metrics;
            if ctx.json() {
                return output::print_json(&metrics);
            }
            Ok(output::print(&catalog_table(&metrics).render())?)
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn series_table(answer: &MetricsQueryResponse) -> Table {
    let mut table = Table::new(&["SERIES", "LAST", "MIN", "MAX", "HISTORY"]);
    for series in &answer.series {
        let values: Vec<f64> = series.points.iter().map(|p| p.value).collect();
        let unit = unit_of(series);
        let known = values.iter().copied().filter(|v| v.is_finite());
        let min = known.clone().fold(f64::INFINITY, f64::min);
        let max = known.fold(f64::NEG_INFINITY, f64::max);
        let last = values.iter().rev().find(|v| v.is_finite()).copied();
        table.row(vec![
            series_name(series),
            last.map_or("-".to_owned(), |v| human(v, unit)),
            if min.is_finite() {
                human(min, unit)
            } else {
                "-".to_owned()
            },
            if max.is_finite() {
                human(max, unit)
            } else {
                "-".to_owned()
            },
            sparkline(&values, SPARK_WIDTH),
        ]);
    }
    table
}

fn catalog_table(metrics: &[MetricInfo]) -> Table {
    let mut table = Table::new(&["METRIC", "KIND", "TAGS", "HELP"]);
    for m in metrics {
        table.row(vec![
            m.name.clone(),
            m.kind.clone(),
            m.tags.join(","),
            m.help.clone(),
        ]);
    }
    table
}

/// `name{k="v",...}` with the tags sorted; the name alone when the query aggregated it away.
fn series_name(series: &Series) -> String {
    let mut tags: Vec<(&String, &String)> = series.labels.iter().filter(|(k, _)| *k != "__name__").collect();
    tags.sort();
    let name = series.labels.get("__name__").map_or("", String::as_str);
    if tags.is_empty() {
        return if name.is_empty() {
            "{}".to_owned()
        } else {
            name.to_owned()
        };
    }
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", tags.join(","))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Bytes,
    Seconds,
    Plain,
}

/// The unit the metric's name ends in, by the `paved_<subsystem>_<name>_<unit>` convention.
fn unit_of(series: &Series) -> Unit {
    let name = series.labels.get("__name__").map_or("", String::as_str);
    let name = name.strip_suffix("_total").unwrap_or(name);
    if name.ends_with("_bytes") {
        Unit::Bytes
    } else if name.ends_with("_seconds") {
        Unit::Seconds
    } else {
        Unit::Plain
    }
}

/// A value for people: bytes in binary units, seconds in the unit that fits, else three
/// significant digits.
fn human(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => {
            const SUFFIXES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
            let (mut v, mut i) = (value, 0);
            while v.abs() >= 1024.0 && i < SUFFIXES.len() - 1 {
                v /= 1024.0;
                i += 1;
            }
            format!("{} {}", significant(v), SUFFIXES[i])
        }
        Unit::Seconds if value != 0.0 && value.abs() < 1.0 => {
            if value.abs() < 1e-3 {
                format!("{} µs", significant(value * 1e6))
            } else {
                format!("{} ms", significant(value * 1e3))
            }
        }
        Unit::Seconds => format!("{} s", significant(value)),
        Unit::Plain => significant(value),
    }
}

/// Three significant digits, without a trailing `.0`.
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6);
    let text = format!("{v:.*}", usize::try_from(digits).unwrap_or(0));
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Bars scaled between the series' min and max; gaps (NaN) as spaces; averaged down to `width`.
fn sparkline(values: &[f64], width: usize) -> String {
    let buckets: Vec<f64> = if values.len() <= width {
        values.to_vec()
    } else {
        (0..width)
            .map(|i| {
                let chunk = &values[i * values.len() / width..(i + 1) * values.len() / width];
                let known: Vec<f64> = chunk.iter().copied().filter(|v| v.is_finite()).collect();
                if known.is_empty() {
                    f64::NAN
                } else {
                    known.iter().sum::<f64>() / known.len() as f64
                }
            })
            .collect()
    };
    let known = buckets.iter().copied().filter(|v| v.is_finite());
    let (min, max) = known.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    buckets
        .iter()
        .map(|v| {
            if !v.is_finite() {
                ' '
            } else if max <= min {
                BARS[0]
            } else {
                let level = ((v - min) / (max - min) * 7.0).round() as usize;
                BARS[level.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_between_min_and_max_and_show_gaps() {
        let check = |values: &[f64], width: usize, expected: &str| {
            assert_eq!(sparkline(values, width), expected, "{values:?}");
        };
        check(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 40, "▁▂▃▄▅▆▇█");
        check(&[5.0, 5.0, 5.0], 40, "▁▁▁");
        check(&[0.0, f64::NAN, 7.0], 40, "▁ █");
        check(&[0.0, 0.0, 7.0, 7.0], 2, "▁█");
        check(&[], 40, "");
    }

    #[test]
    fn values_read_in_their_unit() {
        let check = |value: f64, unit: Unit, expected: &str| assert_eq!(human(value, unit), expected);
        check(0.0, Unit::Plain, "0");
        check(1234.5678, Unit::Plain, "1235");
        check(0.012345, Unit::Plain, "0.0123");
        check(512.0, Unit::Bytes, "512 B");
        check(3.5 * 1024.0 * 1024.0, Unit::Bytes, "3.5 MiB");
        check(0.0042, Unit::Seconds, "4.2 ms");
        check(0.000_25, Unit::Seconds, "250 µs");
        check(12.0, Unit::Seconds, "12 s");
    }
}
