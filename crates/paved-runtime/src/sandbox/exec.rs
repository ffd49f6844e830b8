//! `exec` inside a sandbox: the command joins the task's mount, UTS, IPC and network namespaces,
//! its cgroup, its user and its seccomp filter, and starts in `/task`. It stays in the host's PID
//! namespace (entering one only moves children), but it sees the task's `/proc` only, and as the
//! task's own unprivileged user it can signal nothing but the task.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::thread::LinkNameSpaceType;

use super::launch::drop_privileges;
use super::seccomp;
use super::{SandboxPlan, TASK_DIR};
use crate::shim::{DEFAULT_PATH, set_env};
use crate::{ExecOutput, ExitStatus, RuntimeError, TaskRecord, TaskSpec, exec, procfs};

const NAMESPACES: [(&str, LinkNameSpaceType); 4] = [
    ("mnt", LinkNameSpaceType::Mount),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("net", LinkNameSpaceType::Network),
];

pub(crate) async fn run(
    record: &TaskRecord,
    plan: &SandboxPlan,
    spec: &TaskSpec,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    let Some((name, args)) = argv.split_first().filter(|(name, _)| !name.is_empty()) else {
        return Ok(not_started("cannot start: the command is empty".to_owned()));
    };
    // The init is the shim's child; anything else at that pid is not this task's.
    let init = record.pid;
    if !procfs::read_stat(init).is_some_and(|s| s.ppid == record.shim_pid && !s.is_dead()) {
        return Ok(not_started(
            "cannot start: the task is no longer running".to_owned(),
        ));
    }
    let io = |path: String| move |e| RuntimeError::io(path, e);
    let mut namespaces: Vec<(OwnedFd, LinkNameSpaceType)> = Vec::new();
    for (ns, kind) in NAMESPACES {
        let path = format!("/proc/{init}/ns/{ns}");
        let fd = std::fs::File::open(&path).map_err(io(path))?;
        namespaces.push((fd.into(), kind));
    }
    let mut cgroups: Vec<OwnedFd> = Vec::new();
    for dir in &plan.cgroup.dirs {
        let path = dir.path.join("cgroup.procs");
        let file = OpenOptions::new().write(true).open(&path);
        cgroups.push(file.map_err(io(path.display().to_string()))?.into());
    }
    let path_var = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let program = match find_program(init, name, path_var) {
        Ok(program) => program,
        Err(reason) => return Ok(not_started(reason)),
    };
    let filters = seccomp::compiled().map_err(|e| RuntimeError::io(&record.dir, std::io::Error::other(e)))?;
    let (uid, gid) = (plan.uid, plan.gid);
    let mut command = Command::new(program);
    command
        .arg0(name)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0);
    set_env(&mut command, spec, Path::new(TASK_DIR));
    let enter = move || -> std::io::Result<()> {
        for (fd, kind) in &namespaces {
            rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*kind))?;
        }
        for fd in &cgroups {
            rustix::io::write(fd, b"0")?;
        }
        rustix::process::chdir(c"/task")?;
        drop_privileges(uid, gid)?;
        filters.apply()
    };
    // SAFETY: runs in the forked child before exec. It only makes system calls on descriptors
    // and data prepared before the fork (setns, write, chdir, prctl, setres*id, capset,
    // seccomp) and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(enter);
    }
    exec::run_command(command, Path::new(&record.dir), argv, timeout).await
}

/// The program for `name` as the task would find it: looked up in `path_var` inside the task's
/// root (reached from the host through `/proc/<init>/root`), so a missing command reads as it
/// does for a task.
fn find_program(init: u32, name: &str, path_var: &str) -> Result<String, String> {
    if name.contains('/') {
        return Ok(name.to_owned());
    }
    let root = format!("/proc/{init}/root");
    path_var
        .split(':')
        .filter(|entry| entry.starts_with('/'))
        .map(|entry| format!("{}/{name}", entry.trim_end_matches('/')))
        .find(|inside| {
            std::fs::metadata(format!("{root}{inside}")).is_ok_and(|m| {
                m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
        .ok_or_else(|| format!("cannot start: command not found in PATH {path_var:?}: {name}"))
}

fn not_started(reason: String) -> ExecOutput {
    ExecOutput {
        status: ExitStatus::failed(reason),
        output: String::new(),
    }
}
