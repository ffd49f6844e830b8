//! `ProcessRuntime`: each task a plain process group under its shim, with no isolation. It also
//! holds the shim handling (launch, handshake, wait, signal) that `SandboxRuntime` reuses; there
//! the shim adds namespaces and cgroups itself.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use paved_types::Network;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::launcher::{Forked, Launcher};
use crate::{
    ExecOutput, ExitStatus, Probe, Runtime, RuntimeError, TaskRecord, TaskSpec, exec, procfs, task_dir,
};

/// The runtime's name, as recorded in [`TaskRecord::runtime`].
pub const NAME: &str = "process";
/// The hidden subcommand of the shim executable that runs the shim.
pub const SHIM_SUBCOMMAND: &str = "__shim";

/// What `wait` reports when the shim ended without writing `exit.json` (it was SIGKILLed).
const SHIM_DIED: &str = "shim died without recording an exit status";
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How often to look at a shim that cannot be watched through a pidfd (Linux before 5.3).
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(200);
const CLEANUP_DEADLINE: Duration = Duration::from_secs(5);
const CLEANUP_INTERVAL: Duration = Duration::from_millis(20);

/// Runs tasks as process groups under shims, each forked by the runtime's shim launcher
/// (`<shim_exe> __shim-launcher`, see [`crate::launcher`]).
#[derive(Debug)]
pub struct ProcessRuntime {
    shim_exe: PathBuf,
    /// Started on the first task, and again if it has died.
    launcher: Mutex<Option<Launcher>>,
}

impl ProcessRuntime {
    /// `shim_exe` is the `paved` binary (`std::env::current_exe()` in the agent).
    pub fn new(shim_exe: PathBuf) -> Self {
        ProcessRuntime {
            shim_exe,
            launcher: Mutex::new(None),
        }
    }

    /// Has the launcher fork a shim for `dir`, (re)starting the launcher when needed.
    fn fork_shim(&self, dir: &Path) -> Result<Forked, RuntimeError> {
        let spawn_error = |source| RuntimeError::ShimSpawn {
            exe: self.shim_exe.clone(),
            source,
        };
        let mut launcher = self.launcher.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = launcher.as_mut()
            && running.is_running()
            && let Ok(forked) = running.launch(dir)
        {
            return Ok(forked);
        }
        let fresh = launcher.insert(Launcher::spawn(&self.shim_exe).map_err(spawn_error)?);
        fresh.launch(dir).map_err(spawn_error)
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(&self, spec: &TaskSpec) -> Result<TaskRecord, RuntimeError> {
        if spec.image.is_some() {
            return Err(RuntimeError::InvalidSpec {
                task_id: spec.task_id.clone(),
                reason: "the process driver runs tasks on the host's filesystem; use the sandbox driver \
                         to run an image"
                    .to_owned(),
            });
        }
        if spec.network != Network::Host {
            return Err(RuntimeError::InvalidSpec {
                task_id: spec.task_id.clone(),
                reason: "the process driver runs tasks on the host's network only; use the sandbox driver \
                         for network = \"none\""
                    .to_owned(),
            });
        }
        self.start_as(spec, NAME).await
    }

    async fn wait(&self, record: &TaskRecord) -> Result<ExitStatus, RuntimeError> {
        self.wait_shim(record).await
    }

    async fn signal(&self, record: &TaskRecord, signal: i32) -> Result<(), RuntimeError> {
        self.signal_group(record, signal).await
    }

    async fn probe(&self, record: &TaskRecord) -> Probe {
        self.probe_shim(record)
    }

    async fn cleanup(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        self.cleanup_shim(record).await
    }

    async fn exec(
        &self,
        record: &TaskRecord,
        spec: &TaskSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        // Nothing isolates the task, so nothing needs entering: a plain process beside it.
        exec::run(&record.work_dir(), spec, command, timeout).await
    }
}

/// The shim handling that every shim-based backend shares; `SandboxRuntime` calls these.
impl ProcessRuntime {
    /// Starts the shim for `spec` and records the task as started by runtime `name`.
    pub(crate) async fn start_as(
        &self,
        spec: &TaskSpec,
        name: &'static str,
    ) -> Result<TaskRecord, RuntimeError> {
        validate(spec)?;
        // Small writes to a local directory: cheaper inline than through spawn_blocking, and
        // start latency is what this path is measured by.
        let dir = task_dir::prepare(spec)?;
        let Forked {
            pid: shim_pid,
            start_time: shim_start_time,
            handshake,
        } = self.fork_shim(&dir)?;
        let handshake = tokio::time::timeout(START_DEADLINE, read_handshake(handshake)).await;
        let pid = match handshake {
            Ok(diagnostics) => started_pid(spec, &dir, &diagnostics)?,
            Err(_elapsed) => {
                abort_start(shim_pid, shim_start_time, &dir);
                return Err(start_timeout(spec));
            }
        };
        debug!(task = %spec.task_id, pid, shim_pid, "task started");
        let runtime = name.to_owned();
        Ok(TaskRecord {
            task_id: spec.task_id.clone(),
            dir,
            pid,
            shim_pid,
            shim_start_time,
            runtime,
        })
    }

