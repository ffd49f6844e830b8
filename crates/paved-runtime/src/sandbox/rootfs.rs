//! The task's root filesystem, built by the sandbox's init inside its own mount namespace, so
//! nothing of it is visible on the host and all of it goes away with the namespace.
//!
//! The root is a small read-only tmpfs holding: the host's system directories bound read-only
//! (`/usr`, `/bin`, `/lib`..., `/etc` with its password hashes masked), so tasks run host
//! binaries; the task's own writable directory at `/task`; a private `/tmp`; a `/proc` of the
//! task's PID namespace with the kernel's sensitive files masked or read-only, as Docker does;
//! and a minimal `/dev`.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::{IMAGE_COPY_DIR, OVERLAY_WORK_DIR, ROOTFS_DIR, Root, SandboxPlan, UPPER_DIR};
use crate::WORK_DIR;
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount, mount_bind, mount_bind_recursive, mount_change,
    mount_remount,
};

/// Where the task's directory appears inside the sandbox: its working directory and `HOME`.
pub const TASK_DIR: &str = "/task";

/// Host directories shared read-only. Symlinks among them (merged /usr) are recreated as such.
const SYSTEM_DIRS: [&str; 8] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"];
/// Files that would tell a task more about the host than it needs, shown empty.
const MASKED: [&str; 8] = [
    "etc/shadow",
    "etc/gshadow",
    "etc/shadow-",
    "etc/gshadow-",
    "proc/kcore",
    "proc/keys",
    "proc/timer_list",
    "proc/sched_debug",
];
/// Kernel knobs under /proc that stay readable but not writable.
const READ_ONLY_PROC: [&str; 4] = ["proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus"];
/// The harmless character devices every Linux program may expect: name, major, minor.
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// A failed step, named for the task's start error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub(crate) struct RootfsError {
    what: String,
    #[source]
    source: io::Error,
}

/// Builds the task's root at `<task_dir>/rootfs` (an empty directory) with `<task_dir>/work` as
/// `/task`, and makes it the calling process's root. Must run in a new mount namespace.
pub(crate) fn enter(task_dir: &Path, plan: &SandboxPlan) -> Result<(), RootfsError> {
    let root = &task_dir.join(ROOTFS_DIR);
    let secure = MountFlags::NOSUID | MountFlags::NODEV;
    step("make mounts private", || {
        mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
    })?;
    match &plan.root {
        Root::Host => {
            step("mount the root tmpfs", || {
                mount("paved", root, "tmpfs", secure, c"mode=0755,size=1m")
            })?;
            for name in SYSTEM_DIRS {
                share_system_dir(root, name)?;
            }
        }
        Root::Overlay { layers } => {
            // overlayfs lists the top layer first.
            let lower: Vec<String> = layers.iter().rev().map(|l| l.display().to_string()).collect();
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                task_dir.join(UPPER_DIR).display(),
                task_dir.join(OVERLAY_WORK_DIR).display()
            );
            let options = CString::new(options).map_err(|e| RootfsError {
                what: "name the image's layers".to_owned(),
                source: io::Error::other(e),
            })?;
            step("mount the image's layers", || {
                mount("overlay", root, "overlay", secure, options.as_c_str())
            })?;
        }
        Root::Copy => bind(&task_dir.join(IMAGE_COPY_DIR), root, secure, false)?,
    }
    for name in ["task", "tmp", "proc", "dev"] {
        let path = root.join(name);
        if !path.exists() {
            make_dir(&path)?;
        }
    }
    bind(
        &task_dir.join(WORK_DIR),
        &root.join(&TASK_DIR[1..]),
        secure,
        false,
    )?;
    let tmp = root.join("tmp");
    step("mount /tmp", || {
        mount("tmpfs", &tmp, "tmpfs", secure, c"mode=1777")
    })?;
    let proc = root.join("proc");
    step("mount /proc", || {
        mount("proc", &proc, "proc", secure | MountFlags::NOEXEC, c"")
    })?;
    build_dev(root)?;
    for name in MASKED {
        let target = root.join(name);
        // An image's own /etc/shadow is its business; the host's is never shown.
        if target.exists() && (plan.root == Root::Host || name.starts_with("proc/")) {
            step(&format!("mask /{name}"), || mount_bind("/dev/null", &target))?;
        }
    }
    for name in READ_ONLY_PROC {
        let target = root.join(name);
        if target.exists() {
            bind(&target, &target, secure | MountFlags::NOEXEC, true)?;
        }
    }
    pivot(root, plan.root == Root::Host)
}

