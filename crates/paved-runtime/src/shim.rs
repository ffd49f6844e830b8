//! The shim: `paved __shim <task-dir>`, the small synchronous supervisor that is a task's parent
//! instead of the agent, so the task outlives the agent and its true exit status is not lost.
//!
//! The shim detaches into its own session, becomes a child subreaper (orphaned descendants of
//! the task come back to it to be reaped), reads `spec.json`, starts the task as its own process
//! group with output piped into the rotating logs, writes `pid`, and closes its stderr: that
//! close is the start-up handshake the runtime waits for. It then reaps the task, kills what is
//! left of the task's group and session, drains the logs, writes `exit.json` and exits. A task
//! that cannot start gets an `exit.json` with the reason instead, written before the handshake.
//!
//! No tokio here: two log-copying threads with small stacks and a main thread blocked in
//! `wait` keep the shim at a few hundred kilobytes.

use std::fs::{self, OpenOptions};
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::logs::LogWriter;
use crate::sandbox::{SandboxPlan, launch};
use crate::{ExitStatus, Stream, TaskSpec, WORK_DIR, procfs, task_dir};

/// `PATH` of a task whose spec sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long, once the task's group is killed, before the shim looks for other leftovers.
const LEFTOVER_GRACE: Duration = Duration::from_millis(100);
/// How long, once the task has ended, the shim waits for its output to drain. Only a process
/// that escaped the task's session while holding its stdout can make it wait that long.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
const REAP_INTERVAL: Duration = Duration::from_millis(10);
const COPY_BUFFER: usize = 32 * 1024;
const COPIER_STACK: usize = 64 * 1024;

/// Runs the shim for the task in `task_dir`; returns the shim's exit code: 0 once an exit status
/// is recorded (the task's own or why it could not start), 1 when even that failed.
pub fn shim_main(task_dir: &Path) -> i32 {
    match run(task_dir) {
        Ok(()) => 0,
        Err(e) => {
            say(&e.to_string());
            1
        }
    }
}

