//! Placement of one ask: pick a node for each task, preempt for critical tasks that fit nowhere,
//! and explain what stays pending. The crate docs describe the algorithm and its cost.

use std::cmp::Reverse;

use crate::ask::{Ask, JobKind};
use crate::cluster::{Allocation, ClusterState, Need, NodeId, Tier};
use crate::explain::{Explanation, explain};
use crate::preempt;
use crate::rng::Rng;

/// Knobs of one [`place`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Seeds candidate sampling: the same state, ask and seed give the same placement.
    pub seed: u64,
    /// Nodes scored per task. `None`: ⌈log2 n⌉ (at least 2) for n nodes passing the ask's
    /// constraints, as Nomad does for service jobs. A domain this small or smaller is scored
    /// whole, which makes placement exact best-fit on small clusters.
    pub candidates: Option<usize>,
}

/// What [`place`] decided; the state already reflects it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// In the ask's slot order.
    pub placed: Vec<Placed>,
    /// Flex tasks evicted to make room for critical ones; the control plane stops them and
    /// queues them again as pending.
    pub preempted: Vec<Preempted>,
    /// Slots that found no node, and why.
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub slot: u32,
    pub node: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preempted {
    pub node: NodeId,
    pub victim: Allocation,
    /// The slot of the ask that took its place.
    pub for_slot: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub slots: Vec<u32>,
    pub why: Explanation,
}

/// An ask that cannot be placed as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("job `{job}`: slot {slot} is asked for twice")]
    DuplicateSlot { job: String, slot: u32 },
    #[error("job `{job}`: slot {slot} is already placed on node `{node}`; remove that task first")]
    SlotTaken { job: String, slot: u32, node: String },
    #[error("job `{job}`: static port {port} is asked for twice")]
    DuplicateStaticPort { job: String, port: u16 },
}

/// Places the ask's tasks and records them in `state`, so the next call sees them. Tasks of an
/// ask are alike, so once one finds no node (even by preemption) the rest stay pending too.
pub fn place(state: &mut ClusterState, ask: &Ask, options: &Options) -> Result<Placement, AskError> {
    validate(state, ask)?;
    let mut run = Run::new(state, ask, options);
    let mut placement = Placement::default();
    for (i, &slot) in ask.slots.iter().enumerate() {
        let node = match run.pick(state) {
            Some(node) => node,
            None => match run.preempt(state, slot, &mut placement) {
                Some(node) => node,
                None => {
                    let mut why = explain(state, ask);
                    why.preemption_tried = ask.tier == Tier::Critical;
                    let slots = ask.slots[i..].to_vec();
                    placement.pending = Some(Pending { slots, why });
                    break;
                }
            },
        };
        state.commit(NodeId(node), ask.allocation(slot));
        run.record(state, node);
        placement.placed.push(Placed {
            slot,
            node: NodeId(node),
        });
    }
    Ok(placement)
}

/// One ask's working set: the nodes that pass its static checks, grouped for spread.
struct Run<'a> {
    ask: &'a Ask,
    need: Need<'a>,
    /// Tasks of the job per node (dense by node index): distinct_hosts and anti-affinity.
    job_on_node: Vec<u32>,
    /// Every node passing up, eligible and constraints, for preemption's full scan.
    feasible: Vec<u32>,
    /// Service: one per (region, zone); batch: one for all. Each holds candidate nodes, from
    /// which nodes that no longer fit are dropped when sampling meets them.
    domains: Vec<Domain>,
    /// State zone index → domain index.
    domain_of_zone: Vec<u32>,
    /// Tasks of the job per region (state region index).
    region_load: Vec<u32>,
    limit: usize,
    rng: Rng,
}

struct Domain {
    region: u32,
    /// Tasks of the job in this domain.
    load: u32,
    nodes: Vec<u32>,
}

const NO_DOMAIN: u32 = u32::MAX;
/// Score taken off per task of the same job already on a node (service jobs): one full
/// dimension's worth, so packing next to a sibling wins only over nearly empty nodes.
const ANTI_AFFINITY: i64 = 1_000_000;

impl<'a> Run<'a> {
    fn new(state: &ClusterState, ask: &'a Ask, options: &Options) -> Self {
        let spread = ask.kind == JobKind::Service;
        let mut run = Run {
            ask,
            need: ask.need(),
            job_on_node: vec![0; state.nodes.len()],
            feasible: Vec::new(),
            domains: Vec::new(),
            domain_of_zone: vec![NO_DOMAIN; state.zone_count().max(1)],
            region_load: vec![0; state.region_count()],
            limit: 0,
            rng: Rng::new(options.seed),
        };
        for n in state.index.feasible(&ask.constraints).iter() {
            run.feasible.push(n);
            let (zone, region) = state.location[n as usize];
            let zone = if spread { zone as usize } else { 0 };
            let d = run.domain_for(zone, region);
            run.domains[d].nodes.push(n);
        }
        for node in state
            .jobs
            .get(&ask.job)
            .into_iter()
            .flat_map(|slots| slots.values())
        {
            run.job_on_node[node.index()] += 1;
            run.count_in_domain(state, node.0);
        }
        let default = (usize::BITS - run.feasible.len().leading_zeros()) as usize;
        run.limit = options.candidates.unwrap_or(default.max(2)).max(1);
        run
    }

