//! Placement: packing, constraints, distinct_hosts, spread, eligibility, preemption and the
//! pending explanation, on small clusters built in each test.

use std::collections::BTreeMap;

use crate::{
    Allocation, Ask, AskError, Attribute, ClusterState, Constraint, JobKind, Node, NodeId, Operator, Options,
    Placement, Resources, TaskRef, Tier, place,
};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn node(name: &str, region: &str, zone: &str, cpu_millis: u64, memory: u64) -> Node {
    Node {
        name: name.to_owned(),
        region: region.to_owned(),
        zone: zone.to_owned(),
        labels: BTreeMap::new(),
        capacity: Resources::new(cpu_millis, memory),
        dynamic_ports: 100,
        eligible: true,
        up: true,
    }
}

fn cluster(nodes: impl IntoIterator<Item = Node>) -> ClusterState {
    let mut state = ClusterState::new();
    for n in nodes {
        state.add_node(n).expect("unique names");
    }
    state
}

/// `count` nodes named `n0..`, 4 cores and 8 GiB each, in `zones` zones of region `r`.
fn uniform(count: usize, zones: usize) -> ClusterState {
    cluster((0..count).map(|i| node(&format!("n{i}"), "r", &format!("z{}", i % zones), 4000, 8 * GIB)))
}

fn ask(job: &str, tier: Tier, kind: JobKind, cpu_millis: u64, memory: u64, count: u32) -> Ask {
    Ask::new(job, "acme", tier, kind, Resources::new(cpu_millis, memory), count)
}

fn service(job: &str, cpu_millis: u64, memory: u64, count: u32) -> Ask {
    ask(job, Tier::Flex, JobKind::Service, cpu_millis, memory, count)
}

fn run(state: &mut ClusterState, ask: &Ask) -> Placement {
    place(state, ask, &Options::default()).expect("valid ask")
}

/// Tasks placed per node name.
fn per_node(state: &ClusterState, placement: &Placement) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in &placement.placed {
        *counts.entry(name(state, p.node)).or_default() += 1;
    }
    counts
}

/// Tasks placed per zone.
fn per_zone(state: &ClusterState, placement: &Placement) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in &placement.placed {
        let n = state.node(p.node).expect("known");
        *counts.entry(format!("{}/{}", n.region, n.zone)).or_default() += 1;
    }
    counts
}

fn name(state: &ClusterState, id: NodeId) -> String {
    state.node(id).expect("known").name.clone()
}

fn why(placement: &Placement) -> String {
    placement
        .pending
        .as_ref()
        .map(|p| p.why.to_string())
        .unwrap_or_default()
}

fn spread_ok(counts: &BTreeMap<String, usize>) -> bool {
    let (min, max) = (counts.values().min(), counts.values().max());
    matches!((min, max), (Some(a), Some(b)) if b - a <= 1)
}

#[test]
fn packing_fills_capacity_exactly_and_not_beyond() {
    let mut state = cluster([
        node("a", "r", "z", 2000, 2 * GIB),
        node("b", "r", "z", 2000, 2 * GIB),
    ]);
    let placement = run(
        &mut state,
        &ask("j", Tier::Flex, JobKind::Batch, 500, 512 * MIB, 10),
    );
    assert_eq!(placement.placed.len(), 8);
    for (id, _) in state.nodes() {
        assert_eq!(state.allocated(id), Some(Resources::new(2000, 2 * GIB)));
    }
    let pending = placement.pending.as_ref().expect("two left");
    assert_eq!(pending.slots, vec![8, 9]);
    assert_eq!(why(&placement), "0 of 2 nodes fit: 2 insufficient cpu");
}

#[test]
fn packing_prefers_the_fullest_node_that_fits() {
    let mut state = uniform(3, 1);
    let first = run(&mut state, &ask("big", Tier::Flex, JobKind::Batch, 3000, GIB, 1));
    let big = first.placed[0].node;
    let small = run(
        &mut state,
        &ask("small", Tier::Flex, JobKind::Batch, 1000, GIB, 1),
    );
    assert_eq!(small.placed[0].node, big, "best fit fills the busy node");
    let next = run(&mut state, &ask("next", Tier::Flex, JobKind::Batch, 1000, GIB, 1));
    assert_ne!(next.placed[0].node, big, "that node is full now");
}

