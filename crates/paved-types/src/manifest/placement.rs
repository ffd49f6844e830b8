//! The `[placement]` table: which capacity tier a job's tasks draw on and which nodes they may
//! use.
//!
//! ```toml
//! [placement]
//! tier = "critical"            # default "flex"; "critical" is reserved capacity and preempts flex
//! constraints = ["region = us-east", "label:disk = ssd", "zone in [a, b]"]   # default none
//! distinct_hosts = true        # default false; no two tasks of the job on one node
//! ```
//!
//! A constraint is `<attribute> <operator> <value>`: attributes `name`, `region`, `zone`,
//! `label:<key>`; operators `=`, `!=`, `in`, `not in` (a list, brackets optional).

use toml::de::DeValue;

use super::{Checker, Item, Place, quote};
use crate::placement::{Constraint, PlacementSpec, Tier};

/// The most constraints one job may list; more is a mistake, and each costs every placement.
pub const MAX_CONSTRAINTS: usize = 32;
const CONSTRAINTS_EXAMPLE: &str = "constraints = [\"region = us-east\", \"label:disk = ssd\"]";

impl Checker<'_> {
    pub(super) fn placement(&mut self, v: &Item<'_>) -> PlacementSpec {
        let mut placement = PlacementSpec::default();
        let example = "[placement] with tier = \"critical\"";
        let Some(table) = self.table(v, "placement", example) else {
            return placement;
        };
        self.unknown_keys(table, "placement", Place::Placement);
        if let Some(tier) = table.get("tier").and_then(|v| self.tier(v)) {
            placement.tier = tier;
        }
        if let Some(v) = table.get("constraints") {
            placement.constraints = self.constraints(v);
        }
        if let Some(v) = table.get("distinct_hosts") {
            placement.distinct_hosts = self.boolean(v, "placement.distinct_hosts", "distinct_hosts = true");
        }
        placement
    }

    fn tier(&mut self, v: &Item<'_>) -> Option<Tier> {
        let s = self.string(v, "placement.tier", "tier = \"critical\"")?;
        let tier = Tier::parse(s).ok_or_else(|| {
            format!(
                "{} is not a tier; use \"critical\" (reserved capacity, preempts flex tasks) or \
                 \"flex\" (opportunistic, may be preempted)",
                quote(s)
            )
        });
        self.check(v.span(), "placement.tier", tier)
    }

    fn constraints(&mut self, v: &Item<'_>) -> Vec<Constraint> {
        let field = "placement.constraints";
        let Some(items) = v.get_ref().as_array() else {
            let hint = match v.get_ref().as_str() {
                Some(s) => format!("; put it in a list: constraints = [{s:?}]"),
                None => format!("; e.g. {CONSTRAINTS_EXAMPLE}"),
            };
            self.wrong_type(v, field, "an array of strings", &hint);
            return Vec::new();
        };
        if let Some(extra) = items.get(MAX_CONSTRAINTS) {
            let message = format!(
                "{} constraints listed; a job may list at most {MAX_CONSTRAINTS}",
                items.len()
            );
            self.report(extra.span(), field, message);
        }
        let mut constraints: Vec<Constraint> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let Some(s) = self.string(item, &field, "\"region = us-east\"") else {
                continue;
            };
            let parsed = s.parse::<Constraint>().map_err(|e| e.to_string());
            if let Some(c) = self.check(item.span(), &field, parsed)
                && !constraints.contains(&c)
            {
                constraints.push(c);
            }
        }
        constraints
    }

    /// A boolean, or false after a problem saying so.
    fn boolean(&mut self, v: &Item<'_>, field: &str, example: &str) -> bool {
        match v.get_ref() {
            DeValue::Boolean(b) => *b,
            DeValue::String(s) if matches!(s.as_ref(), "true" | "false") => {
                let message = format!("expected a boolean, found string \"{s}\"; remove the quotes");
                self.report(v.span(), field, message);
                false
            }
            _ => {
                self.wrong_type(v, field, "a boolean", &format!("; e.g. {example}"));
                false
            }
        }
    }
}