    fn domain_for(&mut self, zone: usize, region: u32) -> usize {
        if self.domain_of_zone[zone] == NO_DOMAIN {
            self.domain_of_zone[zone] = self.domains.len() as u32;
            self.domains.push(Domain {
                region,
                load: 0,
                nodes: Vec::new(),
            });
        }
        self.domain_of_zone[zone] as usize
    }

    fn domain_of(&self, state: &ClusterState, node: u32) -> Option<usize> {
        let zone = match self.ask.kind {
            JobKind::Service => state.location[node as usize].0 as usize,
            JobKind::Batch => 0,
        };
        let d = self.domain_of_zone[zone];
        (d != NO_DOMAIN).then_some(d as usize)
    }

    /// A node for the next task, or `None` when no candidate fits anywhere.
    fn pick(&mut self, state: &ClusterState) -> Option<u32> {
        loop {
            let d = self.choose_domain()?;
            if let Some(node) = self.sample(state, d) {
                return Some(node);
            }
        }
    }

    /// The domain with candidates left whose region, then itself, holds the fewest tasks of
    /// the job; the first such on a tie.
    fn choose_domain(&self) -> Option<usize> {
        let open = self
            .domains
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.nodes.is_empty());
        open.min_by_key(|(i, d)| (self.region_load[d.region as usize], d.load, *i))
            .map(|(i, _)| i)
    }

    /// The best-scoring of `limit` fitting candidates drawn from the domain (all of them when
    /// that many or fewer remain); candidates found not to fit are dropped for good, since
    /// within one ask a node only fills up.
    fn sample(&mut self, state: &ClusterState, d: usize) -> Option<u32> {
        let Run {
            domains,
            job_on_node,
            need,
            rng,
            ask,
            limit,
            ..
        } = self;
        let nodes = &mut domains[d].nodes;
        let distinct = ask.distinct_hosts;
        let fits = |n: u32| {
            (!distinct || job_on_node[n as usize] == 0) && state.nodes[n as usize].misfit(need).is_none()
        };
        let score = |n: u32| {
            let packed = state.nodes[n as usize].fullness_after(&need.resources) as i64;
            match ask.kind {
                JobKind::Service => packed - ANTI_AFFINITY * i64::from(job_on_node[n as usize]),
                JobKind::Batch => packed,
            }
        };
        if nodes.len() <= *limit {
            nodes.retain(|&n| fits(n));
            return nodes.iter().copied().max_by_key(|&n| (score(n), Reverse(n)));
        }
        let mut best: Option<(i64, u32)> = None;
        let mut scored = 0;
        while scored < *limit && !nodes.is_empty() {
            let at = rng.below(nodes.len());
            let n = nodes[at];
            if !fits(n) {
                nodes.swap_remove(at);
                continue;
            }
            scored += 1;
            let s = score(n);
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, n));
            }
        }
        best.map(|(_, n)| n)
    }

    /// For a critical task that fits nowhere: evicts flex tasks on the best node for it.
    fn preempt(&mut self, state: &mut ClusterState, slot: u32, placement: &mut Placement) -> Option<u32> {
        if self.ask.tier != Tier::Critical {
            return None;
        }
        let eviction = preempt::find(
            state,
            &self.feasible,
            &self.need,
            self.ask.distinct_hosts,
            &self.job_on_node,
        )?;
        for task in &eviction.victims {
            if let Some((node, victim)) = state.remove_task(task) {
                placement.preempted.push(Preempted {
                    node,
                    victim,
                    for_slot: slot,
                });
            }
        }
        Some(eviction.node)
    }

    /// Counts a task of the job just placed on `node`.
    fn record(&mut self, state: &ClusterState, node: u32) {
        self.job_on_node[node as usize] += 1;
        self.count_in_domain(state, node);
    }

    fn count_in_domain(&mut self, state: &ClusterState, node: u32) {
        self.region_load[state.location[node as usize].1 as usize] += 1;
        if let Some(d) = self.domain_of(state, node) {
            self.domains[d].load += 1;
        }
    }
}

fn validate(state: &ClusterState, ask: &Ask) -> Result<(), AskError> {
    let job = || ask.job.clone();
    let mut slots = ask.slots.clone();
    slots.sort_unstable();
    if let Some(w) = slots.windows(2).find(|w| w[0] == w[1]) {
        return Err(AskError::DuplicateSlot {
            job: job(),
            slot: w[0],
        });
    }
    let placed = state.jobs.get(&ask.job);
    if let Some((&slot, node)) = ask.slots.iter().find_map(|s| placed?.get_key_value(s)) {
        let node = state.nodes[node.index()].node.name.clone();
        return Err(AskError::SlotTaken {
            job: job(),
            slot,
            node,
        });
    }
    let mut ports = ask.static_ports.clone();
    ports.sort_unstable();
    if let Some(w) = ports.windows(2).find(|w| w[0] == w[1]) {
        return Err(AskError::DuplicateStaticPort {
            job: job(),
            port: w[0],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
