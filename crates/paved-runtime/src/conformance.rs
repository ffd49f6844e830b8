//! The behaviour every `Runtime` backend must show, as checks with real processes that panic on
//! failure. A backend's tests run them all with [`conformance_tests!`](crate::conformance_tests).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::{
    EXEC_OUTPUT_LIMIT, ExecOutput, ExitStatus, Probe, Runtime, RuntimeError, Stream, TaskRecord, TaskSpec,
    logs, procfs,
};

/// Generous, so a loaded CI machine does not fail a check; a hang still fails it.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// What the checks need from a backend.
pub struct Harness {
    /// A new runtime instance, as a freshly started (or restarted) agent would create it.
    pub new_runtime: Box<dyn Fn() -> Box<dyn Runtime> + Send + Sync>,
    /// A scratch directory; every check makes its task directories under it.
    pub root: PathBuf,
    /// The `HOME` a task of this backend gets by default, as the task sees it.
    pub home: fn(&TaskRecord) -> PathBuf,
}

/// Expands to one `#[tokio::test]` per check; `$harness` is a function returning
/// `(guard, Harness)`, the guard living as long as the test (a `tempfile::TempDir`, say).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:path) => {
        $crate::conformance_tests!(@each $harness;
            logs_capture_stdout_and_stderr,
            exit_code_is_reported,
            external_sigkill_is_reported,
            signal_reaches_the_whole_group,
            unstartable_commands_fail_clearly,
            env_is_exactly_the_spec,
            signals_start_unblocked,
            logs_rotate_at_the_cap,
            logs_tail_and_follow,
            readoption_after_the_agent_is_gone,
            exit_without_an_agent_is_recorded,
            cleanup_kills_what_a_dead_shim_left,
            exec_runs_beside_the_task,
            exec_reports_how_the_command_ended,
            exec_times_out_and_kills_what_it_leaves,
        );
    };
    (@each $harness:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, harness) = $harness();
                $crate::conformance::$check(&harness).await;
            }
        )*
    };
}

impl Harness {
    /// A spec for a task directory named `name` under the root, with an empty environment.
    pub fn spec(&self, name: &str, command: &[&str]) -> TaskSpec {
        TaskSpec {
            task_id: name.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: Default::default(),
            dir: self.root.join(name),
            log_limit_bytes: 1 << 20,
            ..TaskSpec::default()
        }
    }
}

pub async fn logs_capture_stdout_and_stderr(h: &Harness) {
    let spec = h.spec("logs", &["sh", "-c", "echo to-out; echo to-err >&2"]);
    let (record, status) = run(h, &spec).await;
    assert_eq!(status, exited(0));
    assert_eq!(read_log(&record.dir, Stream::Stdout, 0).await, "to-out\n");
    assert_eq!(read_log(&record.dir, Stream::Stderr, 0).await, "to-err\n");
}

pub async fn exit_code_is_reported(h: &Harness) {
    let (_, status) = run(h, &h.spec("exit3", &["sh", "-c", "exit 3"])).await;
    assert_eq!(status, exited(3));
}

pub async fn external_sigkill_is_reported(h: &Harness) {
    let runtime = (h.new_runtime)();
    let record = start(&*runtime, &h.spec("killed", &["sleep", "100"])).await;
    let pid = rustix::process::Pid::from_raw(record.pid as i32).expect("task pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL the task");
    assert_eq!(wait(&*runtime, &record).await, signaled(SIGKILL));
    finish(&*runtime, &record).await;
}

