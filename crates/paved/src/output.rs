//! Printing for people and scripts: aligned tables, pretty JSON, relative ages.
//!
//! Tables are hand-aligned rather than drawn by a table crate: the kubectl/nomad style (no
//! borders, columns padded, three spaces apart) is a few lines, and a plain layout is what
//! `grep`, `awk` and `cut` expect.

use std::collections::HashMap;
use std::io::{self, IsTerminal as _, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Space between two columns.
const GAP: &str = "   ";

/// Rows under a header, printed with every column padded to its widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline. The last column is not
    /// padded, so no line ends in spaces.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = Vec::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(max) => *max = (*max).max(w),
                    None => widths.push(w),
                }
            }
        }
        widths
    }
}

/// `Key:  value` lines with the values aligned, for detail views; empty values are skipped.
pub fn fields(items: &[(&str, String)]) -> String {
    let width = items.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in items.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(&format!("{:<width$}  {value}\n", format!("{key}:")));
    }
    out
}

/// Writes `text` to stdout as is. A closed pipe comes back as an error the caller passes up;
/// `main` treats it as a quiet success.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `value` as pretty JSON and a newline to stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(print(&text)?)
}

/// Whether stdout is a terminal, i.e. a person is reading: progress bars only then.
pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the API.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago `then_ms` was, in its largest whole unit: "12s", "3m", "5h", "2d".
/// "-" when the time is unknown (0); "0s" when it is in the future (clock skew).
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_owned();
    }
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 60 * 60 => format!("{}m", s / 60),
        s if s < 48 * 60 * 60 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A map as `k=v,k=v` sorted by key, or "-" when empty, so table cells are stable.
pub fn pairs<V: std::fmt::Display>(map: &HashMap<String, V>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    let mut items: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    items.sort();
    items.join(",")
}

/// Counts by state as "2 running, 1 failed" in a stable order, or "none".
pub fn counts(map: &HashMap<String, u32>) -> String {
    let mut items: Vec<(&String, &u32)> = map.iter().filter(|(_, n)| **n > 0).collect();
    if items.is_empty() {
        return "none".to_owned();
    }
    items.sort();
    items
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text`, or "-" when it is empty, so no table cell is blank.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let check = |ago_ms: u64, want: &str| {
            let now = 1_000_000_000_000;
            assert_eq!(age(now, now - ago_ms), want, "{ago_ms}ms ago");
        };
        check(0, "0s");
        check(999, "0s");
        check(12_000, "12s");
        check(59_999, "59s");
        check(60_000, "1m");
        check(3 * 60_000 + 59_000, "3m");
        check(3_600_000, "1h");
        check(47 * 3_600_000, "47h");
        check(48 * 3_600_000, "2d");
        check(400 * 86_400_000, "400d");
        assert_eq!(age(1000, 0), "-");
        assert_eq!(age(1000, 5000), "0s");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["j-1".into(), "web".into(), "running".into()]);
        t.row(vec!["j-22222".into(), "batch-import".into(), "-".into()]);
        let want = "\
ID        NAME           STATE
j-1       web            running
j-22222   batch-import   -
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn tables_pad_by_characters_and_trim_line_ends() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["héllo".into(), String::new()]);
        assert_eq!(t.render(), "A       B\nhéllo\n");
    }

    #[test]
    fn fields_align_and_skip_empty_values() {
        let got = fields(&[
            ("Name", "web".into()),
            ("Reason", String::new()),
            ("Instances", "2".into()),
        ]);
        assert_eq!(got, "Name:       web\nInstances:  2\n");
    }

    #[test]
    fn maps_and_counts() {
        let ports = HashMap::from([("http".to_owned(), 31000u32), ("admin".to_owned(), 31001)]);
        assert_eq!(pairs(&ports), "admin=31001,http=31000");
        assert_eq!(pairs(&HashMap::<String, u32>::new()), "-");
        let states = HashMap::from([
            ("running".to_owned(), 2u32),
            ("failed".to_owned(), 1),
            ("pending".to_owned(), 0),
        ]);
        assert_eq!(counts(&states), "1 failed, 2 running");
        assert_eq!(counts(&HashMap::new()), "none");
    }
}
