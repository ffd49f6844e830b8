//! The command line as clap types: every command, flag and help text `paved` understands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Where the CLI looks for the server when neither `--server` nor `PAVED_SERVER` is set.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// The admin token `paved up` writes into its data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// paved: a job runtime and control plane in one binary.
///
/// Start everything on this machine with `paved up`, then submit jobs from TOML manifests.
/// Every command except `up`, `validate` and `completions` talks to the server over gRPC,
/// carrying the admin token that `paved up` wrote to its data directory.
///
/// Examples:
///   paved up --demo
///   paved run examples/hello-web.toml --wait
///   paved jobs
///   paved logs web -f
#[derive(Debug, Parser)]
#[command(name = "paved", version, verbatim_doc_comment, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The paved server to talk to.
    #[arg(long, global = true, env = "PAVED_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,

    /// API token [default: read from <data dir>/admin.token, which `paved up` writes].
    #[arg(long, global = true, env = "PAVED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Output format of listings and details.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Log more to stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's messages as pretty JSON, for scripts; listings print an array.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the control plane, a local agent and the embedded store in this process.
    ///
    /// Serves the gRPC API on --listen and writes an admin token to <data>/admin.token,
    /// where the other commands on this machine find it. Stop it with Ctrl-C.
    ///
    /// Example:
    ///   paved up --demo
    #[command(verbatim_doc_comment)]
    Up(UpArgs),

    /// Submit a job from a TOML manifest.
    ///
    /// The manifest is checked locally first; every problem is printed with its
    /// file:line:column and nothing is submitted (exit code 2). With --wait, follows the job
    /// until a service has all its instances running or a batch job ends.
    ///
    /// Example:
    ///   paved run examples/hello-web.toml --wait
    #[command(verbatim_doc_comment)]
    Run {
        /// The job manifest (TOML).
        file: PathBuf,
        /// Wait until a service runs all its instances, or a batch job completes.
        #[arg(long)]
        wait: bool,
    },

    /// Check a manifest without submitting it; no server needed.
    ///
    /// Prints a one-line summary of a valid manifest, or every problem with its
    /// file:line:column (exit code 2).
    ///
    /// Example:
    ///   paved validate examples/hello-web.toml
    #[command(verbatim_doc_comment)]
    Validate {
        /// The job manifest (TOML).
        file: PathBuf,
    },

    /// List jobs.
    ///
    /// TASKS counts the running tasks against the instances the job asks for.
    ///
    /// Example:
    ///   paved jobs -o json
    #[command(verbatim_doc_comment)]
    Jobs,

    /// Show one job: its spec, state and tasks.
    ///
    /// Example:
    ///   paved job web
    #[command(verbatim_doc_comment)]
    Job {
        /// Job id or name.
        job: String,
    },

    /// List tasks, the running instances of jobs.
    ///
    /// Example:
    ///   paved tasks --job web
    #[command(verbatim_doc_comment)]
    Tasks {
        /// Only the tasks of this job (id or name).
        #[arg(long)]
        job: Option<String>,
    },

    /// Show the cpu, memory and processes of running tasks, live.
    ///
    /// Refreshes every 2 s until interrupted; with --once, or -o json, prints one snapshot.
    /// Tasks of the process driver are not measured and show "-".
    ///
    /// Examples:
    ///   paved top
    ///   paved top --job web --once
    #[command(verbatim_doc_comment)]
    Top {
        /// Only the tasks of this job (id or name).
        #[arg(long)]
        job: Option<String>,
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },

    /// Print a task's output.
    ///
    /// TASK is a task id, a job name (its first live task) or job/index.
    ///
    /// Examples:
    ///   paved logs web -f
    ///   paved logs web/1 --stderr --tail 4096
    #[command(verbatim_doc_comment)]
    Logs {
        /// Task id, job name or job/index.
        task: String,
        /// Keep printing as the task writes.
        #[arg(short, long)]
        follow: bool,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Start this many bytes before the end.
        #[arg(long, value_name = "BYTES")]
        tail: Option<u64>,
    },

    /// Set how many instances a service job runs.
    ///
    /// Example:
    ///   paved scale web 3
    #[command(verbatim_doc_comment)]
    Scale {
        /// Job id or name.
        job: String,
        /// The new instance count.
        instances: u32,
    },

    /// Stop a job (all its tasks) or a single task.
    ///
    /// A job keeps its record in state `killed`; a killed task of a service job is replaced.
    ///
    /// Examples:
    ///   paved kill web
    ///   paved kill web/1
    #[command(verbatim_doc_comment)]
    Kill {
        /// Job id or name, or a task id or job/index.
        target: String,
    },

    /// List the nodes that run tasks, or drain one (admin).
    ///
    /// A drained node gets no new tasks; its service tasks move to other nodes, at most
    /// `[update] max_unavailable` of a job at a time (default 1), until --deadline, when the
    /// rest stop at once. Batch tasks finish where they are.
    ///
    /// Examples:
    ///   paved nodes
    ///   paved nodes drain node-7 --deadline 30m
    ///   paved nodes undrain node-7
    #[command(verbatim_doc_comment)]
    Nodes {
        #[command(subcommand)]
        action: Option<NodeAction>,
    },

    /// List tenants, mark one trusted or untrusted, or set its quotas (admin).
    ///
    /// A trusted tenant may submit jobs with driver = "process", which run as plain host
    /// processes without the sandbox. Every tenant is untrusted until an admin says otherwise.
    /// A tenant's capacity group in a tier caps what its live jobs of that tier may ask for
    /// (instances x resources); a tier without a group is unlimited.
    ///
    /// Examples:
    ///   paved tenants
    ///   paved tenants trust default
    ///   paved tenants quota default --tier critical --cpu 4 --memory 8GiB --tasks 100
    ///   paved tenants quota default --tier flex --clear
    #[command(verbatim_doc_comment)]
    Tenants {
        #[command(subcommand)]
        action: Option<TenantAction>,
    },

    /// Run a control-plane server: the API and, while it leads, the control loops; no agent.
    ///
    /// On the embedded store one server is the whole control plane. On etcd, run several:
    /// they share the store and the admin token, one leads the control loops through an
    /// etcd lease, and another takes over within seconds when it dies.
    ///
    /// Examples:
    ///   paved server --data /var/lib/paved
    ///   paved server --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --listen 0.0.0.0:7070
    #[command(verbatim_doc_comment)]
    Server(ServerArgs),

    /// Join a server as a node and run the tasks it places here.
    ///
    /// The agent registers the node (name, region, zone, labels, cpu, memory), sends a
    /// heartbeat, starts and stops the tasks placed on it and reports their state. A node
    /// that misses heartbeats is marked down and its service tasks are placed elsewhere.
    ///
    /// Examples:
    ///   paved agent --server http://10.0.0.5:7070 --token $AGENT_TOKEN --data /var/lib/paved-agent
    ///   paved agent --server http://10.0.0.5:7070 --zone us-east-1b --label disk=ssd --cpu 8
    #[command(verbatim_doc_comment)]
    Agent(AgentArgs),

    /// Create or revoke an API token (admin).
    ///
    /// A token's role says what it may do: admin (everything), tenant (the jobs, tasks, logs
    /// and metrics of its --tenant; it reads routes and nodes) or agent (the agent protocol
    /// only). `create` prints the secret once, on stdout; the server keeps only its digest.
    /// A revoked token is refused by every server sharing the store within about a second.
    ///
    /// Examples:
    ///   paved token create --role tenant --tenant shop --name shop-ci > shop.token
    ///   paved token create --role agent -o json
    ///   paved token revoke shop-ci
    #[command(verbatim_doc_comment)]
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },

    /// List API tokens (admin): name, role, tenant and age, never a secret.
    ///
    /// Example:
    ///   paved tokens -o json
    #[command(verbatim_doc_comment)]
    Tokens,

    /// Run an edge router of its own, following a server's routes (`--server`).
    ///
    /// It gets routes, faults and the serving tasks of every routed job from the server as
    /// they change, and keeps routing by the last it got while the server is unreachable.
    /// Put one at the edge of each region; `paved up` runs one inside already.
    ///
    /// Examples:
    ///   paved proxy --server http://10.0.0.5:7070 --token $PAVED_TOKEN --listen 0.0.0.0:80
    ///   paved proxy --listen 127.0.0.1:8443 --tls-cert cert.pem --tls-key key.pem
    #[command(verbatim_doc_comment)]
    Proxy(ProxyArgs),

    /// Add, change or remove a route of the edge router (`paved up --proxy`).
    ///
    /// A route sends requests for a host and path prefix to one or more jobs by weight; the
    /// jobs' running, healthy tasks take the traffic. Changes apply at once, live.
    ///
    /// Examples:
    ///   paved route add shop --host shop.example.com --path / --to shop-v1=100
    ///   paved route set shop --to shop-v1=90 --to shop-v2=10
    ///   paved route add api --path /api --to api:grpc=100 --sticky-header x-user
    ///   paved route rm shop
    #[command(verbatim_doc_comment)]
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },

    /// List the edge router's routes.
    ///
    /// Example:
    ///   paved routes -o json
    #[command(verbatim_doc_comment)]
    Routes,

    /// Inject a fault (a delay or an error status) into a share of a route's requests, or
    /// remove every fault.
    ///
    /// Examples:
    ///   paved fault add --route shop --delay 200ms --percent 10 --for 10m
    ///   paved fault add --route shop --abort 503 --percent 50 --header x-chaos=1 --for 5m
    ///   paved fault halt
    #[command(verbatim_doc_comment)]
    Fault {
        #[command(subcommand)]
        action: FaultAction,
    },

    /// List the faults being injected.
    ///
    /// Example:
    ///   paved faults
    #[command(verbatim_doc_comment)]
    Faults,

    /// Query the metrics paved keeps: its own and every task's (cpu, memory, pids).
    ///
    /// A query is a metric name with tag matchers (=, !=, =~, !~), optionally inside rate()
    /// for counters and an aggregation (sum, avg, min, max, count) grouped by tags;
    /// histogram_quantile() reads percentiles from histograms.
    ///
    /// Examples:
    ///   paved metrics query 'paved_task_memory_bytes{job="web"}' --since 10m
    ///   paved metrics query 'sum by (job) (rate(paved_task_cpu_seconds_total))'
    ///   paved metrics query 'histogram_quantile(0.99, paved_api_request_duration_seconds)' -o json
    ///   paved metrics list
    #[command(verbatim_doc_comment)]
    Metrics {
        #[command(subcommand)]
        action: MetricsAction,
    },

    /// Show the server: version, store, uptime and what it runs.
    ///
    /// Example:
    ///   paved status --server http://10.0.0.5:7070
    #[command(verbatim_doc_comment)]
    Status,

    /// Print a shell completion script.
    ///
    /// Example:
    ///   paved completions bash > ~/.local/share/bash-completion/completions/paved
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },

    /// The task shim, started by the runtime inside a task's sandbox; not for people.
    #[command(name = "__shim", hide = true)]
    Shim {
        /// The task's state directory.
        dir: PathBuf,
    },
}

