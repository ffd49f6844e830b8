//! End-to-end benchmarks against a real `paved up` (release build) on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paved_api::v1::{self as pb, jobs_client::JobsClient, tasks_client::TasksClient};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// Tasks `bench idle-tasks` runs on the one agent.
pub const IDLE_TASKS: u32 = 500;
/// Each idle task's share, small enough that 500 fit a 2-core node (1 core in all).
const IDLE_TASK_RESOURCES: &str = "[resources]\ncpu = 0.002\nmemory = \"16MiB\"\n";
const IDLE_TASKS_DEADLINE: Duration = Duration::from_secs(300);
/// Calls in flight at once during each phase.
const CONCURRENCY: usize = 32;
const PHASE: Duration = Duration::from_secs(5);
/// Creates per second of the paced phase: issue 2's goal for durable creates.
const PACED_CREATES: u32 = 2_000;
/// The paced phase is long enough to take the store through a checkpoint (32 MiB of
/// write-ahead log is about 14 s of creates at 2,000/s), so its tail shows one.
const PACED_PHASE: Duration = Duration::from_secs(20);

/// A `paved up` started for a benchmark, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    /// The server's data directory, removed when the server is dropped.
    _data: TempDir,
}

pub fn api(root: &Path) -> anyhow::Result<()> {
    let server = Server::start(root)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let channel = Channel::from_shared(server.url.clone())?.connect().await?;
        let auth: MetadataValue<_> = format!("Bearer {}", server.token).parse()?;
        let jobs = JobsClient::with_interceptor(channel.clone(), auth_fn(auth.clone()));
        let tasks = TasksClient::with_interceptor(channel, auth_fn(auth));
        create(&jobs, "bench-read", 0).await?;
        create(&jobs, "bench-tasks", 10).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;

        let j = jobs.clone();
        let reads = phase("job reads", move |i| {
            let mut c = j.clone();
            async move {
                c.get_job(pb::GetJobRequest {
                    job: if i % 2 == 0 {
                        "bench-read".into()
                    } else {
                        "bench-tasks".into()
                    },
                })
                .await
                .map(drop)
            }
        })
        .await?;
        let lists = phase("task listings (10 tasks)", move |_| {
            let mut c = tasks.clone();
            async move {
                c.list_tasks(pb::ListTasksRequest {
                    job: "bench-tasks".into(),
                    states: vec![],
                })
                .await
                .map(drop)
            }
        })
        .await?;
        let next = Arc::new(AtomicUsize::new(0));
        let create_next = |prefix: &'static str| {
            let (jobs, next) = (jobs.clone(), next.clone());
            move |_| {
                let c = jobs.clone();
                let n = next.fetch_add(1, Ordering::Relaxed);
                async move {
                    create(&c, &format!("{prefix}-{n}"), 0)
                        .await
                        .map(drop)
                        .map_err(|e| tonic::Status::internal(e.to_string()))
                }
            }
        };
        // Creates at the goal's rate: latency under the load the goal names, not at saturation
        // (first, so that it does not also time the control loops catching up with the next).
        let paced_creates = paced(
            "creates at 2,000/s",
            PACED_CREATES,
            create_next("paced"),
        )
        .await?;
        let creates = phase("durable job creates", create_next("bench")).await?;
        println!(
            "api reads/s={:.0} listings/s={:.0} creates/s={:.0} p99 read={:.2}ms list={:.2}ms create={:.2}ms create@{PACED_CREATES}/s={:.2}ms",
            reads.rate,
            lists.rate,
            creates.rate,
            reads.p99_ms,
            lists.p99_ms,
            creates.p99_ms,
            paced_creates.p99_ms
        );
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(())
}