#[test]
fn each_resource_limits_packing() {
    // (cpu, memory, dynamic ports per task) on one node of 4 cores, 8 GiB, 100 ports.
    let cases = [
        ((1000, GIB, 0), 4, "1 insufficient cpu"),
        ((100, 3 * GIB, 0), 2, "1 insufficient memory"),
        ((100, 100 * MIB, 30), 3, "1 insufficient dynamic ports"),
    ];
    for ((cpu, memory, ports), placed, reason) in cases {
        let mut state = uniform(1, 1);
        let mut a = ask("j", Tier::Flex, JobKind::Batch, cpu, memory, 10);
        a.dynamic_ports = ports;
        let placement = run(&mut state, &a);
        assert_eq!(placement.placed.len(), placed, "{cpu} {memory} {ports}");
        assert_eq!(why(&placement), format!("0 of 1 nodes fit: {reason}"));
    }
}

#[test]
fn static_ports_are_held_once_per_node() {
    let mut state = uniform(3, 1);
    let mut a = service("web", 100, MIB, 5);
    a.static_ports = vec![8080];
    let placement = run(&mut state, &a);
    assert_eq!(
        per_node(&state, &placement).values().copied().collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(why(&placement), "0 of 3 nodes fit: 3 static port 8080 in use");
}

#[test]
fn constraints_filter_nodes() {
    let mut nodes = Vec::new();
    for (i, (region, disk)) in [("us-east", "ssd"), ("us-east", "hdd"), ("us-west", "ssd")]
        .iter()
        .enumerate()
    {
        for k in 0..3 {
            let mut n = node(
                &format!("{region}-{disk}-{k}"),
                region,
                &format!("z{i}"),
                4000,
                8 * GIB,
            );
            n.labels.insert("disk".into(), (*disk).into());
            nodes.push(n);
        }
    }
    // (constraints, nodes whose names start with one of these may get tasks)
    let cases: [(&[&str], &[&str]); 5] = [
        (&["region = us-east"], &["us-east-"]),
        (&["region = us-east", "label:disk = ssd"], &["us-east-ssd"]),
        (&["label:disk != ssd"], &["us-east-hdd"]),
        (&["region in [us-west, eu]"], &["us-west"]),
        (
            &["label:disk not in ssd, nvme", "name != us-east-hdd-0"],
            &["us-east-hdd-1", "us-east-hdd-2"],
        ),
    ];
    for (constraints, allowed) in cases {
        let mut state = cluster(nodes.clone());
        let mut a = service("j", 100, MIB, 20);
        a.constraints = constraints.iter().map(|c| c.parse().expect("valid")).collect();
        let placement = run(&mut state, &a);
        assert_eq!(placement.placed.len(), 20, "{constraints:?}");
        for name in per_node(&state, &placement).keys() {
            assert!(
                allowed.iter().any(|p| name.starts_with(p)),
                "{constraints:?} put a task on {name}"
            );
        }
    }
}

#[test]
fn constraint_parse_and_display() {
    let cases = [
        ("region = us-east", "region = us-east"),
        ("label:disk=ssd", "label:disk = ssd"),
        ("zone != a", "zone != a"),
        ("zone in a, b", "zone in [a, b]"),
        ("zone in [a,b]", "zone in [a, b]"),
        ("label:rack not in [r1]", "label:rack not in [r1]"),
    ];
    for (input, shown) in cases {
        let c: Constraint = input.parse().expect(input);
        assert_eq!(c.to_string(), shown);
    }
    for bad in [
        "region",
        "colour = red",
        "label: = x",
        "zone =",
        "zone in",
        "zone inside a",
    ] {
        assert!(bad.parse::<Constraint>().is_err(), "{bad} parsed");
    }
    let missing = Constraint::new(Attribute::Label("gpu".into()), Operator::Ne, &["yes"]);
    assert!(
        missing.matches(&node("n", "r", "z", 1, 1)),
        "no label is not equal"
    );
}

#[test]
fn distinct_hosts_puts_one_task_per_node_across_asks() {
    let mut state = uniform(3, 1);
    let mut a = service("j", 100, MIB, 2);
    a.distinct_hosts = true;
    let first = run(&mut state, &a);
    assert_eq!(first.placed.len(), 2);
    a.slots = vec![2, 3, 4];
    let second = run(&mut state, &a);
    assert_eq!(second.placed.len(), 1, "one node left without a task of the job");
    let mut nodes: Vec<NodeId> = first
        .placed
        .iter()
        .chain(&second.placed)
        .map(|p| p.node)
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3);
    assert_eq!(second.pending.as_ref().map(|p| p.slots.clone()), Some(vec![3, 4]));
    assert_eq!(why(&second), "0 of 3 nodes fit: 3 distinct_hosts");
}

#[test]
fn service_tasks_spread_evenly_over_zones() {
    for count in [1, 2, 3, 7, 10, 30, 31] {
        let mut state = uniform(12, 3);
        let placement = run(&mut state, &service("web", 100, MIB, count));
        let zones = per_zone(&state, &placement);
        assert_eq!(zones.values().sum::<usize>(), count as usize);
        if count >= 3 {
            assert!(spread_ok(&zones), "{count} tasks: {zones:?}");
        }
    }
}

