//! paved-scheduler: where tasks run. Pure functions over a [`ClusterState`]: no I/O, no clock,
//! no threads, and randomness only from the seed the caller passes, so the same input gives the
//! same placement.
//!
//! # The model
//!
//! - [`ClusterState`]: [`Node`]s (name, region, zone, labels, [`Resources`] in millicores and
//!   bytes, a count of dynamic ports, `eligible` and `up`) and the [`Allocation`]s on them (task,
//!   tenant, [`Tier`], resources, ports). The control plane builds it from its store and keeps it
//!   up to date with [`ClusterState::add_task`] / [`ClusterState::remove_task`].
//! - [`Ask`]: one job's request: identical tasks for some slots, with resources, static ports, a
//!   dynamic port count, [`Constraint`]s on node attributes, `distinct_hosts`, tenant, tier and
//!   [`JobKind`].
//! - [`place`]`(state, ask, options) -> `[`Placement`]: the slots placed, the flex tasks
//!   [`Preempted`] for critical ones, and the slots left [`Pending`] with an [`Explanation`]
//!   ("0 of 12 nodes fit: 7 insufficient memory, 3 constraint region = us-east not met,
//!   2 distinct_hosts"). The state is updated, so the next ask sees these tasks.
//! - [`explain`]: the same counts for an ask at any time, for `paved job ID`.
//! - [`check_quota`]: admission of a job against its tenant's [`CapacityGroup`] in its tier,
//!   separate from placement; the error names each quota exceeded, with figures and the fix.
//!
//! # How a task finds a node
//!
//! Per ask, once: the nodes that pass what cannot change while the ask is placed (up, eligible,
//! constraints) come from the state's index, without visiting the others: a bitset of
//! schedulable nodes, and per attribute value (name, region, zone, each label) the list of nodes
//! that have it, so each constraint is a few operations over n/64 words. Those nodes are grouped
//! in domains: per (region, zone) for service jobs, one domain for batch jobs.
//!
//! Per task:
//! 1. **Spread** (service): the domain with candidates left whose region holds the fewest tasks
//!    of the job, then which itself holds the fewest. So tasks spread evenly over regions, and
//!    within a region over zones; counts differ by at most one while every zone has room.
//! 2. **Sample**: draw `k` candidates from the domain (`k` = ⌈log2 n⌉, at least 2, for n nodes
//!    passing the constraints, as Nomad does; a domain of at most `k` nodes is scored whole). A
//!    drawn node that does not fit (cpu, memory, dynamic ports, static ports, distinct_hosts) is
//!    dropped from the domain for the rest of the ask: nodes only fill up while an ask is
//!    placed. So a domain runs dry only when no node in it fits, and placement fails only when
//!    no node at all fits: sampling never makes a task pending that could run.
//! 3. **Score** (bin-packing, best fit): how full the node would be, cpu plus memory, each in
//!    millionths of capacity. Service jobs lose one full dimension's worth per task of the same
//!    job already on the node (anti-affinity), so they pack around other jobs, not on siblings.
//! 4. **Preempt** (critical tier only), when no node fits. Only flex tasks are evicted (of any
//!    tenant: flex is borrowed capacity), and only on nodes the task may use anyway (up,
//!    eligible, constraints met, distinct_hosts respected). On each such node a greedy pass
//!    picks victims: every flex task holding a static port the task needs, then, while the task
//!    does not fit, the flex task covering most of what is missing; then victims that turned out
//!    unneeded are dropped, largest first. The node with the fewest victims wins, then the one
//!    whose victims hold least. Victims are listed in the placement and removed from the state;
//!    spread does not steer preemption. A node holding a needed static port in a critical task
//!    is never a candidate.
//!
//! Cost: O(nodes/64 × constraints + nodes with a constrained value + feasible nodes) once per
//! ask, then O(k) per task plus O(1) per node dropped (each node is dropped at most once per
//! ask). On 10,000 nodes a 1,000-task job takes 1.5–2.5 ms, a one-task ask about 40 µs (see
//! BENCHMARKS.md). Preemption and explanations visit every feasible node, respectively every
//! node; they run only when a task fits nowhere.
//!
//! # Invariants
//!
//! **Invariant:** `place` never puts a task on a node where it does not fit: the sum of
//! allocations on a node stays within its capacity, dynamic ports within its count, and a static
//! port is held by one task at most (tested by a property test over random asks).
//! **Invariant:** only critical tasks preempt, and only flex tasks are preempted.
//! **Invariant:** nodes that are down or ineligible get no tasks.
#![forbid(unsafe_code)]

mod ask;
mod cluster;
mod constraint;
mod explain;
mod index;
mod place;
mod preempt;
mod quota;
mod rng;

pub use ask::{Ask, JobKind};
pub use cluster::{Allocation, ClusterState, Node, NodeId, Resources, StateError, TaskRef, Tier};
pub use constraint::{Attribute, Attributes, Constraint, ConstraintError, Operator};
pub use explain::{Explanation, Reason, explain};
pub use place::{AskError, Options, Pending, Placed, Placement, Preempted, place};
pub use quota::{CapacityGroup, Dimension, Exceeded, QuotaError, Usage, check_quota};
