//! Reconcile passes against a real redb store with fake node records (no agent): placement
//! through the scheduler, preemption of flex tasks for a critical job, and pending reasons.

use std::collections::BTreeMap;
use std::sync::Arc;

use paved_store::RedbStore;
use paved_types::{Desired, Job, JobState, Node, Task, TaskState, parse_manifest};
use tokio::sync::Notify;

use super::{Dirty, Reconciler};
use crate::env::{Ids, SystemClock};
use crate::mirror::Mirror;
use crate::repo::Repo;

fn node(name: &str, cores: f64) -> Node {
    Node {
        name: name.into(),
        region: "r".into(),
        zone: "z".into(),
        labels: BTreeMap::new(),
        cpu: cores,
        memory_bytes: 4 << 30,
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

fn job(id: &str, name: &str, extra: &str, created_at_ms: u64) -> Job {
    let manifest = format!("name = \"{name}\"\nkind = \"service\"\ncommand = [\"true\"]\n{extra}");
    Job {
        id: id.into(),
        tenant: "default".into(),
        spec: parse_manifest("t.toml", &manifest).expect("valid manifest"),
        state: JobState::Pending,
        reason: String::new(),
        created_at_ms,
        updated_at_ms: 0,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repo,
    reconciler: Reconciler,
    mirror: Mirror,
}

impl Fixture {
    async fn new(nodes: &[Node]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("open store");
        let repo = Repo::new(Arc::new(store));
        for n in nodes {
            repo.put_node(n).await.unwrap();
        }
        let reconciler = Reconciler::new(
            repo.clone(),
            Arc::new(SystemClock),
            Ids::seeded(7),
            Arc::new(Notify::new()),
        );
        let mirror = Mirror::start(&repo).await.unwrap();
        Fixture {
            _dir: dir,
            repo,
            reconciler,
            mirror,
        }
    }

    /// One pass over every job, on a mirror that has caught up with every write so far.
    async fn pass(&mut self) {
        let now = self.repo.store().revision().await.unwrap();
        self.mirror.catch_up_to(now).await.unwrap();
        self.reconciler.pass(&self.mirror, Dirty::All).await.unwrap();
    }

    async fn tasks(&self, job: &str) -> Vec<Task> {
        let mut tasks: Vec<Task> = self
            .repo
            .tasks_of(job)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.value)
            .collect();
        tasks.sort_by_key(|t| (t.index, t.created_at_ms));
        tasks
    }

    async fn reason(&self, job: &str) -> String {
        self.repo.job_by_id(job).await.unwrap().unwrap().value.reason
    }
}

#[tokio::test]
async fn a_critical_job_preempts_a_flex_task_on_one_of_two_nodes() {
    let mut f = Fixture::new(&[node("a", 1.0), node("b", 1.0)]).await;
    let flex = job("aa", "batchy", "instances = 2\n[resources]\ncpu = 1", 1);
    f.repo.create_job(&flex, None, vec![]).await.unwrap();
    f.pass().await;
    let placed = f.tasks("aa").await;
    let mut nodes: Vec<&str> = placed.iter().map(|t| t.node.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["a", "b"], "spread over both nodes");

    let vip = job(
        "cc",
        "vip",
        "[resources]\ncpu = 1\n[placement]\ntier = \"critical\"",
        2,
    );
    f.repo.create_job(&vip, None, vec![]).await.unwrap();
    f.pass().await;
    let flex_tasks = f.tasks("aa").await;
    let stopped: Vec<&Task> = flex_tasks.iter().filter(|t| t.desired == Desired::Stop).collect();
    assert_eq!(stopped.len(), 1, "{flex_tasks:?}");
    let victim = stopped[0];
    assert_eq!(
        victim.reason,
        "preempted: critical job vip (cc) needed the room on this node"
    );
    // Not started yet, so killed on the spot.
    assert_eq!(victim.state, TaskState::Killed);
    let vip_tasks = f.tasks("cc").await;
    assert_eq!(vip_tasks.len(), 1);
    assert_eq!(vip_tasks[0].node, victim.node, "the critical task takes its room");

    // The flex job replaces its task, but no node has room left: it waits and says why.
    f.pass().await;
    assert_eq!(f.tasks("aa").await.len(), 2, "no replacement placed");
    assert_eq!(
        f.reason("aa").await,
        "1 task not placed: 0 of 2 nodes fit: 2 insufficient cpu"
    );
}

#[tokio::test]
async fn jobs_placed_in_one_pass_see_each_other_and_critical_goes_first() {
    let mut f = Fixture::new(&[node("a", 1.0)]).await;
    // The flex job is older, but the critical one is placed first in the pass.
    let flex = job("aa", "old", "[resources]\ncpu = 0.6", 1);
    let vip = job(
        "cc",
        "vip",
        "[resources]\ncpu = 0.6\n[placement]\ntier = \"critical\"",
        2,
    );
    f.repo.create_job(&flex, None, vec![]).await.unwrap();
    f.repo.create_job(&vip, None, vec![]).await.unwrap();
    f.pass().await;
    assert_eq!(f.tasks("cc").await.len(), 1);
    assert!(f.tasks("aa").await.is_empty());
    assert_eq!(
        f.reason("aa").await,
        "1 task not placed: 0 of 1 nodes fit: 1 insufficient cpu"
    );
}

#[tokio::test]
async fn a_pass_writes_many_jobs_states_in_batches_and_a_users_kill_meanwhile_wins() {
    let mut f = Fixture::new(&[node("a", 100.0)]).await;
    let n = 2 * super::CREATE_BATCH + 5;
    for i in 0..n {
        let j = job(
            &format!("{i:012x}"),
            &format!("web-{i}"),
            "[resources]\ncpu = 0.1",
            1,
        );
        f.repo.create_job(&j, None, vec![]).await.unwrap();
    }
    let now = f.repo.store().revision().await.unwrap();
    f.mirror.catch_up_to(now).await.unwrap();
    // A user kills one job after the mirror saw it: the batch holding it conflicts.
    let killed_id = format!("{:012x}", super::CREATE_BATCH + 50);
    let killed = f.repo.job_by_id(&killed_id).await.unwrap().unwrap().value;
    f.repo
        .update_job(&killed, |j| {
            j.state = JobState::Killed;
            j.reason = "killed by a user".into();
            Ok(crate::repo::Change::Write)
        })
        .await
        .unwrap();
    f.reconciler.pass(&f.mirror, Dirty::All).await.unwrap();

    for i in 0..n {
        let id = format!("{i:012x}");
        let stored = f.repo.job_by_id(&id).await.unwrap().unwrap().value;
        if id == killed_id {
            assert_eq!(stored.state, JobState::Killed, "the user's kill stands");
        } else {
            assert!(
                !stored.reason.is_empty(),
                "{id} got no state from the pass: {stored:?}"
            );
        }
    }
}
