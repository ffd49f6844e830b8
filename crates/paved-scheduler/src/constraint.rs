//! Hard constraints on node attributes: `region = us-east`, `label:disk != hdd`,
//! `zone in [a, b]`. A node that fails one gets none of the job's tasks. The type and its parser
//! live in `paved-types` (manifests hold constraints); this module says what a node offers them.

pub use paved_types::placement::{Attribute, Attributes, Constraint, ConstraintError, Operator};

use crate::cluster::Node;

impl Attributes for Node {
    fn attribute(&self, attribute: &Attribute) -> Option<&str> {
        match attribute {
            Attribute::Name => Some(&self.name),
            Attribute::Region => Some(&self.region),
            Attribute::Zone => Some(&self.zone),
            Attribute::Label(key) => self.labels.get(key).map(String::as_str),
        }
    }
}
