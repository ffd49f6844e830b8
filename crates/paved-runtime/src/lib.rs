//! Runs tasks: the `Runtime` trait the agent drives; its backends [`SandboxRuntime`] (namespaces,
//! cgroups, seccomp: the default) and [`ProcessRuntime`] (a plain process group, for trusted
//! tenants); and [`Drivers`], which picks between them per task.
//!
//! Every task gets a shim: the shim code of the `paved` binary (entry point [`shim_main`]),
//! forked by the runtime's shim launcher ([`launcher`]), or run as `paved __shim <task-dir>`. The shim, not the agent, is the task's parent: it copies the task's
//! output into size-capped logs, reaps it, and records its true exit status on disk. An agent
//! that is killed and restarted re-adopts the task from its [`TaskRecord`] and still learns how it
//! ended. Runtime and shim talk only through files in the task directory:
//!
//! | file | written by | when |
//! |---|---|---|
//! | `spec.json` | runtime | before the shim starts: the [`TaskSpec`] |
//! | `pid` | shim | once the task runs: its pid, written atomically |
//! | `exit.json` | shim | once the task ended (or failed to start): its [`ExitStatus`], written atomically |
//! | `stdout.log`, `stderr.log` (+ `.1`) | shim | while the task runs, rotated at the cap |
//!
//! **Invariant:** a task never depends on the agent process: no parent-death signal, its own
//! session, and nothing the shim needs lives in the agent's memory.

pub mod conformance;
mod drivers;
pub mod error;
mod exec;
pub mod launcher;
pub mod logs;
pub mod process;
mod procfs;
pub mod sandbox;
pub mod shim;
mod task_dir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use drivers::Drivers;
pub use error::RuntimeError;
pub use paved_types::{Driver, Network};
pub use process::ProcessRuntime;
pub use sandbox::{ImageRoot, Limits, SandboxRuntime};
pub use shim::shim_main;

/// What to run; the agent builds it, the runtime hands it to the shim as `spec.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    /// argv; `command[0]` is looked up in the task's `PATH` when it has no `/`, and taken relative
    /// to `dir` when it is a relative path.
    pub command: Vec<String>,
    /// The task's whole environment, plus `PATH` (a standard system path) and `HOME` (the task
    /// directory) when absent.
    pub env: BTreeMap<String, String>,
    /// Task directory, created by the runtime: home of its logs and of the shim's files; the
    /// task works in its [`WORK_DIR`] subdirectory.
    pub dir: PathBuf,
    /// Cap per log stream; a log that reaches it rotates to `<name>.1`, one old generation kept.
    /// 0 means no cap.
    pub log_limit_bytes: u64,
    /// What the task may use; enforced by isolating backends, ignored by `process`.
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub network: Network,
    /// Which backend [`Drivers`] starts the task with.
    #[serde(default)]
    pub driver: Driver,
    /// The image whose root filesystem the task runs in (sandbox only); `None`: the host's
    /// system directories, read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<sandbox::ImageRoot>,
    /// The user and group to run as inside a sandbox (an image's `USER`); `None`: a uid of the
    /// task's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<(u32, u32)>,
    /// How the sandbox backend runs the task; set by that backend, not by callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<sandbox::SandboxPlan>,
}

/// The subdirectory of a task directory the task owns: its working directory and `HOME`
/// (shown as `/task` inside a sandbox).
pub const WORK_DIR: &str = "work";

/// A task's resource usage, as its cgroup counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    /// CPU time used since the task started, user and system.
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
}

/// What the agent persists about a started task and gives back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    /// The task directory, made absolute.
    pub dir: PathBuf,
    /// The task's process, leader of its own process group.
    pub pid: u32,
    pub shim_pid: u32,
    /// Field 22 of `/proc/<shim_pid>/stat`, so a reused pid is not mistaken for the shim.
    pub shim_start_time: u64,
    /// Name of the runtime that started the task (`"process"`, `"sandbox"`).
    pub runtime: String,
}

