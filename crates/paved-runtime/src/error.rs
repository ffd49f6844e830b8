//! `RuntimeError`: everything a runtime call can fail with, each with a stable code and whether a
//! retry can help.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec cannot be run as given; retrying the same spec fails the same way.
    #[error("invalid task spec {task_id:?}: {reason}; fix the task definition")]
    InvalidSpec { task_id: String, reason: String },

    /// A record handed back by the agent cannot belong to a task (pid 0 or 1, say).
    #[error("invalid task record {task_id:?}: {reason}; the agent's state may be damaged")]
    InvalidRecord { task_id: String, reason: String },

    #[error("cannot prepare task directory {path}: {source}; check that the agent can write there")]
    TaskDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot run the shim {exe}: {source}; check that the paved binary is still at that path")]
    ShimSpawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The shim ran but the task could not: command not found, not executable, log not writable.
    #[error("task {task_id}: {reason}")]
    StartFailed { task_id: String, reason: String },

    /// The shim ended before starting the task without saying why: a bug or a killed shim.
    #[error(
        "shim of task {task_id} exited without starting it: {detail}; this is a bug in paved unless the shim was killed"
    )]
    ShimFailed { task_id: String, detail: String },

    #[error("task {task_id} did not start within {seconds}s; the host may be overloaded, retry")]
    StartTimeout { task_id: String, seconds: u64 },

    #[error("cannot set up cgroups: {reason}")]
    Cgroup { reason: String },

    #[error("invalid signal {signal}; use a named signal number such as 15 (SIGTERM) or 9 (SIGKILL)")]
    InvalidSignal { signal: i32 },

    #[error("cannot signal task {task_id}: {source}")]
    Signal {
        task_id: String,
        #[source]
        source: io::Error,
    },

    /// A file the shim wrote cannot be understood.
    #[error("cannot understand {path}: {reason}; the task directory may be damaged")]
    Corrupt { path: PathBuf, reason: String },

    #[error("cannot read log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Processes of the task survived repeated SIGKILLs (stuck in the kernel, most likely).
    #[error(
        "task {task_id} still has {left} process(es) after cleanup; retry, or check for processes stuck in D state"
    )]
    Leftovers { task_id: String, left: usize },
}

impl RuntimeError {
    /// A stable identifier for dashboards and alerts; never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::InvalidSpec { .. } => "runtime.invalid_spec",
            RuntimeError::InvalidRecord { .. } => "runtime.invalid_record",
            RuntimeError::TaskDir { .. } => "runtime.task_dir",
            RuntimeError::ShimSpawn { .. } => "runtime.shim_spawn",
            RuntimeError::StartFailed { .. } => "runtime.start_failed",
            RuntimeError::ShimFailed { .. } => "runtime.shim_failed",
            RuntimeError::StartTimeout { .. } => "runtime.start_timeout",
            RuntimeError::Cgroup { .. } => "runtime.cgroup",
            RuntimeError::InvalidSignal { .. } => "runtime.invalid_signal",
            RuntimeError::Signal { .. } => "runtime.signal",
            RuntimeError::Corrupt { .. } => "runtime.corrupt",
            RuntimeError::Log { .. } => "runtime.log",
            RuntimeError::Io { .. } => "runtime.io",
            RuntimeError::Leftovers { .. } => "runtime.leftovers",
        }
    }

    /// Whether the same call may succeed if made again unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::StartTimeout { .. }
                | RuntimeError::ShimFailed { .. }
                | RuntimeError::Io { .. }
                | RuntimeError::Log { .. }
                | RuntimeError::Leftovers { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            path: path.into(),
            source,
        }
    }
}