/// The leader traps SIGTERM and then waits for its child: it ends only if the signal reached
/// the child too.
pub async fn signal_reaches_the_whole_group(h: &Harness) {
    let script = "trap 'echo leader got TERM' TERM; sleep 100 & echo $! > child.pid; \
                  wait $!; wait $!; echo child status $?";
    let runtime = (h.new_runtime)();
    let record = start(&*runtime, &h.spec("group", &["sh", "-c", script])).await;
    let child_pid = eventually("the child's pid", || {
        std::fs::read_to_string(record.work_dir().join("child.pid"))
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    })
    .await;
    // `$!` is known as soon as the shell forks, but until the child execs `sleep` it still runs
    // the shell's TERM trap, which would swallow the signal: wait for the exec.
    eventually("the child to exec sleep", || {
        let comm = |pid: &u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        task_processes(&record)
            .iter()
            .any(|pid| comm(pid).trim() == "sleep")
            .then_some(())
    })
    .await;
    runtime.signal(&record, SIGTERM).await.expect("signal the group");
    assert_eq!(wait(&*runtime, &record).await, exited(0));
    let out = read_log(&record.dir, Stream::Stdout, 0).await;
    assert_eq!(out, "leader got TERM\nchild status 143\n");
    assert!(child_pid > 0);
    assert_eq!(
        task_processes(&record),
        Vec::<u32>::new(),
        "processes outlived the task"
    );
    // Signalling a task that is gone is harmless.
    runtime
        .signal(&record, SIGTERM)
        .await
        .expect("signal an ended task");
    finish(&*runtime, &record).await;
}

/// A command that cannot run fails `start` (or, for a backend that learns it later, ends with
/// an error status) with a message naming the command.
pub async fn unstartable_commands_fail_clearly(h: &Harness) {
    let not_executable = h.root.join("not-exec");
    let data = not_executable.join(crate::WORK_DIR).join("data");
    std::fs::create_dir_all(&data).expect("task dir");
    std::fs::write(data.join("server"), "#!/bin/sh\n").expect("script");
    check_unstartable(h, "missing", "no-such-command-paved", "not found").await;
    check_unstartable(h, "missing-path", "./missing-server", "No such file").await;
    check_unstartable(h, "not-exec", "data/server", "Permission denied").await;
}

pub async fn env_is_exactly_the_spec(h: &Harness) {
    let mut spec = h.spec("env-defaults", &["env"]);
    spec.env.insert("FOO".into(), "bar baz".into());
    spec.env.insert("EMPTY".into(), String::new());
    let (record, _) = run(h, &spec).await;
    let home = format!("HOME={}", (h.home)(&record).display());
    let lines = log_lines(&record).await;
    let path = lines
        .iter()
        .find(|l| l.starts_with("PATH=/"))
        .expect("a default PATH")
        .clone();
    assert_eq!(lines, set(&["FOO=bar baz", "EMPTY=", &home, &path]));

    let mut spec = h.spec("env-given", &["env"]);
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    spec.env.insert("HOME".into(), "/nowhere".into());
    let (record, _) = run(h, &spec).await;
    assert_eq!(
        log_lines(&record).await,
        set(&["PATH=/usr/bin:/bin", "HOME=/nowhere"])
    );
}

