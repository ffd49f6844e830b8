//! Tests of the mapping between records and placement: cluster state from nodes and live tasks,
//! decisions per job, and admission against capacity groups. Plain records in, no store.

use std::collections::BTreeMap;
use std::time::Instant;

use paved_types::{Desired, Job, JobState, Node, Task, TaskState, Tier, parse_manifest};

use super::{Cluster, Decision, admit, preemption_reason};
use crate::repo::{Quota, TenantRecord};

const GIB: u64 = 1 << 30;

/// A ready node of `cores` and `gib` in region `r`, zone `z`.
fn node(name: &str, region: &str, zone: &str, cores: f64, gib: u64) -> Node {
    Node {
        name: name.into(),
        region: region.into(),
        zone: zone.into(),
        labels: BTreeMap::new(),
        cpu: cores,
        memory_bytes: gib * GIB,
        state: "ready".into(),
        agent_version: "test".into(),
        heartbeat_at_ms: 0,
        runtime: String::new(),
        eligible: true,
        dynamic_ports: None,
        address: String::new(),
        heartbeat_interval_ms: 0,
        drain_deadline_ms: None,
    }
}

/// A job `id` from manifest lines after name, kind and command.
fn job(id: &str, extra: &str) -> Job {
    let manifest = format!("name = \"j{id}\"\nkind = \"service\"\ncommand = [\"true\"]\n{extra}");
    Job {
        id: id.into(),
        tenant: "default".into(),
        spec: parse_manifest("t.toml", &manifest).expect("valid manifest"),
        state: JobState::Running,
        reason: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn task(job: &Job, slot: u32, node: &str, state: TaskState) -> Task {
    Task {
        id: format!("{}-{slot:04x}", job.id),
        job_id: job.id.clone(),
        job_name: job.spec.name.clone(),
        tenant: job.tenant.clone(),
        index: slot,
        node: node.into(),
        state,
        desired: Desired::Run,
        reason: String::new(),
        restarts: 0,
        exit_code: None,
        signal: None,
        pid: None,
        ports: Default::default(),
        created_at_ms: 0,
        started_at_ms: None,
        finished_at_ms: None,
        health: Default::default(),
        health_detail: String::new(),
    }
}

fn cluster(nodes: &[Node], tasks: &[(Task, &Job)]) -> Cluster {
    Cluster::build(nodes, tasks.iter().map(|(t, j)| (t, *j)))
}

fn placed(d: &Decision) -> Vec<(u32, &str)> {
    d.placed.iter().map(|(s, n)| (*s, n.as_str())).collect()
}

#[test]
fn state_holds_every_node_and_only_live_tasks_on_known_nodes() {
    let mut down = node("b", "r", "z", 4.0, 8);
    down.state = "down".into();
    let mut drained = node("c", "r", "z", 4.0, 8);
    drained.eligible = false;
    let nodes = [node("a", "r", "z", 4.0, 8), down, drained];
    let web = job("1", "instances = 4\n[resources]\ncpu = 1.5\nmemory = \"1GiB\"");
    let tasks = [
        (task(&web, 0, "a", TaskState::Running), &web),
        (task(&web, 1, "a", TaskState::Pending), &web),
        (task(&web, 2, "a", TaskState::Exited), &web),
        (task(&web, 3, "gone", TaskState::Running), &web),
    ];
    let c = cluster(&nodes, &tasks);
    let state = c.state();
    assert_eq!(state.len(), 3);
    let a = state.node_id("a").unwrap();
    let used = state.allocated(a).unwrap();
    assert_eq!((used.cpu_millis, used.memory_bytes), (3000, 2 * GIB));
    let b = state.node(state.node_id("b").unwrap()).unwrap();
    let c_node = state.node(state.node_id("c").unwrap()).unwrap();
    assert_eq!((b.up, b.eligible), (false, true));
    assert_eq!((c_node.up, c_node.eligible), (true, false));
}

#[test]
fn a_service_spreads_over_zones_and_placements_see_each_other() {
    let nodes = [
        node("a1", "r", "a", 2.0, 8),
        node("a2", "r", "a", 2.0, 8),
        node("b1", "r", "b", 2.0, 8),
    ];
    let mut c = cluster(&nodes, &[]);
    let web = job("1", "instances = 2\n[resources]\ncpu = 2");
    let d = c.place(&web, &[0, 1]);
    let zones: Vec<char> = d.placed.iter().map(|(_, n)| n.chars().next().unwrap()).collect();
    assert_eq!(zones.len(), 2);
    assert_ne!(zones[0], zones[1], "{d:?}");
    assert_eq!(d.pending, None);
    // One full node left: the next job gets it, the one after waits.
    let api = job("2", "[resources]\ncpu = 2");
    assert_eq!(c.place(&api, &[0]).placed.len(), 1);
    let late = c.place(&job("3", "[resources]\ncpu = 2"), &[0]);
    assert_eq!(
        late.pending,
        Some((
            1,
            "1 task not placed: 0 of 3 nodes fit: 3 insufficient cpu".into()
        ))
    );
}

#[test]
fn unmet_constraints_and_down_nodes_are_explained() {
    let mut down = node("d", "us-east", "z", 4.0, 8);
    down.state = "down".into();
    let nodes = [
        node("a", "eu-west", "z", 4.0, 8),
        node("b", "eu-west", "z", 4.0, 8),
        down,
    ];
    let mut c = cluster(&nodes, &[]);
    let web = job(
        "1",
        "instances = 3\n[placement]\nconstraints = [\"region = us-east\"]",
    );
    let d = c.place(&web, &[0, 1, 2]);
    assert!(d.placed.is_empty());
    assert_eq!(
        d.pending,
        Some((
            3,
            "3 tasks not placed: 0 of 3 nodes fit: 2 constraint region = us-east not met, 1 down".into()
        ))
    );
}

#[test]
fn distinct_hosts_and_labels() {
    let mut ssd = node("s", "r", "z", 8.0, 8);
    ssd.labels.insert("disk".into(), "ssd".into());
    let nodes = [ssd, node("h", "r", "z", 8.0, 8)];
    let mut c = cluster(&nodes, &[]);
    let db = job(
        "1",
        "instances = 2\n[placement]\nconstraints = [\"label:disk = ssd\"]\ndistinct_hosts = true",
    );
    let d = c.place(&db, &[0, 1]);
    assert_eq!(placed(&d), [(0, "s")]);
    let why = d.pending.unwrap().1;
    assert_eq!(
        why,
        "1 task not placed: 0 of 2 nodes fit: 1 constraint label:disk = ssd not met, 1 distinct_hosts"
    );
}

#[test]
fn ports_count_against_the_agents_range() {
    let mut small = node("a", "r", "z", 8.0, 8);
    small.dynamic_ports = Some(3);
    let mut c = cluster(&[small], &[]);
    let web = job(
        "1",
        "instances = 2\n[[ports]]\nname = \"http\"\n[[ports]]\nname = \"admin\"",
    );
    let d = c.place(&web, &[0, 1]);
    assert_eq!(placed(&d), [(0, "a")]);
    assert!(
        d.pending.unwrap().1.ends_with("1 insufficient dynamic ports"),
        "ports"
    );
}

/// Two nodes full of flex tasks; a critical task takes one node's room by stopping the flex
/// task there, which is named by its task id.
#[test]
fn a_critical_job_preempts_a_flex_task() {
    let nodes = [node("a", "r", "z", 1.0, 4), node("b", "r", "z", 1.0, 4)];
    let batch = job("f", "instances = 2\n[resources]\ncpu = 1");
    let tasks = [
        (task(&batch, 0, "a", TaskState::Running), &batch),
        (task(&batch, 1, "b", TaskState::Running), &batch),
    ];
    let mut c = cluster(&nodes, &tasks);
    let flex = job("g", "[resources]\ncpu = 1");
    let d = c.place(&flex, &[0]);
    assert!(d.preempt.is_empty(), "flex never preempts: {d:?}");
    assert!(d.pending.is_some());

    let critical = job("c", "[resources]\ncpu = 1\n[placement]\ntier = \"critical\"");
    let d = c.place(&critical, &[0]);
    assert_eq!(d.pending, None);
    assert_eq!(d.preempt.len(), 1, "{d:?}");
    let victim = &d.preempt[0];
    let victim_node = tasks
        .iter()
        .find(|(t, _)| t.id == *victim)
        .unwrap()
        .0
        .node
        .clone();
    assert_eq!(placed(&d), [(0, victim_node.as_str())]);
    assert_eq!(
        preemption_reason(&critical),
        "preempted: critical job jc (c) needed the room on this node"
    );
    // Critical tasks are never victims: a second critical task finds the other flex task.
    let d = c.place(
        &job("d", "[resources]\ncpu = 1\n[placement]\ntier = \"critical\""),
        &[0],
    );
    assert_eq!(d.preempt.len(), 1);
    assert_ne!(d.preempt[0], *victim);
    let d = c.place(
        &job("e", "[resources]\ncpu = 1\n[placement]\ntier = \"critical\""),
        &[0],
    );
    assert!(d.preempt.is_empty());
    assert!(d.pending.unwrap().1.ends_with(
        "0 of 2 nodes fit: 2 insufficient cpu; preempting flex tasks would not make room on any node"
    ));
}

/// The reconciler's worst pass: 10,000 tasks over 100 nodes, as one job and as 1,000 jobs of
/// ten, each placed into one state. Prints the time; timings never decide pass/fail.
#[test]
fn ten_thousand_tasks_over_a_hundred_nodes() {
    let nodes: Vec<Node> = (0..100)
        .map(|i| node(&format!("n{i}"), "r", &format!("z{}", i % 4), 64.0, 256))
        .collect();
    let started = Instant::now();
    let mut c = cluster(&nodes, &[]);
    let big = job(
        "big",
        "instances = 10000\n[resources]\ncpu = 0.1\nmemory = \"64MiB\"",
    );
    let slots: Vec<u32> = (0..10_000).collect();
    let d = c.place(&big, &slots);
    assert_eq!((d.placed.len(), d.pending), (10_000, None));
    let one_job = started.elapsed();

    let started = Instant::now();
    let mut c = cluster(&nodes, &[]);
    for j in 0..1000 {
        let small = job(
            &format!("s{j}"),
            "instances = 10\n[resources]\ncpu = 0.1\nmemory = \"64MiB\"",
        );
        let d = c.place(&small, &(0..10).collect::<Vec<_>>());
        assert_eq!(d.placed.len(), 10);
    }
    let many_jobs = started.elapsed();
    eprintln!("10,000 tasks on 100 nodes: one job {one_job:?}, 1,000 jobs of 10 {many_jobs:?}");
}

fn tenant(tier: Tier, quota: Quota) -> TenantRecord {
    let mut record = TenantRecord::new("default");
    record.capacity.insert(tier, quota);
    record
}

#[test]
fn admission_against_capacity_groups() {
    let cpu4 = Quota {
        cpu_millis: Some(4000),
        memory_bytes: Some(8 * GIB),
        tasks: Some(10),
    };
    let web = job("1", "instances = 3\n[resources]\ncpu = 1\nmemory = \"1GiB\"");
    let mut ended = job("2", "instances = 5\n[resources]\ncpu = 1");
    ended.state = JobState::Killed;
    let critical = job(
        "3",
        "instances = 4\n[resources]\ncpu = 1\n[placement]\ntier = \"critical\"",
    );
    let jobs = [&web, &ended, &critical];
    let new = job("4", "instances = 2\n[resources]\ncpu = 1\nmemory = \"1GiB\"");
    let check = |record: Option<&TenantRecord>, instances: u32| {
        admit(record, "default", jobs, &new.spec, instances).map_err(|e| e.to_string())
    };
    // No record, or no group in the job's tier: unlimited.
    assert_eq!(check(None, 1000), Ok(()));
    assert_eq!(check(Some(&tenant(Tier::Critical, cpu4)), 1000), Ok(()));
    // Flex holds 3 cores (the killed job and the critical one do not count): 1 more fits.
    let flex = tenant(Tier::Flex, cpu4);
    assert_eq!(check(Some(&flex), 1), Ok(()));
    assert_eq!(
        check(Some(&flex), 2),
        Err(
            "tenant `default` tier flex: cpu quota 4 cores, in use 3 cores, job asks 2 cores more; \
             raise the quota with `paved tenants quota` or lower instances or cpu"
                .into()
        )
    );
    let tasks_only = Quota {
        tasks: Some(4),
        ..Quota::default()
    };
    assert!(
        check(Some(&tenant(Tier::Flex, tasks_only)), 2)
            .unwrap_err()
            .contains("tasks quota 4, in use 3, job asks 2 more")
    );
}
