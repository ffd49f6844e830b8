//! A cluster as users run one: a real three-member etcd, two `paved server` processes sharing
//! it, and `paved agent` processes, each with its own data directory, joined over gRPC. Tasks
//! are real sandboxed processes.

#[path = "common/support.rs"]
mod support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use paved_api::v1 as pb;
use paved_api::v1::jobs_client::JobsClient;
use paved_api::v1::nodes_client::NodesClient;
use paved_api::v1::tasks_client::TasksClient;
use paved_store::testing::EtcdCluster;
use support::{Authed, Bearer, wait_for_within};
use tonic::transport::Channel;

const PAVED: &str = env!("CARGO_BIN_EXE_paved");

/// A `paved` child process, killed (SIGKILL) when dropped unless stopped first.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let child = Command::new(PAVED)
            .args(args)
            .stdout(Stdio::null())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start paved");
        Proc { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    /// A clean stop, so an agent stops its tasks; SIGKILL if that takes too long.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            support::signal(self.child.id(), "TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
    }
}

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

struct Server {
    proc: Proc,
    url: String,
    data: PathBuf,
}

impl Server {
    fn start(store: &str, data: &Path) -> Server {
        let listen = free_addr();
        let proc = Proc::spawn(&[
            "server",
            "--store",
            store,
            "--listen",
            &listen,
            "--data",
            data.to_str().unwrap(),
        ]);
        Server {
            proc,
            url: format!("http://{listen}"),
            data: data.to_owned(),
        }
    }

    async fn token(&self) -> String {
        let path = self.data.join("admin.token");
        wait_for_within(
            "the server to write its token",
            Duration::from_secs(30),
            || async { path.exists() },
        )
        .await;
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    async fn channel(&self) -> Channel {
        let mut attempts = 0;
        loop {
            match Channel::from_shared(self.url.clone()).unwrap().connect().await {
                Ok(channel) => return channel,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot reach {}: {e}", self.url),
            }
        }
    }
}

struct Client {
    jobs: JobsClient<Authed>,
    tasks: TasksClient<Authed>,
    nodes: NodesClient<Authed>,
}

impl Client {
    async fn of(server: &Server, token: &str) -> Client {
        let channel = server.channel().await;
        let bearer = Bearer::new(token);
        Client {
            jobs: JobsClient::with_interceptor(channel.clone(), bearer.clone()),
            tasks: TasksClient::with_interceptor(channel.clone(), bearer.clone()),
            nodes: NodesClient::with_interceptor(channel, bearer),
        }
    }

    async fn ready_nodes(&self) -> Vec<String> {
        let Ok(nodes) = self.nodes.clone().list_nodes(pb::ListNodesRequest {}).await else {
            return vec![];
        };
        let mut ready: Vec<String> = nodes
            .into_inner()
            .nodes
            .into_iter()
            .filter(|n| n.state == "ready")
            .map(|n| n.name)
            .collect();
        ready.sort();
        ready
    }

    /// Tasks of `job` running and wanted (not being stopped), in all.
    async fn serving(&self, job: &str) -> usize {
        let request = pb::ListTasksRequest {
            job: job.into(),
            states: vec![],
        };
        let Ok(tasks) = self.tasks.clone().list_tasks(request).await else {
            return 0;
        };
        let tasks = tasks.into_inner().tasks;
        tasks
            .iter()
            .filter(|t| t.state == "running" && t.desired == "run")
            .count()
    }

    async fn node(&self, name: &str) -> Option<pb::Node> {
        let nodes = self
            .nodes
            .clone()
            .list_nodes(pb::ListNodesRequest {})
            .await
            .ok()?;
        nodes.into_inner().nodes.into_iter().find(|n| n.name == name)
    }

