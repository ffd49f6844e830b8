//! The hub against a real redb store: which reports count, and how a log travels between a
//! reader and an agent's session.

use futures::StreamExt;
use paved_api::v1 as pb;
use paved_store::Expect;
use paved_types::Task;

use super::{AgentHub, RemoteTasks};
use crate::api::TaskSource;
use crate::mirror::tests::{repo, task};

/// A task of tenant acme's job web, placed on `node`.
fn placed(suffix: &str, node: &str) -> Task {
    let mut task = task("aa", suffix);
    task.tenant = "acme".into();
    task.node = node.into();
    task
}

fn usage(task: &Task, memory_bytes: u64) -> pb::ReportedTaskStats {
    pb::ReportedTaskStats {
        task_id: task.id.clone(),
        stats: Some(pb::TaskStats {
            memory_bytes,
            ..Default::default()
        }),
    }
}

fn render(registry: &paved_telemetry::Registry) -> String {
    paved_telemetry::prometheus::render(registry)
}

#[tokio::test]
async fn a_node_reports_only_for_its_own_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(&dir);
    let (mine, theirs) = (placed("01", "n1"), placed("02", "n2"));
    for t in [&mine, &theirs] {
        repo.put_task(t, Expect::Absent).await.unwrap();
    }
    let hub = AgentHub::new(repo);
    let source = RemoteTasks(hub.clone());
    let (session, _commands) = hub.open("n1");
    assert!(!hub.connected("n1"), "a session is live once it reports");
    let report = pb::AgentMessage {
        stats: Some(pb::TaskStatsReport {
            tasks: vec![usage(&mine, 100), usage(&theirs, 200)],
        }),
        log: None,
    };
    session
        .serve(futures::stream::iter([Ok::<_, String>(report)]))
        .await;
    // The stream ended, so the session closed: nothing it said counts any more.
    assert!(!hub.connected("n1"));
    assert_eq!(source.stats(&mine), None);

    let (session, _commands) = hub.open("n1");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let serving = tokio::spawn(session.serve(tokio_stream::wrappers::ReceiverStream::new(rx)));
    let report = |tasks| pb::AgentMessage {
        stats: Some(pb::TaskStatsReport { tasks }),
        log: None,
    };
    tx.send(Ok::<_, String>(report(vec![
        usage(&mine, 100),
        usage(&theirs, 200),
    ])))
    .await
    .unwrap();
    wait_until(|| hub.connected("n1")).await;
    assert_eq!(source.stats(&mine).map(|s| s.memory_bytes), Some(100));
    assert_eq!(source.stats(&theirs), None, "n2's task is not n1's to report");
    let registry = paved_telemetry::Registry::new();
    let emitting = hub.clone();
    registry.register_collector(move |out| emitting.emit(out));
    let text = render(&registry);
    assert!(
        text.contains(&format!(
            "paved_task_memory_bytes{{job=\"web\",node=\"n1\",task=\"{}\",tenant=\"acme\"}} 100",
            mine.id
        )),
        "{text}"
    );
    assert!(!text.contains(&theirs.id), "{text}");
    // The next report replaces the last: a task left out has no usage any more.
    tx.send(Ok(report(vec![]))).await.unwrap();
    wait_until(|| source.stats(&mine).is_none()).await;
    drop(tx);
    serving.await.unwrap();
}

