//! Task start latency of `ProcessRuntime` against a bare `std::process::Command` spawn and wait,
//! printed as p50/p99 and ratios. A sanity check, not a gate:
//! `cargo build -p paved-runtime --bins --examples && target/debug/examples/start_latency [runs] [shim]`
//! (the shim defaults to the `paved-shim` built next to this example).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use paved_runtime::{ProcessRuntime, Runtime, TaskSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let shim = match args.next() {
        Some(shim) => PathBuf::from(shim),
        None => default_shim()?,
    };
    let root = tempfile::tempdir()?;
    let runtime = ProcessRuntime::new(shim);

    let mut bare = Vec::with_capacity(runs);
    let mut started = Vec::with_capacity(runs);
    let mut ended = Vec::with_capacity(runs);
    for i in 0..runs {
        let clock = Instant::now();
        std::process::Command::new("/bin/true").status()?;
        bare.push(clock.elapsed());

        let spec = TaskSpec {
            task_id: format!("true-{i}"),
            command: vec!["/bin/true".into()],
            env: Default::default(),
            dir: root.path().join(format!("true-{i}")),
            log_limit_bytes: 1 << 20,
            ..TaskSpec::default()
        };
        let clock = Instant::now();
        let record = runtime.start(&spec).await?;
        started.push(clock.elapsed());
        runtime.wait(&record).await?;
        ended.push(clock.elapsed());
        runtime.cleanup(&record).await?;
    }
    let base = report("Command::new(\"/bin/true\").status()", &mut bare);
    let start = report("ProcessRuntime::start", &mut started);
    let end = report("ProcessRuntime::start + wait", &mut ended);
    println!(
        "start / bare: {:.1}x, start+wait / bare: {:.1}x",
        ratio(start, base),
        ratio(end, base)
    );
    Ok(())
}

fn default_shim() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe.parent().and_then(|examples| examples.parent());
    target
        .map(|dir| dir.join("paved-shim"))
        .ok_or_else(|| std::io::Error::other("no target directory"))
}

/// Prints p50 and p99 of `samples`; returns p50.
fn report(what: &str, samples: &mut [Duration]) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    println!("{what:<40} p50 {:>8.3} ms  p99 {:>8.3} ms", ms(p50), ms(p99));
    p50
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
