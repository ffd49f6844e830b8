//! Sessions with agents on other machines (`NodeStore.Session`): what only an agent knows, its
//! tasks' live usage and their logs, reaches the API through them.
//!
//! An agent opens one session with every server it knows, so whichever server a user asks
//! answers for every node. Usage arrives every few seconds as the node's whole set and replaces
//! the previous one; logs are asked for when a user reads them and flow back tagged with a
//! stream id. A node's reports count only for the tasks the store places on it: who a task
//! belongs to (its tenant and job, which tag its series) comes from its record, never from the
//! agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use paved_api::v1 as pb;
use paved_telemetry::Emitter;
use paved_telemetry::catalog::emit_task_usage;
use paved_types::Task;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::TaskSource;
use crate::error::ApiError;
use crate::repo::Repo;

/// How long a node's last report counts: a few of its sampling intervals. Older usage reads as
/// unknown rather than as a stale number.
const REPORT_TTL: Duration = Duration::from_secs(10);
/// Longest a session waits for one log reader to take a piece before cutting it off.
const STALLED_READER: Duration = Duration::from_secs(5);
/// Log messages buffered for one reader before the session waits for it.
const LOG_BUFFER: usize = 32;
/// Most tasks one report may name: more than a node runs, and a bound on the store reads a
/// report can cause (each task first seen is looked up once).
const MAX_REPORTED_TASKS: usize = 10_000;
/// Server messages buffered for one agent.
const COMMAND_BUFFER: usize = 64;

/// The connected agents and what they reported; shared by every handler of one server.
pub struct AgentHub {
    repo: Repo,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Distinguishes a node's sessions, so an old one ending does not close its successor.
    next_id: u64,
    sessions: HashMap<String, Session>,
}

struct Session {
    id: u64,
    commands: mpsc::Sender<pb::ServerMessage>,
    /// Readers of the logs this session is sending, by stream id.
    logs: HashMap<u64, mpsc::Sender<Result<Bytes, String>>>,
    /// The node's latest usage report, and when it came.
    usage: HashMap<String, Usage>,
    reported_at: Option<Instant>,
}

/// A task's latest usage and who it belongs to.
struct Usage {
    tenant: String,
    job: String,
    stats: pb::TaskStats,
}

/// One agent's session with this server, from `open` until its stream ends.
pub struct AgentSession {
    hub: Arc<AgentHub>,
    node: String,
    id: u64,
}

