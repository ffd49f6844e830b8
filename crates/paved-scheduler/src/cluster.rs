//! The cluster as the scheduler sees it: nodes, their capacity, and the tasks already on them.

use std::collections::{BTreeMap, HashMap};

use crate::index::Index;
use crate::quota::Usage;

/// An amount of the two divisible resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Thousandths of a core: integers, so sums are exact and placement is reproducible.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A machine that can run tasks, as the control plane registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique in the cluster.
    pub name: String,
    pub region: String,
    /// A zone's name need only be unique within its region: spread keys on (region, zone).
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    /// What the node offers to tasks in all.
    pub capacity: Resources,
    /// How many ports the node can hand out from its dynamic range. Static ports are numbers
    /// outside that range, tracked one by one.
    pub dynamic_ports: u32,
    /// False while the node is drained or marked ineligible: it keeps its tasks, gets no new ones.
    pub eligible: bool,
    /// False once its agent stopped reporting: it gets nothing.
    pub up: bool,
}

/// A node's handle in one [`ClusterState`]; stable for the state's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

/// A tenant's capacity tier; defined beside the manifest, which names it.
pub use paved_types::placement::Tier;

/// One task of one job: the job's id and the task's slot (`0..instances`). At most one live task
/// holds a slot, so the control plane maps this back to its task id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskRef {
    pub job: String,
    pub slot: u32,
}

/// A task placed on a node, with what it holds there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub task: TaskRef,
    pub tenant: String,
    pub tier: Tier,
    pub resources: Resources,
    pub static_ports: Vec<u16>,
    pub dynamic_ports: u32,
}

/// Nodes and the tasks on them. [`crate::place`] reads it and records what it places, so the
/// next call sees those allocations.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub(crate) nodes: Vec<NodeEntry>,
    names: HashMap<String, NodeId>,
    /// Interned (region, zone) pairs and regions: spread counts per ask index dense vectors.
    zones: HashMap<(String, String), u32>,
    regions: HashMap<String, u32>,
    /// (zone, region) per node, dense: what spread reads for every feasible node of an ask.
    pub(crate) location: Vec<(u32, u32)>,
    pub(crate) index: Index,
    /// Job id → slot → node: where a job's tasks are, for distinct_hosts, spread and removal.
    pub(crate) jobs: BTreeMap<String, BTreeMap<u32, NodeId>>,
    /// Tenant → usage per tier (indexed by `tier_index`).
    usage: BTreeMap<String, [Usage; 2]>,
}

/// Why the state refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("node `{0}` is already registered; node names are unique")]
    DuplicateNode(String),
    #[error("no node with id {0:?} in this state")]
    UnknownNode(NodeId),
    #[error("task {}/{} is already placed; remove it first", .0.job, .0.slot)]
    DuplicateTask(TaskRef),
    #[error("static port {port} on node `{node}` is already held by another task")]
    PortInUse { node: String, port: u16 },
}

/// A node with its running totals; everything the hot path reads sits here.
#[derive(Debug, Clone)]
pub(crate) struct NodeEntry {
    pub(crate) node: Node,
    pub(crate) used: Resources,
    pub(crate) dynamic_used: u32,
    /// Sorted, so a port check is a binary search.
    pub(crate) static_used: Vec<u16>,
    /// What flex tasks hold: the most preemption could free.
    pub(crate) flex: Resources,
    pub(crate) flex_dynamic: u32,
    pub(crate) tasks: Vec<Allocation>,
}

impl NodeId {
    /// Position of the node in registration order.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl Resources {
    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    fn add(self, other: Resources) -> Resources {
        Resources::new(
            self.cpu_millis.saturating_add(other.cpu_millis),
            self.memory_bytes.saturating_add(other.memory_bytes),
        )
    }

    fn sub(self, other: Resources) -> Resources {
        Resources::new(
            self.cpu_millis.saturating_sub(other.cpu_millis),
            self.memory_bytes.saturating_sub(other.memory_bytes),
        )
    }
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a node with nothing on it.
    pub fn add_node(&mut self, node: Node) -> Result<NodeId, StateError> {
        if self.names.contains_key(&node.name) {
            return Err(StateError::DuplicateNode(node.name));
        }
        let id = NodeId(self.nodes.len() as u32);
        let zone = intern(&mut self.zones, (node.region.clone(), node.zone.clone()));
        let region = intern(&mut self.regions, node.region.clone());
        self.names.insert(node.name.clone(), id);
        self.location.push((zone, region));
        self.index.add_node(id.0, &node);
        self.nodes.push(NodeEntry {
            node,
            used: Resources::default(),
            dynamic_used: 0,
            static_used: Vec::new(),
            flex: Resources::default(),
            flex_dynamic: 0,
            tasks: Vec::new(),
        });
        Ok(id)
    }

