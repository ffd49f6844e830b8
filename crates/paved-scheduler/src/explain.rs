//! Why a task cannot be placed, in counts of nodes: "0 of 12 nodes fit: 7 insufficient memory,
//! 3 constraint region = us-east not met, 2 distinct_hosts".

use std::fmt;

use crate::ask::Ask;
use crate::cluster::{ClusterState, Misfit, NodeEntry};
use crate::constraint::Constraint;

/// How many nodes could take one more task of an ask, and why the others cannot. Each node
/// counts once, under the first check it fails, in this order: down, ineligible, constraints
/// (in the ask's order), distinct_hosts, static ports, cpu, memory, dynamic ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub nodes: usize,
    pub fit: usize,
    /// Most common first; a reason no node has is left out.
    pub reasons: Vec<(Reason, usize)>,
    /// The ask was critical and preempting flex tasks would not make room either.
    pub preemption_tried: bool,
}

/// Why a node cannot take a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    Down,
    Ineligible,
    Constraint(Constraint),
    DistinctHosts,
    StaticPort(u16),
    Cpu,
    Memory,
    DynamicPorts,
}

/// Explains where one more task of `ask` could go, checking every node.
pub fn explain(state: &ClusterState, ask: &Ask) -> Explanation {
    let job_on_node = job_counts(state, &ask.job);
    let mut reasons: Vec<(Reason, usize)> = Vec::new();
    let mut fit = 0;
    for (entry, &tasks) in state.nodes.iter().zip(&job_on_node) {
        match reject(entry, ask, tasks) {
            None => fit += 1,
            Some(reason) => match reasons.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, count)) => *count += 1,
                None => reasons.push((reason, 1)),
            },
        }
    }
    reasons.sort_by_key(|(reason, count)| (std::cmp::Reverse(*count), reason.rank(ask)));
    Explanation {
        nodes: state.nodes.len(),
        fit,
        reasons,
        preemption_tried: false,
    }
}

/// Tasks of `job` per node, indexed like the state's nodes.
pub(crate) fn job_counts(state: &ClusterState, job: &str) -> Vec<u32> {
    let mut counts = vec![0; state.nodes.len()];
    for node in state.jobs.get(job).into_iter().flat_map(|slots| slots.values()) {
        counts[node.index()] += 1;
    }
    counts
}

fn reject(entry: &NodeEntry, ask: &Ask, job_tasks: u32) -> Option<Reason> {
    if !entry.node.up {
        return Some(Reason::Down);
    }
    if !entry.node.eligible {
        return Some(Reason::Ineligible);
    }
    if let Some(c) = ask.constraints.iter().find(|c| !c.matches(&entry.node)) {
        return Some(Reason::Constraint(c.clone()));
    }
    if ask.distinct_hosts && job_tasks > 0 {
        return Some(Reason::DistinctHosts);
    }
    entry.misfit(&ask.need()).map(|m| match m {
        Misfit::StaticPort(port) => Reason::StaticPort(port),
        Misfit::Cpu => Reason::Cpu,
        Misfit::Memory => Reason::Memory,
        Misfit::DynamicPorts => Reason::DynamicPorts,
    })
}

impl Reason {
    /// Position in the check order, to break ties between equal counts the same way each time.
    fn rank(&self, ask: &Ask) -> (u8, usize) {
        match self {
            Reason::Down => (0, 0),
            Reason::Ineligible => (1, 0),
            Reason::Constraint(c) => (2, ask.constraints.iter().position(|x| x == c).unwrap_or(0)),
            Reason::DistinctHosts => (3, 0),
            Reason::StaticPort(port) => (4, usize::from(*port)),
            Reason::Cpu => (5, 0),
            Reason::Memory => (6, 0),
            Reason::DynamicPorts => (7, 0),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} nodes fit", self.fit, self.nodes)?;
        if self.nodes == 0 {
            f.write_str(" (no node is registered)")?;
        }
        for (i, (reason, count)) in self.reasons.iter().enumerate() {
            let lead = if i == 0 { ": " } else { ", " };
            write!(f, "{lead}{count} {reason}")?;
        }
        if self.preemption_tried {
            f.write_str("; preempting flex tasks would not make room on any node")?;
        }
        Ok(())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Down => f.write_str("down"),
            Reason::Ineligible => f.write_str("ineligible"),
            Reason::Constraint(c) => write!(f, "constraint {c} not met"),
            Reason::DistinctHosts => f.write_str("distinct_hosts"),
            Reason::StaticPort(port) => write!(f, "static port {port} in use"),
            Reason::Cpu => f.write_str("insufficient cpu"),
            Reason::Memory => f.write_str("insufficient memory"),
            Reason::DynamicPorts => f.write_str("insufficient dynamic ports"),
        }
    }
}
