//! The shim's side of the sandbox: starts the task in new namespaces behind a tiny init.
//!
//! ```text
//! shim ──clone(NEWPID|NEWNS|NEWUTS|NEWIPC[|NEWNET])──▶ init (pid 1) ──fork──▶ task (pid 2)
//! ```
//! The init joins the task's cgroup, sets the hostname, brings loopback up in a private
//! network, builds the root filesystem and forks the task, which drops every privilege and
//! execs the command. The init then forwards the signals it gets to every process of the
//! namespace, reaps orphans, and when the task ends kills what is left, writes the task's wait
//! status into a pipe for the shim and exits, which tears the namespace down.
//!
//! An init is needed because the kernel drops signals to a PID namespace's first process that
//! it has no handler for: a task that is pid 1 would ignore the agent's SIGTERM.
//!
//! Everything here runs in processes forked from the single-threaded shim, before it starts its
//! log threads, so the children may allocate and take locks like any single-threaded program.

use std::fs;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use rustix::process::{Pid, Signal};
use rustix::thread::{CapabilitySet, CapabilitySets, Gid, Uid};

use super::seccomp::{self, Filters};
use paved_types::Network;

use super::{SandboxPlan, rootfs};
use crate::shim::{DEFAULT_PATH, resolve, set_env};
use crate::{ExitStatus, TaskSpec};

/// The highest capability number any kernel knows today; dropping beyond the running kernel's
/// last one fails harmlessly with EINVAL.
const LAST_CAPABILITY: u32 = 63;

/// A sandbox whose init runs: its host pid, and the pipe on which it reports the task's end.
pub(crate) struct Started {
    pub(crate) init: Pid,
    status: PipeReader,
}

/// Starts the sandbox. Must be called while the shim is single-threaded. The error is the
/// reason the task could not start, as the agent will show it.
pub(crate) fn start(
    spec: &TaskSpec,
    plan: &SandboxPlan,
    dir: &Path,
    stdout: PipeWriter,
    stderr: PipeWriter,
) -> Result<Started, String> {
    let filters = seccomp::compiled().map_err(|e| format!("cannot start: {e}"))?;
    let (mut errors, error_writer) =
        io::pipe().map_err(|e| format!("cannot start: cannot create a pipe: {e}"))?;
    let (status, status_writer) =
        io::pipe().map_err(|e| format!("cannot start: cannot create a pipe: {e}"))?;
    let child = Child {
        spec,
        plan,
        dir,
        filters,
        stdout,
        stderr,
        errors: error_writer,
        status: status_writer,
    };
    let init = clone_init(plan.network)
        .map_err(|e| format!("cannot start: cannot create the sandbox's namespaces: {e}"))?;
    let Some(init) = init else {
        child.run_init();
    };
    // The shim keeps only the read ends; the children hold the write ends.
    drop(child);
    let mut reason = String::new();
    let _ = errors.read_to_string(&mut reason);
    if !reason.is_empty() {
        let _ = rustix::process::kill_process(init, Signal::KILL);
        let _ = rustix::process::waitpid(Some(init), rustix::process::WaitOptions::empty());
        return Err(reason);
    }
    Ok(Started { init, status })
}

impl Started {
    /// Once the init has been reaped with `init_status`: how the task ended.
    pub(crate) fn task_status(mut self, init_status: ExitStatus, plan: &SandboxPlan) -> ExitStatus {
        let mut raw = [0u8; 4];
        let mut status = match self.status.read_exact(&mut raw) {
            Ok(()) => decode(i32::from_ne_bytes(raw)),
            // The init died before the task (SIGKILL from the agent, or the OOM killer): the
            // kernel then killed the whole namespace, the task with it.
            Err(_) => init_status,
        };
        status.oom_killed = plan.cgroup.oom_kills() > 0;
        status
    }
}

fn decode(raw: i32) -> ExitStatus {
    let (code, signal) = if libc::WIFEXITED(raw) {
        (Some(libc::WEXITSTATUS(raw)), None)
    } else {
        (None, Some(libc::WTERMSIG(raw)))
    };
    ExitStatus {
        code,
        signal,
        ..ExitStatus::default()
    }
}

