//! The node agent: registers its node, runs the tasks the control plane places on it through a
//! `Runtime`, applies their restart policies, and reports every state change. It keeps its own
//! record of each task, so after a restart (even a `kill -9`) it re-adopts the live ones.
#![forbid(unsafe_code)]

mod health;
mod image;
mod ports;
mod record;
mod remote;
mod session;
mod stats;
mod supervisor;

pub use image::REGISTRIES_FILE;
pub use remote::RemoteStore;
pub use session::keep_sessions;
pub use stats::{STATS_INTERVAL, Sample};

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use paved_control::Clock;
use paved_control::repo::{Change, Repo, RepoError, TASKS, decode};
use paved_runtime::{Probe, Runtime};
use paved_telemetry::{Counter, CounterDef, Registry};
use paved_types::{Desired, Node, Task, TaskState};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ports::Ports;
use crate::record::LocalRecord;
use crate::stats::StatsTable;
use crate::supervisor::Start;

/// How an agent is set up; validated by the binary before it gets here.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    pub region: String,
    pub zone: String,
    /// For placement constraints (`label:disk = ssd`).
    pub labels: BTreeMap<String, String>,
    /// Where task directories (logs, records) live.
    pub data_dir: PathBuf,
    pub cpu: f64,
    pub memory_bytes: u64,
    /// Per stream, per task; older output rotates out.
    pub log_limit_bytes: u64,
    /// Between SIGTERM and SIGKILL when stopping a task.
    pub stop_grace: Duration,
    /// Before SIGTERM, when a task that serves ports is asked to stop: time for the edge router,
    /// which drops a task from its endpoints once its desired state is `stop`, to send it no
    /// new requests and for those in flight to finish.
    pub drain: Duration,
    pub ports: Range<u16>,
    pub heartbeat: Duration,
    /// The IP address the edge router reaches this node's tasks at; empty: loopback.
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot create the agent's directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("task {0} has no logs on this node")]
    NoLogs(String),
}

#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    config: AgentConfig,
    repo: Repo,
    runtime: Arc<dyn Runtime>,
    clock: Arc<dyn Clock>,
    ports: Mutex<Ports>,
    /// Desired state of each supervised task, by task id.
    supervised: Mutex<HashMap<String, watch::Sender<Desired>>>,
    /// Shared with the registry's collector, which reads it at every gather.
    stats: Arc<Mutex<StatsTable>>,
    registry: Registry,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node: "local".to_owned(),
            region: "local".to_owned(),
            zone: "local-a".to_owned(),
            labels: BTreeMap::new(),
            data_dir: PathBuf::from("agent"),
            cpu: 1.0,
            memory_bytes: 1 << 30,
            log_limit_bytes: 10 << 20,
            stop_grace: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            ports: 20000..32000,
            heartbeat: Duration::from_secs(5),
            address: String::new(),
        }
    }
}

impl Agent {
    /// An agent that records its metrics (task starts, restarts, health changes, and every
    /// task's cpu, memory and pids) into `registry`.
    pub fn new(
        config: AgentConfig,
        repo: Repo,
        runtime: Arc<dyn Runtime>,
        clock: Arc<dyn Clock>,
        registry: Registry,
    ) -> Self {
        let ports = Mutex::new(Ports::new(config.ports.clone()));
        let stats: Arc<Mutex<StatsTable>> = Arc::default();
        let (table, node) = (stats.clone(), config.node.clone());
        registry.register_collector(move |out| {
            table.lock().unwrap_or_else(|e| e.into_inner()).emit(&node, out);
        });
        let inner = Inner {
            config,
            repo,
            runtime,
            clock,
            ports,
            supervised: Mutex::default(),
            stats,
            registry,
        };
        Agent {
            inner: Arc::new(inner),
        }
    }

    pub fn node_name(&self) -> &str {
        &self.inner.config.node
    }

