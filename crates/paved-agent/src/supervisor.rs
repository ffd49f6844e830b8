//! One supervisor per task: starts its process, waits for it to end or to be asked to stop,
//! applies the restart policy with backoff, and writes each state change to the store.

use paved_telemetry::catalog::{AGENT_HEALTH_CHANGES, AGENT_TASK_RESTARTS, AGENT_TASK_STARTS};
use std::collections::BTreeMap;
use std::time::Duration;

use paved_control::repo::{Change, RepoError};
use paved_runtime::{ExitStatus, Limits, TaskSpec};
use paved_types::{Desired, Health, Job, JobKind, Task, TaskState};
use rand::Rng;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::health::{ExecProbe, HealthCounters, Monitor, Probe};
use crate::image::{self, TaskImage};
use crate::record::LocalRecord;
use crate::stats::TaskTags;
use crate::{Agent, AgentError};

/// How a supervisor takes over its task.
pub enum Start {
    /// Nothing runs yet: start the process.
    Fresh,
    /// The process runs, started by an earlier run of the agent.
    Adopt(LocalRecord),
    /// The process ended while no agent watched; this is its true status.
    Exited(LocalRecord, ExitStatus),
    /// The process and its shim are gone without a trace of how they ended.
    Vanished(LocalRecord),
}

impl Start {
    pub fn describe(&self) -> &'static str {
        match self {
            Start::Fresh => "start",
            Start::Adopt(_) => "adopt running process",
            Start::Exited(..) => "collect exit status",
            Start::Vanished(_) => "report vanished process",
        }
    }
}

/// Signal numbers, spelled out so this file needs no libc.
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

pub async fn supervise(agent: &Agent, task_id: &str, start: Start, desired: watch::Receiver<Desired>) {
    let record = LocalRecord {
        task_id: task_id.to_owned(),
        job_id: String::new(),
        ports: BTreeMap::new(),
        process: None,
    };
    let mut sup = Supervisor {
        agent,
        task_id,
        desired,
        record,
    };
    if let Err(e) = sup.run(start).await {
        warn!(task = %task_id, error = %e, "supervisor stopped on an error");
    }
    agent
        .lock_ports()
        .release(&sup.record.ports.values().copied().collect::<Vec<_>>());
    if let Err(e) = LocalRecord::remove(&agent.task_dir(task_id)) {
        warn!(task = %task_id, error = %e, "cannot remove task record");
    }
}

/// Stops and forgets a process whose task the store no longer has.
pub async fn discard(agent: &Agent, record: &LocalRecord) {
    if let Some(process) = &record.process {
        let runtime = &agent.inner.runtime;
        let _ = runtime.signal(process, SIGKILL).await;
        let _ = runtime.wait(process).await;
        let _ = runtime.cleanup(process).await;
    }
    let _ = LocalRecord::remove(&agent.task_dir(&record.task_id));
}

struct Supervisor<'a> {
    agent: &'a Agent,
    task_id: &'a str,
    desired: watch::Receiver<Desired>,
    record: LocalRecord,
}

/// How a start went.
enum Launch {
    Running,
    Failed(ExitStatus),
    /// Asked to stop before it started; already recorded as killed.
    Stopped,
}

/// What ended a run of the process.
enum Outcome {
    Exited(ExitStatus),
    Stopped(ExitStatus),
}

