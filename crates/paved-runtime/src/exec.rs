//! `exec` for backends that do not isolate tasks: a command run beside the task as a process
//! group of its own, built exactly as the shim builds the task's, bounded in time, its combined
//! output captured through one pipe.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;

use crate::shim::task_command;
use crate::{EXEC_OUTPUT_LIMIT, ExecOutput, ExitStatus, RuntimeError, TaskSpec, procfs};

/// How long, once the command has ended, its output may take to drain. Only a process that
/// escaped its group while holding the pipe makes it wait that long.
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);
const READ_BUFFER: usize = 8 * 1024;

/// Runs `argv` in the task's working directory `dir` with the environment of `spec`.
pub(crate) async fn run(
    dir: &Path,
    spec: &TaskSpec,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    match task_command(argv, spec, dir) {
        Ok(command) => run_command(command, dir, argv, timeout).await,
        Err(reason) => Ok(not_started(reason)),
    }
}

/// Runs a prepared command (its own process group, stdin from /dev/null), capturing its
/// combined output; `dir` names the task in errors.
pub(crate) async fn run_command(
    command: std::process::Command,
    dir: &Path,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    let (reader, writer) = std::io::pipe().map_err(|e| RuntimeError::io(dir, e))?;
    let writer_copy = writer.try_clone().map_err(|e| RuntimeError::io(dir, e))?;
    let mut command = tokio::process::Command::from(command);
    command.stdout(writer_copy).stderr(writer).kill_on_drop(true);
    let spawned = command.spawn();
    // Our copies of the pipe's write end go with the command: the reader then sees end of file
    // once the command's own processes have closed theirs.
    drop(command);
    let name = argv.first().map(String::as_str).unwrap_or_default();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Ok(not_started(format!("cannot start: {e}: {name}"))),
    };
    let leader = Leader::of(&child);
    let reader =
        pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).map_err(|e| RuntimeError::io(dir, e))?;
    let mut output = Vec::new();
    let waiting = async {
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => exit_status(status),
            Ok(Err(e)) => ExitStatus::failed(format!("cannot wait for the command: {e}")),
            Err(_elapsed) => {
                // Before reaping, while the group's id cannot have been reused.
                leader.kill_group();
                let _ = child.wait().await;
                ExitStatus::failed(format!("timed out after {}", seconds(timeout)))
            }
        };
        leader.reaped.store(true, Ordering::Relaxed);
        leader.kill_leftovers();
        status
    };
    let reading = tokio::time::timeout(timeout + DRAIN_DEADLINE, read_capped(reader, &mut output));
    let (status, _) = tokio::join!(waiting, reading);
    let output = String::from_utf8_lossy(&output).into_owned();
    Ok(ExecOutput { status, output })
}

/// The command's first process, leader of its group, as it was while still unreaped. Dropped
/// before it is reaped (the caller gave up on `exec`), it kills the whole group: `kill_on_drop`
/// alone would reach the leader only.
struct Leader {
    pid: Option<u32>,
    start_time: u64,
    reaped: AtomicBool,
}

impl Leader {
    fn of(child: &tokio::process::Child) -> Leader {
        let pid = child.id();
        let start_time = pid.and_then(procfs::read_stat).map_or(0, |s| s.start_time);
        let reaped = AtomicBool::new(false);
        Leader {
            pid,
            start_time,
            reaped,
        }
    }

    fn group(&self) -> Option<Pid> {
        let pid = i32::try_from(self.pid?).ok().filter(|&p| p > 1)?;
        Pid::from_raw(pid)
    }

    fn kill_group(&self) {
        if let Some(group) = self.group()
            && !self.reaped.load(Ordering::Relaxed)
        {
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
    }

    /// Kills what the command left in its group once the leader is reaped; the start time
    /// tells its processes from any that later took the same numbers.
    fn kill_leftovers(&self) {
        let Some(group) = self.pid else { return };
        let left = procfs::scan(|_, stat| stat.pgrp == group && stat.start_time >= self.start_time);
        for (pid, _) in left {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Reads the pipe to its end, keeping the first `EXEC_OUTPUT_LIMIT` bytes in `kept`.
async fn read_capped(mut pipe: pipe::Receiver, kept: &mut Vec<u8>) {
    let mut buffer = vec![0; READ_BUFFER];
    loop {
        let n = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let room = EXEC_OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.code(),
        signal: status.signal(),
        ..ExitStatus::default()
    }
}

fn not_started(reason: String) -> ExecOutput {
    ExecOutput {
        status: ExitStatus::failed(reason),
        output: String::new(),
    }
}

/// "2s", or "1500ms" when not whole seconds.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