/// `paved up`: where the server keeps its state and where it listens.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory for the store, task state and admin.token
    /// [default: $XDG_DATA_HOME/paved, e.g. ~/.local/share/paved]. The CLI looks for the token
    /// in the same place, so set PAVED_DATA for both when you move it.
    #[arg(long, env = "PAVED_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Address to serve the API on; loopback by default, so nothing outside this machine
    /// can reach it.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Also start demo jobs, to have something to look at.
    #[arg(long)]
    pub demo: bool,

    /// How often metrics are sampled into the embedded time-series store (`paved metrics`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub metrics_step: std::time::Duration,

    /// How long the embedded store keeps metric history; memory grows with it.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub metrics_retention: std::time::Duration,

    /// Where the edge router listens: HTTP/1.1 and h2c (gRPC) to the jobs of `paved routes`.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub proxy: SocketAddr,

    /// Run without the edge router.
    #[arg(long, conflicts_with_all = ["proxy", "proxy_tls_cert"])]
    pub no_proxy: bool,

    /// Terminate TLS on the edge router with this certificate chain (PEM, leaf first);
    /// HTTP/1.1 and HTTP/2 are offered by ALPN. Needs --proxy-tls-key.
    #[arg(long, requires = "proxy_tls_key", value_name = "FILE")]
    pub proxy_tls_cert: Option<PathBuf>,

    /// The private key of --proxy-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "proxy_tls_cert", value_name = "FILE")]
    pub proxy_tls_key: Option<PathBuf>,

    /// Also push every metric, once per metrics step, to this OTLP/gRPC collector
    /// (e.g. http://127.0.0.1:4317).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// `paved server`: where it keeps state and listens.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Where the cluster's state lives: `embedded` (redb in --data, one server) or
    /// `etcd://host:port[,host:port…][/prefix]`, shared by every server.
    #[arg(long, env = "PAVED_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Directory for admin.token, metrics history and (embedded store) the store itself.
    #[arg(long, env = "PAVED_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Also run an edge router here, routing to the tasks of every node.
    #[arg(long, value_name = "ADDR")]
    pub proxy: Option<SocketAddr>,
}