#[test]
fn spread_counts_tasks_already_placed_and_goes_by_region_first() {
    let mut state = uniform(9, 3);
    let first = run(&mut state, &service("web", 100, MIB, 2));
    let second = run(
        &mut state,
        &Ask {
            slots: (2..6).collect(),
            ..service("web", 100, MIB, 0)
        },
    );
    let mut all = first.clone();
    all.placed.extend(&second.placed);
    assert!(spread_ok(&per_zone(&state, &all)), "{:?}", per_zone(&state, &all));

    // Region a has three zones, region b one: tasks split by region, then by zone.
    let mut state = cluster((0..8).map(|i| {
        let (region, zone) = if i < 6 {
            ("a", format!("z{}", i % 3))
        } else {
            ("b", "z0".to_owned())
        };
        node(&format!("n{i}"), region, &zone, 4000, 8 * GIB)
    }));
    let placement = run(&mut state, &service("web", 100, MIB, 6));
    let zones = per_zone(&state, &placement);
    assert_eq!(zones["b/z0"], 3);
    assert_eq!((zones["a/z0"], zones["a/z1"], zones["a/z2"]), (1, 1, 1));
}

#[test]
fn spread_fills_other_zones_when_one_is_full() {
    let mut state = cluster([
        node("small", "r", "a", 1000, 8 * GIB),
        node("b", "r", "b", 4000, 8 * GIB),
        node("c", "r", "c", 4000, 8 * GIB),
    ]);
    let placement = run(&mut state, &service("web", 1000, MIB, 9));
    assert_eq!(placement.placed.len(), 9);
    let zones = per_zone(&state, &placement);
    assert_eq!(zones["r/a"], 1);
    assert_eq!(zones["r/b"] + zones["r/c"], 8);
}

#[test]
fn down_and_ineligible_nodes_get_nothing() {
    let mut state = uniform(6, 3);
    state.set_eligible(NodeId(0), false).expect("known");
    state.set_up(NodeId(1), false).expect("known");
    state.set_up(NodeId(2), false).expect("known");
    let placement = run(&mut state, &service("web", 100, MIB, 50));
    assert!(placement.placed.iter().all(|p| p.node.index() >= 3));
    for (id, _) in state.nodes().take(3) {
        assert!(state.tasks_on(id).is_empty());
    }
    let mut full = service("big", 5000, MIB, 1);
    full.slots = vec![0];
    let placement = run(&mut state, &full);
    assert_eq!(
        why(&placement),
        "0 of 6 nodes fit: 3 insufficient cpu, 2 down, 1 ineligible"
    );
}

#[test]
fn explanation_counts_each_node_under_its_first_failing_check() {
    let mut nodes = Vec::new();
    for i in 0..12 {
        let region = if i < 3 { "us-west" } else { "us-east" };
        let memory = if i < 5 { 8 * GIB } else { GIB };
        nodes.push(node(&format!("n{i}"), region, "z", 4000, memory));
    }
    let mut state = cluster(nodes);
    let mut a = service("j", 100, 2 * GIB, 2);
    a.constraints = vec!["region = us-east".parse().expect("valid")];
    a.distinct_hosts = true;
    let first = run(&mut state, &a);
    assert_eq!(per_node(&state, &first).keys().collect::<Vec<_>>(), ["n3", "n4"]);
    let second = run(&mut state, &Ask { slots: vec![5], ..a });
    assert_eq!(
        why(&second),
        "0 of 12 nodes fit: 7 insufficient memory, 3 constraint region = us-east not met, 2 distinct_hosts"
    );
}

