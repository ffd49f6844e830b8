//! Indexes that let an ask find the nodes passing its constraints without visiting every node:
//! a bitset of schedulable (up and eligible) nodes, and per attribute and value the sorted list
//! of nodes that have it. A constraint is then a few bitset operations over n/64 words, and an
//! ask touches only the nodes it may use.

use std::collections::HashMap;

use crate::cluster::Node;
use crate::constraint::{Attribute, Constraint, Operator};

#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    schedulable: Bits,
    /// Attribute → value → nodes (ascending). Lists, not bitsets: a label unique per node
    /// would otherwise cost n²/8 bytes.
    values: HashMap<Attribute, HashMap<String, Vec<u32>>>,
}

/// A fixed set of node indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bits(Vec<u64>);

impl Index {
    /// Indexes a node just registered; ids come in ascending order, which keeps lists sorted.
    pub(crate) fn add_node(&mut self, id: u32, node: &Node) {
        self.schedulable.grow(id);
        self.schedulable.set(id, node.up && node.eligible);
        let attributes = [
            (Attribute::Name, &node.name),
            (Attribute::Region, &node.region),
            (Attribute::Zone, &node.zone),
        ];
        let labels = node.labels.iter().map(|(k, v)| (Attribute::Label(k.clone()), v));
        for (attribute, value) in attributes.into_iter().chain(labels) {
            let by_value = self.values.entry(attribute).or_default();
            by_value.entry(value.clone()).or_default().push(id);
        }
    }

    pub(crate) fn set_schedulable(&mut self, id: u32, schedulable: bool) {
        self.schedulable.set(id, schedulable);
    }

    /// Nodes that are up, eligible and meet every constraint.
    pub(crate) fn feasible(&self, constraints: &[Constraint]) -> Bits {
        let mut bits = self.schedulable.clone();
        for c in constraints {
            let listed = self.listed(c, bits.0.len());
            let keep_listed = matches!(c.operator, Operator::Eq | Operator::In);
            for (word, listed) in bits.0.iter_mut().zip(&listed.0) {
                *word &= if keep_listed { *listed } else { !*listed };
            }
        }
        bits
    }

    /// Nodes whose attribute has one of the constraint's values.
    fn listed(&self, c: &Constraint, words: usize) -> Bits {
        let mut bits = Bits(vec![0; words]);
        let Some(by_value) = self.values.get(&c.attribute) else {
            return bits;
        };
        for nodes in c.values.iter().filter_map(|v| by_value.get(v)) {
            for &n in nodes {
                bits.set(n, true);
            }
        }
        bits
    }
}

impl Bits {
    fn grow(&mut self, id: u32) {
        let words = id as usize / 64 + 1;
        if self.0.len() < words {
            self.0.resize(words, 0);
        }
    }

    fn set(&mut self, id: u32, on: bool) {
        let (word, bit) = (id as usize / 64, id % 64);
        if on {
            self.0[word] |= 1 << bit;
        } else {
            self.0[word] &= !(1 << bit);
        }
    }

    /// Members in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros();
                word &= word - 1;
                Some(w as u32 * 64 + bit)
            })
        })
    }
}
