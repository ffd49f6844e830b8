//! Task cgroups on cgroup v2, v1, or the hybrid of both, found at start from `/proc/self/mountinfo`.
//!
//! The sandbox needs four controllers: `cpu` (quota), `cpuacct` (usage; v2 reports it in
//! `cpu.stat`), `memory` and `pids`. Each is used where the host mounted it: a v1 hierarchy
//! that lists it, otherwise the v2 hierarchy when its `cgroup.controllers` offers it. A pure v2
//! host gives one directory per task; a v1 or hybrid host one per v1 hierarchy. Every task's
//! directories are `<hierarchy>/paved/<task-id>`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{RuntimeError, TaskStats};

/// Directory under each hierarchy's root that holds every task's cgroup.
const PARENT: &str = "paved";
/// The CFS period quotas are expressed in, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, in microseconds.
const MIN_CPU_QUOTA_US: u64 = 1_000;
const REMOVE_DEADLINE: Duration = Duration::from_secs(2);
const REMOVE_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Cpu,
    Cpuacct,
    Memory,
    Pids,
}

impl Controller {
    const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
    ];

    fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// Where the host keeps each controller the sandbox uses, detected once per agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Distinct hierarchies with the controllers each provides to the sandbox.
    hierarchies: Vec<Hierarchy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    version: Version,
    mount: PathBuf,
    controllers: Vec<&'static str>,
}

/// One task's cgroup directories, one per hierarchy; what the shim joins and the agent reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCgroup {
    pub dirs: Vec<CgroupDir>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub version: Version,
    pub path: PathBuf,
    /// Controllers the sandbox uses in this directory, by their names.
    pub controllers: Vec<String>,
}

/// The limits a task's cgroup enforces; zero means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Limits {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids: u32,
}

impl Layout {
    /// Finds the hierarchies of this host from `/proc/self/mountinfo` and prepares the `paved`
    /// parent in each (on v2, delegating the controllers to it).
    pub fn detect() -> Result<Layout, RuntimeError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| RuntimeError::io("/proc/self/mountinfo", e))?;
        let layout = Layout::from_mountinfo(&mountinfo, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
        })?;
        layout.prepare_parents()?;
        Ok(layout)
    }

    /// The layout `mountinfo` describes; `v2_controllers` reads a v2 mount's `cgroup.controllers`.
    fn from_mountinfo(
        mountinfo: &str,
        v2_controllers: impl Fn(&Path) -> String,
    ) -> Result<Layout, RuntimeError> {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let mount = before.split(' ').nth(4).map(PathBuf::from);
            let mut fields = after.split(' ');
            let (fstype, super_options) = (fields.next(), fields.nth(1).unwrap_or_default());
            match (fstype, mount) {
                (Some("cgroup"), Some(mount)) => {
                    let options: Vec<&str> = super_options.split(',').collect();
                    v1.push((mount, options.into_iter().map(str::to_owned).collect::<Vec<_>>()));
                }
                (Some("cgroup2"), Some(mount)) if v2.is_none() => v2 = Some(mount),
                _ => {}
            }
        }
        let v2_offers = v2.as_ref().map(|m| v2_controllers(m)).unwrap_or_default();
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for controller in Controller::ALL {
            let name = controller.name();
            let place = if let Some((mount, _)) = v1.iter().find(|(_, opts)| opts.iter().any(|o| o == name)) {
                (Version::V1, mount.clone())
            } else if controller == Controller::Cpuacct && v2.is_some() && v2_offers.contains("cpu") {
                // v2 reports usage in `cpu.stat`, which every cgroup has.
                continue;
            } else if let Some(mount) = v2
                .as_ref()
                .filter(|_| v2_offers.split_whitespace().any(|c| c == name))
            {
                (Version::V2, mount.clone())
            } else {
                return Err(RuntimeError::Cgroup {
                    reason: format!(
                        "the {name} controller is neither mounted as cgroup v1 nor enabled in a \
                         cgroup v2 hierarchy; enable it (kernel and cgroup mounts) or use driver = \"process\""
                    ),
                });
            };
            match hierarchies.iter_mut().find(|h| h.mount == place.1) {
                Some(h) => h.controllers.push(name),
                None => hierarchies.push(Hierarchy {
                    version: place.0,
                    mount: place.1,
                    controllers: vec![name],
                }),
            }
        }
        Ok(Layout { hierarchies })
    }

    /// Describes the layout for people: `cgroup v1 (cpu at /sys/fs/cgroup/cpu, ...)`.
    pub fn describe(&self) -> String {
        let versions: Vec<Version> = self.hierarchies.iter().map(|h| h.version).collect();
        let kind = if versions.iter().all(|v| *v == Version::V2) {
            "cgroup v2"
        } else if versions.contains(&Version::V2) {
            "cgroup hybrid"
        } else {
            "cgroup v1"
        };
        let places: Vec<String> = self
            .hierarchies
            .iter()
            .map(|h| format!("{} at {}", h.controllers.join("+"), h.mount.display()))
            .collect();
        format!("{kind} ({})", places.join(", "))
    }

    /// Whether any controller lives on cgroup v2.
    pub fn uses_v2(&self) -> bool {
        self.hierarchies.iter().any(|h| h.version == Version::V2)
    }

    fn prepare_parents(&self) -> Result<(), RuntimeError> {
        for h in &self.hierarchies {
            let parent = h.mount.join(PARENT);
            fs::create_dir_all(&parent).map_err(|e| RuntimeError::io(&parent, e))?;
            if h.version == Version::V2 {
                let enable: Vec<String> = h.controllers.iter().map(|c| format!("+{c}")).collect();
                let enable = enable.join(" ");
                for dir in [&h.mount, &parent] {
                    let control = dir.join("cgroup.subtree_control");
                    fs::write(&control, &enable).map_err(|e| RuntimeError::io(&control, e))?;
                }
            }
        }
        Ok(())
    }

    /// The directories `task_id` gets; nothing is created yet.
    pub fn task(&self, task_id: &str) -> TaskCgroup {
        let dirs = self
            .hierarchies
            .iter()
            .map(|h| CgroupDir {
                version: h.version,
                path: h.mount.join(PARENT).join(task_id),
                controllers: h.controllers.iter().map(|c| (*c).to_owned()).collect(),
            })
            .collect();
        TaskCgroup { dirs }
    }
}