pub fn idle(root: &Path) -> anyhow::Result<()> {
    let server = Server::start(root)?;
    std::thread::sleep(Duration::from_secs(5));
    let pid = server.child.id();
    let (cpu0, t0) = (cpu_ticks(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(20));
    let (cpu1, elapsed) = (cpu_ticks(pid)?, t0.elapsed());
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let cpu = (cpu1 - cpu0) as f64 / ticks_per_s / elapsed.as_secs_f64() * 100.0;
    let rss = rss_kib(pid)? as f64 / 1024.0;
    println!(
        "idle paved up: rss={rss:.1} MB cpu={cpu:.2} % (over {:.0} s)",
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Starts `n` sandboxed `sleep` tasks on the one agent of `paved up`, waits until all run, then
/// samples the `paved up` process, and the shims and sandbox inits that keep the tasks.
pub fn idle_tasks(root: &Path, n: u32) -> anyhow::Result<()> {
    // A line per task start and stop would drown the figures.
    let server = Server::start_logging(root, Some("warn"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let channel = Channel::from_shared(server.url.clone())?.connect().await?;
        let auth: MetadataValue<_> = format!("Bearer {}", server.token).parse()?;
        let jobs = JobsClient::with_interceptor(channel.clone(), auth_fn(auth.clone()));
        let tasks = TasksClient::with_interceptor(channel, auth_fn(auth));
        let manifest = format!(
            "name = \"idle\"\nkind = \"service\"\ninstances = {n}\ncommand = [\"sleep\", \"100000\"]\n{IDLE_TASK_RESOURCES}"
        );
        let clock = Instant::now();
        jobs.clone()
            .create_job(pb::CreateJobRequest {
                manifest,
                source: "bench".into(),
            })
            .await?;
        wait_running(&tasks, n).await?;
        println!("idle-tasks: {n} tasks running {:.1} s after the job was created", clock.elapsed().as_secs_f64());
        let outcome = sample_idle(&server, n);
        jobs.clone()
            .kill_job(pb::KillJobRequest { job: "idle".into() })
            .await?;
        wait_running(&tasks, 0).await?;
        outcome
    });
    drop(server);
    result
}

/// Waits until exactly `n` tasks of the idle job run, printing progress.
async fn wait_running(tasks: &TasksClient<Authed>, n: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + IDLE_TASKS_DEADLINE;
    let mut last = u32::MAX;
    loop {
        let listed = tasks
            .clone()
            .list_tasks(pb::ListTasksRequest {
                job: "idle".into(),
                states: vec!["running".into()],
            })
            .await?
            .into_inner();
        let running = u32::try_from(listed.tasks.len())?;
        if running == n {
            return Ok(());
        }
        if running != last {
            eprintln!("idle-tasks: {running} tasks running, waiting for {n}");
            last = running;
        }
        if Instant::now() > deadline {
            bail!(
                "only {running} of {n} tasks ran within {} s",
                IDLE_TASKS_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Lets the node settle, samples CPU over 10 s, then memory; prints the figures.
fn sample_idle(server: &Server, n: u32) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_secs(5));
    let pid = server.child.id();
    let (cpu0, t0) = (cpu_ticks(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu1, elapsed) = (cpu_ticks(pid)?, t0.elapsed());
    let cpu = (cpu1 - cpu0) as f64 / 100.0 / elapsed.as_secs_f64() * 100.0;
    let rss = rss_kib(pid)? as f64 / 1024.0;
    let keepers = Keepers::find(pid)?;
    keepers.print();
    println!("idle-tasks n={n} rss={rss:.1} MB cpu={cpu:.2} %");
    Ok(())
}

/// The processes that keep the tasks: per task a shim, forked by the agent's shim launcher
/// (`paved __shim-launcher`, a child of `paved up`), and the sandbox's init forked from the shim.
#[derive(Default)]
struct Keepers {
    shims: Usage,
    inits: Usage,
}

#[derive(Default)]
struct Usage {
    count: usize,
    rss_kib: u64,
    pss_kib: u64,
}

impl Keepers {
    fn find(server: u32) -> anyhow::Result<Keepers> {
        let mut parents: Vec<(u32, u32)> = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            // A process gone since the listing is no keeper any more.
            if let Ok(ppid) = parent(pid) {
                parents.push((pid, ppid));
            }
        }
        let children = |of: &[u32]| -> Vec<u32> {
            let of = of.to_vec();
            parents
                .iter()
                .filter(|(_, pp)| of.contains(pp))
                .map(|(p, _)| *p)
                .collect()
        };
        let launchers: Vec<u32> = children(&[server])
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__shim-launcher"))
            })
            .collect();
        let shims = children(&launchers);
        let inits = children(&shims);
        let mut keepers = Keepers::default();
        for (usage, pids) in [(&mut keepers.shims, &shims), (&mut keepers.inits, &inits)] {
            for &pid in pids {
                usage.count += 1;
                usage.rss_kib += rss_kib(pid).unwrap_or(0);
                usage.pss_kib += pss_kib(pid).unwrap_or(0);
            }
        }
        Ok(keepers)
    }

    fn print(&self) {
        for (what, u) in [("shims", &self.shims), ("sandbox inits", &self.inits)] {
            let per = |kib: u64| kib as f64 / u.count.max(1) as f64;
            println!(
                "idle-tasks {what}: {} processes, rss total {:.1} MB ({:.0} KiB each), pss total {:.1} MB ({:.0} KiB each)",
                u.count,
                u.rss_kib as f64 / 1024.0,
                per(u.rss_kib),
                u.pss_kib as f64 / 1024.0,
                per(u.pss_kib),
            );
        }
    }
}

struct Figures {
    rate: f64,
    p99_ms: f64,
}

/// Runs `call` from `CONCURRENCY` workers for `PHASE`; prints and returns rate and latencies.
async fn phase<F, Fut>(name: &str, call: F) -> anyhow::Result<Figures>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let deadline = Instant::now() + PHASE;
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while Instant::now() < deadline {
                let t = Instant::now();
                call(i).await?;
                latencies.push(t.elapsed());
                i += CONCURRENCY;
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    Ok(summarize(name, all, PHASE))
}

/// Starts `call` at a steady `per_second` for `PACED_PHASE`, whatever the answers' pace (an open
/// loop, as traffic arrives), and times each call from when it was due, so a server that falls
/// behind shows its backlog in the latencies instead of slowing the load down.
///
/// The pace is kept by an OS thread: `std::thread::sleep` wakes within tens of microseconds of
/// its deadline, where tokio's timer rounds up to the next millisecond, and a call started up
/// to a millisecond late would count the load generator's lateness as the server's latency.
async fn paced<F, Fut>(name: &str, per_second: u32, call: F) -> anyhow::Result<Figures>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let calls = (f64::from(per_second) * PACED_PHASE.as_secs_f64()) as usize;
    let runtime = tokio::runtime::Handle::current();
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..calls {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(per_second));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let call = call.clone();
            let latency = runtime.spawn(async move {
                call(i).await?;
                Ok::<_, tonic::Status>(due.elapsed())
            });
            if started.send(latency).is_err() {
                return;
            }
        }
    });
    let mut all = Vec::with_capacity(calls);
    while let Some(latency) = running.recv().await {
        all.push(latency.await??);
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    Ok(summarize(name, all, PACED_PHASE))
}