    pub(crate) async fn wait_shim(&self, record: &TaskRecord) -> Result<ExitStatus, RuntimeError> {
        check_record(record)?;
        wait_for_exit(record.shim_pid, record.shim_start_time).await?;
        Ok(task_dir::read_exit(&record.dir)?.unwrap_or_else(|| ExitStatus::failed(SHIM_DIED)))
    }

    pub(crate) async fn signal_group(&self, record: &TaskRecord, signal: i32) -> Result<(), RuntimeError> {
        let signal = Signal::from_named_raw(signal).ok_or(RuntimeError::InvalidSignal { signal })?;
        let group = check_record(record)?;
        if !procfs::group_alive(record.pid, record.shim_pid) {
            debug!(task = %record.task_id, "nothing left of the task to signal");
            return Ok(());
        }
        match rustix::process::kill_process_group(group, signal) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(RuntimeError::Signal {
                task_id: record.task_id.clone(),
                source: e.into(),
            }),
        }
    }

    pub(crate) fn probe_shim(&self, record: &TaskRecord) -> Probe {
        if procfs::is_alive(record.shim_pid, record.shim_start_time) {
            return Probe::Running;
        }
        match task_dir::read_exit(&record.dir) {
            Ok(Some(status)) => Probe::Exited(status),
            Ok(None) => Probe::Gone,
            Err(e) => Probe::Exited(ExitStatus::failed(format!("exit status unreadable: {e}"))),
        }
    }

    pub(crate) async fn cleanup_shim(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        check_record(record)?;
        kill_remains(record).await?;
        self.forget_shim(record)
    }

    /// SIGKILLs the shim if it still runs (only the shim: what it started is the caller's to
    /// end), and waits until it is gone.
    pub(crate) async fn kill_shim(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        check_record(record)?;
        if procfs::is_alive(record.shim_pid, record.shim_start_time)
            && let Some(shim) = i32::try_from(record.shim_pid).ok().and_then(Pid::from_raw)
        {
            let _ = rustix::process::kill_process(shim, Signal::KILL);
            wait_for_exit(record.shim_pid, record.shim_start_time).await?;
        }
        Ok(())
    }

    /// Removes the shim's files and forgets the shim.
    pub(crate) fn forget_shim(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        task_dir::remove_shim_files(&record.dir)
    }
}

fn validate(spec: &TaskSpec) -> Result<(), RuntimeError> {
    let invalid = |reason: &str| RuntimeError::InvalidSpec {
        task_id: spec.task_id.clone(),
        reason: reason.to_owned(),
    };
    let has_nul = |s: &String| s.contains('\0');
    if spec.task_id.is_empty() {
        return Err(invalid("the task id is empty"));
    }
    if spec.command.first().is_none_or(String::is_empty) {
        return Err(invalid("the command is empty"));
    }
    if spec.command.iter().any(has_nul) || spec.env.iter().any(|(k, v)| has_nul(k) || has_nul(v)) {
        return Err(invalid("the command or environment contains a NUL byte"));
    }
    if spec.env.keys().any(|k| k.is_empty() || k.contains('=')) {
        return Err(invalid("an environment variable name is empty or contains '='"));
    }
    Ok(())
}

/// The task's process group, once the record is known to name real processes: pid 0 or 1 would
/// turn a group signal into one for every process.
fn check_record(record: &TaskRecord) -> Result<Pid, RuntimeError> {
    let pid = |raw: u32| i32::try_from(raw).ok().filter(|&p| p > 1).and_then(Pid::from_raw);
    match (pid(record.pid), pid(record.shim_pid)) {
        (Some(group), Some(_)) => Ok(group),
        _ => Err(RuntimeError::InvalidRecord {
            task_id: record.task_id.clone(),
            reason: format!(
                "pid {} or shim pid {} cannot be a task's",
                record.pid, record.shim_pid
            ),
        }),
    }
}

