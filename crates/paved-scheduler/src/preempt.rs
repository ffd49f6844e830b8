//! Preemption: where a critical task that fits nowhere can make room by evicting flex tasks.
//!
//! Only critical tasks preempt, only flex tasks are evicted (of any tenant: flex is borrowed
//! capacity), and only on nodes the task may use anyway (up, eligible, constraints met,
//! distinct_hosts respected). On each such node a greedy pass picks victims: first every flex
//! task holding a static port the task needs, then, while the task still does not fit, the flex
//! task that covers most of what is missing (the smaller one on a tie); then victims that turned
//! out unneeded are dropped, largest first. The node with the fewest victims wins, then the one
//! whose victims hold the least, then the first registered. Greedy is not always the minimum
//! (that is a set cover), but it is on the shapes that matter: one big task or a few small ones.

use crate::cluster::{Allocation, ClusterState, Need, NodeEntry, Resources, TaskRef, Tier};

/// Where to place and whom to evict first.
pub(crate) struct Eviction {
    pub(crate) node: u32,
    pub(crate) victims: Vec<TaskRef>,
}

/// The best node among `candidates` (node indexes that pass the ask's static checks).
pub(crate) fn find(
    state: &ClusterState,
    candidates: &[u32],
    need: &Need,
    distinct_hosts: bool,
    job_on_node: &[u32],
) -> Option<Eviction> {
    let mut best: Option<((usize, u64, u32), Vec<usize>)> = None;
    for &n in candidates {
        if distinct_hosts && job_on_node[n as usize] > 0 {
            continue;
        }
        let entry = &state.nodes[n as usize];
        let Some(victims) = victims_on(entry, need) else {
            continue;
        };
        let key = (victims.len(), held(entry, &victims), n);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            let done = victims.is_empty();
            best = Some((key, victims));
            if done {
                break;
            }
        }
    }
    let ((_, _, node), victims) = best?;
    let tasks = &state.nodes[node as usize].tasks;
    Some(Eviction {
        node,
        victims: victims.iter().map(|&i| tasks[i].task.clone()).collect(),
    })
}

/// Positions of the flex tasks to evict on this node so `need` fits, or `None` if no set does.
fn victims_on(entry: &NodeEntry, need: &Need) -> Option<Vec<usize>> {
    if entry.misfit(need).is_none() {
        return Some(Vec::new());
    }
    if !fits_without_flex(entry, need) {
        return None;
    }
    let mut chosen = Vec::new();
    for (i, task) in entry.tasks.iter().enumerate() {
        if task.static_ports.iter().any(|p| need.static_ports.contains(p)) {
            if task.tier == Tier::Critical {
                return None;
            }
            chosen.push(i);
        }
    }
    let forced = chosen.len();
    while let Some(missing) = missing(entry, need, &chosen) {
        let next = entry
            .tasks
            .iter()
            .enumerate()
            .filter(|(i, t)| t.tier == Tier::Flex && !chosen.contains(i))
            .max_by_key(|(i, t)| (coverage(t, missing), std::cmp::Reverse((size(entry, t), *i))))
            .filter(|(_, t)| coverage(t, missing) > 0)?;
        chosen.push(next.0);
    }
    prune(entry, need, &mut chosen, forced);
    Some(chosen)
}

/// Drops victims the task does not need gone, largest first; the forced ones stay.
fn prune(entry: &NodeEntry, need: &Need, chosen: &mut Vec<usize>, forced: usize) {
    let mut optional: Vec<usize> = chosen.split_off(forced);
    optional.sort_by_key(|&i| std::cmp::Reverse((size(entry, &entry.tasks[i]), i)));
    let mut k = 0;
    while k < optional.len() {
        let without: Vec<usize> = chosen
            .iter()
            .chain(
                optional
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != k)
                    .map(|(_, i)| i),
            )
            .copied()
            .collect();
        if missing(entry, need, &without).is_none() {
            optional.remove(k);
        } else {
            k += 1;
        }
    }
    chosen.extend(optional);
}

/// What would still be missing for `need` once `victims` are gone: cpu, memory, dynamic ports.
fn missing(entry: &NodeEntry, need: &Need, victims: &[usize]) -> Option<(u64, u64, u64)> {
    let mut freed = Resources::default();
    let mut freed_ports = 0u64;
    for &i in victims {
        let t = &entry.tasks[i];
        freed.cpu_millis = freed.cpu_millis.saturating_add(t.resources.cpu_millis);
        freed.memory_bytes = freed.memory_bytes.saturating_add(t.resources.memory_bytes);
        freed_ports = freed_ports.saturating_add(u64::from(t.dynamic_ports));
    }
    let cap = entry.node.capacity;
    let short = |used: u64, freed: u64, need: u64, cap: u64| {
        used.saturating_sub(freed)
            .saturating_add(need)
            .saturating_sub(cap)
    };
    let cpu = short(
        entry.used.cpu_millis,
        freed.cpu_millis,
        need.resources.cpu_millis,
        cap.cpu_millis,
    );
    let memory = short(
        entry.used.memory_bytes,
        freed.memory_bytes,
        need.resources.memory_bytes,
        cap.memory_bytes,
    );
    let ports = short(
        u64::from(entry.dynamic_used),
        freed_ports,
        u64::from(need.dynamic_ports),
        u64::from(entry.node.dynamic_ports),
    );
    (cpu > 0 || memory > 0 || ports > 0).then_some((cpu, memory, ports))
}

/// Whether evicting every flex task would make room (cheap bound before the search).
fn fits_without_flex(entry: &NodeEntry, need: &Need) -> bool {
    let cap = entry.node.capacity;
    let base_cpu = entry.used.cpu_millis.saturating_sub(entry.flex.cpu_millis);
    let base_memory = entry.used.memory_bytes.saturating_sub(entry.flex.memory_bytes);
    let base_ports = entry.dynamic_used.saturating_sub(entry.flex_dynamic);
    base_cpu.saturating_add(need.resources.cpu_millis) <= cap.cpu_millis
        && base_memory.saturating_add(need.resources.memory_bytes) <= cap.memory_bytes
        && base_ports.saturating_add(need.dynamic_ports) <= entry.node.dynamic_ports
}

/// How much of what is missing evicting `task` frees, in millionths per short dimension, summed.
fn coverage(task: &Allocation, (cpu, memory, ports): (u64, u64, u64)) -> u64 {
    let part = |has: u64, short: u64| {
        if short == 0 {
            0
        } else {
            (u128::from(has.min(short)) * 1_000_000 / u128::from(short)) as u64
        }
    };
    part(task.resources.cpu_millis, cpu)
        + part(task.resources.memory_bytes, memory)
        + part(u64::from(task.dynamic_ports), ports)
}

/// A task's share of its node, in millionths per dimension, summed: what evicting it costs.
fn size(entry: &NodeEntry, task: &Allocation) -> u64 {
    let cap = entry.node.capacity;
    let share = |has: u64, cap: u64| {
        if cap == 0 {
            0
        } else {
            (u128::from(has) * 1_000_000 / u128::from(cap)) as u64
        }
    };
    share(task.resources.cpu_millis, cap.cpu_millis) + share(task.resources.memory_bytes, cap.memory_bytes)
}

fn held(entry: &NodeEntry, victims: &[usize]) -> u64 {
    victims.iter().map(|&i| size(entry, &entry.tasks[i])).sum()
}
