//! The paved side of `cargo xtask bench start`: runs `/bin/true` N times through
//! `SandboxRuntime` (namespaces, cgroups, seccomp, host-dirs root), one after another, and prints
//! each run's duration for xtask to compare with `runc run`. Needs root:
//! `cargo build --release -p paved-runtime --bins --examples && target/release/examples/start_bench [runs] [gap-ms] [shim]`
//! (`gap-ms`, default 0, is a pause between tasks; the shim defaults to the `paved-shim` built
//! next to this example).
//!
//! Output, one line each: `paved-start-us <start to wait returned>...` and
//! `paved-lifecycle-us <start to cleanup done>...`, in microseconds. The lifecycle figure is the
//! one to compare with `runc run`, which also waits for the exit and deletes the container.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use paved_runtime::{Limits, Runtime, SandboxRuntime, TaskSpec};

/// The limits both sides of the benchmark set, so both create and remove limited cgroups.
const LIMITS: Limits = Limits {
    cpu_millis: 1000,
    memory_bytes: 64 << 20,
    pids: 64,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let gap = Duration::from_millis(args.next().map_or(Ok(0), |a| a.parse())?);
    let shim = match args.next() {
        Some(shim) => PathBuf::from(shim),
        None => default_shim()?,
    };
    let root = tempfile::tempdir()?;
    let runtime = SandboxRuntime::new(shim)?;
    eprintln!("sandbox cgroups: {}", runtime.layout().describe());

    let mut waited = Vec::with_capacity(runs);
    let mut lifecycle = Vec::with_capacity(runs);
    for i in 0..runs {
        std::thread::sleep(gap);
        let spec = TaskSpec {
            task_id: format!("start-bench-{}-{i}", std::process::id()),
            command: vec!["/bin/true".into()],
            dir: root.path().join(format!("true-{i}")),
            log_limit_bytes: 1 << 20,
            limits: LIMITS,
            ..TaskSpec::default()
        };
        let clock = Instant::now();
        let record = runtime.start(&spec).await?;
        let status = runtime.wait(&record).await?;
        waited.push(clock.elapsed());
        runtime.cleanup(&record).await?;
        lifecycle.push(clock.elapsed());
        if !status.success() {
            return Err(format!("run {i}: /bin/true did not succeed: {status:?}").into());
        }
        // The task directory (logs, exit status) outlives cleanup; keep the disk out of it.
        std::fs::remove_dir_all(&spec.dir)?;
    }
    println!("paved-start-us {}", micros(&waited));
    println!("paved-lifecycle-us {}", micros(&lifecycle));
    Ok(())
}

fn default_shim() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe.parent().and_then(|examples| examples.parent());
    target
        .map(|dir| dir.join("paved-shim"))
        .ok_or_else(|| std::io::Error::other("no target directory"))
}

fn micros(samples: &[Duration]) -> String {
    let all: Vec<String> = samples.iter().map(|d| d.as_micros().to_string()).collect();
    all.join(" ")
}