impl TaskCgroup {
    /// Creates the directories (emptying leftovers of an earlier run) and writes the limits.
    pub fn create(&self, limits: &Limits) -> Result<(), RuntimeError> {
        self.remove()?;
        for dir in &self.dirs {
            fs::create_dir(&dir.path).map_err(|e| RuntimeError::io(&dir.path, e))?;
            for (file, value) in dir.limit_files(limits) {
                let path = dir.path.join(file);
                // Optional knobs (swap accounting, oom.group) are absent on some kernels.
                if !path.exists()
                    && matches!(
                        file,
                        "memory.swap.max" | "memory.memsw.limit_in_bytes" | "memory.oom.group"
                    )
                {
                    continue;
                }
                fs::write(&path, value).map_err(|e| RuntimeError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Moves the calling process into every directory. Runs in the sandbox's init, which is
    /// single-threaded, before it starts the task, which inherits the membership.
    ///
    /// On v1 the init moves its one thread through `tasks`: moving the calling thread alone
    /// spares the kernel the global threadgroup lock that a `cgroup.procs` write takes, whose
    /// RCU grace period made every sandboxed start about 10 ms slower (BENCHMARKS.md).
    pub(crate) fn join_self(&self) -> io::Result<()> {
        for dir in &self.dirs {
            let file = match dir.version {
                Version::V1 => "tasks",
                Version::V2 => "cgroup.procs",
            };
            fs::write(dir.path.join(file), "0")?;
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.with("memory") else { return 0 };
        let file = match dir.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let text = fs::read_to_string(dir.path.join(file)).unwrap_or_default();
        keyed(&text, "oom_kill").unwrap_or(0)
    }

    /// Current usage, read from the controllers' files; `None` once the cgroup is gone.
    pub fn stats(&self) -> Option<TaskStats> {
        let memory = self.with("memory")?;
        let pids = self.with("pids")?;
        let read = |dir: &CgroupDir, file: &str| fs::read_to_string(dir.path.join(file)).ok();
        let number = |dir: &CgroupDir, file: &str| read(dir, file).and_then(|t| t.trim().parse::<u64>().ok());
        let cpu_usage_ns = match self.with("cpuacct") {
            Some(acct) => number(acct, "cpuacct.usage")?,
            None => keyed(&read(self.with("cpu")?, "cpu.stat")?, "usage_usec")? * 1_000,
        };
        let (memory_bytes, memory_peak_bytes) = match memory.version {
            Version::V2 => (
                number(memory, "memory.current")?,
                number(memory, "memory.peak").unwrap_or(0),
            ),
            Version::V1 => (
                number(memory, "memory.usage_in_bytes")?,
                number(memory, "memory.max_usage_in_bytes").unwrap_or(0),
            ),
        };
        Some(TaskStats {
            cpu_usage_ns,
            memory_bytes,
            memory_peak_bytes: memory_peak_bytes.max(memory_bytes),
            pids: number(pids, "pids.current")?,
        })
    }

    /// SIGKILLs every process still in the cgroup, then removes its directories. Waits a little
    /// for dying processes to leave; absent directories are fine.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + REMOVE_DEADLINE;
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(&dir.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        dir.kill_all();
                        thread::sleep(REMOVE_INTERVAL);
                    }
                    Err(e) => return Err(RuntimeError::io(&dir.path, e)),
                }
            }
        }
        Ok(())
    }

    fn with(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
    }
}

impl CgroupDir {
    fn limit_files(&self, limits: &Limits) -> Vec<(&'static str, String)> {
        let has = |c: &str| self.controllers.iter().any(|x| x == c);
        let quota = (limits.cpu_millis > 0)
            .then(|| (u64::from(limits.cpu_millis) * CPU_PERIOD_US / 1000).max(MIN_CPU_QUOTA_US));
        let memory = (limits.memory_bytes > 0).then_some(limits.memory_bytes);
        let pids = (limits.pids > 0).then_some(limits.pids);
        let mut files = Vec::new();
        match self.version {
            Version::V2 => {
                if has("cpu")
                    && let Some(q) = quota
                {
                    files.push(("cpu.max", format!("{q} {CPU_PERIOD_US}")));
                }
                if has("memory")
                    && let Some(m) = memory
                {
                    files.push(("memory.max", m.to_string()));
                    files.push(("memory.swap.max", "0".to_owned()));
                    // The whole task goes on OOM, as a container does, not one random process.
                    files.push(("memory.oom.group", "1".to_owned()));
                }
                if has("pids")
                    && let Some(p) = pids
                {
                    files.push(("pids.max", p.to_string()));
                }
            }
            Version::V1 => {
                if has("cpu")
                    && let Some(q) = quota
                {
                    files.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                    files.push(("cpu.cfs_quota_us", q.to_string()));
                }
                if has("memory")
                    && let Some(m) = memory
                {
                    files.push(("memory.limit_in_bytes", m.to_string()));
                    // After the memory limit: the kernel refuses memsw below it.
                    files.push(("memory.memsw.limit_in_bytes", m.to_string()));
                }
                if has("pids")
                    && let Some(p) = pids
                {
                    files.push(("pids.max", p.to_string()));
                }
            }
        }
        files
    }

