//! The job reconciler: follows jobs and tasks through a [`Mirror`] of the store, decides what
//! each changed job lacks or has too much of (`plan`, a pure function), and writes the
//! difference. Restartable at any point: all it keeps is the mirror, rebuilt from the store at
//! start, so a crash mid-pass loses nothing.

use paved_telemetry::Registry;
use paved_telemetry::catalog::{CONTROL_RECONCILE_DURATION, SCHEDULER_PLACEMENTS};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use paved_store::{Expect, Op, StoreError};
use paved_types::{Desired, Health, Job, JobKind, JobState, Task, TaskState};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::env::{Clock, Ids};
use crate::mirror::{Changes, Mirror};
use crate::repo::{Change, Repo, RepoError, Versioned, job_key, put_op, task_key};
use crate::routing::{FAULTS, ROUTES, job_owner};
use crate::schedule::{Cluster, preemption_reason};

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
    /// When this reconciler last saw each node's record change (its heartbeat), by its own
    /// clock: agents' clocks may disagree with ours, the order of events cannot.
    heard: std::sync::Mutex<HashMap<String, (u64, std::time::Instant)>>,
}

/// Longest pause between passes over every job: time-based decisions (a delayed replacement)
/// need a pass even when nothing is written.
const TICK: Duration = Duration::from_secs(1);
/// How long a node that does not say how often it reports may stay silent before it is down.
const NODE_TIMEOUT: Duration = Duration::from_secs(15);
/// However often a node reports, it may be silent this long: a busy server or network may
/// delay a few heartbeats, and declaring a live node down moves all its work.
const MIN_NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most tasks created in one commit: big enough that a 10,000-task job takes 100 durable
/// writes, small enough for etcd's default limit of 128 operations per transaction.
const CREATE_BATCH: usize = 100;
/// After the store's watch broke, before listing again.
const RETRY: Duration = Duration::from_millis(200);

/// Which jobs a pass looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dirty {
    All,
    /// These job ids (a job's record or one of its tasks changed).
    Jobs(HashSet<String>),
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty::Jobs(HashSet::new())
    }
}

impl Dirty {
    /// Adds what a catch-up changed. Node changes can make any job placeable: all of them.
    fn add(&mut self, changes: Changes) {
        match self {
            Dirty::All => {}
            Dirty::Jobs(_) if changes.nodes => *self = Dirty::All,
            Dirty::Jobs(ids) => ids.extend(changes.jobs),
        }
    }
}

impl Reconciler {
    pub fn new(repo: Repo, clock: Arc<dyn Clock>, ids: Ids, wake: Arc<Notify>) -> Self {
        Reconciler {
            repo,
            clock,
            ids,
            wake,
            registry: Registry::new(),
            heard: std::sync::Mutex::default(),
        }
    }

    /// Records each pass's duration and each placement decision in `registry`.
    pub fn record_into(mut self, registry: &Registry) -> Self {
        self.registry = registry.clone();
        self
    }

