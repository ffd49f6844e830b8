//! Hints for mistakes: the known key a misspelt or misplaced one most likely meant, and a valid
//! job name close to an invalid one.

use super::{MAX_NAME_LEN, PLACES, Place};

/// Words people reach for, mapped to ours.
const SYNONYMS: [(&str, &str); 16] = [
    ("replicas", "instances"),
    ("count", "instances"),
    ("scale", "instances"),
    ("cmd", "command"),
    ("args", "command"),
    ("argv", "command"),
    ("exec", "command"),
    ("run", "command"),
    ("environment", "env"),
    ("vars", "env"),
    ("type", "kind"),
    ("mem", "memory"),
    ("memory_bytes", "memory"),
    ("retries", "attempts"),
    ("max_attempts", "attempts"),
    ("backoff", "delay"),
];

/// A valid job name close to `name`, for the message that rejects it.
pub(super) fn suggest_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = mapped.trim_start_matches(|c: char| !c.is_ascii_lowercase());
    let cut: String = start.chars().take(MAX_NAME_LEN).collect();
    match cut.trim_end_matches('-') {
        "" => "web".to_owned(),
        s => s.to_owned(),
    }
}

pub(super) fn unknown_key_message(key: &str, here: Place) -> String {
    let candidate = closest(key, here.keys())
        .or_else(|| synonym(key))
        .or_else(|| PLACES.iter().find_map(|p| closest(key, p.keys())));
    let Some(candidate) = candidate else {
        let valid: Vec<String> = here.keys().iter().map(|k| format!("{k:?}")).collect();
        return format!(
            "unknown key {key:?}; valid keys in {} are {}",
            here.label(),
            valid.join(", ")
        );
    };
    if here.keys().contains(&candidate) {
        return format!("unknown key {key:?}; did you mean {candidate:?}?");
    }
    let home = PLACES
        .into_iter()
        .find(|p| p.keys().contains(&candidate))
        .unwrap_or(Place::Top);
    let guess = if candidate == key {
        format!("{key:?} belongs in {}, not {}", home.label(), here.label())
    } else {
        format!("did you mean {candidate:?}? it belongs in {}", home.label())
    };
    let fix = match home {
        Place::Top => {
            "move it above the first [table] header, since keys below a header belong to that table"
        }
        _ => "move it under that header",
    };
    format!("unknown key {key:?}; {guess}; {fix}")
}

fn synonym(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    SYNONYMS.iter().find(|(from, _)| *from == key).map(|&(_, to)| to)
}

/// The known key nearest `key` by edit distance, ignoring case, when near enough to be a typo.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// swaps each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut d: Vec<usize> = (0..(a.len() + 1) * width)
        .map(|i| if i < width { i } else { 0 })
        .collect();
    for i in 1..=a.len() {
        d[i * width] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}