    fn kill_all(&self) {
        if self.version == Version::V2 && fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let procs = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The value of `key` in a `key value` per line file (`memory.events`, `cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_uses_the_v1_controllers() {
        let layout = Layout::from_mountinfo(HYBRID, |_| "hugetlb\n".into()).unwrap();
        assert!(!layout.uses_v2());
        let task = layout.task("t1");
        let paths: Vec<_> = task.dirs.iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/cpu/paved/t1",
                "/sys/fs/cgroup/cpuacct/paved/t1",
                "/sys/fs/cgroup/memory/paved/t1",
                "/sys/fs/cgroup/pids/paved/t1"
            ]
        );
        assert!(
            layout.describe().starts_with("cgroup v1"),
            "{}",
            layout.describe()
        );
    }

    #[test]
    fn pure_v2_is_one_directory() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = Layout::from_mountinfo(info, |_| "cpuset cpu io memory pids\n".into()).unwrap();
        let task = layout.task("t1");
        assert_eq!(task.dirs.len(), 1);
        assert_eq!(task.dirs[0].controllers, ["cpu", "memory", "pids"]);
        assert_eq!(layout.describe(), "cgroup v2 (cpu+memory+pids at /sys/fs/cgroup)");
    }

    #[test]
    fn co_mounted_v1_controllers_share_a_directory() {
        let info = "32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let layout = Layout::from_mountinfo(info, |_| String::new()).unwrap();
        assert_eq!(layout.task("t").dirs.len(), 3);
    }

    #[test]
    fn a_missing_controller_is_named() {
        let info = "34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let err = Layout::from_mountinfo(info, |_| String::new()).unwrap_err();
        assert!(err.to_string().contains("cpu controller"), "{err}");
    }

    #[test]
    fn limits_are_written_in_each_versions_terms() {
        let limits = Limits {
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            pids: 32,
        };
        let v2 = CgroupDir {
            version: Version::V2,
            path: "/x".into(),
            controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
        };
        let files = v2.limit_files(&limits);
        assert!(files.contains(&("cpu.max", "50000 100000".into())));
        assert!(files.contains(&("memory.max", (64u64 << 20).to_string())));
        assert!(files.contains(&("pids.max", "32".into())));
        let v1 = CgroupDir {
            version: Version::V1,
            path: "/x".into(),
            controllers: vec!["cpu".into()],
        };
        assert_eq!(
            v1.limit_files(&limits),
            [
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "50000".into())
            ]
        );
        assert!(v1.limit_files(&Limits::default()).is_empty());
    }

    #[test]
    fn keyed_files_are_read() {
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            keyed("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
    }
}