    /// Running tasks of `job` per node.
    async fn running(&self, job: &str) -> HashMap<String, usize> {
        let request = pb::ListTasksRequest {
            job: job.into(),
            states: vec![],
        };
        let Ok(tasks) = self.tasks.clone().list_tasks(request).await else {
            return HashMap::new();
        };
        let mut per_node = HashMap::new();
        for t in tasks.into_inner().tasks {
            if t.state == "running" {
                *per_node.entry(t.node).or_default() += 1;
            }
        }
        per_node
    }
}

fn agent(servers: &str, token: &str, name: &str, data: &Path) -> Proc {
    Proc::spawn(&[
        "agent",
        "--server",
        servers,
        "--token",
        token,
        "--name",
        name,
        "--zone",
        name,
        "--heartbeat",
        "500ms",
        "--data",
        data.to_str().unwrap(),
    ])
}

fn sleeper(name: &str, instances: u32) -> String {
    format!(
        "name = \"{name}\"\nkind = \"service\"\ninstances = {instances}\ncommand = [\"sleep\", \"{SLEEP}\"]\n\
         [resources]\ncpu = 0.05\nmemory = \"16MiB\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_lose_a_node_and_survive_the_leading_server() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdCluster::start(3)
        .await
        .expect("a three-member etcd (run `cargo xtask test`)");
    let store = etcd.url("/cluster-test");
    let mut first = Server::start(&store, &dir.path().join("server-1"));
    let token = first.token().await;
    let mut second = Server::start(&store, &dir.path().join("server-2"));
    assert_eq!(
        second.token().await,
        token,
        "every server writes the cluster's one admin token"
    );
    let servers = format!("{},{}", first.url, second.url);

    // Agents join with a token of their own role, made through one server, honoured by both.
    let made = Command::new(PAVED)
        .args(["--server", &first.url, "--token", &token])
        .args(["token", "create", "--role", "agent", "--name", "agents"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let agent_token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let mut one = agent(&servers, &agent_token, "node-1", &dir.path().join("agent-1"));
    let _two = agent(&servers, &agent_token, "node-2", &dir.path().join("agent-2"));
    let client = Client::of(&second, &token).await;
    wait_for_within("both nodes to be ready", Duration::from_secs(30), || async {
        client.ready_nodes().await == ["node-1", "node-2"]
    })
    .await;

    // Spread: the job's tasks land on both nodes.
    client
        .jobs
        .clone()
        .create_job(pb::CreateJobRequest {
            manifest: sleeper("spread", 4),
            source: "spread.toml".into(),
        })
        .await
        .unwrap();
    wait_for_within(
        "4 tasks running over both nodes",
        Duration::from_secs(60),
        || async {
            let running = client.running("spread").await;
            running.values().sum::<usize>() == 4 && running.len() == 2
        },
    )
    .await;

    // A node dies: its tasks are lost and placed on the other within the timeout.
    one.kill9();
    wait_for_within(
        "node-1's tasks to move to node-2",
        Duration::from_secs(60),
        || async {
            let running = client.running("spread").await;
            running.get("node-2") == Some(&4) && !running.contains_key("node-1")
        },
    )
    .await;
    assert_eq!(client.ready_nodes().await, ["node-2"]);

    // It comes back: its old tasks run elsewhere now, so it stops them; no duplicates stay.
    let one = agent(&servers, &agent_token, "node-1", &dir.path().join("agent-1"));
    wait_for_within("node-1 to be ready again", Duration::from_secs(30), || async {
        client.ready_nodes().await == ["node-1", "node-2"]
    })
    .await;
    wait_for_within(
        "no duplicate of a lost task to run",
        Duration::from_secs(30),
        || async { sleepers() == 4 },
    )
    .await;
    assert_eq!(client.running("spread").await.values().sum::<usize>(), 4);

    // The leading server dies: the other leads within seconds and places new tasks; every job
    // is still there.
    let leader = etcd
        .store("/cluster-test")
        .await
        .unwrap()
        .current_leader("control")
        .await
        .unwrap()
        .expect("a leader");
    let (dead, alive) = if leader.ends_with(first.url.trim_start_matches("http://")) {
        (&mut first, &second)
    } else {
        (&mut second, &first)
    };
    dead.proc.kill9();
    let client = Client::of(alive, &token).await;
    client
        .jobs
        .clone()
        .scale_job(pb::ScaleJobRequest {
            job: "spread".into(),
            instances: 6,
        })
        .await
        .unwrap();
    wait_for_within(
        "the new leader to place the scaled-up tasks",
        Duration::from_secs(60),
        || async { client.running("spread").await.values().sum::<usize>() == 6 },
    )
    .await;
    // Agents first (they stop their tasks), then servers; drops go in reverse order.
    drop(one);
}

/// Runs `paved --server URL --token T ARGS…` and returns its stdout; panics on failure.
fn cli(server: &str, token: &str, args: &[&str]) -> String {
    let out = Command::new(PAVED)
        .args(["--server", server, "--token", token])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_tasks_off_a_node_within_the_jobs_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("embedded", &dir.path().join("server"));
    let token = server.token().await;
    let agent_token = cli(&server.url, &token, &["token", "create", "--role", "agent"]);
    let agent_token = agent_token.trim();
    let _a = agent(&server.url, agent_token, "node-a", &dir.path().join("agent-a"));
    let _b = agent(&server.url, agent_token, "node-b", &dir.path().join("agent-b"));
    let client = Client::of(&server, &token).await;
    wait_for_within("both nodes to be ready", Duration::from_secs(30), || async {
        client.ready_nodes().await == ["node-a", "node-b"]
    })
    .await;
    // Another sleep than the other test's, whose count of sleepers this must not change.
    let steady = sleeper("steady", 4).replace(SLEEP, "7778.5");
    let manifest = format!("{steady}[update]\nmax_unavailable = 1\n");
    client
        .jobs
        .clone()
        .create_job(pb::CreateJobRequest {
            manifest,
            source: "steady.toml".into(),
        })
        .await
        .unwrap();
    wait_for_within("2 tasks on each node", Duration::from_secs(60), || async {
        let running = client.running("steady").await;
        running.get("node-a") == Some(&2) && running.get("node-b") == Some(&2)
    })
    .await;

    // Watch how many tasks serve while node-a drains: never fewer than 4 - max_unavailable.
    let watching = Client::of(&server, &token).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let fewest = tokio::spawn(async move {
        let mut fewest = usize::MAX;
        loop {
            fewest = fewest.min(watching.serving("steady").await);
            tokio::select! {
                _ = &mut stopped => return fewest,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    cli(
        &server.url,
        &token,
        &["nodes", "drain", "node-a", "--deadline", "10m"],
    );
    wait_for_within(
        "node-a to be empty and ineligible",
        Duration::from_secs(60),
        || async {
            let running = client.running("steady").await;
            let node = client.node("node-a").await;
            running.get("node-b") == Some(&4)
                && !running.contains_key("node-a")
                && node.is_some_and(|n| !n.eligible && n.drain_deadline_ms == 0)
        },
    )
    .await;
    let _ = stop.send(());
    let fewest = fewest.await.unwrap();
    assert!(
        fewest >= 3,
        "the drain took {} of 4 tasks down at once",
        4 - fewest
    );
    let listed = cli(&server.url, &token, &["nodes"]);
    assert!(listed.contains("ineligible"), "{listed}");

    // Undrained, it takes new tasks again.
    cli(&server.url, &token, &["nodes", "undrain", "node-a"]);
    cli(&server.url, &token, &["scale", "steady", "6"]);
    wait_for_within("new tasks on node-a", Duration::from_secs(60), || async {
        client.running("steady").await.get("node-a").copied().unwrap_or(0) > 0
    })
    .await;
}

/// The sleep every task of this test runs: distinctive, so the test can count its processes.
const SLEEP: &str = "7777.25";

/// Processes running this test's sleep, on the whole machine.
fn sleepers() -> usize {
    count_sleeps(SLEEP)
}

/// A network namespace joined to the host by a veth pair, removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

impl Netns {
    fn create(tag: u32) -> Netns {
        let name = format!("pvd-part-{tag}");
        let (host_if, ns_if) = (format!("pvh{tag}"), format!("pvn{tag}"));
        let subnet = 200 + tag % 50;
        let (host_ip, ns_ip) = (format!("10.231.{subnet}.1"), format!("10.231.{subnet}.2"));
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &name, "ip"];
            full.extend_from_slice(args);
            ip(&full);
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        Netns {
            name,
            host_if,
            host_ip,
        }
    }

    /// Cuts (`false`) or restores (`true`) the link.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let status = Command::new("ip")
            .args(["link", "set", &self.host_if, state])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_loses_its_tasks_and_stops_them_when_it_heals() {
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::create(std::process::id() % 10_000);
    // The server listens where the namespace can reach it: the host end of the veth.
    let listen = {
        let probe = TcpListener::bind((net.host_ip.as_str(), 0)).unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let data = dir.path().join("server");
    let server = Server {
        proc: Proc::spawn(&["server", "--listen", &listen, "--data", data.to_str().unwrap()]),
        url: format!("http://{listen}"),
        data,
    };
    let token = server.token().await;
    let agent_token = cli(&server.url, &token, &["token", "create", "--role", "agent"]);
    let agent_token = agent_token.trim();
    // node-far runs inside the namespace; node-near on the host.
    let far_data = dir.path().join("agent-far");
    let _far = Proc {
        // nsenter switches only the network namespace; `ip netns exec` would also give the
        // agent a mount namespace with /sys remounted, hiding the cgroups the sandbox needs.
        child: Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", net.name))
            .args([PAVED, "agent", "--server", &server.url])
            .args(["--token", agent_token, "--name", "node-far", "--zone", "far"])
            .args(["--heartbeat", "500ms", "--data", far_data.to_str().unwrap()])
            .stdout(Stdio::null())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    };
    let _near = agent(
        &server.url,
        agent_token,
        "node-near",
        &dir.path().join("agent-near"),
    );
    let client = Client::of(&server, &token).await;
    wait_for_within("both nodes to be ready", Duration::from_secs(30), || async {
        client.ready_nodes().await == ["node-far", "node-near"]
    })
    .await;
    let sleep = "7779.75";
    let job = sleeper("apart", 2).replace(SLEEP, sleep);
    client
        .jobs
        .clone()
        .create_job(pb::CreateJobRequest {
            manifest: job,
            source: "apart.toml".into(),
        })
        .await
        .unwrap();
    wait_for_within("a task on each node", Duration::from_secs(60), || async {
        let running = client.running("apart").await;
        running.get("node-far") == Some(&1) && running.get("node-near") == Some(&1)
    })
    .await;

    // Partitioned, node-far goes down and its task is placed on node-near; node-far's copy
    // keeps running meanwhile (it cannot hear that it should stop).
    net.link(false);
    wait_for_within("the far task to be replaced", Duration::from_secs(60), || async {
        client.running("apart").await.get("node-near") == Some(&2)
    })
    .await;
    assert_eq!(client.ready_nodes().await, ["node-near"]);
    assert_eq!(
        count_sleeps(sleep),
        3,
        "the far node's copy runs on during the partition"
    );

    // Healed, node-far comes back, learns its task was lost, and stops the duplicate.
    net.link(true);
    wait_for_within("node-far to be ready again", Duration::from_secs(60), || async {
        client.ready_nodes().await == ["node-far", "node-near"]
    })
    .await;
    wait_for_within("the duplicate to stop", Duration::from_secs(60), || async {
        count_sleeps(sleep) == 2
    })
    .await;
    assert_eq!(client.running("apart").await.get("node-near"), Some(&2));
}

/// Processes running `sleep <arg>` on the whole machine.
fn count_sleeps(arg: &str) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == arg.as_bytes() {
            count += 1;
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_job_preempts_flex_tasks_on_a_full_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("embedded", &dir.path().join("server"));
    let token = server.token().await;
    let agent_token = cli(&server.url, &token, &["token", "create", "--role", "agent"]);
    // One node of one core.
    let data = dir.path().join("agent-small");
    let _small = Proc::spawn(&[
        "agent",
        "--server",
        &server.url,
        "--token",
        agent_token.trim(),
        "--name",
        "small",
        "--cpu",
        "1",
        "--heartbeat",
        "500ms",
        "--data",
        data.to_str().unwrap(),
    ]);
    let client = Client::of(&server, &token).await;
    wait_for_within("the node to be ready", Duration::from_secs(30), || async {
        client.ready_nodes().await == ["small"]
    })
    .await;
    let job = |name: &str, instances: u32, cpu: &str, tier: &str| {
        format!(
            "name = \"{name}\"\nkind = \"service\"\ninstances = {instances}\ncommand = [\"sleep\", \"7781.5\"]\n\
             [resources]\ncpu = {cpu}\nmemory = \"16MiB\"\n[placement]\ntier = \"{tier}\"\n"
        )
    };
    let submit = |manifest: String| {
        let mut jobs = client.jobs.clone();
        async move {
            let request = pb::CreateJobRequest {
                manifest,
                source: "t.toml".into(),
            };
            jobs.create_job(request).await.unwrap();
        }
    };
    // Flex tasks fill the node.
    submit(job("batchy", 4, "0.25", "flex")).await;
    wait_for_within(
        "the flex tasks to fill the node",
        Duration::from_secs(60),
        || async { client.running("batchy").await.get("small") == Some(&4) },
    )
    .await;
    // A critical job needs half of it: two flex tasks make room, the rest wait, saying why.
    submit(job("vital", 1, "0.5", "critical")).await;
    wait_for_within("the critical task to run", Duration::from_secs(60), || async {
        client.running("vital").await.get("small") == Some(&1)
    })
    .await;
    wait_for_within(
        "two flex tasks to be preempted",
        Duration::from_secs(60),
        || async { client.running("batchy").await.get("small") == Some(&2) },
    )
    .await;
    let flex = client
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { job: "batchy".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        flex.reason.contains("insufficient cpu"),
        "the flex job says why its tasks wait: {}",
        flex.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_shows_a_remote_tasks_logs_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdCluster::start(3)
        .await
        .expect("a three-member etcd (run `cargo xtask test`)");
    let store = etcd.url("/sessions-test");
    let first = Server::start(&store, &dir.path().join("server-1"));
    let token = first.token().await;
    let second = Server::start(&store, &dir.path().join("server-2"));
    second.token().await;
    let servers = format!("{},{}", first.url, second.url);
    let _agent = agent(&servers, &token, "node-1", &dir.path().join("agent-1"));
    let client = Client::of(&first, &token).await;
    wait_for_within("the node to be ready", Duration::from_secs(30), || async {
        client.ready_nodes().await == ["node-1"]
    })
    .await;
    let manifest = "name = \"chatty\"\nkind = \"service\"\n\
        command = [\"/bin/sh\", \"-c\", \"echo hello from afar; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done\"]\n\
        [resources]\ncpu = 0.05\nmemory = \"16MiB\"\n";
    client
        .jobs
        .clone()
        .create_job(pb::CreateJobRequest {
            manifest: manifest.into(),
            source: "chatty.toml".into(),
        })
        .await
        .unwrap();
    wait_for_within("the task to run", Duration::from_secs(60), || async {
        client.serving("chatty").await == 1
    })
    .await;

    for server in [&first, &second] {
        // Its log, read through either server, though the task runs on neither.
        let logs = cli(&server.url, &token, &["logs", "chatty"]);
        assert!(logs.starts_with("hello from afar\n"), "{logs:?}");
        // Its usage, measured by the agent and shown by either server.
        let client = Client::of(server, &token).await;
        wait_for_within("the task's usage", Duration::from_secs(30), || async {
            let request = pb::ListTasksRequest {
                job: "chatty".into(),
                states: vec![],
            };
            let tasks = client.tasks.clone().list_tasks(request).await.unwrap();
            let tasks = tasks.into_inner().tasks;
            tasks
                .iter()
                .any(|t| t.stats.as_ref().is_some_and(|s| s.memory_bytes > 0 && s.pids > 0))
        })
        .await;
        // And as series of the server's own metrics, tagged with the task's owner and node.
        wait_for_within("the task's series", Duration::from_secs(30), || async {
            let text = support::scrape(&server.url, &token).await;
            text.lines().any(|line| {
                line.starts_with("paved_task_memory_bytes{job=\"chatty\",node=\"node-1\",task=\"")
                    && line.contains("tenant=\"default\"")
            })
        })
        .await;
    }

    // A follower gets the lines the task writes after it started reading, through the server.
    let mut follower = Command::new(PAVED)
        .args(["--server", &second.url, "--token", &token])
        .args(["logs", "--follow", "--tail", "1", "chatty"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let ticks = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.starts_with("tick "))
            .take(10)
            .count()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ticks.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(ticks.join().unwrap(), 10, "a follower sees the task's new lines");
}