/// `paved agent`: who this node is and what it offers.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Directory for the node's task state and logs.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// The node's name, unique in the cluster [default: the host name].
    #[arg(long, value_name = "NAME", value_parser = node_name)]
    pub name: Option<String>,

    #[arg(long, default_value = "local", value_name = "REGION")]
    pub region: String,

    #[arg(long, default_value = "local-a", value_name = "ZONE")]
    pub zone: String,

    /// A label for placement constraints (`label:disk = ssd`); repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = label)]
    pub label: Vec<(String, String)>,

    /// Cores offered to tasks [default: all of this machine's].
    #[arg(long, value_name = "CORES")]
    pub cpu: Option<f64>,

    /// Memory offered to tasks, e.g. 8GiB [default: all of this machine's].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// The address the edge router reaches this node's tasks at.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub advertise: std::net::IpAddr,

    /// Between two heartbeats; a node silent for three is marked down.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat: std::time::Duration,
}

fn node_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("a node name is 1 to 63 of a-z, 0-9 and '-', e.g. node-1".to_owned())
    }
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE, e.g. disk=ssd")),
    }
}

/// `paved proxy`: where it listens and how it terminates TLS.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Address to take requests on: HTTP/1.1 and h2c (gRPC), or TLS with --tls-cert.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Terminate TLS with this certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_teaches_with_an_example() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            assert!(sub.get_about().is_some(), "{name} has no about");
            let long = sub.get_long_about().map(|s| s.to_string()).unwrap_or_default();
            assert!(long.contains("paved "), "{name}'s long help has no example");
        }
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from(["paved", "jobs", "-o", "json", "--server", "http://h:1"]).unwrap();
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.server, "http://h:1");
    }
}

