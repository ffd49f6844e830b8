//! `cargo xtask`: paved's dev tasks, needing nothing but cargo.
//!
//! - `cargo xtask test`: installs what the tests need when missing, then runs every test.
//! - `cargo xtask tidy`: rustfmt and clippy, as CI checks them.
//! - `cargo xtask bench api`: API throughput and latency against a real `paved up`.
//! - `cargo xtask bench idle`: memory and CPU of an idle `paved up`.
//! - `cargo xtask bench idle-tasks`: memory and CPU of `paved up` running 500 idle tasks.
//! - `cargo xtask bench start [--runs N]`: sandbox task start latency against `runc run`.
//! - `cargo xtask bench proxy`: paved's proxy against nginx as a reverse proxy, with wrk.
//! - `cargo xtask bench cluster`: a server and 100 in-process agents placing 10,000 tasks.
//! - `cargo xtask bench failover`: how long the control loops stand still when their leader dies.

mod bench;
mod bench_cluster;
mod bench_failover;
mod bench_proxy;
mod bench_start;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["test", rest @ ..] => test(rest),
        ["tidy"] => tidy(),
        ["bench", rest @ ..] if cfg!(debug_assertions) => rerun_release(&[&["bench"], rest].concat()),
        ["bench", "api"] => bench::api(&root()?),
        ["bench", "idle"] => bench::idle(&root()?),
        ["bench", "idle-tasks"] => bench::idle_tasks(&root()?, bench::IDLE_TASKS),
        ["bench", "proxy"] => bench_proxy::proxy(&root()?),
        ["bench", "cluster"] => bench_cluster::cluster(&root()?),
        ["bench", "failover"] => bench_failover::failover(&root()?),
        ["bench", "start"] => bench_start::start(&root()?, bench_start::DEFAULT_RUNS),
        ["bench", "start", "--runs", n] => match n.parse() {
            Ok(runs) if runs > 0 => bench_start::start(&root()?, runs),
            _ => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask <test [cargo test args]|tidy|bench api|bench idle|bench idle-tasks|bench start [--runs N]|bench proxy|bench cluster|bench failover>"
    );
    std::process::exit(2);
}

/// The tools the test suite runs, as (command, Debian package).
const TEST_TOOLS: &[(&str, &str)] = &[
    ("python3", "python3"),
    // The image tests: a real registry, images built with umoci from busybox, pushed with
    // skopeo, and a bcrypt htpasswd for the private-registry test.
    ("docker-registry", "docker-registry"),
    ("umoci", "umoci"),
    ("skopeo", "skopeo"),
    ("busybox", "busybox-static"),
    ("htpasswd", "apache2-utils"),
    // The telemetry tests: `/metrics` checked by Prometheus's own parser and linter, and
    // scraped by a real Prometheus server.
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // The etcd store's tests run three-member etcd clusters (paved_store::testing).
    ("etcd", "etcd-server"),
];

fn test(extra: &[&str]) -> anyhow::Result<()> {
    install_missing(TEST_TOOLS)?;
    let mut cmd = cargo();
    cmd.current_dir(root()?)
        .args(["test", "--workspace", "--all-targets"])
        .args(extra);
    run(&mut cmd)
}

/// Benchmarks measure with an optimised load generator too: run this task again, built in release.
fn rerun_release(args: &[&str]) -> anyhow::Result<()> {
    run(cargo()
        .current_dir(root()?)
        .args(["run", "--quiet", "--release", "-p", "xtask", "--"])
        .args(args))
}

fn tidy() -> anyhow::Result<()> {
    let root = root()?;
    run(cargo().current_dir(&root).args(["fmt", "--all", "--", "--check"]))?;
    run(cargo()
        .current_dir(&root)
        .args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}

/// Installs, with apt-get, each tool that is not on PATH. Needs root, as on CI.
fn install_missing(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing test dependencies: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .context("cannot install test dependencies; install them by hand or run as root")
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn root() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask lives inside the workspace")?
        .to_path_buf())
}