/// Forks the init into new namespaces: `Some(pid)` in the shim, `None` in the init.
#[allow(unsafe_code)]
fn clone_init(network: Network) -> io::Result<Option<Pid>> {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    let flags = libc::c_ulong::from((flags | libc::SIGCHLD).unsigned_abs());
    // SAFETY: a raw clone without CLONE_VM and with no new stack behaves as fork: the child runs
    // on a copy of this stack. The caller is single-threaded, so the child inherits no lock held
    // by another thread; it never returns into the shim's logic (it exits from `run_init`).
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(i32::try_from(pid).ok().and_then(Pid::from_raw)),
    }
}

/// What the init and the task need, owned by the shim until the clone.
struct Child<'a> {
    spec: &'a TaskSpec,
    plan: &'a SandboxPlan,
    dir: &'a Path,
    filters: &'a Filters,
    stdout: PipeWriter,
    stderr: PipeWriter,
    /// Close-on-exec: the task's successful exec closes it; what is written is a start error.
    errors: PipeWriter,
    status: PipeWriter,
}

impl Child<'_> {
    /// The init's life; never returns.
    fn run_init(self) -> ! {
        if let Err(reason) = self.prepare() {
            self.fail(&reason);
        }
        let blocked = block_all_signals();
        // SAFETY of the fork: see `clone_init`; the init is single-threaded too.
        let task = match fork() {
            Ok(None) => self.run_task(&blocked),
            Ok(Some(task)) => task,
            Err(e) => self.fail(&format!("cannot start: cannot fork the task: {e}")),
        };
        // The task alone holds these now: the shim sees end of file on the error pipe once it
        // has exec'd, and on the logs once it and its children are gone.
        let Child {
            mut status,
            errors,
            stdout,
            stderr,
            ..
        } = self;
        drop((errors, stdout, stderr));
        let raw = supervise(task, &blocked);
        let _ = status.write_all(&raw.to_ne_bytes());
        exit(0)
    }

    /// The init's set-up, in the new namespaces.
    fn prepare(&self) -> Result<(), String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("cannot start: sandbox: {what}: {e}");
        // The shim's stdio is the runtime's start-up handshake, which must close once the task
        // runs: the init, which lives as long as the task, keeps none of it.
        let null = fs::OpenOptions::new().read(true).write(true).open("/dev/null");
        let null = null.map_err(|e| fail("open /dev/null", &e))?;
        rustix::stdio::dup2_stdin(&null)
            .and_then(|()| rustix::stdio::dup2_stdout(&null))
            .and_then(|()| rustix::stdio::dup2_stderr(&null))
            .map_err(|e| fail("detach stdio", &e))?;
        // Its own process group, which is what the runtime signals.
        rustix::process::setpgid(None, None).map_err(|e| fail("start a process group", &e))?;
        self.plan
            .cgroup
            .join_self()
            .map_err(|e| fail("join the task's cgroup", &e))?;
        rustix::system::sethostname(self.plan.hostname.as_bytes())
            .map_err(|e| fail("set the hostname", &e))?;
        if self.plan.network == Network::None {
            loopback_up().map_err(|e| fail("bring up loopback", &e))?;
        }
        rootfs::enter(self.dir, self.plan).map_err(|e| fail("build the root filesystem", &e))?;
        // An image's WORKDIR need not exist in its layers; it does in the task's own layer.
        fs::create_dir_all(&self.plan.cwd).map_err(|e| fail("create the working directory", &e))
    }

    /// The task's life: drop privileges and exec; never returns.
    fn run_task(&self, blocked: &libc::sigset_t) -> ! {
        let reason = match self.exec_task(blocked) {
            Ok(never) => match never {},
            Err(reason) => reason,
        };
        self.fail(&reason)
    }

    fn exec_task(&self, blocked: &libc::sigset_t) -> Result<std::convert::Infallible, String> {
        let spec = self.spec;
        let name = spec.command.first().map(String::as_str).unwrap_or_default();
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("cannot start: {what}: {e}");
        unblock(blocked);
        rustix::process::setsid().map_err(|e| fail("start a session", &e))?;
        let path_var = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
        let program = resolve(name, Path::new(rootfs::TASK_DIR), path_var)?;
        let mut command = Command::new(program);
        command
            .arg0(name)
            .args(&spec.command[1..])
            .current_dir(&self.plan.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(self.stdout.try_clone().map_err(|e| fail("pass stdout", &e))?)
            .stderr(self.stderr.try_clone().map_err(|e| fail("pass stderr", &e))?);
        set_env(&mut command, spec, Path::new(rootfs::TASK_DIR));
        drop_privileges(self.plan.uid, self.plan.gid).map_err(|e| fail("drop privileges", &e))?;
        self.filters
            .apply()
            .map_err(|e| fail("install the seccomp filter", &e))?;
        let e = command.exec();
        Err(format!("cannot start: {e}: {name}"))
    }

    /// Reports a start error to the shim and exits.
    fn fail(&self, reason: &str) -> ! {
        let _ = (&self.errors).write_all(reason.as_bytes());
        exit(127)
    }
}

