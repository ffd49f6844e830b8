//! Manifest parsing of `[update]`: how many tasks a drain may take down at once.

use paved_types::parse_manifest;

const BASE: &str = "name = \"web\"\nkind = \"service\"\ncommand = [\"./server\"]\n";

fn parse(extra: &str) -> Result<u32, String> {
    parse_manifest("t.toml", &format!("{BASE}{extra}"))
        .map(|spec| spec.update.max_unavailable)
        .map_err(|e| e.to_string())
}

#[test]
fn one_at_a_time_by_default() {
    assert_eq!(parse(""), Ok(1));
    assert_eq!(parse("[update]\n"), Ok(1));
}

#[test]
fn max_unavailable_is_set() {
    assert_eq!(parse("[update]\nmax_unavailable = 3\n"), Ok(3));
}

#[test]
fn bad_values_name_the_field() {
    assert_eq!(
        parse("[update]\nmax_unavailable = 0\n"),
        Err("t.toml:5:19: update.max_unavailable: 0 is less than the minimum of 1; use a whole number from 1 to 10000".into())
    );
    assert_eq!(
        parse("[update]\nmax_surge = 1\n"),
        Err("t.toml:5:1: update.max_surge: unknown key \"max_surge\"; valid keys in [update] are \"max_unavailable\"".into())
    );
}