#[derive(Debug, Subcommand)]
pub enum RouteAction {
    /// Create a route; fails if it exists.
    Add(RouteArgs),
    /// Change a route; flags not given keep their value (--to replaces every backend).
    Set(RouteArgs),
    /// Remove a route.
    Rm { name: String },
}

#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The route's name ([a-z0-9-]).
    pub name: String,
    /// A host it answers for; repeat for more; `*.example.com` for subdomains; none: any host.
    #[arg(long)]
    pub host: Vec<String>,
    /// The path prefix it answers for (longest prefix wins) [default: /].
    #[arg(long)]
    pub path: Option<String>,
    /// Where requests go: JOB=WEIGHT or JOB:PORT=WEIGHT; repeat to split traffic by weight.
    #[arg(long, value_name = "JOB[:PORT]=WEIGHT")]
    pub to: Vec<String>,
    /// Keep each client on one job and task by the value of this header.
    #[arg(long, conflicts_with = "sticky_cookie")]
    pub sticky_header: Option<String>,
    /// Keep each client on one job and task by the value of this cookie.
    #[arg(long)]
    pub sticky_cookie: Option<String>,
    /// Longest a request may take before the client gets 504 [default: 15s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Retries of an idempotent request on another task after a connect failure or 502-504
    /// [default: 2].
    #[arg(long)]
    pub retries: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum FaultAction {
    /// Add a fault to a share of a route's requests for a while.
    Add {
        /// The route whose requests it affects.
        #[arg(long)]
        route: String,
        /// Hold each affected request this long, then let it through.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "abort", required_unless_present = "abort")]
        delay: Option<std::time::Duration>,
        /// Answer each affected request with this HTTP status instead.
        #[arg(long)]
        abort: Option<u16>,
        /// Share of the route's requests affected, in percent (0 < P <= 100).
        #[arg(long)]
        percent: f64,
        /// Only requests carrying this header with this value: NAME=VALUE.
        #[arg(long, value_name = "NAME=VALUE")]
        header: Option<String>,
        /// How long the fault lasts; it removes itself then.
        #[arg(long = "for", value_parser = humantime::parse_duration, value_name = "DURATION")]
        duration: std::time::Duration,
    },
    /// Remove every fault at once.
    Halt,
}

