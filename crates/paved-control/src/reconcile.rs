//! The job reconciler: reads every job and task, decides what each job lacks or has too much
//! of (`plan`, a pure function), and writes the difference. Restartable at any point: it keeps
//! no state of its own between passes, so a crash mid-pass loses nothing.

use paved_telemetry::Registry;
use paved_telemetry::catalog::{CONTROL_RECONCILE_DURATION, SCHEDULER_PLACEMENTS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use paved_store::{Expect, Op};
use paved_types::{Desired, Health, Job, JobKind, JobState, Node, Task, TaskState};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::env::{Clock, Ids};
use crate::repo::{Change, Repo, RepoError, task_key};

/// What one job needs done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Slots to start a new task in.
    pub create: Vec<u32>,
    /// Live tasks to stop.
    pub stop: Vec<String>,
    /// The job's state and reason, when they change.
    pub job: Option<(JobState, String)>,
    /// Ended tasks to delete: superseded in their slot, beyond the newest `KEEP_ENDED_TASKS`.
    pub forget: Vec<String>,
}

/// Superseded ended tasks a job keeps for `paved tasks` and `paved logs`; older ones are deleted
/// from the store, and their agents delete their files. Bounds what a crash-looping service
/// leaves behind.
pub const KEEP_ENDED_TASKS: usize = 10;

pub struct Reconciler {
    repo: Repo,
    clock: Arc<dyn Clock>,
    ids: Ids,
    wake: Arc<Notify>,
    /// Where pass durations and placement decisions are recorded: a registry of its own (read
    /// by nobody) unless [`Reconciler::record_into`] gives the platform's.
    registry: Registry,
}

/// Longest pause between passes when nothing wakes the reconciler: time-based decisions (a
/// delayed replacement) need a pass even when nothing is written.
const TICK: Duration = Duration::from_secs(1);

impl Reconciler {
    pub fn new(repo: Repo, clock: Arc<dyn Clock>, ids: Ids, wake: Arc<Notify>) -> Self {
        Reconciler {
            repo,
            clock,
            ids,
            wake,
            registry: Registry::new(),
        }
    }

    /// Records each pass's duration and each placement decision in `registry`.
    pub fn record_into(mut self, registry: &Registry) -> Self {
        self.registry = registry.clone();
        self
    }