/// Binds a host system directory read-only, or recreates it as the symlink it is.
fn share_system_dir(root: &Path, name: &str) -> Result<(), RootfsError> {
    let host = Path::new("/").join(name);
    let Ok(meta) = fs::symlink_metadata(&host) else {
        return Ok(());
    };
    let target = root.join(name);
    if meta.file_type().is_symlink() {
        let points_to = step(&format!("read the link /{name}"), || fs::read_link(&host))?;
        return step(&format!("link /{name}"), || symlink(&points_to, &target));
    }
    if meta.is_dir() {
        bind(&host, &target, MountFlags::NOSUID | MountFlags::NODEV, true)?;
    }
    Ok(())
}

/// Bind-mounts `source` (with its submounts) at `target`, creating it as a directory, then
/// applies `flags` (and read-only).
fn bind(source: &Path, target: &Path, flags: MountFlags, read_only: bool) -> Result<(), RootfsError> {
    if !target.exists() {
        make_dir(target)?;
    }
    let shown = target.display();
    step(&format!("bind {} at {shown}", source.display()), || {
        mount_bind_recursive(source, target)
    })?;
    let flags = if read_only {
        flags | MountFlags::RDONLY
    } else {
        flags
    };
    step(&format!("restrict {shown}"), || {
        mount_remount(target, flags | MountFlags::BIND, c"")
    })
}

/// A tmpfs `/dev` with the usual harmless devices (bound from the host's), `/dev/shm` and the
/// standard links.
fn build_dev(root: &Path) -> Result<(), RootfsError> {
    let dev = root.join("dev");
    step("mount /dev", || {
        mount(
            "tmpfs",
            &dev,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            c"mode=0755,size=64k",
        )
    })?;
    for (name, major, minor) in DEVICES {
        // Made in place (the init still has CAP_MKNOD) rather than bound from the host's /dev:
        // one call instead of a file and a mount each. 0666, as on the host.
        let target = dev.join(name);
        let device = rustix::fs::makedev(major, minor);
        let mode = rustix::fs::Mode::from_raw_mode(0o666);
        step(&format!("create /dev/{name}"), || {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &target,
                rustix::fs::FileType::CharacterDevice,
                mode,
                device,
            )
        })?;
        // The umask trimmed the mode mknod was given.
        step(&format!("open /dev/{name} to all"), || {
            rustix::fs::chmod(&target, mode)
        })?;
    }
    for (name, points_to) in DEV_LINKS {
        step(&format!("link /dev/{name}"), || {
            symlink(points_to, dev.join(name))
        })?;
    }
    let shm = dev.join("shm");
    make_dir(&shm)?;
    step("mount /dev/shm", || {
        mount(
            "shm",
            &shm,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=1777",
        )
    })
}

/// Makes `root` the root and detaches the old one; a root of host directories stays read-only
/// (an image's root is the task's to write, in its own layer).
fn pivot(root: &Path, read_only: bool) -> Result<(), RootfsError> {
    let old = root.join(".old-root");
    make_dir(&old)?;
    step("pivot into the new root", || {
        rustix::process::pivot_root(root, &old)
    })?;
    step("enter the new root", || std::env::set_current_dir("/"))?;
    step("detach the host's root", || {
        unmount("/.old-root", UnmountFlags::DETACH)
    })?;
    step("remove the old root's mount point", || {
        fs::remove_dir("/.old-root")
    })?;
    if !read_only {
        return Ok(());
    }
    step("make the root read-only", || {
        mount_remount(
            "/",
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            c"",
        )
    })
}

fn unmount(path: &str, flags: UnmountFlags) -> rustix::io::Result<()> {
    rustix::mount::unmount(path, flags)
}

fn make_dir(path: &Path) -> Result<(), RootfsError> {
    step(&format!("create {}", path.display()), || fs::create_dir(path))
}

/// Runs one step, naming it in the error.
fn step<T, E: Into<io::Error>>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, RootfsError> {
    f().map_err(|e| RootfsError {
        what: what.to_owned(),
        source: e.into(),
    })
}