/// How a task ended: an exit code, a terminating signal, or an error when it never ran or its
/// end could not be observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// e.g. `cannot start: No such file or directory (os error 2): ./server`, or
    /// `shim died without recording an exit status`.
    pub error: Option<String>,
    /// The kernel's OOM killer ended the task for going over its memory limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

/// How a command run beside a task with [`Runtime::exec`] ended, and what it said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// A command that could not start, or ran past its timeout, has `error` set
    /// (`timed out after 2s`).
    pub status: ExitStatus,
    /// The first [`EXEC_OUTPUT_LIMIT`] bytes of its stdout and stderr, interleaved as written,
    /// lossily decoded as UTF-8.
    pub output: String,
}

/// How much of an exec'd command's output [`ExecOutput`] keeps; the rest is read and dropped,
/// so a chatty command never blocks on a full pipe.
pub const EXEC_OUTPUT_LIMIT: usize = 4096;

/// One of a task's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What re-adoption finds behind a [`TaskRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The shim is alive: `wait` will report how the task ends.
    Running,
    /// The task ended while nobody watched; this is how.
    Exited(ExitStatus),
    /// Neither the shim nor an exit status is left: the task is lost (host rebooted, directory
    /// removed, shim killed).
    Gone,
}

/// A way of running tasks. Every backend passes the suite in [`conformance`].
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// How this runtime runs tasks on this host, for people (`paved nodes`).
    fn describe(&self) -> String {
        self.name().to_owned()
    }

    /// Starts the task; returns once its process runs, or an error saying why it cannot start
    /// (command not found, not executable, task directory not writable).
    async fn start(&self, spec: &TaskSpec) -> Result<TaskRecord, RuntimeError>;

    /// Resolves when the task has ended, with its true status; works for tasks this instance
    /// started and for re-adopted ones alike.
    async fn wait(&self, record: &TaskRecord) -> Result<ExitStatus, RuntimeError>;

    /// Sends `signal` to the task's whole process group. Succeeds without doing anything when
    /// nothing of the task is left to signal, so stopping a task twice is harmless.
    async fn signal(&self, record: &TaskRecord, signal: i32) -> Result<(), RuntimeError>;

    /// Whether the task behind `record` still runs, ended with a recorded status, or is gone.
    async fn probe(&self, record: &TaskRecord) -> Probe;

    /// Kills whatever of the task is left and removes the shim's files; keeps the logs and the
    /// recorded exit status. Call it after `wait`.
    async fn cleanup(&self, record: &TaskRecord) -> Result<(), RuntimeError>;

    /// Runs `command` beside the task (same environment, working directory and, for isolated
    /// backends, the task's namespaces, cgroup and user), killing it after `timeout`; returns
    /// how it ended and up to [`EXEC_OUTPUT_LIMIT`] bytes of its combined output. Like a task,
    /// the command ends with its main process: whatever it left running is killed. A command
    /// that cannot start is an `Ok` whose status carries the reason, as a task's would; `Err`
    /// means the runtime could not try.
    async fn exec(
        &self,
        record: &TaskRecord,
        spec: &TaskSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;

    /// The task's current resource usage, when the backend can measure it.
    async fn stats(&self, _record: &TaskRecord) -> Option<TaskStats> {
        None
    }
}

impl TaskRecord {
    /// The directory the task works in.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join(WORK_DIR)
    }
}

impl ExitStatus {
    /// Whether the task ran and exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.error.is_none()
    }

    /// A run that failed without an exit: it never started, or its end could not be observed.
    pub fn failed(error: impl Into<String>) -> Self {
        ExitStatus {
            error: Some(error.into()),
            ..ExitStatus::default()
        }
    }
}

impl Stream {
    /// The log file name in the task directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout.log",
            Stream::Stderr => "stderr.log",
        }
    }

    /// The name of the previous generation, kept after a rotation.
    pub fn rotated_file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout.log.1",
            Stream::Stderr => "stderr.log.1",
        }
    }
}