    /// Runs passes until the process ends: after every store change, after a poke through the
    /// `wake` handle, and at least every `TICK`.
    pub async fn run(self) {
        let mut changes = match self.repo.store().revision().await {
            Ok(rev) => self.repo.store().watch("/", rev).await.ok(),
            Err(_) => None,
        };
        let pass_duration = self
            .registry
            .histogram(&CONTROL_RECONCILE_DURATION)
            .with(&[("loop", "jobs")]);
        loop {
            let started = std::time::Instant::now();
            if let Err(e) = self.pass().await {
                warn!(error = %e, "reconcile pass failed; retrying");
            }
            pass_duration.observe_duration(started.elapsed());
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                event = next_change(&mut changes) => {
                    if event.is_none() {
                        changes = None; // the watch ended; ticks keep us going
                    }
                }
            }
            // One pass covers every change already committed: skip the events queued meanwhile.
            while let Some(Some(())) = next_change(&mut changes).now_or_never() {}
        }
    }

    /// One pass over every job, and the faults that expired.
    pub async fn pass(&self) -> Result<(), RepoError> {
        crate::routing::sweep_expired_faults(&self.repo, self.clock.now_ms()).await?;
        let jobs = self.repo.jobs().await?;
        let mut tasks: HashMap<String, Vec<Task>> = HashMap::new();
        for t in self.repo.tasks().await? {
            tasks.entry(t.value.job_id.clone()).or_default().push(t.value);
        }
        let nodes: Vec<Node> = self.repo.nodes().await?.into_iter().map(|n| n.value).collect();
        let now = self.clock.now_ms();
        for job in jobs {
            let job = job.value;
            let job_tasks = tasks.remove(&job.id).unwrap_or_default();
            let plan = plan(&job, &job_tasks, now);
            if plan != Plan::default() {
                self.apply(&job, plan, &nodes, &job_tasks).await?;
            }
        }
        // Tasks of jobs that are gone (a name reused by a new job): stop, then forget them.
        for orphan in tasks.into_values().flatten() {
            if orphan.state.is_terminal() {
                self.forget(&[orphan.id]).await?;
            } else {
                stop_task(&self.repo, &orphan.id, "its job was replaced", now).await?;
            }
        }
        Ok(())
    }

    async fn forget(&self, ids: &[String]) -> Result<(), RepoError> {
        let ops: Vec<Op> = ids
            .iter()
            .filter_map(|id| task_key(id))
            .map(|key| Op::Delete {
                key,
                expect: Expect::Any,
            })
            .collect();
        if !ops.is_empty() {
            debug!(tasks = ops.len(), "forgetting ended tasks");
            self.repo.commit(ops).await?;
        }
        Ok(())
    }

    async fn apply(&self, job: &Job, plan: Plan, nodes: &[Node], tasks: &[Task]) -> Result<(), RepoError> {
        for id in &plan.stop {
            stop_task(
                &self.repo,
                id,
                "stopped by the control plane",
                self.clock.now_ms(),
            )
            .await?;
        }
        self.forget(&plan.forget).await?;
        let mut state = plan.job;
        if !plan.create.is_empty() {
            let placements = self.registry.counter(&SCHEDULER_PLACEMENTS);
            match pick_node(nodes, tasks) {
                Some(node) => {
                    for index in &plan.create {
                        self.create_task(job, *index, &node.name).await?;
                    }
                    let placed = u64::try_from(plan.create.len()).unwrap_or(u64::MAX);
                    placements.with(&[("result", "placed")]).inc_by(placed);
                }
                None => {
                    placements.with(&[("result", "unschedulable")]).inc();
                    let reason = "no ready node to place tasks on; start an agent".to_owned();
                    state = Some((state.map_or(job.state, |s| s.0), reason));
                }
            }
        }
        if let Some((to, reason)) = state {
            let now = self.clock.now_ms();
            self.repo
                .update_job(job, |j| {
                    if j.id != job.id || (j.state == to && j.reason == reason) {
                        return Ok(Change::Keep);
                    }
                    if j.state.is_terminal() && j.state != to {
                        return Ok(Change::Keep); // a user's kill wins over our view
                    }
                    if j.state != to {
                        info!(job = %j.spec.name, from = j.state.as_str(), to = to.as_str(), "job state");
                    }
                    j.state = to;
                    j.reason.clone_from(&reason);
                    j.updated_at_ms = now;
                    Ok(Change::Write)
                })
                .await?;
        }
        Ok(())
    }

    async fn create_task(&self, job: &Job, index: u32, node: &str) -> Result<(), RepoError> {
        let task = Task {
            id: self.ids.task_id(&job.id),
            job_id: job.id.clone(),
            job_name: job.spec.name.clone(),
            tenant: job.tenant.clone(),
            index,
            node: node.to_owned(),
            state: TaskState::Pending,
            desired: Desired::Run,
            reason: format!("placed on {node}"),
            restarts: 0,
            exit_code: None,
            signal: None,
            pid: None,
            ports: Default::default(),
            created_at_ms: self.clock.now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
            health: Health::Unknown,
            health_detail: String::new(),
        };
        debug!(job = %job.spec.name, task = %task.id, index, node, "task placed");
        self.repo.put_task(&task, Expect::Absent).await?;
        Ok(())
    }
}

/// Asks a task to stop: a task no agent picked up yet is killed on the spot, a live one gets
/// `desired = stop` for its agent to act on. Terminal tasks are left alone.
pub async fn stop_task(repo: &Repo, id: &str, reason: &str, now: u64) -> Result<Option<Task>, RepoError> {
    repo.update_task(id, |t| {
        if t.state.is_terminal() || (t.desired == Desired::Stop && t.state != TaskState::Pending) {
            return Ok(Change::Keep);
        }
        t.desired = Desired::Stop;
        if t.state == TaskState::Pending {
            let _ = t.set_state(TaskState::Killed, now);
        }
        reason.clone_into(&mut t.reason);
        Ok(Change::Write)
    })
    .await
}