    /// Marks a node eligible or not (drained); its tasks stay.
    pub fn set_eligible(&mut self, id: NodeId, eligible: bool) -> Result<(), StateError> {
        let node = &mut self.entry_mut(id)?.node;
        node.eligible = eligible;
        let schedulable = node.up && node.eligible;
        self.index.set_schedulable(id.0, schedulable);
        Ok(())
    }

    /// Marks a node up or down; its tasks stay until the control plane removes them.
    pub fn set_up(&mut self, id: NodeId, up: bool) -> Result<(), StateError> {
        let node = &mut self.entry_mut(id)?.node;
        node.up = up;
        let schedulable = node.up && node.eligible;
        self.index.set_schedulable(id.0, schedulable);
        Ok(())
    }

    /// Records a task that already runs on a node. Capacity is not checked: the state mirrors
    /// the world, which may be over capacity (a node re-registered smaller); placement then
    /// sees the node as full. A static port held twice is refused, as the node would.
    pub fn add_task(&mut self, id: NodeId, task: Allocation) -> Result<(), StateError> {
        let entry = self.entry(id)?;
        if let Some(&port) = task
            .static_ports
            .iter()
            .find(|p| entry.static_used.binary_search(p).is_ok())
        {
            let node = entry.node.name.clone();
            return Err(StateError::PortInUse { node, port });
        }
        if self.node_of(&task.task).is_some() {
            return Err(StateError::DuplicateTask(task.task));
        }
        self.commit(id, task);
        Ok(())
    }

    /// Forgets a task (it ended, or was preempted); returns where it was and what it held.
    pub fn remove_task(&mut self, task: &TaskRef) -> Option<(NodeId, Allocation)> {
        let slots = self.jobs.get_mut(&task.job)?;
        let id = slots.remove(&task.slot)?;
        if slots.is_empty() {
            self.jobs.remove(&task.job);
        }
        let entry = &mut self.nodes[id.index()];
        let at = entry.tasks.iter().position(|a| a.task == *task)?;
        let alloc = entry.tasks.swap_remove(at);
        entry.used = entry.used.sub(alloc.resources);
        entry.dynamic_used = entry.dynamic_used.saturating_sub(alloc.dynamic_ports);
        entry.static_used.retain(|p| !alloc.static_ports.contains(p));
        if alloc.tier == Tier::Flex {
            entry.flex = entry.flex.sub(alloc.resources);
            entry.flex_dynamic = entry.flex_dynamic.saturating_sub(alloc.dynamic_ports);
        }
        let usage = &mut self.usage.entry(alloc.tenant.clone()).or_default()[tier_index(alloc.tier)];
        *usage = usage.minus(Usage::of(alloc.resources, 1));
        Some((id, alloc))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node behind an id, or `None` for an id of another state.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index()).map(|e| &e.node)
    }

    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// Every node, in registration order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        (0u32..).zip(&self.nodes).map(|(i, e)| (NodeId(i), &e.node))
    }

    /// What the tasks on a node hold.
    pub fn allocated(&self, id: NodeId) -> Option<Resources> {
        self.nodes.get(id.index()).map(|e| e.used)
    }

    /// Dynamic ports handed out on a node.
    pub fn dynamic_ports_used(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(id.index()).map(|e| e.dynamic_used)
    }

    pub fn tasks_on(&self, id: NodeId) -> &[Allocation] {
        self.nodes.get(id.index()).map_or(&[], |e| &e.tasks)
    }

    pub fn node_of(&self, task: &TaskRef) -> Option<NodeId> {
        self.jobs.get(&task.job)?.get(&task.slot).copied()
    }

    /// What a tenant's placed tasks of a tier hold. Admission should also count tasks it admitted
    /// that are still pending; the control plane knows those, this state does not.
    pub fn usage(&self, tenant: &str, tier: Tier) -> Usage {
        self.usage
            .get(tenant)
            .map_or_else(Usage::default, |u| u[tier_index(tier)])
    }

    /// Records an allocation without checks; callers have checked what they need to.
    pub(crate) fn commit(&mut self, id: NodeId, alloc: Allocation) {
        let entry = &mut self.nodes[id.index()];
        entry.used = entry.used.add(alloc.resources);
        entry.dynamic_used = entry.dynamic_used.saturating_add(alloc.dynamic_ports);
        for &port in &alloc.static_ports {
            if let Err(at) = entry.static_used.binary_search(&port) {
                entry.static_used.insert(at, port);
            }
        }
        if alloc.tier == Tier::Flex {
            entry.flex = entry.flex.add(alloc.resources);
            entry.flex_dynamic = entry.flex_dynamic.saturating_add(alloc.dynamic_ports);
        }
        let usage = Usage::of(alloc.resources, 1);
        match self.usage.get_mut(&alloc.tenant) {
            Some(u) => u[tier_index(alloc.tier)] = u[tier_index(alloc.tier)].plus(usage),
            None => {
                let mut u = [Usage::default(); 2];
                u[tier_index(alloc.tier)] = usage;
                self.usage.insert(alloc.tenant.clone(), u);
            }
        }
        match self.jobs.get_mut(&alloc.task.job) {
            Some(slots) => _ = slots.insert(alloc.task.slot, id),
            None => {
                _ = self
                    .jobs
                    .insert(alloc.task.job.clone(), [(alloc.task.slot, id)].into())
            }
        }
        entry.tasks.push(alloc);
    }

    pub(crate) fn zone_count(&self) -> usize {
        self.zones.len()
    }

    pub(crate) fn region_count(&self) -> usize {
        self.regions.len()
    }

    fn entry(&self, id: NodeId) -> Result<&NodeEntry, StateError> {
        self.nodes.get(id.index()).ok_or(StateError::UnknownNode(id))
    }

    fn entry_mut(&mut self, id: NodeId) -> Result<&mut NodeEntry, StateError> {
        self.nodes.get_mut(id.index()).ok_or(StateError::UnknownNode(id))
    }
}

