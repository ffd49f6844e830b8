//! An agent's sessions with its servers (`NodeStore.Session`): what only the agent knows goes
//! up them. Every few seconds the usage of the tasks it runs; and the logs a server asks for,
//! when a user reads a task's log through it. The agent keeps one session with every server
//! it was given, so each can answer for this node, and opens a broken one again.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use paved_api::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_stream::wrappers::ReceiverStream;

use crate::remote::{Client, RemoteStore};
use crate::{Agent, STATS_INTERVAL};

/// Between a session ending and the next attempt.
const RECONNECT: Duration = Duration::from_secs(1);
/// Messages queued for the server before senders wait.
const OUTBOX: usize = 64;

/// Keeps a session with every server of `store` until the returned tasks are aborted.
pub fn keep_sessions(agent: &Agent, store: &RemoteStore) -> Vec<JoinHandle<()>> {
    store
        .servers()
        .iter()
        .map(|(url, client)| {
            let (agent, url, client) = (agent.clone(), url.clone(), client.clone());
            tokio::spawn(async move {
                loop {
                    match session(&agent, client.clone()).await {
                        Ok(()) => tracing::debug!(server = %url, "session ended; opening it again"),
                        Err(e) => {
                            tracing::debug!(server = %url, error = %e.message(), "session failed; retrying")
                        }
                    }
                    tokio::time::sleep(RECONNECT).await;
                }
            })
        })
        .collect()
}

/// One session, until the server or the connection ends it.
async fn session(agent: &Agent, mut client: Client) -> Result<(), tonic::Status> {
    let (outbox, outgoing) = mpsc::channel(OUTBOX);
    let mut requests = client.session(ReceiverStream::new(outgoing)).await?.into_inner();
    let mut report = tokio::time::interval(STATS_INTERVAL);
    // Dropping the set (the session ended) stops every log being sent.
    let mut senders = JoinSet::new();
    let mut streams: HashMap<u64, AbortHandle> = HashMap::new();
    loop {
        tokio::select! {
            _ = report.tick() => {
                if outbox.send(usage(agent)).await.is_err() {
                    return Ok(());
                }
            }
            Some(_) = senders.join_next(), if !senders.is_empty() => {
                streams.retain(|_, sender| !sender.is_finished());
            }
            request = requests.message() => {
                let Some(request) = request? else { return Ok(()) };
                if let Some(open) = request.open_log {
                    let stream_id = open.stream_id;
                    let sender = senders.spawn(send_log(agent.clone(), open, outbox.clone()));
                    streams.insert(stream_id, sender);
                }
                if let Some(close) = request.close_log
                    && let Some(sender) = streams.remove(&close.stream_id)
                {
                    sender.abort();
                }
            }
        }
    }
}

/// The usage of every task sampled here, as one report.
fn usage(agent: &Agent) -> pb::AgentMessage {
    let tasks = agent
        .samples()
        .into_iter()
        .map(|(task_id, sample)| pb::ReportedTaskStats {
            task_id,
            stats: Some(sample.to_message()),
        })
        .collect();
    pb::AgentMessage {
        stats: Some(pb::TaskStatsReport { tasks }),
        log: None,
    }
}

/// Sends the log `open` asks for, then a last message saying how it ended.
async fn send_log(agent: Agent, open: pb::OpenLog, outbox: mpsc::Sender<pb::AgentMessage>) {
    let message = |data: Vec<u8>, end: bool, error: String| pb::AgentMessage {
        stats: None,
        log: Some(pb::LogData {
            stream_id: open.stream_id,
            data,
            end,
            error,
        }),
    };
    let error = match agent
        .logs_of(&open.task_id, open.stderr, open.tail_bytes, open.follow)
        .await
    {
        Err(e) => e.to_string(),
        Ok(mut chunks) => loop {
            match chunks.next().await {
                None => break String::new(),
                Some(Err(e)) => break e,
                Some(Ok(data)) => {
                    if outbox
                        .send(message(data.to_vec(), false, String::new()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        },
    };
    let _ = outbox.send(message(Vec::new(), true, error)).await;
}
