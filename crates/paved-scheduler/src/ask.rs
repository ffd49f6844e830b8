//! What a job asks of placement: identical tasks, their needs, and the rules for where they go.

use crate::cluster::{Allocation, Need, Resources, TaskRef, Tier};
use crate::constraint::Constraint;
use crate::quota::Usage;

/// Whether a job keeps tasks running or runs them to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Spread over zones (and regions) so a zone's loss takes only its share.
    Service,
    /// Packed where they fit best; no spread.
    Batch,
}

/// One placement request: tasks of one job, all alike, to put on nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub job: String,
    pub tenant: String,
    pub tier: Tier,
    pub kind: JobKind,
    /// What each task needs.
    pub resources: Resources,
    /// Port numbers each task binds; they must be free on its node.
    pub static_ports: Vec<u16>,
    /// How many ports each task takes from its node's dynamic range.
    pub dynamic_ports: u32,
    /// Every one must hold on a node for it to get a task.
    pub constraints: Vec<Constraint>,
    /// No two tasks of the job on one node (counting tasks already placed).
    pub distinct_hosts: bool,
    /// The slots to place, one task each; slots already placed in the state are refused.
    pub slots: Vec<u32>,
}

impl Ask {
    /// An ask for slots `0..count`, with no ports, constraints or distinct_hosts.
    pub fn new(
        job: impl Into<String>,
        tenant: impl Into<String>,
        tier: Tier,
        kind: JobKind,
        resources: Resources,
        count: u32,
    ) -> Self {
        Ask {
            job: job.into(),
            tenant: tenant.into(),
            tier,
            kind,
            resources,
            static_ports: Vec::new(),
            dynamic_ports: 0,
            constraints: Vec::new(),
            distinct_hosts: false,
            slots: (0..count).collect(),
        }
    }

    /// What all its tasks amount to, for [`crate::check_quota`].
    pub fn demand(&self) -> Usage {
        Usage::of(self.resources, self.slots.len() as u64)
    }

    pub(crate) fn need(&self) -> Need<'_> {
        Need {
            resources: self.resources,
            static_ports: &self.static_ports,
            dynamic_ports: self.dynamic_ports,
        }
    }

    pub(crate) fn allocation(&self, slot: u32) -> Allocation {
        Allocation {
            task: TaskRef {
                job: self.job.clone(),
                slot,
            },
            tenant: self.tenant.clone(),
            tier: self.tier,
            resources: self.resources,
            static_ports: self.static_ports.clone(),
            dynamic_ports: self.dynamic_ports,
        }
    }
}