impl NodeEntry {
    /// Whether a task of these needs fits in what is free, ignoring who holds what.
    pub(crate) fn misfit(&self, need: &Need) -> Option<Misfit> {
        if let Some(&port) = need
            .static_ports
            .iter()
            .find(|p| self.static_used.binary_search(p).is_ok())
        {
            return Some(Misfit::StaticPort(port));
        }
        let cap = self.node.capacity;
        if self.used.cpu_millis.saturating_add(need.resources.cpu_millis) > cap.cpu_millis {
            return Some(Misfit::Cpu);
        }
        if self.used.memory_bytes.saturating_add(need.resources.memory_bytes) > cap.memory_bytes {
            return Some(Misfit::Memory);
        }
        if self.dynamic_used.saturating_add(need.dynamic_ports) > self.node.dynamic_ports {
            return Some(Misfit::DynamicPorts);
        }
        None
    }

    /// How full the node would be with `need` added, in millionths of each dimension, summed:
    /// the bin-packing score (higher packs tighter). A dimension the node has none of counts full.
    pub(crate) fn fullness_after(&self, need: &Resources) -> u64 {
        let cap = self.node.capacity;
        let cpu = self.used.cpu_millis.saturating_add(need.cpu_millis);
        let memory = self.used.memory_bytes.saturating_add(need.memory_bytes);
        ppm(cpu, cap.cpu_millis) + ppm(memory, cap.memory_bytes)
    }
}

/// What one task of an ask needs on a node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Need<'a> {
    pub(crate) resources: Resources,
    pub(crate) static_ports: &'a [u16],
    pub(crate) dynamic_ports: u32,
}

/// The first thing a node lacks for a task, in the order placement checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misfit {
    StaticPort(u16),
    Cpu,
    Memory,
    DynamicPorts,
}

pub(crate) fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Critical => 0,
        Tier::Flex => 1,
    }
}

fn ppm(used: u64, capacity: u64) -> u64 {
    if capacity == 0 {
        return 1_000_000;
    }
    (u128::from(used) * 1_000_000 / u128::from(capacity)).min(1_000_000) as u64
}

fn intern<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: K) -> u32 {
    let next = map.len() as u32;
    *map.entry(key).or_insert(next)
}