impl Supervisor<'_> {
    async fn run(&mut self, start: Start) -> Result<(), AgentError> {
        let repo = &self.agent.inner.repo;
        let Some(task) = repo.task(self.task_id).await? else {
            return Ok(());
        };
        let Some(job) = repo.job_by_id(&task.value.job_id).await?.map(|j| j.value) else {
            return self
                .finish(TaskState::Failed, "its job no longer exists", None)
                .await;
        };
        let mut pending = self.take_over(start, &task.value).await?;
        loop {
            if pending.is_none() && self.record.process.is_none() {
                match self.launch(&job).await? {
                    Launch::Stopped => return Ok(()),
                    Launch::Failed(status) => pending = Some(status),
                    Launch::Running => {}
                }
            }
            // Either a status to act on, or a process (just started or adopted) to watch.
            let status = match pending.take() {
                Some(status) => status,
                None => match self.wait_or_stop(&job).await? {
                    Outcome::Exited(status) => status,
                    Outcome::Stopped(status) => return self.killed(&status).await,
                },
            };
            if *self.desired.borrow() == Desired::Stop {
                return self.killed(&status).await;
            }
            let Some(delay) = self.plan_restart(&job, &status).await? else {
                return Ok(());
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_requested(&mut self.desired) => return self.killed(&status).await,
            }
        }
    }

    /// Takes the record an earlier agent left; returns an exit status to handle first, if the
    /// process ended meanwhile.
    async fn take_over(&mut self, start: Start, task: &Task) -> Result<Option<ExitStatus>, AgentError> {
        match start {
            Start::Fresh => {
                self.record.job_id.clone_from(&task.job_id);
                self.record.ports.clone_from(&task.ports);
                Ok(None)
            }
            Start::Adopt(record) => {
                let pid = record.process.as_ref().map(|p| p.pid);
                self.record = record;
                self.update(|t, now| {
                    if t.state == TaskState::Starting {
                        t.set_state(TaskState::Running, now)?;
                    }
                    t.pid = pid;
                    Ok(())
                })
                .await?;
                Ok(None)
            }
            Start::Exited(record, status) => {
                self.clean_up_unwatched(record).await;
                Ok(Some(status))
            }
            Start::Vanished(record) => {
                self.clean_up_unwatched(record).await;
                let error = "the task and its shim vanished while the agent was down".to_owned();
                Ok(Some(ExitStatus::failed(error)))
            }
        }
    }

    /// Takes over the record of a task that ended while no agent watched, and cleans up what it
    /// left (processes of its cgroup, the cgroup, its root's directories): nobody else will.
    async fn clean_up_unwatched(&mut self, record: LocalRecord) {
        self.record = record;
        if let Some(process) = self.record.process.take()
            && let Err(e) = self.agent.inner.runtime.cleanup(&process).await
        {
            warn!(task = %self.task_id, error = %e, "cleanup of a task that ended unwatched failed");
        }
    }

    async fn launch(&mut self, job: &Job) -> Result<Launch, AgentError> {
        if *self.desired.borrow() == Desired::Stop {
            self.finish(TaskState::Killed, "stopped before it started", None)
                .await?;
            return Ok(Launch::Stopped);
        }
        let ports = match self.ports(job) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Launch::Failed(ExitStatus::failed(e)));
            }
        };
        let ports_now = ports.clone();
        self.update(move |t, now| {
            t.set_state(TaskState::Starting, now)?;
            t.ports.clone_from(&ports_now);
            "starting".clone_into(&mut t.reason);
            // Each run is judged afresh.
            t.health = Health::Unknown;
            t.health_detail.clear();
            Ok(())
        })
        .await?;
        let image = match &job.spec.image {
            Some(reference) => match image::pull(&self.agent.inner.config.data_dir, reference).await {
                Ok(image) => Some(image),
                Err(e) => {
                    let reason = format!("cannot pull image {reference}: {e}");
                    return Ok(Launch::Failed(ExitStatus::failed(reason)));
                }
            },
            None => None,
        };
        let spec = self.spec(job, &ports, image).await?;
        match self.agent.inner.runtime.start(&spec).await {
            Ok(process) => {
                let pid = process.pid;
                self.record.process = Some(process);
                if let Err(e) = self.record.save(&spec.dir) {
                    warn!(task = %self.task_id, error = %e, "cannot save task record; a restarted agent will not re-adopt it");
                }
                self.update(move |t, now| {
                    t.set_state(TaskState::Running, now)?;
                    t.pid = Some(pid);
                    "running".clone_into(&mut t.reason);
                    Ok(())
                })
                .await?;
                info!(task = %self.task_id, pid, "task running");
                self.agent.job_counter(&AGENT_TASK_STARTS, job).inc();
                Ok(Launch::Running)
            }
            Err(e) => Ok(Launch::Failed(ExitStatus::failed(e.to_string()))),
        }
    }

    /// Assigns the job's ports once; restarts keep the same numbers.
    fn ports(&mut self, job: &Job) -> Result<BTreeMap<String, u16>, String> {
        let record = &mut self.record;
        if record.ports.len() == job.spec.ports.len() {
            return Ok(record.ports.clone());
        }
        let numbers = self
            .agent
            .lock_ports()
            .allocate(job.spec.ports.len())
            .map_err(|e| e.to_string())?;
        record.ports = job
            .spec
            .ports
            .iter()
            .map(|p| p.name.clone())
            .zip(numbers)
            .collect();
        Ok(record.ports.clone())
    }

    async fn spec(
        &self,
        job: &Job,
        ports: &BTreeMap<String, u16>,
        image: Option<TaskImage>,
    ) -> Result<TaskSpec, AgentError> {
        let task = self.agent.inner.repo.task(self.task_id).await?.map(|t| t.value);
        let index = task.map_or(0, |t| t.index);
        let mut command = job.spec.command.clone();
        let (mut env, root, user) = match image {
            Some(image) => {
                if command.is_empty() {
                    command = image.command;
                }
                (image.env, Some(image.root), image.user)
            }
            None => (BTreeMap::new(), None, None),
        };
        env.extend(job.spec.env.clone());
        for (i, port) in job.spec.ports.iter().enumerate() {
            if let Some(n) = ports.get(&port.name) {
                if i == 0 {
                    env.insert("PORT".into(), n.to_string());
                }
                env.insert(port.env_var(), n.to_string());
            }
        }
        env.insert("PAVED_TASK_ID".into(), self.task_id.to_owned());
        env.insert("PAVED_TASK_INDEX".into(), index.to_string());
        env.insert("PAVED_JOB".into(), job.spec.name.clone());
        env.insert("PAVED_NODE".into(), self.agent.inner.config.node.clone());
        Ok(TaskSpec {
            task_id: self.task_id.to_owned(),
            command,
            image: root,
            user,
            env,
            dir: self.agent.task_dir(self.task_id),
            log_limit_bytes: self.agent.inner.config.log_limit_bytes,
            limits: Limits {
                cpu_millis: (job.spec.resources.cpu * 1000.0).round() as u32,
                memory_bytes: job.spec.resources.memory_bytes,
                pids: job.spec.resources.pids,
            },
            network: job.spec.network,
            driver: job.spec.driver,
            ..TaskSpec::default()
        })
    }

    async fn wait_or_stop(&mut self, job: &Job) -> Result<Outcome, AgentError> {
        let Some(process) = self.record.process.clone() else {
            return Ok(Outcome::Exited(ExitStatus::failed("no process to wait for")));
        };
        let runtime = self.agent.inner.runtime.clone();
        let tags = TaskTags {
            tenant: job.tenant.clone(),
            job: job.spec.name.clone(),
        };
        self.agent.lock_stats().track(&process, tags);
        let mut monitor = self.monitor(job, &process).await?;
        // A batch task's health is only reported: it is judged by how it exits.
        let acts_on_health = job.spec.kind == JobKind::Service;
        let outcome = tokio::select! {
            status = runtime.wait(&process) => Outcome::Exited(status.unwrap_or_else(lost)),
            _ = stop_requested(&mut self.desired) => {
                if !job.spec.ports.is_empty() {
                    // Asked to stop, so no longer an endpoint: let traffic move off it first.
                    tokio::time::sleep(self.agent.inner.config.drain).await;
                }
                Outcome::Stopped(self.stop(&process).await)
            }
            reason = Monitor::unhealthy(monitor.as_mut().filter(|_| acts_on_health)) => {
                info!(task = %self.task_id, %reason, "stopping an unhealthy task");
                // Handled as a failed run whatever its exit code: the reason is the error.
                let status = self.stop(&process).await;
                Outcome::Exited(ExitStatus { error: Some(reason), ..status })
            }
        };
        if let Some(monitor) = monitor {
            monitor.stop().await;
        }
        if let Err(e) = runtime.cleanup(&process).await {
            warn!(task = %self.task_id, error = %e, "cleanup failed");
        }
        self.agent.lock_stats().untrack(self.task_id);
        self.record.process = None;
        Ok(outcome)
    }

    /// Starts checking the running `process` when its job has a `[health]` check.
    async fn monitor(
        &self,
        job: &Job,
        process: &paved_runtime::TaskRecord,
    ) -> Result<Option<Monitor>, AgentError> {
        let Some(health) = &job.spec.health else {
            return Ok(None);
        };
        // The spec the task runs with, so an exec check sees its environment and user; the
        // image is in the cache by now (a tag may be looked up again).
        let image = match &job.spec.image {
            Some(reference) => image::pull(&self.agent.inner.config.data_dir, reference)
                .await
                .ok(),
            None => None,
        };
        let spec = self.spec(job, &self.record.ports, image).await?;
        let runtime = self.agent.inner.runtime.clone();
        let exec = |command| ExecProbe {
            command,
            runtime,
            record: process.clone(),
            spec,
        };
        let probe = Probe::new(health, &job.spec.ports, &self.record.ports, exec);
        let repo = self.agent.inner.repo.clone();
        let node = self.agent.node_name();
        let changes = self.agent.inner.registry.counter(&AGENT_HEALTH_CHANGES);
        let to = |health: Health| {
            changes.with(&[
                ("tenant", job.tenant.as_str()),
                ("job", job.spec.name.as_str()),
                ("node", node),
                ("to", health.as_str()),
            ])
        };
        let counters = HealthCounters {
            healthy: to(Health::Healthy),
            unhealthy: to(Health::Unhealthy),
        };
        Ok(Some(Monitor::start(
            repo,
            self.task_id,
            health.clone(),
            probe,
            counters,
        )))
    }

    /// SIGTERM to the task's process group, SIGKILL after the grace period.
    async fn stop(&self, process: &paved_runtime::TaskRecord) -> ExitStatus {
        let runtime = &self.agent.inner.runtime;
        let _ = runtime.signal(process, SIGTERM).await;
        let grace = self.agent.inner.config.stop_grace;
        match tokio::time::timeout(grace, runtime.wait(process)).await {
            Ok(status) => status.unwrap_or_else(lost),
            Err(_) => {
                info!(task = %self.task_id, "task ignored SIGTERM; sending SIGKILL");
                let _ = runtime.signal(process, SIGKILL).await;
                runtime.wait(process).await.unwrap_or_else(lost)
            }
        }
    }

    /// Decides, after a run ended, whether the task runs again; records the decision. Returns
    /// the backoff to wait before the next run, or `None` when the task is done for good.
    async fn plan_restart(&mut self, job: &Job, status: &ExitStatus) -> Result<Option<Duration>, AgentError> {
        let restart = &job.spec.restart;
        let restarts = self
            .agent
            .inner
            .repo
            .task(self.task_id)
            .await?
            .map_or(0, |t| t.value.restarts);
        // A run that failed to start, or was stopped as unhealthy, counts as failed whatever
        // its exit code.
        let failed = status.error.is_some();
        let code = if failed { Some(127) } else { status.code };
        let what = describe(status);
        if !restart.policy.restarts_after(code) || restarts >= restart.attempts {
            let (state, why) = if code == Some(0) {
                (TaskState::Exited, what)
            } else if restart.policy.restarts_after(code) {
                (
                    TaskState::Failed,
                    format!(
                        "{what}; no restarts left ({restarts} of {} used)",
                        restart.attempts
                    ),
                )
            } else {
                (
                    TaskState::Failed,
                    format!(
                        "{what}; restart policy {} does not restart it",
                        restart.policy.as_str()
                    ),
                )
            };
            self.finish(state, &why, Some(status)).await?;
            return Ok(None);
        }
        let next = restarts + 1;
        let delay = jitter(restart.backoff(next));
        let reason = format!(
            "{what}; restart {next} of {} in {}",
            restart.attempts,
            paved_types::units::format_duration(delay)
        );
        info!(task = %self.task_id, restart = next, delay_ms = delay.as_millis() as u64, "task restarting");
        self.agent.job_counter(&AGENT_TASK_RESTARTS, job).inc();
        let status = status.clone();
        self.update(move |t, now| {
            t.set_state(TaskState::Restarting, now)?;
            t.restarts = next;
            t.exit_code = status.code;
            t.signal = status.signal;
            t.pid = None;
            t.reason.clone_from(&reason);
            Ok(())
        })
        .await?;
        if let Err(e) = self.record.save(&self.agent.task_dir(self.task_id)) {
            warn!(task = %self.task_id, error = %e, "cannot save task record");
        }
        Ok(Some(delay))
    }

    async fn killed(&mut self, status: &ExitStatus) -> Result<(), AgentError> {
        let task = self.agent.inner.repo.task(self.task_id).await?.map(|t| t.value);
        // The control plane gives its reason with `desired = stop`; a stop it did not ask for
        // comes from this agent shutting down.
        let reason = match task {
            Some(t) if t.desired == Desired::Stop => t.reason,
            _ => "the agent shut down; the control plane replaces the task".to_owned(),
        };
        self.finish(TaskState::Killed, &reason, Some(status)).await
    }

    async fn finish(
        &mut self,
        state: TaskState,
        reason: &str,
        status: Option<&ExitStatus>,
    ) -> Result<(), AgentError> {
        info!(task = %self.task_id, state = state.as_str(), reason, "task ended");
        let status = status.cloned();
        let reason = reason.to_owned();
        self.update(move |t, now| {
            t.set_state(state, now)?;
            if let Some(s) = &status {
                t.exit_code = s.code;
                t.signal = s.signal;
            }
            t.reason.clone_from(&reason);
            Ok(())
        })
        .await
    }

    /// Applies `f` to the stored task. A task already terminal (stopped by someone else) is
    /// left as it is.
    async fn update<F>(&self, mut f: F) -> Result<(), AgentError>
    where
        F: FnMut(&mut Task, u64) -> Result<(), paved_types::TransitionError> + Send,
    {
        let now = self.agent.inner.clock.now_ms();
        self.agent
            .inner
            .repo
            .update_task(self.task_id, |t| {
                if t.state.is_terminal() {
                    return Ok(Change::Keep);
                }
                f(t, now).map_err(|e| RepoError::Rejected(e.to_string()))?;
                Ok(Change::Write)
            })
            .await?;
        Ok(())
    }
}

/// Resolves once the task is asked to stop (or its sender is gone, i.e. the agent is ending).
async fn stop_requested(desired: &mut watch::Receiver<Desired>) {
    let _ = desired.wait_for(|d| *d == Desired::Stop).await;
}

fn lost(e: paved_runtime::RuntimeError) -> ExitStatus {
    ExitStatus::failed(format!("lost track of the process: {e}"))
}

/// In words, how a run ended.
fn describe(status: &ExitStatus) -> String {
    if status.oom_killed {
        // The stable word dashboards and people search for, as in Kubernetes' OOMKilled.
        return "oom-killed".to_owned();
    }
    match (&status.error, status.code, status.signal) {
        (Some(e), _, _) => e.clone(),
        (None, Some(code), _) => format!("exited with code {code}"),
        (None, None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None, None) => "ended".to_owned(),
    }
}

/// Spreads restarts of many tasks apart: up to 20% on top of the backoff.
fn jitter(delay: Duration) -> Duration {
    let extra = rand::rng().random_range(0.0..0.2);
    delay.mul_f64(1.0 + extra)
}