/// The init's loop: forwards signals to the namespace, reaps, and returns the task's raw wait
/// status once it has ended and every other process of the namespace is gone.
fn supervise(task: Pid, blocked: &libc::sigset_t) -> i32 {
    let mut task_status = None;
    loop {
        let signal = wait_signal(blocked);
        if signal != libc::SIGCHLD {
            signal_namespace(signal);
            continue;
        }
        if let Some(raw) = reap(task)
            && task_status.is_none()
        {
            task_status = Some(raw);
            // The task ends with its main process, like a container: nothing may linger.
            signal_namespace(libc::SIGKILL);
        }
        if let Some(raw) = task_status
            && no_children_left()
        {
            return raw;
        }
    }
}

/// Sends `signal` to every process of the namespace but the init (what -1 means to an init).
#[allow(unsafe_code)]
fn signal_namespace(signal: libc::c_int) {
    // SAFETY: kill takes integers and has no memory effects.
    unsafe { libc::kill(-1, signal) };
}

/// Reaps every exited child; returns the task's raw status if it was among them.
#[allow(unsafe_code)]
fn reap(task: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes only to `raw`.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == task.as_raw_pid() {
            found = Some(raw);
        }
    }
}

#[allow(unsafe_code)]
fn no_children_left() -> bool {
    // SAFETY: waitid with WNOWAIT only inspects; `info` is plain data it may fill.
    let mut info = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    rc == -1
}

#[allow(unsafe_code)]
fn block_all_signals() -> libc::sigset_t {
    // SAFETY: `set` is initialised by sigfillset before sigprocmask reads it.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        set
    }
}

#[allow(unsafe_code)]
fn unblock(_blocked: &libc::sigset_t) {
    // SAFETY: `empty` is initialised by sigemptyset before sigprocmask reads it.
    unsafe {
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Waits for any signal (all are blocked and so queued, even for a namespace's init).
#[allow(unsafe_code)]
fn wait_signal(blocked: &libc::sigset_t) -> libc::c_int {
    loop {
        // SAFETY: sigwaitinfo reads the set and may fill `info`, plain data.
        let signal = unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            libc::sigwaitinfo(blocked, &mut info)
        };
        if signal > 0 {
            return signal;
        }
    }
}

#[allow(unsafe_code)]
fn fork() -> io::Result<Option<Pid>> {
    // SAFETY: called only in the single-threaded init (see the module docs).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Pid::from_raw(pid)),
    }
}

fn exit(code: i32) -> ! {
    // Skips atexit handlers and stdio flushing, which belong to the shim this was forked from.
    // SAFETY: _exit only ends the process.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

/// Every capability out of the bounding set, no supplementary groups, the task's user and
/// group, empty capability sets, and no way to gain privileges back through exec.
pub(crate) fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    for capability in 0..=LAST_CAPABILITY {
        // SAFETY: prctl(PR_CAPBSET_DROP) takes integers only.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(capability), 0, 0, 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    rustix::thread::set_thread_groups(&[])?;
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    let none = CapabilitySet::empty();
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: none,
            permitted: none,
            inheritable: none,
        },
    )?;
    rustix::thread::set_no_new_privs(true)?;
    Ok(())
}

/// Sets `lo` up in the init's new network namespace.
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes integers; the descriptor is owned by `socket` from here on.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `socket` is a descriptor just opened and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: `request` is plain data; "lo" and its NUL are copied in bounds (3 bytes of 16),
    // and the ioctls read and write only the struct.
    unsafe {
        let mut request = std::mem::zeroed::<libc::ifreq>();
        std::ptr::copy_nonoverlapping(c"lo".as_ptr(), request.ifr_name.as_mut_ptr(), 3);
        let fd = socket.as_raw_fd();
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