impl AgentHub {
    pub fn new(repo: Repo) -> Arc<AgentHub> {
        Arc::new(AgentHub {
            repo,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `node`'s session, replacing any earlier one of the same node (an agent that
    /// reconnected); returns it and the messages to send the agent.
    pub fn open(self: &Arc<Self>, node: &str) -> (AgentSession, ReceiverStream<pb::ServerMessage>) {
        let (commands, rx) = mpsc::channel(COMMAND_BUFFER);
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        let session = Session {
            id,
            commands,
            logs: HashMap::new(),
            usage: HashMap::new(),
            reported_at: None,
        };
        state.sessions.insert(node.to_owned(), session);
        let session = AgentSession {
            hub: self.clone(),
            node: node.to_owned(),
            id,
        };
        (session, ReceiverStream::new(rx))
    }

    /// Whether `node`'s agent has a live session with this server: one that reported lately.
    /// A session whose agent was cut off can linger until the connection times out; asking it
    /// for logs would wait for nothing.
    pub fn connected(&self, node: &str) -> bool {
        self.lock().sessions.get(node).is_some_and(Session::fresh)
    }

    /// The `paved_task_*` series of every remote task with a fresh report.
    pub fn emit(&self, out: &mut Emitter<'_>) {
        let state = self.lock();
        for (node, session) in &state.sessions {
            if !session.fresh() {
                continue;
            }
            for (task_id, usage) in &session.usage {
                let labels = [
                    ("tenant", usage.tenant.as_str()),
                    ("job", usage.job.as_str()),
                    ("task", task_id.as_str()),
                    ("node", node.as_str()),
                ];
                let s = &usage.stats;
                emit_task_usage(
                    out,
                    &labels,
                    s.cpu_usage_ns,
                    s.memory_bytes,
                    s.memory_peak_bytes,
                    s.pids,
                );
            }
        }
    }

    /// Replaces the usage `node` reported, keeping only tasks the store places on it.
    async fn record_usage(&self, node: &str, id: u64, mut report: pb::TaskStatsReport) {
        if report.tasks.len() > MAX_REPORTED_TASKS {
            tracing::warn!(
                node,
                tasks = report.tasks.len(),
                "usage report too long; its excess dropped"
            );
            report.tasks.truncate(MAX_REPORTED_TASKS);
        }
        // Owners already known from earlier reports; the rest are read from the store, outside
        // the lock.
        let mut known: HashMap<String, (String, String)> = HashMap::new();
        {
            let mut state = self.lock();
            let Some(session) = state.session(node, id) else {
                return;
            };
            for reported in &report.tasks {
                if let Some(usage) = session.usage.get(&reported.task_id) {
                    known.insert(
                        reported.task_id.clone(),
                        (usage.tenant.clone(), usage.job.clone()),
                    );
                }
            }
        }
        let mut usage = HashMap::with_capacity(report.tasks.len());
        for reported in report.tasks {
            let Some(stats) = reported.stats else { continue };
            let owner = match known.remove(&reported.task_id) {
                Some(owner) => Some(owner),
                None => match self.repo.task(&reported.task_id).await {
                    Ok(Some(task)) if task.value.node == node => {
                        Some((task.value.tenant, task.value.job_name))
                    }
                    Ok(_) => {
                        tracing::debug!(node, task = %reported.task_id, "usage of a task not on the node dropped");
                        None
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot check a reported task's node");
                        None
                    }
                },
            };
            if let Some((tenant, job)) = owner {
                usage.insert(reported.task_id, Usage { tenant, job, stats });
            }
        }
        if let Some(session) = self.lock().session(node, id) {
            session.usage = usage;
            session.reported_at = Some(Instant::now());
        }
    }

    /// Passes a piece of log on to its reader.
    async fn deliver_log(&self, node: &str, id: u64, log: pb::LogData) {
        let reader = {
            let mut state = self.lock();
            let Some(session) = state.session(node, id) else {
                return;
            };
            if log.end {
                session.logs.remove(&log.stream_id)
            } else {
                session.logs.get(&log.stream_id).cloned()
            }
        };
        // A reader that went away already told the agent to stop (`LogReader`'s drop).
        let Some(reader) = reader else { return };
        let mut pieces = Vec::with_capacity(2);
        if !log.data.is_empty() {
            pieces.push(Ok(Bytes::from(log.data)));
        }
        if !log.error.is_empty() {
            pieces.push(Err(log.error));
        }
        for piece in pieces {
            // The whole session waits while one reader is slow (its usage reports too), so a
            // reader that takes nothing for this long is cut off.
            match tokio::time::timeout(STALLED_READER, reader.send(piece)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(
                        node,
                        stream = log.stream_id,
                        "log reader stalled; its stream closed"
                    );
                    self.end_log(node, id, log.stream_id);
                    return;
                }
            }
        }
    }

    /// Stops log stream `stream_id` of session `id`: forgets its reader and tells the agent.
    fn end_log(&self, node: &str, id: u64, stream_id: u64) {
        let mut state = self.lock();
        let Some(session) = state.session(node, id) else {
            return;
        };
        if session.logs.remove(&stream_id).is_some() {
            let close = pb::ServerMessage {
                close_log: Some(pb::CloseLog { stream_id }),
                ..Default::default()
            };
            // A full queue means the agent is not reading; its session will end.
            let _ = session.commands.try_send(close);
        }
    }

    /// Forgets session `id` of `node`, unless a newer one replaced it; its log readers get an
    /// error rather than a quiet end, which would read as the end of the log.
    fn close(&self, node: &str, id: u64) {
        let mut state = self.lock();
        if state.session(node, id).is_some()
            && let Some(session) = state.sessions.remove(node)
        {
            for reader in session.logs.into_values() {
                let _ = reader.try_send(Err(format!("node {node}'s agent went away; read again")));
            }
        }
    }
}

impl State {
    /// Session `id` of `node`, unless a newer one replaced it.
    fn session(&mut self, node: &str, id: u64) -> Option<&mut Session> {
        self.sessions.get_mut(node).filter(|s| s.id == id)
    }
}

impl Session {
    fn fresh(&self) -> bool {
        self.reported_at.is_some_and(|at| at.elapsed() < REPORT_TTL)
    }
}

impl AgentSession {
    /// Takes in the agent's messages until its stream ends or falls silent, then closes the
    /// session.
    pub async fn serve<S, E>(self, mut inbound: S)
    where
        S: Stream<Item = Result<pb::AgentMessage, E>> + Unpin,
        E: std::fmt::Display,
    {
        // An agent reports every few seconds: a session silent for longer lost its agent, even
        // when no connection error says so yet (a partition).
        while let Ok(Some(message)) = tokio::time::timeout(REPORT_TTL, inbound.next()).await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(node = %self.node, error = %e, "agent session broke");
                    break;
                }
            };
            if let Some(report) = message.stats {
                self.hub.record_usage(&self.node, self.id, report).await;
            }
            if let Some(log) = message.log {
                self.hub.deliver_log(&self.node, self.id, log).await;
            }
        }
        tracing::debug!(node = %self.node, "agent session ended");
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.hub.close(&self.node, self.id);
    }
}