#[tokio::test]
async fn a_log_travels_from_the_session_to_its_reader_and_stops_when_the_reader_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let Live {
        mine,
        source,
        mut commands,
        tx,
        serving,
    } = live_session(&dir).await;

    let mut reader = source.open(&mine, false, 0, true).await.unwrap();
    let open = commands.next().await.unwrap().open_log.expect("an OpenLog");
    assert_eq!((open.task_id.as_str(), open.follow), (mine.id.as_str(), true));
    let piece = |data: &[u8], end: bool, error: &str| pb::AgentMessage {
        stats: None,
        log: Some(pb::LogData {
            stream_id: open.stream_id,
            data: data.to_vec(),
            end,
            error: error.into(),
        }),
    };
    tx.send(Ok(piece(b"hello\n", false, ""))).await.unwrap();
    assert_eq!(reader.next().await.unwrap().unwrap().as_ref(), b"hello\n");
    // The reader leaves: the agent is told to stop sending.
    drop(reader);
    let close = commands.next().await.unwrap().close_log.expect("a CloseLog");
    assert_eq!(close.stream_id, open.stream_id);

    // An agent that fails to read a log says why, and the reader sees an error.
    let mut reader = source.open(&mine, false, 0, false).await.unwrap();
    let open = commands.next().await.unwrap().open_log.expect("an OpenLog");
    let failed = pb::AgentMessage {
        stats: None,
        log: Some(pb::LogData {
            stream_id: open.stream_id,
            end: true,
            error: "task has no logs on this node".into(),
            ..Default::default()
        }),
    };
    tx.send(Ok(failed)).await.unwrap();
    assert!(reader.next().await.unwrap().is_err());
    assert!(reader.next().await.is_none());

    // The session ends while a reader follows: it gets an error, not a quiet end.
    let mut reader = source.open(&mine, false, 0, true).await.unwrap();
    drop(tx);
    serving.await.unwrap();
    assert!(reader.next().await.unwrap().is_err());
    assert!(
        source.open(&mine, false, 0, true).await.is_err(),
        "no session, no log"
    );
}

/// Node n1's live session with a hub on a real store, and a task placed on n1.
struct Live {
    mine: Task,
    source: RemoteTasks,
    commands: tokio_stream::wrappers::ReceiverStream<pb::ServerMessage>,
    /// What the agent sends up the session.
    tx: tokio::sync::mpsc::Sender<Result<pb::AgentMessage, String>>,
    serving: tokio::task::JoinHandle<()>,
}

async fn live_session(dir: &tempfile::TempDir) -> Live {
    let repo = repo(dir);
    let mine = placed("01", "n1");
    repo.put_task(&mine, Expect::Absent).await.unwrap();
    let hub = AgentHub::new(repo);
    let (session, commands) = hub.open("n1");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let serving = tokio::spawn(session.serve(tokio_stream::wrappers::ReceiverStream::new(rx)));
    let stats = pb::AgentMessage {
        stats: Some(pb::TaskStatsReport::default()),
        log: None,
    };
    tx.send(Ok(stats)).await.unwrap();
    wait_until(|| hub.connected("n1")).await;
    Live {
        mine,
        source: RemoteTasks(hub),
        commands,
        tx,
        serving,
    }
}

async fn wait_until(check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out");
}

/// A reader that takes nothing holds up its agent's whole session (usage too): after a while it
/// is cut off and the agent told to stop sending.
#[tokio::test(start_paused = true)]
async fn a_stalled_reader_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let Live {
        mine,
        source,
        mut commands,
        tx,
        serving: _serving,
    } = live_session(&dir).await;

    let _stalled = source.open(&mine, false, 0, true).await.unwrap();
    let open = commands.next().await.unwrap().open_log.expect("an OpenLog");
    for _ in 0..=super::LOG_BUFFER {
        let piece = pb::AgentMessage {
            stats: None,
            log: Some(pb::LogData {
                stream_id: open.stream_id,
                data: b"line\n".to_vec(),
                ..Default::default()
            }),
        };
        tx.send(Ok(piece)).await.unwrap();
    }
    // Time is paused and jumps ahead while every task waits: a minute passes at once.
    let next = tokio::time::timeout(std::time::Duration::from_secs(60), commands.next());
    let close = next.await.expect("the stalled reader cut off within a minute");
    let close = close.unwrap().close_log.expect("a CloseLog");
    assert_eq!(close.stream_id, open.stream_id);
}
