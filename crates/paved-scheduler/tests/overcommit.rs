//! Property: whatever sequence of asks, no node is ever over-committed, down or ineligible nodes
//! get nothing, distinct_hosts holds, and a task is left pending only when no node fits it.

use std::collections::BTreeMap;

use paved_scheduler::{
    Ask, ClusterState, Constraint, Explanation, JobKind, Node, NodeId, Options, Resources, Tier, explain,
    place,
};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const CONSTRAINTS: [&str; 8] = [
    "label:disk = ssd",
    "label:disk != ssd",
    "label:gpu != yes",
    "label:gpu = yes",
    "region = r1",
    "zone in [z0, z3]",
    "zone not in z1",
    "name != n0",
];

#[derive(Debug, Clone)]
struct NodeShape {
    zone: u8,
    cpu: u64,
    memory: u64,
    ports: u32,
    ssd: bool,
    eligible: bool,
    up: bool,
}

#[derive(Debug, Clone)]
struct AskShape {
    critical: bool,
    service: bool,
    cpu: u64,
    memory: u64,
    dynamic_ports: u32,
    static_port: Option<u16>,
    distinct: bool,
    constraint: Option<usize>,
    /// A node to mark down or ineligible (and back) before the ask.
    toggle: Option<(usize, bool)>,
    count: u32,
    candidates: Option<usize>,
    seed: u64,
}

fn node_shape() -> impl Strategy<Value = NodeShape> {
    (
        0u8..4,
        0u64..8,
        0u64..16,
        0u32..6,
        any::<bool>(),
        0u8..10,
        0u8..10,
    )
        .prop_map(|(zone, cpu, memory, ports, ssd, eligible, up)| NodeShape {
            zone,
            cpu: cpu * 500,
            memory: memory * 256 * MIB,
            ports,
            ssd,
            eligible: eligible > 0,
            up: up > 0,
        })
}

fn ask_shape() -> impl Strategy<Value = AskShape> {
    (
        (any::<bool>(), any::<bool>(), 0u64..2500, 0u64..2048, 0u32..3),
        (
            prop::option::of(8080u16..8083),
            any::<bool>(),
            prop::option::of(0..CONSTRAINTS.len()),
            1u32..25,
        ),
        (
            prop::option::of(1usize..5),
            any::<u64>(),
            prop::option::of((0usize..20, any::<bool>())),
        ),
    )
        .prop_map(
            |(
                (critical, service, cpu, memory, dynamic_ports),
                (static_port, distinct, constraint, count),
                (candidates, seed, toggle),
            )| {
                AskShape {
                    critical,
                    service,
                    cpu,
                    memory: memory * MIB,
                    dynamic_ports,
                    static_port,
                    distinct,
                    constraint,
                    toggle,
                    count,
                    candidates,
                    seed,
                }
            },
        )
}

fn build(nodes: &[NodeShape]) -> ClusterState {
    let mut state = ClusterState::new();
    for (i, s) in nodes.iter().enumerate() {
        let mut labels = BTreeMap::new();
        labels.insert("disk".to_owned(), if s.ssd { "ssd" } else { "hdd" }.to_owned());
        if s.zone == 2 {
            labels.insert("gpu".to_owned(), "yes".to_owned());
        }
        let node = Node {
            name: format!("n{i}"),
            region: format!("r{}", s.zone % 2),
            zone: format!("z{}", s.zone),
            labels,
            capacity: Resources::new(s.cpu, s.memory),
            dynamic_ports: s.ports,
            eligible: s.eligible,
            up: s.up,
        };
        state.add_node(node).expect("unique");
    }
    state
}

fn to_ask(job: usize, s: &AskShape) -> Ask {
    let tier = if s.critical { Tier::Critical } else { Tier::Flex };
    let kind = if s.service {
        JobKind::Service
    } else {
        JobKind::Batch
    };
    let mut ask = Ask::new(
        format!("j{job}"),
        "t",
        tier,
        kind,
        Resources::new(s.cpu, s.memory),
        s.count,
    );
    ask.dynamic_ports = s.dynamic_ports;
    ask.static_ports = s.static_port.into_iter().collect();
    ask.distinct_hosts = s.distinct;
    if let Some(c) = s.constraint {
        ask.constraints
            .push(CONSTRAINTS[c].parse::<Constraint>().expect("valid"));
    }
    ask
}

fn assert_within_capacity(state: &ClusterState) {
    for (id, node) in state.nodes() {
        let tasks = state.tasks_on(id);
        let cpu: u64 = tasks.iter().map(|t| t.resources.cpu_millis).sum();
        let memory: u64 = tasks.iter().map(|t| t.resources.memory_bytes).sum();
        let ports: u32 = tasks.iter().map(|t| t.dynamic_ports).sum();
        assert!(
            cpu <= node.capacity.cpu_millis,
            "{} cpu {cpu} > {:?}",
            node.name,
            node.capacity
        );
        assert!(memory <= node.capacity.memory_bytes, "{} memory over", node.name);
        assert!(
            ports <= node.dynamic_ports,
            "{} ports {ports} > {}",
            node.name,
            node.dynamic_ports
        );
        assert_eq!(state.allocated(id), Some(Resources::new(cpu, memory)));
        let mut statics: Vec<u16> = tasks.iter().flat_map(|t| t.static_ports.clone()).collect();
        let all = statics.len();
        statics.sort_unstable();
        statics.dedup();
        assert_eq!(statics.len(), all, "{} holds a static port twice", node.name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_node_is_over_committed(
        nodes in prop::collection::vec(node_shape(), 1..20),
        asks in prop::collection::vec(ask_shape(), 1..12),
    ) {
        let mut state = build(&nodes);
        for (job, shape) in asks.iter().enumerate() {
            if let Some((node, up)) = shape.toggle.filter(|(n, _)| *n < nodes.len()) {
                let id = state.node_id(&format!("n{node}")).expect("known");
                if up { state.set_up(id, !nodes[node].up).expect("known") }
                else { state.set_eligible(id, nodes[node].eligible ^ (job % 2 == 0)).expect("known") }
            }
            let ask = to_ask(job, shape);
            let options = Options { seed: shape.seed, candidates: shape.candidates };
            let placement = place(&mut state, &ask, &options).expect("valid ask");
            assert_within_capacity(&state);

            let pending = placement.pending.as_ref().map_or(0, |p| p.slots.len());
            prop_assert_eq!(placement.placed.len() + pending, ask.slots.len());
            let mut used: Vec<NodeId> = Vec::new();
            for p in &placement.placed {
                let node = state.node(p.node).expect("known");
                prop_assert!(node.up && node.eligible, "{} got a task", node.name);
                prop_assert!(ask.constraints.iter().all(|c| c.matches(node)));
                prop_assert!(!(ask.distinct_hosts && used.contains(&p.node)), "distinct_hosts broken");
                used.push(p.node);
            }
            for p in &placement.preempted {
                prop_assert!(ask.tier == Tier::Critical && p.victim.tier == Tier::Flex);
            }
            if let Some(pending) = &placement.pending {
                prop_assert_eq!(pending.why.fit, 0, "a task was left pending that fits: {}", pending.why);
                prop_assert_eq!(&explain(&state, &ask), &Explanation { preemption_tried: false, ..pending.why.clone() });
            }
        }
    }
}
