//! Manifest parsing of `[placement]` (tier, constraints, distinct_hosts), data-driven like
//! `manifest.rs`: TOML in, the placement it sets or every problem out, as the user sees them.

use paved_types::{JobSpec, parse_manifest};

/// The keys every job needs. Three lines: a case's `[placement]` header is line 4.
const BASE: &str = "name = \"web\"\nkind = \"service\"\ncommand = [\"./server\"]\n";

fn check(input: &str, expect: &str) {
    let text = format!("{BASE}{input}");
    let got = match parse_manifest("t.toml", &text) {
        Ok(spec) => render(&spec),
        Err(e) => e.to_string(),
    };
    assert_eq!(got, expect.trim(), "\ninput:\n{text}\n");
}

fn check_placement(input: &str, expect: &str) {
    check(&format!("[placement]\n{input}"), expect);
}

fn render(s: &JobSpec) -> String {
    let p = &s.placement;
    let constraints: Vec<String> = p.constraints.iter().map(ToString::to_string).collect();
    format!(
        "ok tier={} constraints=[{}] distinct_hosts={}",
        p.tier,
        constraints.join("; "),
        p.distinct_hosts
    )
}

// ---- valid ----

#[test]
fn defaults_without_the_table() {
    check("", "ok tier=flex constraints=[] distinct_hosts=false");
    check_placement("", "ok tier=flex constraints=[] distinct_hosts=false");
}

#[test]
fn every_field_set() {
    check_placement(
        "tier = \"critical\"\nconstraints = [\"region = us-east\", \"label:disk=ssd\", \"zone in a, b\", \"name not in [n1]\", \"label:rack != r9\"]\ndistinct_hosts = true",
        "ok tier=critical constraints=[region = us-east; label:disk = ssd; zone in [a, b]; name not in [n1]; label:rack != r9] distinct_hosts=true",
    );
}

#[test]
fn tiers() {
    for (tier, shown) in [("critical", "critical"), ("flex", "flex")] {
        check_placement(
            &format!("tier = \"{tier}\""),
            &format!("ok tier={shown} constraints=[] distinct_hosts=false"),
        );
    }
}

#[test]
fn a_repeated_constraint_counts_once() {
    check_placement(
        "constraints = [\"region = a\", \"region=a\"]",
        "ok tier=flex constraints=[region = a] distinct_hosts=false",
    );
}

#[test]
fn inline_table_works_too() {
    check(
        "placement = { tier = \"critical\", distinct_hosts = true }",
        "ok tier=critical constraints=[] distinct_hosts=true",
    );
}

// ---- invalid ----

#[test]
fn tier_problems() {
    let cases = [
        (
            "tier = \"gold\"",
            r#"t.toml:5:8: placement.tier: "gold" is not a tier; use "critical" (reserved capacity, preempts flex tasks) or "flex" (opportunistic, may be preempted)"#,
        ),
        (
            "tier = 1",
            r#"t.toml:5:8: placement.tier: expected a string, found integer 1; quote it: "1""#,
        ),
    ];
    for (input, expect) in cases {
        check_placement(input, expect);
    }
}

#[test]
fn constraint_problems() {
    let cases = [
        (
            "constraints = [\"region\"]",
            "t.toml:5:16: placement.constraints[0]: constraint `region`: expected `<attribute> <operator> <value>` with operator `=`, `!=`, `in` or `not in`, e.g. `label:disk = ssd`",
        ),
        (
            "constraints = [\"ok = 1\", \"colour = red\"]",
            "t.toml:5:16: placement.constraints[0]: constraint `ok = 1`: unknown attribute; use `name`, `region`, `zone` or `label:<key>`\n\
             t.toml:5:26: placement.constraints[1]: constraint `colour = red`: unknown attribute; use `name`, `region`, `zone` or `label:<key>`",
        ),
        (
            "constraints = [\"zone in []\"]",
            "t.toml:5:16: placement.constraints[0]: constraint `zone in []`: no value to compare with",
        ),
        (
            "constraints = \"region = a\"",
            r#"t.toml:5:15: placement.constraints: expected an array of strings, found string "region = a"; put it in a list: constraints = ["region = a"]"#,
        ),
        (
            "constraints = [1]",
            r#"t.toml:5:16: placement.constraints[0]: expected a string, found integer 1; quote it: "1""#,
        ),
    ];
    for (input, expect) in cases {
        check_placement(input, expect);
    }
}

