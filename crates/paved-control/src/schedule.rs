//! Between the store's records and `paved-scheduler`: the [`Cluster`] a reconcile pass places
//! into (nodes and the live tasks on them, built once per pass), what one job's placement means
//! in tasks to create, tasks to preempt and a reason to show ([`Decision`]), and admission of
//! jobs against their tenant's capacity groups ([`admit`]). Pure: no I/O, so every mapping is
//! tested with plain records.
//!
//! Policy, as implemented:
//! - A tenant without a capacity group for a tier is unlimited in that tier; a group's
//!   dimension left unset is unlimited too.
//! - Admission counts what the tenant's live jobs of the tier ask for (instances × resources),
//!   placed or not; a job that scales up asks for the difference. It is checked when a job is
//!   created or scaled, not atomically with other submissions: two racing submissions may both
//!   pass, and the next one then sees both.
//! - Critical capacity is reserved by preemption, not by holding nodes idle: flex tasks may use
//!   any free room, and a critical task that fits nowhere evicts flex tasks (of any tenant) to
//!   get it back. Unused critical quota is not set aside, so critical tasks may wait for flex
//!   tasks to stop, never for capacity someone else's critical tasks hold.

use std::collections::HashMap;

use paved_scheduler::{
    Allocation, Ask, AskError, CapacityGroup, ClusterState, JobKind as AskKind, Node as SchedNode, Options,
    QuotaError, Resources, TaskRef, Usage, check_quota, place,
};
use paved_types::{Job, JobKind, JobSpec, Node, Task, Tier};

use crate::repo::{Quota, TenantRecord};

/// The cluster as placement sees it during one reconcile pass: every node (down and drained
/// ones too, so explanations count them) and every live task on them. Placements update it, so
/// jobs placed later in the pass see the tasks placed before them.
pub struct Cluster {
    state: ClusterState,
    /// The task holding each slot the state knows, to name preemption victims by task id.
    holders: HashMap<TaskRef, String>,
}

/// What placing one job's missing slots decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Slot and node name of each task to create.
    pub placed: Vec<(u32, String)>,
    /// Live tasks to stop so the job's critical tasks fit.
    pub preempt: Vec<String>,
    /// Slots left without a node, and why, as the job's reason shows it.
    pub pending: Option<(usize, String)>,
}

impl Cluster {
    /// The state from node records and live tasks, each with its job (whose spec says what the
    /// task holds). Tasks on unknown nodes, or a second live task in one slot, are left out: the
    /// first is being cleaned up, the second is being stopped by `plan`.
    pub fn build<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = (&'a Task, &'a Job)>,
    ) -> Cluster {
        let mut state = ClusterState::new();
        for node in nodes {
            // Names are the store's keys, so unique; a duplicate is skipped all the same.
            let _ = state.add_node(sched_node(node));
        }
        let mut holders = HashMap::new();
        for (task, job) in tasks {
            if task.state.is_terminal() {
                continue;
            }
            let Some(node) = state.node_id(&task.node) else {
                continue;
            };
            let alloc = allocation(task, job);
            let task_ref = alloc.task.clone();
            if state.add_task(node, alloc).is_ok() {
                holders.insert(task_ref, task.id.clone());
            }
        }
        Cluster { state, holders }
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Places `slots` of `job` and records them in the state.
    pub fn place(&mut self, job: &Job, slots: &[u32]) -> Decision {
        let ask = ask(job, slots.to_vec());
        let options = Options {
            seed: seed(&job.id),
            candidates: None,
        };
        let placement = match place(&mut self.state, &ask, &options) {
            Ok(p) => p,
            Err(e) => return refused(e, slots.len()),
        };
        let mut decision = Decision::default();
        for p in &placement.placed {
            if let Some(node) = self.state.node(p.node) {
                decision.placed.push((p.slot, node.name.clone()));
            }
        }
        for victim in &placement.preempted {
            if let Some(id) = self.holders.remove(&victim.victim.task) {
                decision.preempt.push(id);
            }
        }
        if let Some(pending) = placement.pending {
            let n = pending.slots.len();
            let tasks = if n == 1 { "task" } else { "tasks" };
            decision.pending = Some((n, format!("{n} {tasks} not placed: {}", pending.why)));
        }
        decision
    }
}

/// The reason a preempted task's record carries.
pub fn preemption_reason(job: &Job) -> String {
    format!(
        "preempted: critical job {} ({}) needed the room on this node",
        job.spec.name, job.id
    )
}

