//! `cargo xtask bench start`: task start latency of paved's sandbox backend against `runc run`
//! on an equivalent bundle, both running `/bin/true` to its end, in the same run.
//!
//! The paved side is the `start_bench` example of `paved-runtime` (`SandboxRuntime` start, wait
//! and cleanup, timed per task); the runc side times `runc run` (create, start, wait, delete).
//! The two alternate in chunks so that load from elsewhere on the machine falls on both alike.
//!
//! Both sides are measured twice: starts back to back (the headline, last line), and starts
//! 100 ms apart. They differ because of the cgroup attach: on cgroup v1 (and v2 without
//! `CLONE_INTO_CGROUP`), moving a process into a cgroup takes `cgroup_threadgroup_rwsem` for
//! writing, which waits for an RCU grace period (about 10 ms on the 2-core VM) unless another
//! attach happened within the last one. Back to back, paved's starts come fast enough to find
//! it still open; runc's, and any lone start, do not.
//!
//! What the runc bundle shares with paved's sandbox: PID, mount, UTS and IPC namespaces and the
//! host network (paved's default); a read-only root holding the host's system directories bound
//! read-only (merged-/usr links recreated as links), a writable `/task`, a tmpfs `/tmp`, `/proc`,
//! a tmpfs `/dev` and `/dev/shm`; the password hashes masked; an unprivileged uid with no
//! capabilities and `no_new_privs`; a cgroup with the same cpu, memory and pids limits. runc's
//! default spec adds a device cgroup and masks a few more `/proc` paths; paved adds a seccomp
//! filter, which runc's default spec lacks.

use std::cell::Cell;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench::TempDir;

/// Tasks started by each side when `--runs` is not given.
pub const DEFAULT_RUNS: usize = 200;
/// Runs per side before the other side takes over.
const CHUNK: usize = 20;
/// The pause before each start when measuring lone starts.
const SPACED_GAP: Duration = Duration::from_millis(100);
/// Host directories the sandbox shares read-only, as `paved-runtime`'s rootfs lists them.
const SYSTEM_DIRS: [&str; 8] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"];
/// The limits `start_bench` gives each task: one core, 64 MiB, 64 pids.
const CPU_QUOTA_US: u64 = 100_000;
const MEMORY_BYTES: u64 = 64 << 20;
const PIDS: u64 = 64;
/// The uid paved's sandbox would pick is in 200000..300000; any unprivileged one does.
const TASK_UID: u32 = 200_000;

pub fn start(root: &Path, runs: usize) -> anyhow::Result<()> {
    if !is_root() {
        bail!("bench start needs root: both paved's sandbox and runc create namespaces and cgroups");
    }
    crate::install_missing(&[("runc", "runc")])?;
    crate::run(crate::cargo().current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "paved-runtime",
        "--bins",
        "--example",
        "start_bench",
    ]))?;
    let example = root.join("target/release/examples/start_bench");
    let bundle = Bundle::new()?;
    println!(
        "start: /bin/true through each side, alternating in chunks of {CHUNK} ({})",
        runc_version()
    );
    // One after another, as fast as each side goes: a start follows the last within an RCU
    // grace period, so on cgroup v1 the cgroup attach rarely waits for one (module docs).
    let back_to_back = measure(&example, &bundle, runs, Duration::ZERO)?;
    back_to_back.print(&format!("{runs} starts back to back"));
    // Apart, as a lone start on a quiet node: every cgroup v1 attach waits a grace period.
    let spaced = measure(&example, &bundle, (runs / 4).max(1), SPACED_GAP)?;
    spaced.print(&format!(
        "{} starts {} ms apart",
        (runs / 4).max(1),
        SPACED_GAP.as_millis()
    ));
    println!(
        "start spaced p50 paved={:.2} ms runc={:.2} ms ratio={:.1}",
        spaced.paved.p50_ms,
        spaced.runc.p50_ms,
        spaced.runc.p50_ms / spaced.paved.p50_ms
    );
    println!(
        "start p50 paved={:.2} ms runc={:.2} ms ratio={:.1}",
        back_to_back.paved.p50_ms,
        back_to_back.runc.p50_ms,
        back_to_back.runc.p50_ms / back_to_back.paved.p50_ms
    );
    Ok(())
}

/// The figures of one way of starting: paved to the end of cleanup (comparable with `runc run`),
/// paved to the end of wait, and runc.
struct Measured {
    paved: Percentiles,
    waited: Percentiles,
    runc: Percentiles,
}

/// Starts `runs` tasks through each side, `gap` apart, alternating in chunks.
fn measure(example: &Path, bundle: &Bundle, runs: usize, gap: Duration) -> anyhow::Result<Measured> {
    let (mut paved, mut waited, mut runc) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while done < runs {
        let n = CHUNK.min(runs - done);
        let (lifecycle, start_wait) = paved_chunk(example, n, gap)?;
        paved.extend(lifecycle);
        waited.extend(start_wait);
        for _ in 0..n {
            std::thread::sleep(gap);
            runc.push(bundle.run()?);
        }
        done += n;
    }
    Ok(Measured {
        paved: Percentiles::of(paved),
        waited: Percentiles::of(waited),
        runc: Percentiles::of(runc),
    })
}

impl Measured {
    fn print(&self, how: &str) {
        println!("{how}:");
        self.waited.print("paved sandbox: start + wait");
        self.paved.print("paved sandbox: start + wait + cleanup");
        self.runc.print("runc run (create, start, wait, delete)");
    }
}