/// Prints and returns the rate and percentiles of one phase's latencies.
fn summarize(name: &str, mut all: Vec<Duration>, phase: Duration) -> Figures {
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let figures = Figures {
        rate: all.len() as f64 / phase.as_secs_f64(),
        p99_ms: pct(0.99),
    };
    println!(
        "{name:>28}: {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms  ({} calls)",
        figures.rate,
        pct(0.5),
        figures.p99_ms,
        all.len()
    );
    figures
}

type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Puts the bearer token on every call.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub(crate) fn auth_fn(auth: MetadataValue<tonic::metadata::Ascii>) -> Bearer {
    Bearer(auth)
}

async fn create(jobs: &JobsClient<Authed>, name: &str, instances: u32) -> anyhow::Result<()> {
    let manifest = format!(
        "name = \"{name}\"\nkind = \"service\"\ninstances = {instances}\ncommand = [\"sleep\", \"1000\"]\n"
    );
    jobs.clone()
        .create_job(pb::CreateJobRequest {
            manifest,
            source: "bench".into(),
        })
        .await?;
    Ok(())
}

impl Server {
    fn start(root: &Path) -> anyhow::Result<Server> {
        Server::start_logging(root, None)
    }

    /// Starts `paved server` on its embedded store: the control plane without an agent.
    pub(crate) fn start_server(root: &Path) -> anyhow::Result<Server> {
        Server::start_role(root, &["server"], Some("warn"))
    }

    /// Starts `paved server` on the etcd cluster at `url`.
    pub(crate) fn start_etcd(root: &Path, url: &str) -> anyhow::Result<Server> {
        Server::start_role(root, &["server", "--store", url], Some("warn"))
    }

    /// Kills the server with SIGKILL, at once; returns its data directory for the caller to drop.
    pub(crate) fn kill9(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self._data, TempDir(std::path::PathBuf::new()))
    }

    /// Starts `paved up`, with `RUST_LOG` set to `log` when given (and not set by the caller).
    fn start_logging(root: &Path, log: Option<&str>) -> anyhow::Result<Server> {
        Server::start_role(root, &["up", "--no-proxy"], log)
    }

    /// Starts `paved <role…>` on a free port and a fresh data directory.
    fn start_role(root: &Path, role: &[&str], log: Option<&str>) -> anyhow::Result<Server> {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["build", "--release", "--quiet", "-p", "paved"])
            .status()?;
        if !status.success() {
            bail!("cargo build --release -p paved failed");
        }
        let data = TempDir::new()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(root.join("target/release/paved"));
        cmd.args(role)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data.0)
            .stdout(Stdio::null());
        if let Some(log) = log
            && std::env::var_os("RUST_LOG").is_none()
        {
            cmd.env("RUST_LOG", log);
        }
        let child = cmd.spawn().context("cannot start paved")?;
        let token_file = data.0.join("admin.token");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(token_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            if Instant::now() > deadline {
                bail!("paved {} did not come up within 20 s", role[0]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = std::fs::read_to_string(&token_file)?.trim().to_owned();
        Ok(Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            token,
            _data: data,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already ended and reaped (`kill9`): its pid may belong to someone else by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets paved stop its tasks; SIGKILL only if it hangs.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop; xtask keeps its dependencies few.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("paved-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after "pid (comm)" and state.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size: shared pages (the binary's text) split among the processes sharing them.
fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn parent(pid: u32) -> anyhow::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .context("no PPid")?;
    Ok(line.trim().parse()?)
}

/// The number after `key` in a `/proc` file of `key value kB` lines.
fn kib_field(file: &str, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file)?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .with_context(|| format!("no {key} in {file}"))?;
    Ok(line
        .split_whitespace()
        .next()
        .with_context(|| format!("no {key} value in {file}"))?
        .parse()?)
}