#[derive(Debug, Subcommand)]
pub enum MetricsAction {
    /// Evaluate a query over the recent past; prints each series with a sparkline.
    Query {
        /// The query, e.g. 'paved_task_memory_bytes{job="web"}'.
        query: String,
        /// How far back to look (e.g. 90s, 10m, 6h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Resolution of the result; default: the store's step (10s unless configured).
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<std::time::Duration>,
    },
    /// List every metric paved records, with its kind, tags and meaning.
    List,
}

#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Move the node's tasks elsewhere and give it no new ones.
    Drain {
        node: String,
        /// How long to honour the jobs' disruption budgets before stopping what is left.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        deadline: Option<std::time::Duration>,
    },
    /// Make the node eligible for new tasks again (ends a drain).
    Undrain { node: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Allow the tenant's jobs to use driver = "process" (unsandboxed).
    Trust { name: String },
    /// Take that back; running tasks keep running until they are replaced.
    Untrust { name: String },
    /// Set the tenant's capacity group in a tier: what its live jobs of that tier may ask for
    /// in all. A limit not given is unlimited; jobs already running are not touched.
    Quota {
        name: String,
        /// critical (reserved: preempts flex tasks when nothing fits) or flex.
        #[arg(long, value_parser = ["critical", "flex"])]
        tier: String,
        /// Cores, e.g. 4 or 0.5.
        #[arg(long, conflicts_with = "clear")]
        cpu: Option<f64>,
        /// Memory, e.g. 8GiB.
        #[arg(long, value_parser = parse_memory_arg, conflicts_with = "clear")]
        memory: Option<u64>,
        /// Tasks.
        #[arg(long, conflicts_with = "clear")]
        tasks: Option<u64>,
        /// Remove the group: the tier becomes unlimited for the tenant.
        #[arg(long)]
        clear: bool,
    },
}

fn parse_memory_arg(s: &str) -> Result<u64, String> {
    paved_types::units::parse_memory(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a token and print its secret, the only time it is shown.
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The tenant a tenant token belongs to (required with --role tenant).
        #[arg(long, required_if_eq("role", "tenant"))]
        tenant: Option<String>,
        /// A unique name to list and revoke it by (1-63 of a-z, 0-9, '-') [default: made up].
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// The agent protocol only.
    Agent,
    /// One tenant's jobs, tasks, logs and metrics.
    Tenant,
}

impl RoleArg {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Agent => "agent",
            RoleArg::Tenant => "tenant",
        }
    }
}
