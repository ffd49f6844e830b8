//! The catalog's naming rules, checked for every declaration.

use std::collections::HashSet;

use super::*;
use crate::histogram::BUCKET_LABEL;
use crate::labels::is_valid_label_name;

/// Why `def` breaks the naming rules, if it does.
fn problem(def: &MetricDef) -> Option<String> {
    let name = def.name;
    let Some(rest) = name.strip_prefix("paved_") else {
        return Some("does not start with paved_".into());
    };
    if !rest
        .split('_')
        .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        return Some("is not lowercase snake case".into());
    }
    let Some(subsystem) = SUBSYSTEMS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
        return Some(format!(
            "does not name a subsystem after paved_ (one of {SUBSYSTEMS:?})"
        ));
    };
    let counter = def.kind == Kind::Counter;
    let body = match (rest.strip_suffix("_total"), counter) {
        (Some(body), true) => body,
        (None, true) => return Some("is a counter but does not end in _total".into()),
        (Some(_), false) => return Some("ends in _total but is not a counter".into()),
        (None, false) => rest,
    };
    let unit = def.unit.suffix();
    if body != format!("{subsystem}_{unit}") && !body.ends_with(&format!("_{unit}")) {
        return Some(format!("does not end with its unit {unit:?}"));
    }
    if def.kind == Kind::Histogram && !matches!(def.unit, Unit::Seconds | Unit::Bytes) {
        return Some("is a histogram but its unit is not seconds or bytes".into());
    }
    if let Unit::Count(noun) = def.unit
        && (["seconds", "bytes", "ratio", "milliseconds", "percent"].contains(&noun) || !noun.ends_with('s'))
    {
        return Some(format!("counts {noun:?}, which is not a plural noun"));
    }
    None
}

#[test]
fn every_name_follows_the_rule() {
    let bad: Vec<String> = ALL
        .iter()
        .filter_map(|def| problem(def).map(|p| format!("{} {p}", def.name)))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn the_rule_rejects_what_it_should() {
    let check = |name, kind, unit| {
        problem(&MetricDef {
            name,
            kind,
            unit,
            help: "x",
            labels: &[],
        })
    };
    assert!(check("paved_api_requests", Kind::Counter, Unit::Count("requests")).is_some());
    assert!(check("paved_api_requests_total", Kind::Gauge, Unit::Count("requests")).is_some());
    assert!(check("paved_api_latency_milliseconds", Kind::Gauge, Unit::Seconds).is_some());
    assert!(check("paved_web_requests_total", Kind::Counter, Unit::Count("requests")).is_some());
    assert!(check("paved_api_Requests_total", Kind::Counter, Unit::Count("requests")).is_some());
    assert!(check("paved_task_pids", Kind::Histogram, Unit::Count("pids")).is_some());
    assert!(check("paved_task_pids", Kind::Gauge, Unit::Count("pids")).is_none());
}

#[test]
fn names_are_unique_sorted_and_do_not_collide_with_histogram_parts() {
    let names: Vec<&str> = ALL.iter().map(|d| d.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "keep ALL sorted by name");
    let mut taken = HashSet::new();
    for def in ALL {
        let parts: &[&str] = match def.kind {
            Kind::Histogram => &["", "_sum", "_count", "_bucket"],
            _ => &[""],
        };
        for part in parts {
            let name = format!("{}{part}", def.name);
            assert!(taken.insert(name.clone()), "{name} is declared twice");
        }
    }
}

#[test]
fn help_and_labels_are_well_formed() {
    for def in ALL {
        assert!(
            def.help.ends_with('.') && !def.help.contains('\n'),
            "{}: help is one sentence",
            def.name
        );
        let keys: HashSet<_> = def.labels.iter().collect();
        assert_eq!(keys.len(), def.labels.len(), "{}: a tag key repeats", def.name);
        for key in def.labels {
            assert!(is_valid_label_name(key), "{}: bad tag key {key:?}", def.name);
            assert!(
                *key != BUCKET_LABEL && *key != "le",
                "{}: {key:?} is reserved",
                def.name
            );
        }
    }
}

#[test]
fn lookup_finds_declarations() {
    assert_eq!(lookup("paved_task_pids").map(|d| d.kind), Some(Kind::Gauge));
    assert!(lookup("paved_nope").is_none());
}

#[test]
fn declarations_serialise_for_listing() {
    let json = serde_json::to_string(TASK_PIDS.def()).expect("serialises");
    assert_eq!(
        json,
        r#"{"name":"paved_task_pids","kind":"gauge","unit":"pids","help":"Processes and threads in the task's cgroup.","labels":["tenant","job","task","node"]}"#
    );
}