/// Decides what `job` needs, given every task it ever had. Pure: same input, same plan.
pub fn plan(job: &Job, tasks: &[Task], now_ms: u64) -> Plan {
    let mut plan = Plan::default();
    let wanted = |t: &Task| !t.state.is_terminal() && t.desired == Desired::Run;
    plan.forget = superseded(job, tasks);
    if job.state.is_terminal() {
        plan.stop = tasks.iter().filter(|t| wanted(t)).map(|t| t.id.clone()).collect();
        return plan;
    }
    let instances = job.spec.instances;
    let mut running = 0;
    let mut done = 0;
    let mut failed: Option<&Task> = None;
    for slot in 0..instances {
        let mut in_slot: Vec<&Task> = tasks.iter().filter(|t| t.index == slot).collect();
        in_slot.sort_by_key(|t| t.created_at_ms);
        let live: Vec<&&Task> = in_slot.iter().filter(|t| wanted(t)).collect();
        if let Some((first, extra)) = live.split_first() {
            running += u32::from(first.state == TaskState::Running);
            plan.stop.extend(extra.iter().map(|t| t.id.clone()));
            continue;
        }
        if in_slot.iter().any(|t| !t.state.is_terminal()) {
            continue; // still stopping; its replacement comes once it is gone
        }
        match in_slot.last() {
            None => plan.create.push(slot),
            Some(t) if t.state == TaskState::Exited => done += 1,
            Some(t) if t.state == TaskState::Failed && job.spec.kind == JobKind::Batch => {
                failed.get_or_insert(t);
            }
            Some(t) if t.state == TaskState::Failed => {
                let ready_at = t.finished_at_ms.unwrap_or(0) + delay_ms(job);
                if now_ms >= ready_at {
                    plan.create.push(slot);
                }
            }
            Some(_) => plan.create.push(slot), // killed or lost: replace it
        }
    }
    plan.stop.extend(
        tasks
            .iter()
            .filter(|t| t.index >= instances && wanted(t))
            .map(|t| t.id.clone()),
    );
    let (state, reason) = job_state(job, running, done, failed);
    if state == JobState::Failed {
        plan.create.clear();
        plan.stop = tasks.iter().filter(|t| wanted(t)).map(|t| t.id.clone()).collect();
    }
    if (state, reason.as_str()) != (job.state, job.reason.as_str()) {
        plan.job = Some((state, reason));
    }
    plan
}

/// Ended tasks that no longer decide anything (a newer task holds their slot, or their slot is
/// beyond the instance count), minus the newest `KEEP_ENDED_TASKS` of them.
fn superseded(job: &Job, tasks: &[Task]) -> Vec<String> {
    let newest_in_slot = |t: &Task| {
        t.index < job.spec.instances
            && tasks
                .iter()
                .filter(|o| o.index == t.index)
                .all(|o| o.created_at_ms <= t.created_at_ms)
    };
    let mut ended: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.state.is_terminal() && !newest_in_slot(t))
        .collect();
    ended.sort_by_key(|t| std::cmp::Reverse(t.finished_at_ms.unwrap_or(t.created_at_ms)));
    ended
        .iter()
        .skip(KEEP_ENDED_TASKS)
        .map(|t| t.id.clone())
        .collect()
}

fn job_state(job: &Job, running: u32, done: u32, failed: Option<&Task>) -> (JobState, String) {
    let n = job.spec.instances;
    if let Some(t) = failed {
        return (JobState::Failed, format!("task {} failed: {}", t.id, t.reason));
    }
    match job.spec.kind {
        JobKind::Batch if done == n => (JobState::Complete, format!("{n}/{n} tasks exited 0")),
        JobKind::Batch if running > 0 => (JobState::Running, format!("{done}/{n} done, {running} running")),
        JobKind::Batch => (
            JobState::Pending,
            format!("{done}/{n} done, waiting for tasks to start"),
        ),
        JobKind::Service if running >= n => (JobState::Running, format!("{running}/{n} tasks running")),
        JobKind::Service => (JobState::Pending, format!("{running}/{n} tasks running")),
    }
}

fn delay_ms(job: &Job) -> u64 {
    u64::try_from(job.spec.restart.delay.as_millis()).unwrap_or(u64::MAX)
}

/// The ready node with the fewest live tasks of this job; placement proper comes with the
/// scheduler.
fn pick_node<'a>(nodes: &'a [Node], tasks: &[Task]) -> Option<&'a Node> {
    nodes.iter().filter(|n| n.state == "ready").min_by_key(|n| {
        tasks
            .iter()
            .filter(|t| t.node == n.name && !t.state.is_terminal())
            .count()
    })
}

async fn next_change(watch: &mut Option<paved_store::WatchStream>) -> Option<()> {
    match watch {
        Some(w) => w.next().await.and_then(|e| e.ok()).map(|_| ()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
