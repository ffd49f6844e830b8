//! The shim launcher: `paved __shim-launcher`, one small single-threaded process per runtime that
//! forks a shim for each task. Exec'ing the `paved` binary for every shim cost about a
//! millisecond of loading and relocation per start (BENCHMARKS.md); a fork of the launcher, which
//! has loaded it once, costs a fraction of that.
//!
//! The runtime talks to it over a `SOCK_SEQPACKET` socket pair, the launcher's end being its
//! stdin. A request is the task directory's path with, as `SCM_RIGHTS`, the write end of the
//! start-up handshake pipe that becomes the shim's stderr; the reply is the shim's pid and start
//! time (`/proc/<pid>/stat` field 22), read before the shim can have ended. Shims are reaped by the
//! kernel (the launcher ignores SIGCHLD; the shim resets that for itself); the runtime watches
//! them through pidfds, as it watches shims it re-adopts. The launcher ends when the runtime's end
//! of the socket closes; shims, in sessions of their own, do not notice.

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut, PipeReader};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, Signal};

use crate::procfs;

/// The hidden subcommand of the `paved` binary that runs the launcher.
pub const LAUNCHER_SUBCOMMAND: &str = "__shim-launcher";
/// Longest task directory path a request carries.
const MAX_PATH: usize = 4096;
const REPLY_LEN: usize = 12;

/// The runtime's handle on its launcher.
#[derive(Debug)]
pub(crate) struct Launcher {
    socket: OwnedFd,
    process: Child,
}

/// A shim the launcher forked: its identity and the read end of its handshake pipe.
pub(crate) struct Forked {
    pub(crate) pid: u32,
    pub(crate) start_time: u64,
    pub(crate) handshake: PipeReader,
}

impl Launcher {
    /// Starts `<exe> __shim-launcher` with its end of a new socket pair as stdin.
    pub(crate) fn spawn(exe: &Path) -> io::Result<Launcher> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let process = Command::new(exe)
            .arg(LAUNCHER_SUBCOMMAND)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Launcher {
            socket: ours,
            process,
        })
    }

    /// Has the launcher fork a shim for the task in `dir`.
    pub(crate) fn launch(&self, dir: &Path) -> io::Result<Forked> {
        let (handshake, stderr) = io::pipe()?;
        let fds = [stderr.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let path = dir.as_os_str().as_bytes();
        rustix::net::sendmsg(
            &self.socket,
            &[IoSlice::new(path)],
            &mut control,
            SendFlags::empty(),
        )?;
        drop(stderr);
        let mut reply = [0u8; REPLY_LEN];
        let got = rustix::net::recv(&self.socket, &mut reply, RecvFlags::empty())?;
        if got.0 != REPLY_LEN {
            return Err(io::Error::other("the shim launcher ended or answered nonsense"));
        }
        let pid = u32::from_le_bytes(reply[..4].try_into().unwrap_or_default());
        let start_time = u64::from_le_bytes(reply[4..].try_into().unwrap_or_default());
        if pid == 0 {
            return Err(io::Error::from_raw_os_error(
                i32::try_from(start_time).unwrap_or(libc::EIO),
            ));
        }
        Ok(Forked {
            pid,
            start_time,
            handshake,
        })
    }

    /// Whether the launcher process still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing the socket ends the launcher; reap it so no zombie is left.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The launcher's life: serve requests on stdin until it closes. Returns the exit code.
pub fn launcher_main() -> i32 {
    crate::sandbox::prepare_for_shims();
    // SAFETY: setting a disposition installs no code.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let socket = std::io::stdin();
    loop {
        let mut path = vec![0u8; MAX_PATH];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &socket,
            &mut [IoSliceMut::new(&mut path)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        );
        let bytes = match received {
            Ok(msg) if msg.bytes > 0 => msg.bytes,
            Ok(_) => return 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 1,
        };
        let stderr: Option<OwnedFd> = control.drain().find_map(|message| match message {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        let dir = PathBuf::from(OsStr::from_bytes(&path[..bytes]));
        let reply = match stderr {
            Some(stderr) => fork_shim(&dir, stderr),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let (pid, start_time) = match reply {
            Ok(identity) => identity,
            Err(e) => (
                0,
                e.raw_os_error().and_then(|n| u64::try_from(n).ok()).unwrap_or(5),
            ),
        };
        let mut answer = [0u8; REPLY_LEN];
        answer[..4].copy_from_slice(&pid.to_le_bytes());
        answer[4..].copy_from_slice(&start_time.to_le_bytes());
        if rustix::net::send(&socket, &answer, SendFlags::empty()).is_err() {
            return 1;
        }
    }
}

/// Forks a shim for `dir` with `stderr` as its handshake; returns its pid and start time.
fn fork_shim(dir: &Path, stderr: OwnedFd) -> io::Result<(u32, u64)> {
    // SAFETY: the launcher is single-threaded, so the child inherits no lock held elsewhere; it
    // becomes the shim and exits without returning here.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = become_shim(dir, stderr);
            std::process::exit(code)
        }
        pid => {
            drop(stderr);
            let pid = pid.unsigned_abs();
            // The shim cannot end before its handshake, which needs the runtime: it is alive.
            let start_time = procfs::read_stat(pid).map_or(0, |s| s.start_time);
            Ok((pid, start_time))
        }
    }
}

/// In the forked child: the stdio a shim expects (stdin and stdout on /dev/null, stderr the
/// handshake), then the shim itself. The handshake's own descriptor is closed once it is fd 2,
/// so that the shim's release of stderr ends the handshake.
fn become_shim(dir: &Path, stderr: OwnedFd) -> i32 {
    let setup = || -> io::Result<()> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        rustix::stdio::dup2_stdin(&null)?;
        rustix::stdio::dup2_stdout(&null)?;
        rustix::stdio::dup2_stderr(&stderr)?;
        Ok(())
    };
    let ready = setup();
    drop(stderr);
    if ready.is_err() {
        return 1;
    }
    crate::shim_main(dir)
}

/// Kills a shim the launcher forked, if it is still the process it was.
pub(crate) fn kill_shim(pid: u32, start_time: u64) {
    if procfs::is_alive(pid, start_time)
        && let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}
