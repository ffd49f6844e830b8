//! `SandboxRuntime`, the default backend: each task in its own PID, mount, UTS and IPC
//! namespaces (and network, for `network = "none"`), its own cgroup with cpu, memory and pids
//! limits, an unprivileged user with no capabilities, `no_new_privs`, a seccomp filter, and a
//! root filesystem of the host's system directories read-only plus its own `/task`, `/tmp`,
//! `/proc` and `/dev`.
//!
//! It drives the same shim as [`ProcessRuntime`]: the spec the shim reads carries a
//! [`SandboxPlan`], and the shim starts the task through `launch.rs` instead of a plain spawn.
//! Start, wait, signal, re-adoption and log handling are the process backend's; this backend
//! adds the cgroup's life (created before the shim, removed at cleanup) and reads its stats.
//! Written on rustix and libc rather than youki's libcontainer because it starts tasks several
//! times faster (ARCHITECTURE.md has the figures).

mod cgroup;
mod exec;
pub(crate) mod launch;
mod rootfs;
mod seccomp;

use std::path::PathBuf;

use async_trait::async_trait;
use paved_types::Network;
use serde::{Deserialize, Serialize};

pub use cgroup::{CgroupDir, Layout, Limits, TaskCgroup, Version};
pub use rootfs::TASK_DIR;

use crate::{
    ExecOutput, ExitStatus, Probe, ProcessRuntime, Runtime, RuntimeError, TaskRecord, TaskSpec, TaskStats,
};

/// The runtime's name, as recorded in [`TaskRecord::runtime`].
pub const NAME: &str = "sandbox";
/// Mount point of the task's root filesystem, under its task directory; empty on the host.
pub(crate) const ROOTFS_DIR: &str = "rootfs";
/// The task's writable layer over an image, and overlayfs's scratch directory beside it.
pub(crate) const UPPER_DIR: &str = "upper";
pub(crate) const OVERLAY_WORK_DIR: &str = "overlay-work";
/// The task's private copy of an image, where overlayfs is missing.
pub(crate) const IMAGE_COPY_DIR: &str = "image-root";
/// Tasks run as a user of their own from this range, so no two tasks share a uid by chance
/// of configuration, and none is a user of the host.
const UID_BASE: u32 = 200_000;
const UID_RANGE: u32 = 100_000;

/// An image's unpacked root filesystem, as the agent pulled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRoot {
    /// Layer directories in overlayfs format, bottom first; shared by tasks, never written.
    pub layers: Vec<PathBuf>,
    /// The task's working directory inside the image; empty: `/task`.
    pub working_dir: String,
}

/// What the task's `/` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Root {
    /// The host's system directories, read-only, in a small tmpfs.
    Host,
    /// An image's layers under a writable layer of the task's own (`<task-dir>/upper`).
    Overlay { layers: Vec<PathBuf> },
    /// A private copy of an image's merged layers (`<task-dir>/image-root`), where overlayfs is
    /// missing.
    Copy,
}

/// How the shim sandboxes a task: written by [`SandboxRuntime`] into the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    pub cgroup: TaskCgroup,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub network: Network,
    pub root: Root,
    /// The task's working directory inside its root.
    pub cwd: String,
}

/// Runs tasks in sandboxes, under the same shims as [`ProcessRuntime`].
#[derive(Debug)]
pub struct SandboxRuntime {
    shims: ProcessRuntime,
    layout: Layout,
    /// Whether the kernel has overlayfs, for image roots.
    overlay: bool,
}

impl SandboxRuntime {
    /// Detects the host's cgroup layout and prepares paved's parent cgroups; fails when a needed
    /// controller is missing or the agent may not manage cgroups (it must run as root).
    pub fn new(shim_exe: PathBuf) -> Result<Self, RuntimeError> {
        if !rustix::process::geteuid().is_root() {
            return Err(RuntimeError::Cgroup {
                reason: "the sandbox needs root to create namespaces and cgroups; run the agent as root \
                         or use driver = \"process\" for trusted tenants"
                    .to_owned(),
            });
        }
        Ok(SandboxRuntime {
            shims: ProcessRuntime::new(shim_exe),
            layout: Layout::detect()?,
            overlay: std::fs::read_to_string("/proc/filesystems")
                .is_ok_and(|list| list.lines().any(|l| l.trim_end().ends_with("\toverlay"))),
        })
    }

    /// Runs images from private copies of their layers even where overlayfs exists: what a host
    /// without overlayfs gets, and how the tests reach that path on one that has it.
    pub fn without_overlayfs(mut self) -> Self {
        self.overlay = false;
        self
    }