#[test]
fn too_many_constraints() {
    let list: Vec<String> = (0..33).map(|i| format!("\"label:k{i} = v\"")).collect();
    let text = format!("constraints = [{}]", list.join(","));
    let got = parse_manifest("t.toml", &format!("{BASE}[placement]\n{text}")).unwrap_err();
    let problem = &got.problems[0];
    assert_eq!(problem.field, "placement.constraints");
    assert_eq!(
        problem.message,
        "33 constraints listed; a job may list at most 32"
    );
}

#[test]
fn distinct_hosts_problems() {
    let cases = [
        (
            "distinct_hosts = \"true\"",
            r#"t.toml:5:18: placement.distinct_hosts: expected a boolean, found string "true"; remove the quotes"#,
        ),
        (
            "distinct_hosts = 1",
            "t.toml:5:18: placement.distinct_hosts: expected a boolean, found integer 1; e.g. distinct_hosts = true",
        ),
    ];
    for (input, expect) in cases {
        check_placement(input, expect);
    }
}

#[test]
fn unknown_and_misplaced_keys() {
    check_placement(
        "teir = \"critical\"",
        r#"t.toml:5:1: placement.teir: unknown key "teir"; did you mean "tier"?"#,
    );
    check(
        "tier = \"critical\"",
        r#"t.toml:4:1: tier: unknown key "tier"; "tier" belongs in [placement], not the top level; move it under that header"#,
    );
    check(
        "placement = \"critical\"",
        r#"t.toml:4:13: placement: expected a table, found string "critical"; e.g. [placement] with tier = "critical""#,
    );
}

/// Stored specs keep constraints as the text a manifest holds, and specs stored before
/// `[placement]` existed decode with its defaults.
#[test]
fn placement_round_trips_through_json() {
    let text = format!(
        "{BASE}[placement]\ntier = \"critical\"\nconstraints = [\"zone in [a, b]\"]\ndistinct_hosts = true"
    );
    let spec = parse_manifest("t.toml", &text).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        json["placement"],
        serde_json::json!({"tier": "critical", "constraints": ["zone in [a, b]"], "distinct_hosts": true})
    );
    let back: JobSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, spec);
    let mut old = json;
    old.as_object_mut().unwrap().remove("placement");
    let back: JobSpec = serde_json::from_value(old).unwrap();
    assert_eq!(back.placement, Default::default());
}

mod props {
    use paved_types::placement::{Attribute, Constraint, Operator};
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._/-]{0,12}"
    }

    fn constraint() -> impl Strategy<Value = Constraint> {
        let attribute = prop_oneof![
            Just(Attribute::Name),
            Just(Attribute::Region),
            Just(Attribute::Zone),
            word().prop_map(Attribute::Label),
        ];
        let operator = prop_oneof![
            Just(Operator::Eq),
            Just(Operator::Ne),
            Just(Operator::In),
            Just(Operator::NotIn),
        ];
        (attribute, operator, prop::collection::vec(word(), 1..4)).prop_map(
            |(attribute, operator, mut values)| {
                if matches!(operator, Operator::Eq | Operator::Ne) {
                    values.truncate(1);
                }
                Constraint {
                    attribute,
                    operator,
                    values,
                }
            },
        )
    }

    proptest! {
        /// What `Display` writes (and the store keeps), `FromStr` reads back unchanged.
        #[test]
        fn display_parses_back(c in constraint()) {
            let text = c.to_string();
            prop_assert_eq!(text.parse::<Constraint>(), Ok(c), "{}", text);
        }

        /// Any text either parses or is refused with a message; nothing panics.
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,40}") {
            let _ = s.parse::<Constraint>();
        }
    }
}