/// What keeps the shim from doing its job; reported on stderr, which reaches the runtime.
#[derive(Debug, thiserror::Error)]
enum ShimError {
    #[error("cannot {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot record {what} in {dir}: {source}")]
    Record {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A started task: its pid (for a sandbox, its init's), the channel on which the log copiers
/// report their end, and for a sandbox the pipe that tells how the task itself ended.
struct Task {
    pid: Pid,
    copiers: mpsc::Receiver<()>,
    sandbox: Option<(launch::Started, SandboxPlan)>,
}

fn run(dir: &Path) -> Result<(), ShimError> {
    prepare_signals().map_err(setup("set up signal handling"))?;
    rustix::process::setsid().map_err(|e| setup("start a new session")(e.into()))?;
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::warn!(error = %e, "cannot become a subreaper; orphans of the task go to init");
    }
    // Keeps the shim from pinning whatever directory the agent ran in.
    let dir = &fs::canonicalize(dir).map_err(setup("find the task directory"))?;
    std::env::set_current_dir(dir).map_err(setup("enter the task directory"))?;
    let spec = match task_dir::read_spec(dir) {
        Ok(spec) => spec,
        Err(e) => return record_failure(dir, format!("cannot start: {e}")),
    };
    let task = match launch(dir, &spec) {
        Ok(task) => task,
        Err(reason) => return record_failure(dir, reason),
    };
    if let Err(e) = task_dir::write_pid(dir, task.pid.as_raw_pid().unsigned_abs()) {
        abandon(task);
        return Err(record(dir, "the task pid")(e));
    }
    if let Err(e) = release_runtime() {
        abandon(task);
        return Err(setup("close the start-up handshake")(e));
    }
    let status = supervise(task);
    task_dir::write_exit(dir, &status).map_err(record(dir, "the exit status"))
}

/// Starts the task with its output piped into the logs; the error is the reason it could not,
/// as the agent will show it. The log threads start last: the sandbox forks while the shim is
/// still single-threaded.
fn launch(dir: &Path, spec: &TaskSpec) -> Result<Task, String> {
    let name = spec.command.first().map(String::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err("cannot start: the command is empty".to_owned());
    }
    let (stdout_pipe, stdout_log, stdout) = log_pipe(dir, Stream::Stdout, spec.log_limit_bytes)?;
    let (stderr_pipe, stderr_log, stderr) = log_pipe(dir, Stream::Stderr, spec.log_limit_bytes)?;
    let (pid, sandbox) = match &spec.sandbox {
        Some(plan) => {
            let started = launch::start(spec, plan, dir, stdout, stderr)?;
            (started.init, Some((started, plan.clone())))
        }
        None => (spawn_plain(dir, spec, name, stdout, stderr)?, None),
    };
    let (done, copiers) = mpsc::channel();
    let copying = start_copier(Stream::Stdout, stdout_pipe, stdout_log, done.clone())
        .and_then(|()| start_copier(Stream::Stderr, stderr_pipe, stderr_log, done));
    let task = Task {
        pid,
        copiers,
        sandbox,
    };
    if let Err(reason) = copying {
        abandon(task);
        return Err(reason);
    }
    Ok(task)
}

/// Spawns the task as a plain process group of the host.
fn spawn_plain(
    dir: &Path,
    spec: &TaskSpec,
    name: &str,
    stdout: PipeWriter,
    stderr: PipeWriter,
) -> Result<Pid, String> {
    let mut command = task_command(&spec.command, spec, &dir.join(WORK_DIR))?;
    command.stdout(stdout).stderr(stderr);
    let spawned = command.spawn();
    // Drops the shim's copies of the pipes' write ends: the copiers see end of file once the
    // task's processes have closed theirs.
    drop(command);
    let child = spawned.map_err(|e| format!("cannot start: {e}: {name}"))?;
    Ok(Pid::from_child(&child))
}

/// The program to run for `name`: a path (relative to the task directory) when it has a `/`,
/// else the first executable file of that name in `path_var`.
pub(crate) fn resolve(name: &str, dir: &Path, path_var: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(dir.join(name));
    }
    path_var
        .split(':')
        .filter(|entry| !entry.is_empty())
        .map(|entry| dir.join(entry).join(name))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| format!("cannot start: command not found in PATH {path_var:?}: {name}"))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `argv` as a command of the task: the program found as the task's own is, run in `dir` in a
/// process group of its own, with exactly the spec's environment plus defaults and stdin from
/// /dev/null. `exec` shares it, so a command run beside the task sees what the task sees. The
/// error is the reason it cannot start, as the agent will show it.
pub(crate) fn task_command(argv: &[String], spec: &TaskSpec, dir: &Path) -> Result<Command, String> {
    let Some((name, args)) = argv.split_first().filter(|(name, _)| !name.is_empty()) else {
        return Err("cannot start: the command is empty".to_owned());
    };
    let path_var = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let program = resolve(name, dir, path_var)?;
    let mut command = Command::new(program);
    command
        .arg0(name)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .process_group(0);
    set_env(&mut command, spec, dir);
    Ok(command)
}

/// Exactly the spec's environment, plus `PATH` (a standard system path) and `HOME` (`home`) when
/// it sets none: what every process of a task starts with.
pub(crate) fn set_env(command: &mut Command, spec: &TaskSpec, home: &Path) {
    command.env_clear().envs(&spec.env);
    if !spec.env.contains_key("PATH") {
        command.env("PATH", DEFAULT_PATH);
    }
    if !spec.env.contains_key("HOME") {
        command.env("HOME", home);
    }
}

/// Opens the stream's log and a pipe to feed it: the pipe's read end and the log for the
/// copier, the write end for the task.
fn log_pipe(dir: &Path, stream: Stream, limit: u64) -> Result<(PipeReader, LogWriter, PipeWriter), String> {
    let name = stream.file_name();
    let log = LogWriter::open(dir, stream, limit)
        .map_err(|e| format!("cannot start: cannot open the log {name}: {e}"))?;
    let (reader, writer) =
        io::pipe().map_err(|e| format!("cannot start: cannot create a pipe for {name}: {e}"))?;
    Ok((reader, log, writer))
}

/// Starts a thread copying the stream's pipe into its log.
fn start_copier(
    stream: Stream,
    pipe: PipeReader,
    log: LogWriter,
    done: mpsc::Sender<()>,
) -> Result<(), String> {
    let name = stream.file_name();
    thread::Builder::new()
        .name(name.to_owned())
        .stack_size(COPIER_STACK)
        .spawn(move || copy_output(pipe, log, done))
        .map(drop)
        .map_err(|e| format!("cannot start: cannot start the thread copying {name}: {e}"))
}

/// Copies a pipe into a log until every writer has closed it. Output that cannot be written is
/// dropped rather than left in the pipe, where it would block the task.
fn copy_output(mut pipe: PipeReader, mut log: LogWriter, done: mpsc::Sender<()>) {
    let mut buffer = vec![0; COPY_BUFFER];
    let mut failing = false;
    loop {
        let n = match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the task's output");
                break;
            }
        };
        let result = log.write(&buffer[..n]);
        if let Err(e) = &result
            && !failing
        {
            tracing::warn!(error = %e, "cannot write the task's log; dropping output");
        }
        failing = result.is_err();
    }
    // The supervisor may have stopped waiting for us; nothing to do about it.
    let _ = done.send(());
}

/// Waits for the task to end, then kills what is left of it and lets its output drain.
fn supervise(task: Task) -> ExitStatus {
    let status = match wait_leader(task.pid) {
        Ok(status) => exit_status(status),
        Err(e) => ExitStatus::failed(format!("shim cannot wait for the task: {e}")),
    };
    end_task(task.pid, &task.copiers);
    match task.sandbox {
        Some((started, plan)) => started.task_status(status, &plan),
        None => status,
    }
}