/// Reads the shim's stderr until the shim closes it: once the task runs or cannot.
async fn read_handshake(handshake: std::io::PipeReader) -> String {
    let mut text = Vec::new();
    let read = match pipe::Receiver::from_owned_fd(OwnedFd::from(handshake)) {
        Ok(mut receiver) => receiver.read_to_end(&mut text).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = read {
        text.extend_from_slice(format!("(reading shim output failed: {e})").as_bytes());
    }
    String::from_utf8_lossy(&text).trim().to_owned()
}

/// After the handshake: the task's pid, or why it did not start.
fn started_pid(spec: &TaskSpec, dir: &Path, diagnostics: &str) -> Result<u32, RuntimeError> {
    if let Some(pid) = task_dir::read_pid(dir)? {
        return Ok(pid);
    }
    let task_id = spec.task_id.clone();
    let error = match task_dir::read_exit(dir)? {
        Some(ExitStatus {
            error: Some(reason), ..
        }) => RuntimeError::StartFailed { task_id, reason },
        _ if diagnostics.is_empty() => RuntimeError::ShimFailed {
            task_id,
            detail: "it said nothing".to_owned(),
        },
        _ => RuntimeError::ShimFailed {
            task_id,
            detail: diagnostics.to_owned(),
        },
    };
    if let Err(e) = task_dir::remove_shim_files(dir) {
        warn!(task = %spec.task_id, error = %e, "cannot remove the files of a failed start");
    }
    Err(error)
}

/// Gives up on a shim that did not finish starting in time: kills it and whatever it started.
fn abort_start(shim_pid: u32, shim_start_time: u64, dir: &Path) {
    let task = task_dir::read_pid(dir).ok().flatten();
    let group = task.and_then(|pid| i32::try_from(pid).ok()).filter(|&p| p > 1);
    if let Some(group) = group.and_then(Pid::from_raw)
        && procfs::group_alive(group.as_raw_pid().unsigned_abs(), shim_pid)
    {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
    crate::launcher::kill_shim(shim_pid, shim_start_time);
}

fn start_timeout(spec: &TaskSpec) -> RuntimeError {
    RuntimeError::StartTimeout {
        task_id: spec.task_id.clone(),
        seconds: START_DEADLINE.as_secs(),
    }
}

/// Resolves once the process `pid` that started at `start_time` has exited.
async fn wait_for_exit(pid: u32, start_time: u64) -> Result<(), RuntimeError> {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    let pidfd = match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        Err(Errno::SRCH) => return Ok(()),
        Err(e) => {
            debug!(pid, error = %e, "no pidfd; polling for the shim's exit");
            return poll_exit(pid, start_time).await;
        }
    };
    // The pidfd pins the pid: if it names another process now, the shim was gone already.
    if !procfs::is_alive(pid, start_time) {
        return Ok(());
    }
    let proc_error = |e| RuntimeError::io(format!("/proc/{pid}"), e);
    let pidfd = register_pidfd(pidfd).map_err(proc_error)?;
    // A pidfd becomes readable when its process exits, and stays so.
    let _ready = pidfd.readable().await.map_err(proc_error)?;
    Ok(())
}

/// Registers a pidfd with tokio's reactor.
#[allow(unsafe_code)]
fn register_pidfd(pidfd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `AsyncFd` takes the `OwnedFd` by value, so the descriptor is open and stays the
    // same file until the `AsyncFd` drops it; nothing here swaps it out through `get_mut`.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

async fn poll_exit(pid: u32, start_time: u64) -> Result<(), RuntimeError> {
    while procfs::is_alive(pid, start_time) {
        tokio::time::sleep(EXIT_POLL_INTERVAL).await;
    }
    Ok(())
}

/// SIGKILLs every process left in the shim's session (the shim included, if it still runs)
/// until none is left.
async fn kill_remains(record: &TaskRecord) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + CLEANUP_DEADLINE;
    loop {
        let left = procfs::scan(|_, stat| {
            stat.session == record.shim_pid && stat.start_time >= record.shim_start_time
        });
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let (task_id, left) = (record.task_id.clone(), left.len());
            return Err(RuntimeError::Leftovers { task_id, left });
        }
        for (pid, _) in left {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        tokio::time::sleep(CLEANUP_INTERVAL).await;
    }
}