    /// Registers the node and re-adopts the tasks a previous run left; returns once the agent
    /// is ready, then `run` follows the store.
    pub async fn start(&self) -> Result<(), AgentError> {
        let dir = self.tasks_dir();
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::Dir {
            path: dir.clone(),
            source,
        })?;
        self.heartbeat().await?;
        self.adopt().await?;
        Ok(())
    }

    /// Follows the store: starts tasks placed here, stops those asked to stop. Runs until the
    /// process ends; `shutdown` stops the tasks.
    pub async fn run(&self) -> Result<(), AgentError> {
        let store = self.inner.repo.store().clone();
        let mut tick = tokio::time::interval(self.inner.config.heartbeat);
        let mut sample = tokio::time::interval(STATS_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (kvs, revision) = store.list(TASKS).await.map_err(RepoError::from)?;
            for kv in kvs {
                self.on_task(decode::<Task>(kv)?.value);
            }
            let mut changes = store.watch(TASKS, revision).await.map_err(RepoError::from)?;
            loop {
                tokio::select! {
                    event = changes.next() => match event {
                        Some(Ok(e)) if e.kind == paved_store::EventKind::Put => {
                            if let Ok(task) = serde_json::from_slice::<Task>(&e.value) {
                                self.on_task(task);
                            }
                        }
                        Some(Ok(e)) => {
                            if let Some(id) = e.key.rsplit('/').next() {
                                self.forget_files(id);
                            }
                        }
                        Some(Err(e)) => { warn!(error = %e, "task watch broke; listing again"); break }
                        None => break,
                    },
                    _ = tick.tick() => {
                        if let Err(e) = self.heartbeat().await {
                            warn!(error = %e, "heartbeat failed");
                        }
                    }
                    _ = sample.tick() => self.sample_stats().await,
                }
            }
        }
    }

    /// Stops every task (SIGTERM, then SIGKILL after the grace period) and marks the node down.
    pub async fn shutdown(&self) {
        let senders: Vec<_> = self.lock_supervised().values().cloned().collect();
        for s in &senders {
            let _ = s.send(Desired::Stop);
        }
        for s in senders {
            s.closed().await;
        }
        let now = self.inner.clock.now_ms();
        let _ = self
            .inner
            .repo
            .update_node_state(&self.inner.config.node, "down", now)
            .await;
    }

    /// The latest resource usage of a task running here.
    pub fn stats(&self, task_id: &str) -> Option<Sample> {
        self.lock_stats().get(task_id)
    }

    /// The latest resource usage of every task running here, by task id.
    pub fn samples(&self) -> Vec<(String, Sample)> {
        self.lock_stats().samples()
    }

    /// The log of task `task_id`, as [`Agent::logs`] reads it; for a server that asks by id.
    pub async fn logs_of(
        &self,
        task_id: &str,
        stderr: bool,
        tail_bytes: u64,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, String>>, AgentError> {
        let task = self
            .inner
            .repo
            .task(task_id)
            .await?
            .ok_or_else(|| AgentError::NoLogs(task_id.to_owned()))?;
        self.logs(&task.value, stderr, tail_bytes, follow)
    }

    async fn sample_stats(&self) {
        let records = self.lock_stats().records();
        let read = stats::read_all(&*self.inner.runtime, records).await;
        let (at, now_ms) = (std::time::Instant::now(), self.inner.clock.now_ms());
        let mut table = self.lock_stats();
        for (task_id, stats) in read {
            table.record(&task_id, stats, at, now_ms);
        }
    }

    /// The series of counter `def` for `job` on this node.
    pub(crate) fn job_counter(&self, def: &'static CounterDef, job: &paved_types::Job) -> Counter {
        let node = self.inner.config.node.as_str();
        self.inner.registry.counter(def).with(&[
            ("tenant", job.tenant.as_str()),
            ("job", job.spec.name.as_str()),
            ("node", node),
        ])
    }

    pub(crate) fn lock_stats(&self) -> std::sync::MutexGuard<'_, StatsTable> {
        self.inner.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task's log, as `paved logs` reads it.
    pub fn logs(
        &self,
        task: &Task,
        stderr: bool,
        tail_bytes: u64,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, String>>, AgentError> {
        let dir = self.task_dir(&task.id);
        // A task placed here but not launched yet has no directory: its log reads as empty and a
        // follower waits for it, so `paved run` then `paved logs -f` never races the launch.
        let launching = matches!(task.state, TaskState::Pending | TaskState::Starting);
        if task.node != self.inner.config.node || !(dir.exists() || launching) {
            return Err(AgentError::NoLogs(task.id.clone()));
        }
        let stream = if stderr {
            paved_runtime::Stream::Stderr
        } else {
            paved_runtime::Stream::Stdout
        };
        let chunks = paved_runtime::logs::read(&dir, stream, tail_bytes, follow);
        Ok(chunks.map(|c| c.map_err(|e| e.to_string())).boxed())
    }

    fn tasks_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("tasks")
    }

    fn task_dir(&self, id: &str) -> PathBuf {
        self.tasks_dir().join(id)
    }

    fn lock_supervised(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Desired>>> {
        self.inner.supervised.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reacts to a task record: starts a supervisor for a new task of this node, passes the
    /// desired state to a running one.
    fn on_task(&self, task: Task) {
        if task.node != self.inner.config.node {
            return;
        }
        let mut supervised = self.lock_supervised();
        if let Some(desired) = supervised.get(&task.id) {
            // A task the control plane gave up on (lost while this node was unreachable) runs
            // elsewhere by now: this copy is a duplicate and stops.
            let desired_now = if task.state.is_terminal() {
                Desired::Stop
            } else {
                task.desired
            };
            let _ = desired.send(desired_now);
            return;
        }
        if task.desired == Desired::Run && matches!(task.state, TaskState::Pending | TaskState::Restarting) {
            let (tx, rx) = watch::channel(task.desired);
            supervised.insert(task.id.clone(), tx);
            drop(supervised);
            self.spawn_supervisor(task.id, Start::Fresh, rx);
        }
    }

    fn spawn_supervisor(&self, task_id: String, start: Start, desired: watch::Receiver<Desired>) {
        let agent = self.clone();
        tokio::spawn(async move {
            supervisor::supervise(&agent, &task_id, start, desired).await;
            agent.lock_supervised().remove(&task_id);
        });
    }

    /// Re-adopts what a previous run of the agent left: live processes keep running under a
    /// new supervisor, ended ones report their true exit status, and tasks the store thinks
    /// run here but nothing knows of are marked lost.
    async fn adopt(&self) -> Result<(), AgentError> {
        let mut known = Vec::new();
        for (_dir, record) in LocalRecord::load_all(&self.tasks_dir()) {
            known.push(record.task_id.clone());
            let start = match &record.process {
                None => Start::Fresh,
                Some(process) => match self.inner.runtime.probe(process).await {
                    Probe::Running => Start::Adopt(record.clone()),
                    Probe::Exited(status) => Start::Exited(record.clone(), status),
                    Probe::Gone => Start::Vanished(record.clone()),
                },
            };
            self.lock_ports().claim(record.ports.values().copied());
            let Some(task) = self.inner.repo.task(&record.task_id).await? else {
                warn!(task = %record.task_id, "record of a task the store no longer has; stopping it");
                supervisor::discard(self, &record).await;
                continue;
            };
            info!(task = %record.task_id, how = start.describe(), "re-adopting task");
            let (tx, rx) = watch::channel(task.value.desired);
            self.lock_supervised().insert(record.task_id.clone(), tx);
            self.spawn_supervisor(record.task_id.clone(), start, rx);
        }
        self.mark_unknown_lost(&known).await?;
        self.sweep_forgotten().await
    }

    /// Deletes the files of a task the store forgot, unless a supervisor still runs it.
    fn forget_files(&self, task_id: &str) {
        if task_id.is_empty() || self.lock_supervised().contains_key(task_id) {
            return;
        }
        match std::fs::remove_dir_all(self.task_dir(task_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(task = %task_id, error = %e, "cannot delete the files of a forgotten task");
            }
            _ => {}
        }
    }

    /// Deletes task directories whose task the store no longer has (forgotten while the agent
    /// was down).
    async fn sweep_forgotten(&self) -> Result<(), AgentError> {
        let Ok(entries) = std::fs::read_dir(self.tasks_dir()) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.inner.repo.task(&name).await?.is_none() {
                self.forget_files(&name);
            }
        }
        Ok(())
    }

    async fn mark_unknown_lost(&self, known: &[String]) -> Result<(), AgentError> {
        let now = self.inner.clock.now_ms();
        for task in self.inner.repo.tasks().await? {
            let t = task.value;
            let orphan = t.node == self.inner.config.node
                && matches!(t.state, TaskState::Starting | TaskState::Running)
                && !known.contains(&t.id);
            if orphan {
                warn!(task = %t.id, "task has no record on this node; marking it lost");
                self.inner
                    .repo
                    .update_task(&t.id, |t| {
                        if t.state.is_terminal() {
                            return Ok(Change::Keep);
                        }
                        t.set_state(TaskState::Lost, now)
                            .map_err(|e| RepoError::Rejected(e.to_string()))?;
                        t.reason = "the agent restarted and found no record of this task".to_owned();
                        Ok(Change::Write)
                    })
                    .await?;
            }
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), AgentError> {
        let c = &self.inner.config;
        let node = Node {
            name: c.node.clone(),
            region: c.region.clone(),
            zone: c.zone.clone(),
            labels: c.labels.clone(),
            cpu: c.cpu,
            memory_bytes: c.memory_bytes,
            state: "ready".to_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_at_ms: self.inner.clock.now_ms(),
            runtime: self.inner.runtime.describe(),
            address: c.address.clone(),
            heartbeat_interval_ms: u64::try_from(c.heartbeat.as_millis()).unwrap_or(u64::MAX),
            eligible: true,
            drain_deadline_ms: None,
            dynamic_ports: Some(u32::from(c.ports.end.saturating_sub(c.ports.start))),
        };
        self.inner.repo.heartbeat_node(&node).await?;
        Ok(())
    }

    fn lock_ports(&self) -> std::sync::MutexGuard<'_, Ports> {
        self.inner.ports.lock().unwrap_or_else(|e| e.into_inner())
    }
}
