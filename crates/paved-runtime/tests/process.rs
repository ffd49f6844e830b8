//! `ProcessRuntime` against the runtime conformance suite, plus what only this backend (and its
//! shim) promises, with `paved-shim` standing in for the `paved` binary.

use std::path::PathBuf;
use std::time::Duration;

use paved_runtime::conformance::Harness;
use paved_runtime::{ExitStatus, Probe, ProcessRuntime, Runtime, TaskRecord};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};

const SHIM: &str = env!("CARGO_BIN_EXE_paved-shim");
const DEADLINE: Duration = Duration::from_secs(20);

fn harness() -> (tempfile::TempDir, Harness) {
    let root = tempfile::tempdir().expect("temp dir");
    let harness = Harness {
        new_runtime: Box::new(|| Box::new(ProcessRuntime::new(PathBuf::from(SHIM)))),
        root: root.path().to_path_buf(),
        home: TaskRecord::work_dir,
    };
    (root, harness)
}

paved_runtime::conformance_tests!(harness);

/// A real agent process starts a task and is SIGKILLed; a new runtime adopts the task, whose
/// shim is now nobody's child, and learns its true exit code.
#[tokio::test]
async fn task_survives_its_agent_being_killed() {
    let (_guard, h) = harness();
    let dir = h.root.join("orphan");
    let script = "trap 'exit 7' TERM; while true; do echo tick; sleep 0.02; done";
    let mut agent = tokio::process::Command::new(SHIM)
        .arg("__agent")
        .arg(&dir)
        .args(["sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the agent");
    let stdout = agent.stdout.take().expect("agent stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read")
        .expect("a record");
    let record: TaskRecord = serde_json::from_str(&line).expect("record json");
    agent.kill().await.expect("SIGKILL the agent");

    let logged = || std::fs::metadata(dir.join("stdout.log")).map_or(0, |m| m.len());
    let before = logged();
    eventually("logs written after the agent died", || logged() > before).await;
    assert_ne!(parent_of(record.shim_pid), std::process::id());

    let runtime = ProcessRuntime::new(PathBuf::from(SHIM));
    assert_eq!(runtime.probe(&record).await, Probe::Running);
    runtime.signal(&record, 15).await.expect("SIGTERM");
    assert_eq!(wait(&runtime, &record).await, exited(7));
    runtime.cleanup(&record).await.expect("cleanup");
}

/// SIGHUP, SIGINT and SIGPIPE do not kill the shim: after them it still records how the task
/// ended. It runs in a session of its own, the task in its own group of that session.
#[tokio::test]
async fn shim_survives_terminal_signals_in_its_own_session() {
    let (_guard, h) = harness();
    let runtime = ProcessRuntime::new(PathBuf::from(SHIM));
    let record = runtime
        .start(&h.spec("signals", &["sleep", "100"]))
        .await
        .expect("start");
    assert_eq!(
        session_and_group(record.shim_pid),
        (record.shim_pid, record.shim_pid)
    );
    assert_eq!(session_and_group(record.pid), (record.shim_pid, record.pid));
    let shim = Pid::from_raw(record.shim_pid as i32).expect("shim pid");
    for signal in [Signal::HUP, Signal::INT, Signal::PIPE] {
        rustix::process::kill_process(shim, signal).expect("signal the shim");
    }
    runtime.signal(&record, 15).await.expect("SIGTERM");
    let status = wait(&runtime, &record).await;
    assert_eq!(
        status,
        ExitStatus {
            signal: Some(15),
            ..ExitStatus::default()
        }
    );
    // Its parent reaped the shim: no zombie is left.
    assert!(!PathBuf::from(format!("/proc/{}", record.shim_pid)).exists());
    runtime.cleanup(&record).await.expect("cleanup");
}

/// A process that left the task's group (but not the shim's session) still ends with the task,
/// even while it holds the task's stdout, and the shim reaps it.
#[tokio::test]
async fn leftovers_outside_the_group_end_with_the_task() {
    let script = "my $pid = fork(); \
                  if ($pid == 0) { setpgrp(0, 0); sleep 100; exit 0 } \
                  while (getpgrp($pid) != $pid) { select(undef, undef, undef, 0.01) } \
                  open(my $f, '>', 'escaped.pid'); print $f $pid; close $f; exit 4";
    let (_guard, h) = harness();
    let runtime = ProcessRuntime::new(PathBuf::from(SHIM));
    let record = runtime
        .start(&h.spec("escape", &["perl", "-e", script]))
        .await
        .expect("start");
    assert_eq!(wait(&runtime, &record).await, exited(4));
    let escaped = std::fs::read_to_string(record.work_dir().join("escaped.pid")).expect("escaped.pid");
    assert!(
        !PathBuf::from(format!("/proc/{}", escaped.trim())).exists(),
        "pid {escaped} survived"
    );
    runtime.cleanup(&record).await.expect("cleanup");
}

#[tokio::test]
async fn rejects_specs_and_records_it_cannot_use() {
    let (_guard, h) = harness();
    let runtime = ProcessRuntime::new(PathBuf::from(SHIM));
    let mut spec = h.spec("bad", &[]);
    assert_eq!(
        runtime.start(&spec).await.expect_err("empty command").code(),
        "runtime.invalid_spec"
    );
    spec.command = vec!["true".into()];
    spec.env.insert("A=B".into(), "c".into());
    assert_eq!(
        runtime.start(&spec).await.expect_err("bad env").code(),
        "runtime.invalid_spec"
    );
    let record = TaskRecord {
        task_id: "init".into(),
        dir: h.root.clone(),
        pid: 1,
        shim_pid: 1,
        shim_start_time: 0,
        runtime: "process".into(),
    };
    let error = runtime.signal(&record, 9).await.expect_err("pid 1");
    assert_eq!(error.code(), "runtime.invalid_record");
    let error = runtime.signal(&record, 4242).await.expect_err("no such signal");
    assert_eq!(error.code(), "runtime.invalid_signal");
}

#[tokio::test]
async fn a_missing_shim_executable_is_named() {
    let (_guard, h) = harness();
    let runtime = ProcessRuntime::new(PathBuf::from("/nonexistent/paved"));
    let error = runtime
        .start(&h.spec("noshim", &["true"]))
        .await
        .expect_err("no shim");
    assert!(error.to_string().contains("/nonexistent/paved"), "{error}");
}

async fn wait(runtime: &ProcessRuntime, record: &TaskRecord) -> ExitStatus {
    let waited = tokio::time::timeout(DEADLINE, runtime.wait(record)).await;
    waited.expect("the task to end").expect("wait")
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        ..ExitStatus::default()
    }
}

/// Fields 6 (session) and 5 (process group) of `/proc/<pid>/stat`.
fn session_and_group(pid: u32) -> (u32, u32) {
    let fields = stat_fields(pid);
    (
        fields[3].parse().expect("session"),
        fields[2].parse().expect("pgrp"),
    )
}

fn parent_of(pid: u32) -> u32 {
    stat_fields(pid)[1].parse().expect("ppid")
}

/// The fields of `/proc/<pid>/stat` from field 3 (state) on.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 1..];
    rest.split_whitespace().map(str::to_owned).collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