/// Admits `instances` more tasks of `spec` for a tenant whose record is `tenant` (`None`: never
/// configured, so unlimited) and whose jobs are `jobs` (ended ones are skipped). A new job asks
/// for its instances; a scale-up asks for the difference, its job's current instances being
/// among `jobs` already.
pub fn admit<'a>(
    tenant: Option<&TenantRecord>,
    tenant_name: &str,
    jobs: impl IntoIterator<Item = &'a Job>,
    spec: &JobSpec,
    instances: u32,
) -> Result<(), QuotaError> {
    let tier = spec.placement.tier;
    let Some(quota) = tenant.and_then(|t| t.capacity.get(&tier)) else {
        return Ok(());
    };
    let group = capacity_group(tenant_name, tier, quota);
    let in_use = jobs
        .into_iter()
        .filter(|j| !j.state.is_terminal() && j.spec.placement.tier == tier)
        .fold(Usage::default(), |sum, j| {
            sum.plus(demand(&j.spec, j.spec.instances))
        });
    check_quota(&group, in_use, demand(spec, instances))
}

/// The scheduler's view of a quota; unset dimensions are unlimited.
pub fn capacity_group(tenant: &str, tier: Tier, quota: &Quota) -> CapacityGroup {
    CapacityGroup {
        tenant: tenant.to_owned(),
        tier,
        quota: Usage {
            cpu_millis: quota.cpu_millis.unwrap_or(u64::MAX),
            memory_bytes: quota.memory_bytes.unwrap_or(u64::MAX),
            tasks: quota.tasks.unwrap_or(u64::MAX),
        },
    }
}

/// What `instances` tasks of a spec ask for.
pub fn demand(spec: &JobSpec, instances: u32) -> Usage {
    Usage::of(resources(spec), u64::from(instances))
}

/// Cores become millicores (rounded): the scheduler sums integers, so placement is exact.
pub fn resources(spec: &JobSpec) -> Resources {
    let cpu_millis = (spec.resources.cpu * 1000.0).round().max(0.0) as u64;
    Resources::new(cpu_millis, spec.resources.memory_bytes)
}

fn ask(job: &Job, slots: Vec<u32>) -> Ask {
    let spec = &job.spec;
    Ask {
        job: job.id.clone(),
        tenant: job.tenant.clone(),
        tier: spec.placement.tier,
        kind: match spec.kind {
            JobKind::Service => AskKind::Service,
            JobKind::Batch => AskKind::Batch,
        },
        resources: resources(spec),
        static_ports: Vec::new(),
        dynamic_ports: dynamic_ports(spec),
        constraints: spec.placement.constraints.clone(),
        distinct_hosts: spec.placement.distinct_hosts,
        slots,
    }
}

fn allocation(task: &Task, job: &Job) -> Allocation {
    Allocation {
        task: TaskRef {
            job: task.job_id.clone(),
            slot: task.index,
        },
        tenant: task.tenant.clone(),
        tier: job.spec.placement.tier,
        resources: resources(&job.spec),
        static_ports: Vec::new(),
        dynamic_ports: dynamic_ports(&job.spec),
    }
}

fn sched_node(node: &Node) -> SchedNode {
    SchedNode {
        name: node.name.clone(),
        region: node.region.clone(),
        zone: node.zone.clone(),
        labels: node.labels.clone(),
        capacity: Resources::new((node.cpu * 1000.0).round().max(0.0) as u64, node.memory_bytes),
        dynamic_ports: node.dynamic_ports.unwrap_or(u32::MAX),
        eligible: node.eligible,
        up: node.state == "ready",
    }
}

/// Every `[[ports]]` entry takes one port from the node's range; the agent assigns them.
fn dynamic_ports(spec: &JobSpec) -> u32 {
    u32::try_from(spec.ports.len()).unwrap_or(u32::MAX)
}

/// An ask the scheduler refused (a slot already held, which `plan` should make impossible):
/// nothing is placed and the job says why.
fn refused(e: AskError, slots: usize) -> Decision {
    Decision {
        pending: Some((slots, format!("tasks not placed: {e}"))),
        ..Decision::default()
    }
}

/// Sampling's seed: fixed per job, so a pass is reproducible from the store's contents.
fn seed(job_id: &str) -> u64 {
    // FNV-1a: tiny, stable across Rust versions (std's hasher is not).
    job_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