    /// The cgroup layout found at start, for people (`cgroup v1 (cpu at ...)`).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn plan(&self, spec: &TaskSpec) -> SandboxPlan {
        let own = UID_BASE + fnv1a(spec.task_id.as_bytes()) % UID_RANGE;
        let (uid, gid) = spec.user.unwrap_or((own, own));
        let (root, cwd) = match &spec.image {
            None => (Root::Host, TASK_DIR.to_owned()),
            Some(image) => {
                let root = if self.overlay {
                    Root::Overlay {
                        layers: image.layers.clone(),
                    }
                } else {
                    Root::Copy
                };
                let cwd = Some(image.working_dir.as_str()).filter(|d| d.starts_with('/'));
                (root, cwd.unwrap_or(TASK_DIR).to_owned())
            }
        };
        SandboxPlan {
            cgroup: self.layout.task(&spec.task_id),
            uid,
            gid,
            hostname: spec.task_id.chars().take(64).collect(),
            network: spec.network,
            root,
            cwd,
        }
    }
}

#[async_trait]
impl Runtime for SandboxRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(&self, spec: &TaskSpec) -> Result<TaskRecord, RuntimeError> {
        let plan = self.plan(spec);
        if let (Root::Copy, Some(image)) = (&plan.root, &spec.image) {
            copy_image(image, &spec.dir.join(IMAGE_COPY_DIR)).await?;
        }
        plan.cgroup.create(&spec.limits)?;
        let spec = TaskSpec {
            sandbox: Some(plan.clone()),
            ..spec.clone()
        };
        let started = self.shims.start_as(&spec, NAME).await;
        if started.is_err()
            && let Err(e) = plan.cgroup.remove()
        {
            tracing::warn!(task = %spec.task_id, error = %e, "cannot remove the cgroup of a failed start");
        }
        started
    }

    async fn wait(&self, record: &TaskRecord) -> Result<ExitStatus, RuntimeError> {
        self.shims.wait(record).await
    }

    async fn signal(&self, record: &TaskRecord, signal: i32) -> Result<(), RuntimeError> {
        self.shims.signal(record, signal).await
    }

    async fn probe(&self, record: &TaskRecord) -> Probe {
        self.shims.probe(record).await
    }

    /// Every process of the task is in its cgroup (the init joined it before anything else
    /// ran, and the PID namespace dies with the init), so the cgroup, not a scan of `/proc`,
    /// finds what is left: removing it kills that first. The shim is outside it.
    async fn cleanup(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        self.shims.kill_shim(record).await?;
        let cgroup = self.layout.task(&record.task_id);
        let dir = record.dir.clone();
        // The root's mount point (empty on the host: the root lived in the task's mount
        // namespace) and the task's writable image layer go with the task.
        tokio::task::spawn_blocking(move || cgroup.remove().and_then(|()| remove_root_dirs(&dir)))
            .await
            .map_err(|e| RuntimeError::io(&record.dir, std::io::Error::other(e)))??;
        self.shims.forget_shim(record)
    }

    async fn exec(
        &self,
        record: &TaskRecord,
        spec: &TaskSpec,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        exec::run(record, &self.plan(spec), spec, command, timeout).await
    }

    async fn stats(&self, record: &TaskRecord) -> Option<TaskStats> {
        self.layout.task(&record.task_id).stats()
    }
}

/// Directories of a task's root that end with it.
const ROOT_DIRS: [&str; 4] = [ROOTFS_DIR, UPPER_DIR, OVERLAY_WORK_DIR, IMAGE_COPY_DIR];

fn remove_root_dirs(dir: &std::path::Path) -> Result<(), RuntimeError> {
    for name in ROOT_DIRS {
        let path = dir.join(name);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(RuntimeError::io(path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Materializes an image's merged layers for a host without overlayfs.
async fn copy_image(image: &ImageRoot, dest: &std::path::Path) -> Result<(), RuntimeError> {
    let merged = paved_image::Image {
        digest: String::new(),
        layers: image.layers.clone(),
        config: Default::default(),
    };
    let dest = dest.to_path_buf();
    let copied = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&dest);
        merged
            .flatten_into(&dest)
            .map_err(|e| RuntimeError::io(&dest, std::io::Error::other(e)))
    });
    copied
        .await
        .map_err(|e| RuntimeError::io("image copy", std::io::Error::other(e)))?
}

/// Work every sandbox would repeat, done once in the process that forks shims.
pub(crate) fn prepare_for_shims() {
    if let Err(e) = seccomp::compiled() {
        tracing::warn!(error = %e, "sandboxed tasks will fail to start");
    }
}

/// A small, stable hash (FNV-1a), so a task keeps its uid across agent restarts.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}
