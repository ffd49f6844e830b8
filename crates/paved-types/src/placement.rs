//! Where a job's tasks may run: its capacity [`Tier`] and hard [`Constraint`]s on node
//! attributes (`region = us-east`, `label:disk != hdd`, `zone in [a, b]`). Part of the manifest
//! language, so it lives here and `paved-scheduler` re-exports it: one parser for manifests, the
//! API and placement, and a `JobSpec` that holds constraints already parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A job's `[placement]` table. The default (flex, no constraints, tasks may share nodes) is
/// what a manifest without the table gets, and what specs stored before it existed decode to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSpec {
    #[serde(default)]
    pub tier: Tier,
    /// Every one must hold on a node for it to get a task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// No two tasks of the job on one node.
    #[serde(default)]
    pub distinct_hosts: bool,
}

/// A tenant's capacity tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Reserved capacity: may preempt `Flex` tasks to get it back, is never preempted.
    Critical,
    /// Opportunistic: runs on whatever is free and may be preempted.
    #[default]
    Flex,
}

/// What a constraint can look up on a node; implemented by every node type that placement or
/// the API evaluates constraints against.
pub trait Attributes {
    fn attribute(&self, attribute: &Attribute) -> Option<&str>;
}

/// `attribute operator value(s)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub attribute: Attribute,
    pub operator: Operator,
    /// One value for `=` and `!=`, one or more for `in` and `not in`.
    pub values: Vec<String>,
}

/// What of a node a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    Name,
    Region,
    Zone,
    /// `label:<key>`.
    Label(String),
}

/// How the attribute is compared. A node without the label fails `=` and `in` and passes `!=`
/// and `not in` (it has no value equal to the ones named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Eq,
    Ne,
    In,
    NotIn,
}

/// A constraint that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error(
        "constraint `{0}`: expected `<attribute> <operator> <value>` with operator `=`, `!=`, `in` or `not in`, e.g. `label:disk = ssd`"
    )]
    Shape(String),
    #[error("constraint `{0}`: unknown attribute; use `name`, `region`, `zone` or `label:<key>`")]
    Attribute(String),
    #[error("constraint `{0}`: no value to compare with")]
    NoValue(String),
}

impl Constraint {
    pub fn new(attribute: Attribute, operator: Operator, values: &[&str]) -> Self {
        Constraint {
            attribute,
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// Whether the node satisfies it.
    pub fn matches<N: Attributes + ?Sized>(&self, node: &N) -> bool {
        let value = node.attribute(&self.attribute);
        let listed = value.is_some_and(|v| self.values.iter().any(|x| x == v));
        match self.operator {
            Operator::Eq | Operator::In => listed,
            Operator::Ne | Operator::NotIn => !listed,
        }
    }
}

impl Attributes for crate::Node {
    fn attribute(&self, attribute: &Attribute) -> Option<&str> {
        match attribute {
            Attribute::Name => Some(&self.name),
            Attribute::Region => Some(&self.region),
            Attribute::Zone => Some(&self.zone),
            Attribute::Label(key) => self.labels.get(key).map(String::as_str),
        }
    }
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Critical => "critical",
            Tier::Flex => "flex",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "critical" => Some(Tier::Critical),
            "flex" => Some(Tier::Flex),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stored and sent as the text a manifest holds (`"label:disk = ssd"`): readable in the store
/// and in JSON, and parsed by the one parser.
impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    /// Reads what `Display` writes; `in` lists take brackets or not: `zone in a, b`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || ConstraintError::Shape(s.to_owned());
        let (attribute, operator, rest) = split_operator(s).ok_or_else(shape)?;
        let attribute = attribute
            .parse()
            .map_err(|()| ConstraintError::Attribute(s.to_owned()))?;
        let values: Vec<String> = match operator {
            Operator::Eq | Operator::Ne => vec![rest.trim().to_owned()],
            Operator::In | Operator::NotIn => {
                let rest = rest.trim();
                let rest = rest
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .unwrap_or(rest);
                rest.split(',').map(|v| v.trim().to_owned()).collect()
            }
        };
        if values.iter().any(String::is_empty) {
            return Err(ConstraintError::NoValue(s.to_owned()));
        }
        Ok(Constraint {
            attribute,
            operator,
            values,
        })
    }
}

impl FromStr for Attribute {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "name" => Ok(Attribute::Name),
            "region" => Ok(Attribute::Region),
            "zone" => Ok(Attribute::Zone),
            _ => match s.strip_prefix("label:") {
                Some(key) if is_word(key) => Ok(Attribute::Label(key.to_owned())),
                _ => Err(()),
            },
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.attribute, self.operator)?;
        match self.operator {
            Operator::Eq | Operator::Ne => f.write_str(self.values.first().map_or("", |v| v)),
            Operator::In | Operator::NotIn => write!(f, "[{}]", self.values.join(", ")),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Name => f.write_str("name"),
            Attribute::Region => f.write_str("region"),
            Attribute::Zone => f.write_str("zone"),
            Attribute::Label(key) => write!(f, "label:{key}"),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::In => "in",
            Operator::NotIn => "not in",
        })
    }
}

/// Splits `attribute op values` where the attribute is one word and `op` follows it.
fn split_operator(s: &str) -> Option<(&str, Operator, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| c.is_whitespace() || c == '=' || c == '!')
        .unwrap_or(s.len());
    let (attribute, rest) = s.split_at(end);
    let rest = rest.trim_start();
    let (operator, values) = if let Some(values) = rest.strip_prefix("!=") {
        (Operator::Ne, values)
    } else if let Some(values) = rest.strip_prefix('=') {
        (Operator::Eq, values)
    } else if let Some(values) = keyword(rest, "not").and_then(|r| keyword(r.trim_start(), "in")) {
        (Operator::NotIn, values)
    } else {
        (Operator::In, keyword(rest, "in")?)
    };
    Some((attribute, operator, values))
}

/// `s` after a leading `word`, if the word ends there.
fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(word)?;
    let ends = rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace() || c == '[');
    ends.then_some(rest)
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}