/// Ends a log stream at the agent when its reader goes away.
struct LogReader {
    hub: Arc<AgentHub>,
    node: String,
    session: u64,
    stream_id: u64,
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.hub.end_log(&self.node, self.session, self.stream_id);
    }
}

/// The answer for a task whose node cannot be asked.
pub(crate) fn no_session(node: &str) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "node {node} has no session with this server, so its logs cannot be read; \
         check that its agent runs (paved nodes)"
    ))
}

/// The hub answers for tasks on the nodes with a session here.
pub struct RemoteTasks(pub Arc<AgentHub>);

#[async_trait]
impl TaskSource for RemoteTasks {
    async fn open(
        &self,
        task: &Task,
        stderr: bool,
        tail_bytes: u64,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, String>>, ApiError> {
        let hub = &self.0;
        let unreachable = || no_session(&task.node);
        let (rx, commands, reader) = {
            let mut state = hub.lock();
            state.next_id += 1;
            let stream_id = state.next_id;
            let session = state
                .sessions
                .get_mut(&task.node)
                .filter(|s| s.fresh())
                .ok_or_else(unreachable)?;
            let (tx, rx) = mpsc::channel(LOG_BUFFER);
            session.logs.insert(stream_id, tx);
            let reader = LogReader {
                hub: hub.clone(),
                node: task.node.clone(),
                session: session.id,
                stream_id,
            };
            (rx, session.commands.clone(), reader)
        };
        let open = pb::ServerMessage {
            open_log: Some(pb::OpenLog {
                stream_id: reader.stream_id,
                task_id: task.id.clone(),
                stderr,
                tail_bytes,
                follow,
            }),
            ..Default::default()
        };
        commands.send(open).await.map_err(|_| unreachable())?;
        // The reader guard lives as long as the stream, so dropping the stream closes it.
        let stream = ReceiverStream::new(rx).map(move |chunk| {
            let _ = &reader;
            chunk
        });
        Ok(stream.boxed())
    }

    fn stats(&self, task: &Task) -> Option<pb::TaskStats> {
        let state = self.0.lock();
        let session = state.sessions.get(&task.node).filter(|s| s.fresh())?;
        session.usage.get(&task.id).map(|usage| usage.stats)
    }
}

#[cfg(test)]
mod tests;