    /// Runs passes until the process ends: after every store change (over the jobs it
    /// touched), and over every job at least every `TICK`. A poke through `wake` makes it look
    /// at once.
    pub async fn run(&self) {
        loop {
            let outcome = match Mirror::start(&self.repo).await {
                Ok(mirror) => self.follow(mirror).await,
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                warn!(error = %e, "reconciler lost its view of the store; listing again");
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Plans every job once, then the jobs each change touches, and every job again each
    /// `TICK`. Returns when the store's watch breaks.
    async fn follow(&self, mut mirror: Mirror) -> Result<(), RepoError> {
        let pass_duration = self
            .registry
            .histogram(&CONTROL_RECONCILE_DURATION)
            .with(&[("loop", "jobs")]);
        let mut dirty = Dirty::All;
        let mut written = 0;
        let mut next_full = tokio::time::Instant::now() + TICK;
        loop {
            // Our own writes first: planning from a view without them would redo them.
            dirty.add(mirror.catch_up_to(written).await?);
            let started = std::time::Instant::now();
            match self.pass(&mirror, std::mem::take(&mut dirty)).await {
                Ok(true) => written = self.repo.store().revision().await?,
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "reconcile pass failed; retrying");
                    dirty = Dirty::All;
                }
            }
            pass_duration.observe_duration(started.elapsed());
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next_full) => {}
                changes = mirror.next_change() => dirty.add(changes?),
            }
            if tokio::time::Instant::now() >= next_full {
                dirty = Dirty::All;
                next_full = tokio::time::Instant::now() + TICK;
            }
        }
    }

    /// One pass over the `dirty` jobs (their tasks included) as `mirror` shows them, and the
    /// faults that expired. Returns whether it wrote anything.
    pub async fn pass(&self, mirror: &Mirror, dirty: Dirty) -> Result<bool, RepoError> {
        let now = self.clock.now_ms();
        let mut wrote = self.sweep_expired_faults(mirror, now).await?;
        if dirty == Dirty::All {
            wrote |= self.sweep_ownerless_routes(mirror).await?;
            wrote |= self.mark_silent_nodes_down(mirror, now).await?;
            wrote |= self.drain_nodes(mirror, now).await?;
        }
        let ids = match dirty {
            Dirty::All => mirror.job_ids(),
            Dirty::Jobs(ids) => ids,
        };
        let mut plans: Vec<(&Versioned<Job>, Plan)> = Vec::new();
        for id in ids {
            let tasks: Vec<Task> = mirror.tasks_of(&id).map(|t| t.value.clone()).collect();
            let Some(job) = mirror.job(&id) else {
                // Tasks of a job that is gone (a name reused by a new job): stop, then forget.
                for orphan in tasks {
                    wrote = true;
                    if orphan.state.is_terminal() {
                        self.forget(&[orphan.id]).await?;
                    } else {
                        stop_task(&self.repo, &orphan.id, "its job was replaced", now).await?;
                    }
                }
                continue;
            };
            let plan = plan(&job.value, &tasks, now);
            if plan != Plan::default() {
                plans.push((job, plan));
            }
        }
        wrote |= !plans.is_empty();
        // Placement order: critical jobs first (flex ones then take what is left rather than
        // being preempted moments later), then oldest first; ids break ties.
        plans.sort_by_key(|(job, _)| {
            let job = &job.value;
            (job.spec.placement.tier, job.created_at_ms, job.id.clone())
        });
        // One cluster state per pass, and only when something needs a node: building it visits
        // every node and live task once.
        let mut cluster = plans
            .iter()
            .any(|(_, plan)| !plan.create.is_empty())
            .then(|| cluster_of(mirror));
        let mut states = Vec::new();
        for (job, plan) in plans {
            if let Some((to, reason)) = self.apply(&job.value, plan, cluster.as_mut()).await? {
                states.push((job, to, reason));
            }
        }
        self.write_job_states(&states).await?;
        Ok(wrote)
    }

    /// Writes the jobs' new states and reasons, `CREATE_BATCH` jobs to a commit, each expected
    /// at the revision the mirror shows. A batch in which some job changed meanwhile (a user
    /// killed or scaled it) is written again job by job, each read afresh.
    async fn write_job_states(
        &self,
        states: &[(&Versioned<Job>, JobState, String)],
    ) -> Result<(), RepoError> {
        let now = self.clock.now_ms();
        for batch in states.chunks(CREATE_BATCH) {
            let mut ops = Vec::with_capacity(batch.len());
            for (job, to, reason) in batch {
                let mut changed = job.value.clone();
                if let Change::Write = set_state(&mut changed, &job.value.id, *to, reason, now) {
                    let key = job_key(&changed.tenant, &changed.spec.name);
                    ops.push(put_op(key, &changed, Expect::Revision(job.revision))?);
                }
            }
            if ops.is_empty() {
                continue;
            }
            match self.repo.commit(ops).await {
                Ok(_) => {}
                Err(RepoError::Store(StoreError::Conflict { .. })) => {
                    for (job, to, reason) in batch {
                        let id = &job.value.id;
                        self.repo
                            .update_job(&job.value, |j| Ok(set_state(j, id, *to, reason, now)))
                            .await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes the routes a job's manifest declared once the job ended, was replaced by one
    /// without them, or is gone. Returns whether any went.
    async fn sweep_ownerless_routes(&self, mirror: &Mirror) -> Result<bool, RepoError> {
        let stale = ownerless_routes(mirror);
        if stale.is_empty() {
            return Ok(false);
        }
        info!(routes = stale.len(), "removing routes of ended jobs");
        match self.repo.commit(stale).await {
            Err(RepoError::Store(StoreError::Conflict { .. })) => Ok(false),
            other => other.map(|_| true),
        }
    }

    /// Marks down every ready node whose record has not changed for three of its heartbeats
    /// (`NODE_TIMEOUT` when it does not say), and its unfinished tasks lost, so the jobs place
    /// them again elsewhere. A node that comes back finds its tasks lost and stops them.
    async fn mark_silent_nodes_down(&self, mirror: &Mirror, now_ms: u64) -> Result<bool, RepoError> {
        let silent = self.silent_nodes(mirror);
        let mut wrote = false;
        for name in silent {
            warn!(node = %name, "node stopped reporting; marking it down and its tasks lost");
            self.repo.update_node_state_only(&name, "down").await?;
            let lost: Vec<String> = mirror
                .tasks()
                .filter(|t| t.value.node == name && !t.value.state.is_terminal())
                .map(|t| t.value.id.clone())
                .collect();
            for id in lost {
                let reason = format!("node {name} stopped reporting");
                self.repo
                    .update_task(&id, |t| {
                        if t.state.is_terminal() || t.node != name {
                            return Ok(Change::Keep);
                        }
                        t.set_state(TaskState::Lost, now_ms)
                            .map_err(|e| RepoError::Rejected(e.to_string()))?;
                        t.reason.clone_from(&reason);
                        Ok(Change::Write)
                    })
                    .await?;
            }
            wrote = true;
        }
        Ok(wrote)
    }

    /// Moves tasks off draining nodes within their jobs' disruption budgets (all of them once
    /// the drain's deadline passed), and ends the drain of a node with nothing left on it.
    async fn drain_nodes(&self, mirror: &Mirror, now_ms: u64) -> Result<bool, RepoError> {
        let (stops, done) = drain_plan(mirror, now_ms);
        let wrote = !stops.is_empty() || !done.is_empty();
        for (task, reason) in stops {
            stop_task(&self.repo, &task, &reason, now_ms).await?;
        }
        for node in done {
            info!(node = %node, "drain complete: the node runs no tasks and stays ineligible");
            self.repo
                .update_node(&node, |n| n.drain_deadline_ms = None)
                .await?;
        }
        Ok(wrote)
    }

    /// Ready nodes whose record stood still past their timeout.
    fn silent_nodes(&self, mirror: &Mirror) -> Vec<String> {
        let now = std::time::Instant::now();
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let present: HashSet<&str> = mirror.nodes().map(|n| n.value.name.as_str()).collect();
        heard.retain(|name, _| present.contains(name.as_str()));
        let mut silent = Vec::new();
        for node in mirror.nodes() {
            let (name, revision) = (&node.value.name, node.revision);
            let seen = heard.entry(name.clone()).or_insert((revision, now));
            if seen.0 != revision {
                *seen = (revision, now);
                continue;
            }
            let timeout = match node.value.heartbeat_interval_ms {
                0 => NODE_TIMEOUT,
                every => Duration::from_millis(every.saturating_mul(3)).max(MIN_NODE_TIMEOUT),
            };
            if node.value.state == "ready" && now.duration_since(seen.1) > timeout {
                silent.push(name.clone());
            }
        }
        silent
    }

    /// Deletes faults past their expiry. Returns whether any went.
    async fn sweep_expired_faults(&self, mirror: &Mirror, now_ms: u64) -> Result<bool, RepoError> {
        let expired: Vec<Op> = mirror
            .faults()
            .filter(|f| f.value.fault.expired(now_ms))
            .map(|f| Op::Delete {
                key: format!("{FAULTS}{}", f.value.fault.id),
                expect: Expect::Revision(f.revision),
            })
            .collect();
        if expired.is_empty() {
            return Ok(false);
        }
        match self.repo.commit(expired).await {
            // Halted or changed meanwhile: the next pass looks again.
            Err(RepoError::Store(StoreError::Conflict { .. })) => Ok(false),
            other => other.map(|_| true),
        }
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

    /// Carries out `plan` for `job`: stops, forgets and places its tasks. Returns the job's new
    /// state and reason, which the pass writes with the others'.
    async fn apply(
        &self,
        job: &Job,
        plan: Plan,
        cluster: Option<&mut Cluster>,
    ) -> Result<Option<(JobState, String)>, RepoError> {
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
        if let Some(cluster) = cluster.filter(|_| !plan.create.is_empty()) {
            let decision = cluster.place(job, &plan.create);
            self.preempt(job, &decision.preempt).await?;
            self.create_tasks(job, &decision.placed).await?;
            let placements = self.registry.counter(&SCHEDULER_PLACEMENTS);
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            if !decision.placed.is_empty() {
                placements
                    .with(&[("result", "placed")])
                    .inc_by(count(decision.placed.len()));
            }
            if !decision.preempt.is_empty() {
                placements
                    .with(&[("result", "preempted")])
                    .inc_by(count(decision.preempt.len()));
            }
            if let Some((_, why)) = decision.pending {
                placements.with(&[("result", "unschedulable")]).inc();
                state = Some((state.map_or(job.state, |s| s.0), why));
            }
        }
        Ok(state)
    }

    /// Stops flex tasks that a critical job's placement evicted; their jobs replace them once
    /// they are gone, wherever there is room then.
    async fn preempt(&self, job: &Job, victims: &[String]) -> Result<(), RepoError> {
        if victims.is_empty() {
            return Ok(());
        }
        info!(job = %job.spec.name, victims = victims.len(), "preempting flex tasks");
        let reason = preemption_reason(job);
        for id in victims {
            stop_task(&self.repo, id, &reason, self.clock.now_ms()).await?;
        }
        Ok(())
    }

    /// Writes the placed tasks, `CREATE_BATCH` to a commit: one durable write per batch, not
    /// per task. A task id that happens to be taken (ids are random) fails its batch, which is
    /// written again with fresh ids.
    async fn create_tasks(&self, job: &Job, placed: &[(u32, String)]) -> Result<(), RepoError> {
        for batch in placed.chunks(CREATE_BATCH) {
            let mut attempts = 0;
            loop {
                let tasks: Vec<Task> = batch
                    .iter()
                    .map(|(slot, node)| self.new_task(job, *slot, node))
                    .collect();
                let ops = tasks
                    .iter()
                    .map(|t| {
                        let key = task_key(&t.id)
                            .ok_or_else(|| RepoError::Rejected(format!("bad task id {}", t.id)))?;
                        put_op(key, t, Expect::Absent)
                    })
                    .collect::<Result<Vec<Op>, RepoError>>()?;
                match self.repo.commit(ops).await {
                    Ok(_) => break,
                    Err(RepoError::Store(StoreError::Conflict { .. })) if attempts < 8 => attempts += 1,
                    Err(e) => return Err(e),
                }
            }
            debug!(job = %job.spec.name, tasks = batch.len(), "tasks placed");
        }
        Ok(())
    }

    fn new_task(&self, job: &Job, index: u32, node: &str) -> Task {
        Task {
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
        }
    }
}

/// What draining takes this pass: the tasks to stop (with why) and the nodes whose drain is
/// done. A service job loses at most `[update] max_unavailable` tasks at a time, counting those
/// already down anywhere; batch tasks finish where they are; past the deadline everything left
/// stops.
fn drain_plan(mirror: &Mirror, now_ms: u64) -> (Vec<(String, String)>, Vec<String>) {
    let (mut stops, mut done) = (Vec::new(), Vec::new());
    for node in mirror.nodes().map(|n| &n.value) {
        let Some(deadline) = node.drain_deadline_ms else {
            continue;
        };
        let past = now_ms >= deadline;
        let mut by_job: HashMap<&str, Vec<&Task>> = HashMap::new();
        for task in mirror.tasks().map(|t| &t.value) {
            if task.node == node.name && !task.state.is_terminal() {
                by_job.entry(task.job_id.as_str()).or_default().push(task);
            }
        }
        if by_job.is_empty() {
            done.push(node.name.clone());
            continue;
        }
        for (job_id, on_node) in by_job {
            let moving = on_node.iter().filter(|t| t.desired == Desired::Run);
            if past {
                let reason = format!("node {} drained: its deadline passed", node.name);
                stops.extend(moving.map(|t| (t.id.clone(), reason.clone())));
                continue;
            }
            let Some(job) = mirror.job(job_id).map(|j| &j.value) else {
                continue;
            };
            if job.spec.kind != JobKind::Service {
                continue;
            }
            let serving = mirror.tasks_of(job_id).filter(|t| serving(job, &t.value)).count();
            let down = job
                .spec
                .instances
                .saturating_sub(u32::try_from(serving).unwrap_or(u32::MAX));
            let budget = job.spec.update.max_unavailable.saturating_sub(down) as usize;
            let reason = format!("node {} is draining", node.name);
            stops.extend(moving.take(budget).map(|t| (t.id.clone(), reason.clone())));
        }
    }
    (stops, done)
}

/// Whether a task counts as up for its job's disruption budget: running, wanted, and healthy
/// when the job checks health.
fn serving(job: &Job, task: &Task) -> bool {
    task.state == TaskState::Running
        && task.desired == Desired::Run
        && (job.spec.health.is_none() || task.health == Health::Healthy)
}

/// Deletes of the job-declared routes whose job ended, is gone, or no longer declares them.
fn ownerless_routes(mirror: &Mirror) -> Vec<Op> {
    let mut owned = mirror
        .routes()
        .filter(|r| r.value.owner.starts_with("job:"))
        .peekable();
    if owned.peek().is_none() {
        return Vec::new();
    }
    let live: HashMap<String, &Job> = mirror
        .jobs()
        .filter(|j| !j.value.state.is_terminal())
        .map(|j| (job_owner(&j.value.spec.name), &j.value))
        .collect();
    owned
        .filter(|r| {
            let declared = live
                .get(&r.value.owner)
                .is_some_and(|job| job.spec.routes.iter().any(|d| d.name == r.value.route.name));
            !declared
        })
        .map(|r| Op::Delete {
            key: format!("{ROUTES}{}", r.value.route.name),
            expect: Expect::Revision(r.revision),
        })
        .collect()
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
    let by_slot = by_slot(tasks, instances);
    for (slot, in_slot) in (0..instances).zip(by_slot) {
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

/// The tasks of each slot `0..instances`, oldest first: one sort, so a job of many instances
/// costs O(tasks log tasks), not slots × tasks.
fn by_slot(tasks: &[Task], instances: u32) -> Vec<Vec<&Task>> {
    let mut slots: Vec<Vec<&Task>> = vec![Vec::new(); instances as usize];
    for t in tasks {
        if let Some(slot) = slots.get_mut(t.index as usize) {
            slot.push(t);
        }
    }
    for slot in &mut slots {
        slot.sort_by_key(|t| t.created_at_ms);
    }
    slots
}

/// Ended tasks that no longer decide anything (a newer task holds their slot, or their slot is
/// beyond the instance count), minus the newest `KEEP_ENDED_TASKS` of them.
fn superseded(job: &Job, tasks: &[Task]) -> Vec<String> {
    let mut newest: HashMap<u32, u64> = HashMap::new();
    for t in tasks {
        let at = newest.entry(t.index).or_insert(t.created_at_ms);
        *at = (*at).max(t.created_at_ms);
    }
    let newest_in_slot =
        |t: &Task| t.index < job.spec.instances && newest.get(&t.index).is_none_or(|&n| n <= t.created_at_ms);
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

/// The cluster as `mirror` shows it: every node and every live task with its job.
fn cluster_of(mirror: &Mirror) -> Cluster {
    let nodes = mirror.nodes().map(|n| &n.value);
    let tasks = mirror
        .tasks()
        .filter(|t| !t.value.state.is_terminal())
        .filter_map(|t| Some((&t.value, &mirror.job(&t.value.job_id)?.value)));
    Cluster::build(nodes, tasks)
}

/// Sets `job`'s state and reason, unless it is no longer the job with `id` (a name reused), it
/// already says so, or a user ended it (a user's kill wins over the control plane's view).
fn set_state(job: &mut Job, id: &str, to: JobState, reason: &str, now_ms: u64) -> Change {
    if job.id != id || (job.state == to && job.reason == reason) {
        return Change::Keep;
    }
    if job.state.is_terminal() && job.state != to {
        return Change::Keep;
    }
    if job.state != to {
        info!(job = %job.spec.name, from = job.state.as_str(), to = to.as_str(), "job state");
    }
    job.state = to;
    reason.clone_into(&mut job.reason);
    job.updated_at_ms = now_ms;
    Change::Write
}

#[cfg(test)]
mod pass_tests;

#[cfg(test)]
mod tests;
