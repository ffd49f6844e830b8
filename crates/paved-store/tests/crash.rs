//! Real process tests: a child process (this test binary, re-run with `CHILD_ENV` set) writes
//! to a store and is killed with SIGKILL; every write it acknowledged must be there after a
//! reopen. Also checks that a store held by another process is refused, and freed when that
//! process dies.
//!
//! SIGKILL tests process crashes only: the page cache survives, so power loss is covered by
//! the write-ahead log's fdatasync before each acknowledgement, not by this test. Half the
//! rounds use a tiny checkpoint size, so the child checkpoints and starts its log over many
//! times, and is killed with records of earlier passes still in the file.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use paved_store::{Expect, RedbOptions, RedbStore, Store, StoreError};

/// Set in the child to `write:<path>` (write until killed), `write-small-log:<path>` (the
/// same, checkpointing every few writes) or `hold:<path>` (open, then wait).
const CHILD_ENV: &str = "PAVED_STORE_TEST_CHILD";
const WRITERS: usize = 16;
const ACKS_BEFORE_KILL: usize = 400;
const DEADLINE: Duration = Duration::from_secs(60);

/// The child's side; a no-op unless started by the tests below.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match role.split_once(':') {
        Some(("write", path)) => {
            runtime.block_on(write_until_killed(Path::new(path), RedbOptions::default()))
        }
        Some(("write-small-log", path)) => {
            let options = RedbOptions {
                checkpoint_bytes: 4096,
                ..RedbOptions::default()
            };
            runtime.block_on(write_until_killed(Path::new(path), options));
        }
        Some(("hold", path)) => {
            let _store = RedbStore::open(Path::new(path)).expect("child opens the store");
            say("READY");
            std::thread::sleep(DEADLINE);
        }
        _ => panic!("unknown child role {role:?}"),
    }
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    for round in 0..4 {
        let role = if round % 2 == 0 {
            "write"
        } else {
            "write-small-log"
        };
        let acks = run_writer_and_kill(&path, role);
        assert!(
            acks.len() >= ACKS_BEFORE_KILL,
            "round {round}: only {} acks",
            acks.len()
        );
        check_acknowledged(&path, &acks, round);
    }
}

#[test]
fn store_held_by_another_process_is_refused_until_it_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let mut holder = spawn_child("hold", &path);
    let (lines, _reader) = read_lines(&mut holder);
    // The test harness prints its own text first, on the same line too.
    while !lines
        .recv_timeout(DEADLINE)
        .expect("holder ready")
        .ends_with("READY")
    {}
    match RedbStore::open(&path) {
        Err(StoreError::Open { reason, .. }) => assert!(reason.contains("already open"), "{reason}"),
        other => panic!("want StoreError::Open while another process holds it, got {other:?}"),
    }
    kill(&mut holder);
    RedbStore::open(&path).expect("the lock dies with the process");
}

/// Starts a writer child, waits for enough acknowledgements, kills it with SIGKILL, and
/// returns every acknowledged (key, revision) it printed before dying.
fn run_writer_and_kill(path: &Path, role: &str) -> Vec<(String, u64)> {
    let mut child = spawn_child(role, path);
    let (lines, reader) = read_lines(&mut child);
    let start = Instant::now();
    let mut acks = Vec::new();
    while acks.len() < ACKS_BEFORE_KILL && start.elapsed() < DEADLINE {
        match lines.recv_timeout(DEADLINE) {
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(_) => break,
        }
    }
    kill(&mut child);
    reader.join().expect("reader thread");
    // What the child printed before it died was acknowledged too.
    acks.extend(lines.try_iter().filter_map(|line| parse_ack(&line)));
    acks
}

fn check_acknowledged(path: &Path, acks: &[(String, u64)], round: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = RedbStore::open(path).expect("reopen after SIGKILL");
        let revision = store.revision().await.expect("revision");
        for (key, acked) in acks {
            let kv = store.get(key).await.expect("get");
            let kv = kv.unwrap_or_else(|| panic!("round {round}: acknowledged {key} is lost"));
            assert_eq!(kv.mod_revision, *acked, "round {round}: {key} revision");
            assert_eq!(kv.value, key.as_bytes(), "round {round}: {key} value");
            assert!(
                *acked <= revision,
                "round {round}: {key} acked after the store revision"
            );
        }
        check_history(&store, acks, revision, round).await;
    });
}

/// The history a watch replays holds every acknowledged write, at its revision, and the
/// revisions of what was written come one after another.
async fn check_history(store: &RedbStore, acks: &[(String, u64)], revision: u64, round: usize) {
    let mut watch = store.watch("/crash/", 0).await.expect("watch the history");
    let mut seen = std::collections::HashSet::new();
    let mut last = 0;
    while last < revision {
        let event = tokio::time::timeout(DEADLINE, watch.next())
            .await
            .unwrap_or_else(|_| panic!("round {round}: history ends at {last}, the store at {revision}"))
            .expect("the watch goes on")
            .expect("history replays");
        assert_eq!(event.revision, last + 1, "round {round}: revisions without a gap");
        last = event.revision;
        seen.insert((event.key, event.revision));
    }
    for ack in acks {
        assert!(seen.contains(ack), "round {round}: {ack:?} is not in the history");
    }
}

fn spawn_child(role: &str, path: &Path) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{role}:{}", path.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// The child's stdout lines, read on a thread so the parent can wait with a deadline.
fn read_lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().expect("child stdout is piped");
    let (send, receive) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    (receive, reader)
}

fn kill(child: &mut Child) {
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
}

/// Reads `ACK <key> <revision>`, which may follow the harness's `test child ... `.
fn parse_ack(line: &str) -> Option<(String, u64)> {
    let (_, ack) = line.split_once("ACK ")?;
    let (key, revision) = ack.split_once(' ')?;
    Some((key.to_owned(), revision.parse().ok()?))
}

async fn write_until_killed(path: &Path, options: RedbOptions) {
    let store = std::sync::Arc::new(RedbStore::open_with(path, options).expect("child opens the store"));
    let run = std::process::id();
    let writers = (0..WRITERS).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/crash/{run}/{w}/{i}");
                let revision = store.put(&key, key.clone().into_bytes(), Expect::Absent).await;
                say(&format!("ACK {key} {}", revision.expect("child write")));
            }
        })
    });
    futures::future::join_all(writers).await;
}

/// Prints a line for the parent, bypassing the test harness's capture, and flushes it: a line
/// printed is a write acknowledged.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .expect("write to the parent");
}