/// Kills a task the shim cannot supervise (the runtime would never learn of it) and reaps it.
fn abandon(task: Task) {
    let _ = rustix::process::kill_process_group(task.pid, Signal::KILL);
    supervise(task);
}

/// Reaps children until the task's leader ends; the others are orphaned descendants of the
/// task, handed to the shim as subreaper.
fn wait_leader(leader: Pid) -> io::Result<WaitStatus> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid == leader => return Ok(status),
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn exit_status(status: WaitStatus) -> ExitStatus {
    ExitStatus {
        code: status.exit_status(),
        signal: status.terminating_signal(),
        ..ExitStatus::default()
    }
}

/// The task ends with its leader, like a container with its init: SIGKILL the rest of its
/// group, then, if something is still around after a moment, every other process of the shim's
/// session (processes that left the group). Processes that started their own session escape
/// this; the sandbox backend's cgroup will not let them.
fn end_task(leader: Pid, copiers: &mpsc::Receiver<()>) {
    // Any member still alive keeps the group id from being reused, and with none left there is
    // nothing to reach; only a pid wrap-around within microseconds could misdirect this.
    match rustix::process::kill_process_group(leader, Signal::KILL) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => tracing::warn!(error = %e, "cannot kill the rest of the task's group"),
    }
    let mut open = 2;
    // The usual case: nothing left, no need to scan /proc.
    if drain(copiers, &mut open, Instant::now() + LEFTOVER_GRACE) {
        return;
    }
    let me = std::process::id();
    for (pid, _) in procfs::scan(|pid, stat| stat.session == me && pid != me) {
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }
    if !drain(copiers, &mut open, Instant::now() + DRAIN_DEADLINE) {
        tracing::warn!(open, "task output did not drain; exiting anyway");
    }
}

/// Waits until the `open` log copiers have reached end of file and every child is reaped;
/// returns whether that happened before `deadline`.
fn drain(copiers: &mpsc::Receiver<()>, open: &mut usize, deadline: Instant) -> bool {
    loop {
        let children_left = reap_exited();
        if *open == 0 && !children_left {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        match copiers.recv_timeout((deadline - now).min(REAP_INTERVAL)) {
            Ok(()) => *open -= 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => *open = 0,
        }
    }
}

/// Reaps every exited child; returns whether any child is left.
fn reap_exited() -> bool {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) | Err(Errno::INTR) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Records that the task could not start, for the runtime to report.
fn record_failure(dir: &Path, reason: String) -> Result<(), ShimError> {
    say(&reason);
    task_dir::write_exit(dir, &ExitStatus::failed(reason)).map_err(record(dir, "the exit status"))
}

/// Ends the start-up handshake: the runtime reads the shim's stderr until it closes.
fn release_runtime() -> io::Result<()> {
    let null = OpenOptions::new().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stderr(&null)?;
    Ok(())
}

/// Tells the runtime, through stderr, while the handshake is open; afterwards this goes nowhere.
fn say(message: &str) {
    let _ = writeln!(io::stderr(), "paved shim: {message}");
}

/// Signals that must not kill the shim: SIGHUP and SIGINT from a terminal it came from,
/// SIGPIPE from a runtime that went away.
const SURVIVED: [libc::c_int; 3] = [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE];

/// Makes the shim survive [`SURVIVED`] while the task starts with every signal at its default
/// and none blocked. The shim catches them with a handler that does nothing: unlike an ignored
/// signal, a caught one is back to its default after exec. Signals the agent's environment
/// ignored (`nohup`) are reset and its mask is cleared, since std no longer resets the mask of a
/// spawned child.
#[allow(unsafe_code)]
fn prepare_signals() -> io::Result<()> {
    let handler: extern "C" fn(libc::c_int) = do_nothing;
    // SAFETY: `action` is plain data, fully initialised (zeroed, then its mask emptied) before
    // sigaction reads it; the handler touches nothing, so it is async-signal-safe.
    unsafe {
        let mut action = std::mem::zeroed::<libc::sigaction>();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in SURVIVED {
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    for signal in (1..libc::SIGRTMIN()).filter(|s| !SURVIVED.contains(s)) {
        // SAFETY: `current` is plain data that sigaction fills before it is read; setting
        // SIG_DFL installs no code.
        unsafe {
            let mut current = std::mem::zeroed::<libc::sigaction>();
            let read = libc::sigaction(signal, std::ptr::null(), &mut current) == 0;
            if read && current.sa_sigaction == libc::SIG_IGN {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
    // SAFETY: `empty` is plain data initialised by sigemptyset before pthread_sigmask reads it;
    // the call changes only this thread's mask, which threads spawned later inherit.
    let rc = unsafe {
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut())
    };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

extern "C" fn do_nothing(_signal: libc::c_int) {}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> ShimError {
    move |source| ShimError::Setup { what, source }
}

fn record(dir: &Path, what: &'static str) -> impl FnOnce(io::Error) -> ShimError {
    let dir = dir.to_path_buf();
    move |source| ShimError::Record { what, dir, source }
}