/// Whatever the supervisor blocks or ignores for itself, the task starts with nothing blocked
/// and no standard signal ignored. (glibc's posix_spawn leaves its two internal signals, 32 and
/// 33, ignored; they are no concern of the task's.)
pub async fn signals_start_unblocked(h: &Harness) {
    let spec = h.spec("sigmask", &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
    let (record, status) = run(h, &spec).await;
    assert_eq!(status, exited(0));
    let masks: Vec<(String, u64)> = log_lines(&record)
        .await
        .iter()
        .filter_map(|line| {
            let (name, hex) = line.split_once(":\t")?;
            Some((name.to_owned(), u64::from_str_radix(hex, 16).ok()? & 0x7fff_ffff))
        })
        .collect();
    assert_eq!(masks, [("SigBlk".to_owned(), 0), ("SigIgn".to_owned(), 0)]);
}

/// Ten caps of output keep at most two caps, and those are the newest bytes, in order.
pub async fn logs_rotate_at_the_cap(h: &Harness) {
    let cap = 10_000;
    let mut spec = h.spec("rotate", &["seq", "1", "20000"]);
    spec.log_limit_bytes = cap;
    let (record, status) = run(h, &spec).await;
    assert_eq!(status, exited(0));
    let all: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert!(all.len() as u64 > 10 * cap);
    let current = std::fs::read_to_string(record.dir.join("stdout.log")).expect("stdout.log");
    let rotated = std::fs::read_to_string(record.dir.join("stdout.log.1")).expect("stdout.log.1");
    let kept = format!("{rotated}{current}");
    assert!(kept.len() as u64 <= 2 * cap + 4096, "kept {} bytes", kept.len());
    assert!(kept.len() as u64 >= cap, "kept only {} bytes", kept.len());
    assert!(all.ends_with(&kept), "the kept logs are not the newest output");
    assert_eq!(read_log(&record.dir, Stream::Stdout, 0).await, kept);
    assert_eq!(read_log(&record.dir, Stream::Stdout, 12).await, "19999\n20000\n");
    assert_eq!(read_log(&record.dir, Stream::Stdout, 1 << 30).await, kept);
}

/// A follower sees the tail, then what the task writes later, and ends when the task does.
pub async fn logs_tail_and_follow(h: &Harness) {
    let script = "echo zero; echo one; while [ ! -e go ]; do sleep 0.02; done; echo two";
    let runtime = (h.new_runtime)();
    let record = start(&*runtime, &h.spec("follow", &["sh", "-c", script])).await;
    let stdout = record.dir.join(Stream::Stdout.file_name());
    eventually("the first lines", || {
        let text = std::fs::read_to_string(&stdout).ok()?;
        (text == "zero\none\n").then_some(())
    })
    .await;
    let mut follower = logs::read(&record.dir, Stream::Stdout, 4, true);
    let mut seen = String::new();
    while seen.len() < 4 {
        seen.push_str(&next_chunk(&mut follower).await.expect("the tail"));
    }
    assert_eq!(seen, "one\n");
    std::fs::write(record.work_dir().join("go"), "").expect("release the task");
    while let Some(chunk) = next_chunk(&mut follower).await {
        seen.push_str(&chunk);
    }
    assert_eq!(seen, "one\ntwo\n");
    assert_eq!(wait(&*runtime, &record).await, exited(0));
    finish(&*runtime, &record).await;
}

/// The runtime that started a task goes away; the task keeps running and logging, and a new
/// runtime adopts it, stops it and learns how it ended.
pub async fn readoption_after_the_agent_is_gone(h: &Harness) {
    let script = "while true; do echo tick; sleep 0.02; done";
    let spec = h.spec("readopt", &["sh", "-c", script]);
    let record = start(&*(h.new_runtime)(), &spec).await;
    let log = record.dir.join(Stream::Stdout.file_name());
    let logged = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let before = logged();
    eventually("logs written with no runtime around", || {
        (logged() > before).then_some(())
    })
    .await;

    let runtime = (h.new_runtime)();
    assert_eq!(runtime.probe(&record).await, Probe::Running);
    runtime
        .signal(&record, SIGTERM)
        .await
        .expect("signal an adopted task");
    assert_eq!(wait(&*runtime, &record).await, signaled(SIGTERM));
    finish(&*runtime, &record).await;
    assert_eq!(runtime.probe(&record).await, Probe::Exited(signaled(SIGTERM)));
}

/// A task that ends while no runtime watches is found ended, with its true status.
pub async fn exit_without_an_agent_is_recorded(h: &Harness) {
    let script = "while [ ! -e go ]; do sleep 0.02; done; exit 5";
    let spec = h.spec("unwatched", &["sh", "-c", script]);
    let record = start(&*(h.new_runtime)(), &spec).await;
    std::fs::write(record.work_dir().join("go"), "").expect("release the task");

    let runtime = (h.new_runtime)();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match runtime.probe(&record).await {
            Probe::Exited(status) => break assert_eq!(status, exited(5)),
            Probe::Running => assert!(Instant::now() < deadline, "task never ended"),
            Probe::Gone => panic!("an ended task left no status"),
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(wait(&*runtime, &record).await, exited(5));
    finish(&*runtime, &record).await;
}

/// The shim is SIGKILLed: `wait` says so, and cleanup kills the task it left behind.
pub async fn cleanup_kills_what_a_dead_shim_left(h: &Harness) {
    let script = "sleep 100 & sleep 100 & wait";
    let runtime = (h.new_runtime)();
    let record = start(&*runtime, &h.spec("orphans", &["sh", "-c", script])).await;
    eventually("the task's children", || {
        (task_processes(&record).len() >= 3).then_some(())
    })
    .await;
    let shim = rustix::process::Pid::from_raw(record.shim_pid as i32).expect("shim pid");
    rustix::process::kill_process(shim, rustix::process::Signal::KILL).expect("SIGKILL the shim");
    let status = wait(&*runtime, &record).await;
    assert!(status.error.is_some(), "no error for a dead shim: {status:?}");
    assert!(!task_processes(&record).is_empty(), "the task died with its shim");
    finish(&*runtime, &record).await;
    assert_eq!(runtime.probe(&record).await, Probe::Gone);
}

/// A command run beside a task works where the task works, with its environment; its stdout
/// and stderr come back together, cut at the limit without blocking the command.
pub async fn exec_runs_beside_the_task(h: &Harness) {
    let runtime = (h.new_runtime)();
    let mut spec = h.spec(
        "exec",
        &["sh", "-c", "echo \"$(pwd) $HOME $FOO\" > seen; exec sleep 100"],
    );
    spec.env.insert("FOO".into(), "bar".into());
    let record = start(&*runtime, &spec).await;
    eventually("the task's view", || {
        std::fs::metadata(record.work_dir().join("seen")).ok()
    })
    .await;
    let script = "echo out; echo err >&2; echo \"$(pwd) $HOME $FOO\" | cmp -s - seen && echo same";
    let got = exec(&*runtime, &record, &spec, &["sh", "-c", script], DEADLINE).await;
    assert_eq!(got, exec_output(exited(0), "out\nerr\nsame\n"));
    let chatty = ["sh", "-c", "yes | head -c 1000000; echo done >&2"];
    let got = exec(&*runtime, &record, &spec, &chatty, DEADLINE).await;
    assert_eq!(got.status, exited(0));
    assert_eq!(got.output, "y\n".repeat(EXEC_OUTPUT_LIMIT / 2));
    stop(&*runtime, &record).await;
}

pub async fn exec_reports_how_the_command_ended(h: &Harness) {
    let runtime = (h.new_runtime)();
    let spec = h.spec("exec-end", &["sleep", "100"]);
    let record = start(&*runtime, &spec).await;
    let got = exec(
        &*runtime,
        &record,
        &spec,
        &["sh", "-c", "echo bad; exit 3"],
        DEADLINE,
    )
    .await;
    assert_eq!(got, exec_output(exited(3), "bad\n"));
    let got = exec(
        &*runtime,
        &record,
        &spec,
        &["sh", "-c", "kill -TERM $$"],
        DEADLINE,
    )
    .await;
    assert_eq!(got, exec_output(signaled(SIGTERM), ""));
    let missing = "no-such-command-paved";
    let got = exec(&*runtime, &record, &spec, &[missing], DEADLINE).await;
    let error = got.status.error.clone().unwrap_or_default();
    assert!(error.contains(missing) && error.contains("not found"), "{got:?}");
    stop(&*runtime, &record).await;
}

/// A command past its timeout is killed with everything it started; one that ends leaves
/// nothing behind either, even a process still holding its output.
pub async fn exec_times_out_and_kills_what_it_leaves(h: &Harness) {
    let runtime = (h.new_runtime)();
    let spec = h.spec("exec-timeout", &["sleep", "100"]);
    let record = start(&*runtime, &spec).await;
    let hang = ["sh", "-c", "sleep 100 & echo $! > hung.pid; echo waiting; wait"];
    let got = exec(&*runtime, &record, &spec, &hang, Duration::from_millis(500)).await;
    let timed_out = ExitStatus::failed("timed out after 500ms");
    assert_eq!(got, exec_output(timed_out, "waiting\n"));
    assert_gone(&record.work_dir().join("hung.pid")).await;
    let leave = ["sh", "-c", "sleep 100 & echo $! > left.pid"];
    let got = exec(&*runtime, &record, &spec, &leave, DEADLINE).await;
    assert_eq!(got, exec_output(exited(0), ""));
    assert_gone(&record.work_dir().join("left.pid")).await;
    stop(&*runtime, &record).await;
}

async fn check_unstartable(h: &Harness, name: &str, command: &str, reason: &str) {
    let runtime = (h.new_runtime)();
    let message = match runtime.start(&h.spec(name, &[command])).await {
        Err(RuntimeError::StartFailed { reason, .. }) => reason,
        Err(e) => panic!("{command}: unexpected error {e}"),
        Ok(record) => {
            let status = wait(&*runtime, &record).await;
            finish(&*runtime, &record).await;
            status
                .error
                .clone()
                .unwrap_or_else(|| panic!("{command}: no error in {status:?}"))
        }
    };
    assert!(message.contains(command), "{message:?} does not name {command:?}");
    assert!(message.contains(reason), "{message:?} does not say {reason:?}");
}

async fn exec(
    runtime: &dyn Runtime,
    record: &TaskRecord,
    spec: &TaskSpec,
    command: &[&str],
    timeout: Duration,
) -> ExecOutput {
    let command: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
    let ran = tokio::time::timeout(DEADLINE, runtime.exec(record, spec, &command, timeout)).await;
    ran.expect("exec to return").expect("exec")
}

fn exec_output(status: ExitStatus, output: &str) -> ExecOutput {
    ExecOutput {
        status,
        output: output.to_owned(),
    }
}

/// Waits until the process whose pid is in `pid_file` no longer runs (a SIGKILL takes effect
/// asynchronously).
async fn assert_gone(pid_file: &Path) {
    let text = std::fs::read_to_string(pid_file).expect("pid file");
    let pid: u32 = text.trim().parse().expect("a pid");
    let gone = || procfs::read_stat(pid).is_none_or(|s| s.is_dead()).then_some(());
    eventually(&format!("process {pid} to die"), gone).await;
}

/// SIGKILLs a task, waits for it and cleans up.
async fn stop(runtime: &dyn Runtime, record: &TaskRecord) {
    runtime.signal(record, SIGKILL).await.expect("SIGKILL the task");
    wait(runtime, record).await;
    finish(runtime, record).await;
}

async fn start(runtime: &dyn Runtime, spec: &TaskSpec) -> TaskRecord {
    let record = runtime
        .start(spec)
        .await
        .unwrap_or_else(|e| panic!("start {spec:?}: {e}"));
    assert_eq!(record.runtime, runtime.name());
    record
}

async fn wait(runtime: &dyn Runtime, record: &TaskRecord) -> ExitStatus {
    let waited = tokio::time::timeout(DEADLINE, runtime.wait(record)).await;
    waited.expect("the task to end").expect("wait")
}

/// Starts a task, waits for its end, cleans up.
async fn run(h: &Harness, spec: &TaskSpec) -> (TaskRecord, ExitStatus) {
    let runtime = (h.new_runtime)();
    let record = start(&*runtime, spec).await;
    let status = wait(&*runtime, &record).await;
    finish(&*runtime, &record).await;
    (record, status)
}

/// Cleans up and checks that no process of the task is left.
async fn finish(runtime: &dyn Runtime, record: &TaskRecord) {
    runtime.cleanup(record).await.expect("cleanup");
    assert_eq!(
        task_processes(record),
        Vec::<u32>::new(),
        "processes left after cleanup"
    );
}

/// The task's live processes: its pid, every descendant, and what is left in its group.
fn task_processes(record: &TaskRecord) -> Vec<u32> {
    let mut found = procfs::tree(record.pid);
    found.extend(
        procfs::scan(|_, stat| stat.pgrp == record.pid)
            .into_iter()
            .map(|(pid, _)| pid),
    );
    found.sort_unstable();
    found.dedup();
    found
}

async fn read_log(dir: &Path, stream: Stream, tail_bytes: u64) -> String {
    let mut log = logs::read(dir, stream, tail_bytes, false);
    let mut text = String::new();
    while let Some(chunk) = next_chunk(&mut log).await {
        text.push_str(&chunk);
    }
    text
}

async fn log_lines(record: &TaskRecord) -> BTreeSet<String> {
    let text = read_log(&record.dir, Stream::Stdout, 0).await;
    text.lines().map(str::to_owned).collect()
}

async fn next_chunk(log: &mut logs::LogStream) -> Option<String> {
    let chunk = tokio::time::timeout(DEADLINE, log.next())
        .await
        .expect("log data in time")?;
    Some(String::from_utf8(chunk.expect("log chunk").to_vec()).expect("utf-8 log"))
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        ..ExitStatus::default()
    }
}

fn signaled(signal: i32) -> ExitStatus {
    ExitStatus {
        signal: Some(signal),
        ..ExitStatus::default()
    }
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|s| (*s).to_owned()).collect()
}