#[test]
fn critical_preempts_the_fewest_flex_tasks() {
    // Node a: four 1-core flex tasks; node b: one 4-core flex task; node c: critical, full.
    let mut state = uniform(3, 1);
    let add = |state: &mut ClusterState, node: u32, job: &str, slot: u32, tier: Tier, cpu: u64| {
        let alloc = Allocation {
            task: TaskRef {
                job: job.into(),
                slot,
            },
            tenant: "other".into(),
            tier,
            resources: Resources::new(cpu, GIB),
            static_ports: vec![],
            dynamic_ports: 0,
        };
        state.add_task(NodeId(node), alloc).expect("new task");
    };
    for slot in 0..4 {
        add(&mut state, 0, "small", slot, Tier::Flex, 1000);
    }
    add(&mut state, 1, "large", 0, Tier::Flex, 4000);
    add(&mut state, 2, "crit", 0, Tier::Critical, 4000);

    let flex = run(&mut state, &ask("f", Tier::Flex, JobKind::Service, 2000, GIB, 1));
    assert!(
        flex.placed.is_empty() && flex.preempted.is_empty(),
        "flex never preempts"
    );

    let placement = run(
        &mut state,
        &ask("c", Tier::Critical, JobKind::Service, 2000, GIB, 1),
    );
    let victims: Vec<&TaskRef> = placement.preempted.iter().map(|p| &p.victim.task).collect();
    assert_eq!(
        victims,
        [&TaskRef {
            job: "large".into(),
            slot: 0
        }]
    );
    assert_eq!(placement.placed[0].node, NodeId(1));
    assert_eq!(
        state.node_of(&TaskRef {
            job: "large".into(),
            slot: 0
        }),
        None
    );

    // b has 2 cores free now: a 1-core task fits there as is; a 3-core one then needs node a
    // emptied of three flex tasks (b holds only critical ones).
    let placement = run(
        &mut state,
        &Ask {
            slots: vec![1],
            ..ask("c", Tier::Critical, JobKind::Batch, 1000, GIB, 0)
        },
    );
    assert!(
        placement.preempted.is_empty(),
        "room without preemption comes first"
    );
    let placement = run(
        &mut state,
        &Ask {
            slots: vec![2],
            ..ask("c", Tier::Critical, JobKind::Batch, 3000, GIB, 0)
        },
    );
    assert_eq!(
        placement.preempted.len(),
        3,
        "only node a can make room: {placement:?}"
    );
    assert!(
        placement
            .preempted
            .iter()
            .all(|p| p.victim.tier == Tier::Flex && p.node == NodeId(0))
    );

    // Nothing is left to evict but critical tasks: the task waits.
    let placement = run(
        &mut state,
        &Ask {
            slots: vec![3],
            ..ask("c", Tier::Critical, JobKind::Batch, 2000, GIB, 0)
        },
    );
    assert!(placement.preempted.is_empty());
    assert!(
        why(&placement).ends_with("; preempting flex tasks would not make room on any node"),
        "{}",
        why(&placement)
    );
}

#[test]
fn preemption_evicts_the_smallest_sufficient_task_and_static_port_holders() {
    let mut state = uniform(1, 1);
    let mut flex = |job: &str, cpu: u64, ports: Vec<u16>| {
        let mut a = ask(job, Tier::Flex, JobKind::Batch, cpu, GIB, 1);
        a.static_ports = ports;
        assert_eq!(run(&mut state, &a).placed.len(), 1);
    };
    flex("big", 3000, vec![]);
    flex("small", 1000, vec![]);
    let placement = run(
        &mut state,
        &ask("c", Tier::Critical, JobKind::Batch, 1000, GIB, 1),
    );
    assert_eq!(placement.preempted.len(), 1);
    assert_eq!(placement.preempted[0].victim.task.job, "small");

    let mut state = uniform(1, 1);
    let mut holder = ask("holder", Tier::Flex, JobKind::Batch, 100, MIB, 1);
    holder.static_ports = vec![443];
    run(&mut state, &holder);
    let mut critical = ask("c", Tier::Critical, JobKind::Batch, 100, MIB, 1);
    critical.static_ports = vec![443];
    let placement = run(&mut state, &critical);
    assert_eq!(placement.preempted.len(), 1, "the holder of port 443 goes");
    assert_eq!(placement.placed.len(), 1);
}

#[test]
fn same_seed_same_placement() {
    let placements: Vec<Vec<usize>> = (0..2)
        .map(|_| {
            let mut state = uniform(500, 5);
            let p = place(
                &mut state,
                &service("web", 300, GIB, 400),
                &Options {
                    seed: 7,
                    candidates: None,
                },
            );
            p.expect("valid").placed.iter().map(|p| p.node.index()).collect()
        })
        .collect();
    assert_eq!(placements[0], placements[1]);
}

#[test]
fn invalid_asks_are_refused() {
    let mut state = uniform(2, 1);
    run(&mut state, &service("web", 100, MIB, 1));
    let cases = [
        (
            Ask {
                slots: vec![1, 1],
                ..service("x", 1, 1, 0)
            },
            "job `x`: slot 1 is asked for twice",
        ),
        (
            service("web", 1, 1, 2),
            "job `web`: slot 0 is already placed on node `n0`; remove that task first",
        ),
        (
            Ask {
                static_ports: vec![80, 80],
                ..service("y", 1, 1, 1)
            },
            "job `y`: static port 80 is asked for twice",
        ),
    ];
    for (a, message) in cases {
        let err: AskError = place(&mut state, &a, &Options::default()).expect_err(message);
        assert_eq!(err.to_string(), message);
    }
}