/// An OCI bundle for `runc run`, removed on drop.
struct Bundle {
    dir: TempDir,
    /// Containers run so far, for unique ids.
    started: Cell<usize>,
}

struct Percentiles {
    p50_ms: f64,
    p99_ms: f64,
    n: usize,
}

impl Bundle {
    fn new() -> anyhow::Result<Bundle> {
        let dir = TempDir::new()?;
        let rootfs = dir.0.join("rootfs");
        std::fs::create_dir_all(dir.0.join("task"))?;
        std::fs::create_dir_all(&rootfs)?;
        crate::run(Command::new("runc").arg("spec").current_dir(&dir.0))?;
        let path = dir.0.join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&path)?).context("runc spec wrote bad JSON")?;
        let mounts = system_mounts(&rootfs)?;
        edit_config(&mut config, mounts, &dir.0.join("task"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(Bundle {
            dir,
            started: Cell::new(0),
        })
    }

    /// Times one `runc run` of the bundle, which returns once the container exited and is deleted.
    fn run(&self) -> anyhow::Result<Duration> {
        let i = self.started.get();
        self.started.set(i + 1);
        let id = format!("paved-bench-{}-{i}", std::process::id());
        let clock = Instant::now();
        let status = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&self.dir.0)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("cannot run runc")?;
        let took = clock.elapsed();
        if !status.success() {
            bail!("runc run {id} failed: {status}");
        }
        Ok(took)
    }
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort();
        let at = |p: f64| {
            samples
                .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Percentiles {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            n: samples.len(),
        }
    }

    fn print(&self, what: &str) {
        println!(
            "{what:>40}: p50 {:>7.2} ms  p99 {:>7.2} ms  ({} runs)",
            self.p50_ms, self.p99_ms, self.n
        );
    }
}

/// Runs `n` tasks through the example, `gap` apart; returns (start to cleanup done, start to wait returned).
fn paved_chunk(example: &Path, n: usize, gap: Duration) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let out = Command::new(example)
        .arg(n.to_string())
        .arg(gap.as_millis().to_string())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", example.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}: {}",
            example.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok((
        samples(&stdout, "paved-lifecycle-us")?,
        samples(&stdout, "paved-start-us")?,
    ))
}

/// The durations on the line that starts with `key`, in microseconds.
fn samples(stdout: &str, key: &str) -> anyhow::Result<Vec<Duration>> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .with_context(|| format!("start_bench printed no {key} line"))?;
    line.split_whitespace()
        .map(|us| Ok(Duration::from_micros(us.parse()?)))
        .collect()
}

/// Bind mounts for the host's system directories; those that are symlinks (merged /usr) are
/// recreated as symlinks in `rootfs` instead, as paved's sandbox does.
fn system_mounts(rootfs: &Path) -> anyhow::Result<Vec<Value>> {
    let mut mounts = Vec::new();
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&host)?, rootfs.join(name))?;
        } else if meta.is_dir() {
            mounts.push(bind(&host, &format!("/{name}"), "ro"));
        }
    }
    Ok(mounts)
}

/// Turns `runc spec`'s starter config into the equivalent of paved's sandbox (module docs).
fn edit_config(config: &mut Value, system: Vec<Value>, task: &Path) {
    let process = &mut config["process"];
    process["args"] = json!(["/bin/true"]);
    process["terminal"] = json!(false);
    process["cwd"] = json!("/task");
    process["user"] = json!({ "uid": TASK_UID, "gid": TASK_UID });
    process["capabilities"] = json!({
        "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
    });
    process["noNewPrivileges"] = json!(true);
    config["root"] = json!({ "path": "rootfs", "readonly": true });
    config["hostname"] = json!("paved-bench");
    let mut mounts: Vec<Value> = config["mounts"]
        .as_array()
        .map(|all| {
            let kept = ["/proc", "/dev", "/dev/shm"];
            all.iter()
                .filter(|m| kept.iter().any(|k| m["destination"] == *k))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    mounts.extend(system);
    mounts.push(bind(task, "/task", "rw"));
    mounts.push(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777"]
    }));
    config["mounts"] = Value::Array(mounts);
    let linux = &mut config["linux"];
    linux["namespaces"] =
        json!([{ "type": "pid" }, { "type": "mount" }, { "type": "uts" }, { "type": "ipc" }]);
    // The fs cgroup driver (no systemd here); one directory per hierarchy, removed by runc.
    linux["cgroupsPath"] = json!(format!("/paved-runc-bench-{}", std::process::id()));
    linux["resources"]["cpu"] = json!({ "quota": CPU_QUOTA_US, "period": CPU_QUOTA_US });
    linux["resources"]["memory"] = json!({ "limit": MEMORY_BYTES, "swap": MEMORY_BYTES });
    linux["resources"]["pids"] = json!({ "limit": PIDS });
    if let Some(masked) = linux["maskedPaths"].as_array_mut() {
        for path in ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"] {
            masked.push(json!(path));
        }
    }
}

fn bind(source: &Path, destination: &str, mode: &str) -> Value {
    json!({
        "destination": destination, "type": "bind", "source": source,
        "options": ["rbind", mode, "nosuid", "nodev"]
    })
}

fn runc_version() -> String {
    Command::new("runc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "runc".to_owned())
}

fn is_root() -> bool {
    // xtask has no libc dependency; /proc tells the effective uid as well.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
