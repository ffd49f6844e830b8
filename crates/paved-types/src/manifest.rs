//! Job manifests: TOML text in, a validated [`JobSpec`] out, or every problem in the file at once,
//! each with its line, column, field path and a message that says what would be valid.
//!
//! ```toml
//! name = "web"                 # required; 1-63 of [a-z0-9-], starts with a letter
//! kind = "service"             # required; "service" or "batch"
//! instances = 2                # default 1; 0..=10000 (0 for a service only)
//! command = ["/bin/sh", "-c", "exec ./server --port $PORT"]   # required
//! env = { RUST_LOG = "info" }  # PORT and PORT_* are the agent's
//!
//! [resources]
//! cpu = 0.5                    # cores; default 0.1
//! memory = "128MiB"            # default "64MiB"; at least "4MiB"
//!
//! [restart]
//! policy = "on-failure"        # default "always" for a service, "on-failure" for a batch job
//! attempts = 5                 # default 5; 0..=1000
//! delay = "1s"                 # default "1s"; "10ms"..="10m"; doubles on each restart
//!
//! [[ports]]
//! name = "http"                # the agent sets PORT (first port) and PORT_HTTP
//!
//! [health]                     # optional; see `health.rs` for every rule
//! http = "/healthz"            # exactly one of http = "/path", tcp = true, grpc = "service",
//!                              # exec = ["cmd", "arg"]
//! port = "http"                # default: the first port
//! interval = "10s"             # default "10s"; at least "1s"
//! timeout = "2s"               # default "2s" (or the interval, if shorter); at most the interval
//! grace = "5s"                 # default "5s"; failures this soon after a start do not count
//! threshold = 3                # default 3; 1..=100 consecutive failures make it unhealthy
//! ```
//!
//! Routes to the job's tasks: `[[routes]]`, see `routes.rs`. `[update] max_unavailable = 1`
//! (1..=10000): how many of a service's tasks may be down at once while a drain moves them. Tier, constraints and
//! distinct_hosts: `[placement]`, see `placement.rs`.
//!
//! Also at the top level: `network = "host" | "none"` (default "host") and
//! `driver = "sandbox" | "process"` (default "sandbox"); in `[resources]`, `pids = 1024`
//! (1..=65536).
//!
//! Validation walks the parsed table by hand: serde's derive stops at the first error and drops
//! the positions a person needs to fix the rest. Array indices in field paths count from 0.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

mod health;
mod hints;
mod placement;
mod routes;
mod rules;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeInteger, DeTable, DeValue};

use self::hints::unknown_key_message;
use self::rules::{
    argument, cores_in_range, driver, env_name, env_value, instances_for, integer_bytes, job_kind, job_name,
    memory_at_least_min, network, port_name, restart_delay, restart_policy,
};
use crate::job::{
    Driver, JobKind, JobSpec, Network, PortSpec, Resources, RestartPolicy, RestartSpec, UpdateSpec,
};
use crate::units::parse_memory;

/// Every problem found in a manifest, in source order. Displays as one
/// `file:line:column: field: message` line per problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct ManifestError {
    pub problems: Vec<ManifestProblem>,
}

/// One thing wrong with a manifest, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestProblem {
    /// The name the caller gave the manifest, e.g. "web.toml".
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters (not bytes).
    pub column: u32,
    /// Dotted path to the value: "resources.memory", "ports[1].name", "env.PATH"; "" for the
    /// whole document.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// The most tasks one job may ask for.
pub const MAX_INSTANCES: u32 = 10_000;
/// The most `[[ports]]` one job may declare.
pub const MAX_PORTS: usize = 16;
/// The longest job or port name.
pub const MAX_NAME_LEN: usize = 63;
pub const DEFAULT_CPU: f64 = 0.1;
pub const MAX_CPU: f64 = 1024.0;
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// Below this a process hardly starts; a request this small is a unit mistake.
pub const MIN_MEMORY: u64 = 4 << 20;
pub const DEFAULT_ATTEMPTS: u32 = 5;
pub const MAX_ATTEMPTS: u32 = 1000;
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);
pub const MIN_DELAY: Duration = Duration::from_millis(10);
pub const MAX_DELAY: Duration = Duration::from_secs(600);
pub const DEFAULT_PIDS: u32 = 1024;
pub const MAX_PIDS: u32 = 65536;
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Checking more often than this costs more than it tells.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// A check is a connection or a process start; less than this fails on a busy node.
pub const MIN_HEALTH_TIMEOUT: Duration = Duration::from_millis(10);
pub const DEFAULT_HEALTH_GRACE: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_THRESHOLD: u32 = 3;
pub const MAX_HEALTH_THRESHOLD: u32 = 100;
pub use self::placement::MAX_CONSTRAINTS;

/// Parses and validates a manifest. `source` names the file in messages ("web.toml"); nothing
/// is read from disk. Unset keys get their documented defaults.
pub fn parse_manifest(source: &str, text: &str) -> Result<JobSpec, ManifestError> {
    let mut checker = Checker::new(source, text);
    let spec = match DeTable::parse(text) {
        Ok(root) => Some(checker.job(&root)),
        Err(e) => {
            checker.syntax(&e);
            None
        }
    };
    checker.finish(spec)
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

fn lines(problems: &[ManifestProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

type Item<'i> = Spanned<DeValue<'i>>;

/// Where a table sits in the manifest, for the keys it accepts and for hints about misplaced
/// keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    Resources,
    Restart,
    Port,
    Health,
    Route,
    Placement,
    Update,
}

const PLACES: [Place; 8] = [
    Place::Top,
    Place::Resources,
    Place::Restart,
    Place::Port,
    Place::Health,
    Place::Route,
    Place::Placement,
    Place::Update,
];

const BOM_LEN: usize = '\u{feff}'.len_utf8();
const COMMAND_EXAMPLE: &str = "command = [\"/bin/sh\", \"-c\", \"exec ./server --port $PORT\"]";

impl Place {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Place::Top => &[
                "name",
                "kind",
                "instances",
                "command",
                "env",
                "resources",
                "restart",
                "ports",
                "network",
                "driver",
                "health",
                "image",
                "routes",
                "placement",
                "update",
            ],
            Place::Resources => &["cpu", "memory", "pids"],
            Place::Restart => &["policy", "attempts", "delay"],
            Place::Port => &["name"],
            Place::Health => &[
                "http",
                "tcp",
                "grpc",
                "exec",
                "port",
                "interval",
                "timeout",
                "grace",
                "threshold",
            ],
            Place::Route => &[
                "name", "host", "hosts", "path", "port", "sticky", "timeout", "retries",
            ],
            Place::Placement => &["tier", "constraints", "distinct_hosts"],
            Place::Update => &["max_unavailable"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Place::Top => "the top level",
            Place::Resources => "[resources]",
            Place::Restart => "[restart]",
            Place::Port => "[[ports]]",
            Place::Health => "[health]",
            Place::Route => "[[routes]]",
            Place::Placement => "[placement]",
            Place::Update => "[update]",
        }
    }
}

/// Collects problems while walking the parsed document.
struct Checker<'t> {
    file: &'t str,
    text: &'t str,
    /// Byte offset where each line starts; the first is 0.
    line_starts: Vec<usize>,
    problems: Vec<ManifestProblem>,
}

impl<'t> Checker<'t> {
    fn new(file: &'t str, text: &'t str) -> Self {
        let breaks = text.match_indices('\n').map(|(i, _)| i + 1);
        let line_starts = std::iter::once(0).chain(breaks).collect();
        Checker {
            file,
            text,
            line_starts,
            problems: Vec::new(),
        }
    }

    fn finish(mut self, spec: Option<JobSpec>) -> Result<JobSpec, ManifestError> {
        match spec {
            Some(spec) if self.problems.is_empty() => Ok(spec),
            _ => {
                self.problems.sort_by_key(|p| (p.line, p.column));
                Err(ManifestError {
                    problems: self.problems,
                })
            }
        }
    }

    fn syntax(&mut self, e: &toml::de::Error) {
        let hint = match e.message() {
            "duplicate key" => "; each key may appear once per table",
            _ => "",
        };
        let message = format!("invalid TOML: {}{hint}", e.message());
        self.report(e.span().unwrap_or(0..0), "", message);
    }

    fn report(&mut self, span: Range<usize>, field: &str, message: String) {
        let (line, column) = self.position(span.start);
        self.problems.push(ManifestProblem {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message,
        });
    }

    /// 1-based line and character column of a byte offset.
    fn position(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let mut start = self.line_starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        // Editors hide a byte order mark, so columns do not count it.
        if start == 0 && self.text.starts_with('\u{feff}') && offset >= BOM_LEN {
            start = BOM_LEN;
        }
        let column = self.text.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        (to_u32(line), to_u32(column))
    }

    fn job(&mut self, root: &Spanned<DeTable<'_>>) -> JobSpec {
        let (table, span) = (root.get_ref(), root.span());
        self.unknown_keys(table, "", Place::Top);
        let name = self.required(table, &span, "name", "name = \"web\"");
        let name = name.and_then(|v| self.name(v));
        let kind = self.required(table, &span, "kind", "kind = \"service\"");
        let kind = kind.and_then(|v| self.kind(v));
        let instances = table
            .get("instances")
            .map_or(Some(1), |v| self.instances(v, kind));
        let image = table.get("image").and_then(|v| self.image(v));
        // An image brings its own entrypoint and cmd; without one the command is required.
        let command = match image {
            Some(_) => table.get("command"),
            None => self.required(table, &span, "command", COMMAND_EXAMPLE),
        };
        let command = command.and_then(|v| self.command(v));
        let kind = kind.unwrap_or(JobKind::Service);
        let env = table.get("env").map(|v| self.env(v)).unwrap_or_default();
        let resources = self.resources(table.get("resources"));
        let restart = self.restart(table.get("restart"), kind);
        let ports = table.get("ports").map(|v| self.ports(v)).unwrap_or_default();
        let network = table.get("network").and_then(|v| self.network(v));
        let driver = table.get("driver").and_then(|v| self.driver(v));
        if driver == Some(Driver::Process)
            && image.is_some()
            && let Some(v) = table.get("image")
        {
            let message = "an image needs the sandbox, which mounts its root filesystem; remove \
                           driver = \"process\" or the image";
            self.report(v.span(), "image", message.to_owned());
        }
        if network == Some(Network::None)
            && !ports.is_empty()
            && let Some(v) = table.get("ports")
        {
            self.ports_without_network(v);
        }
        let health = table.get("health").and_then(|v| self.health(v, &ports, network));
        let routes = table.get("routes").map_or_else(Vec::new, |v| {
            self.routes(v, name.as_deref().unwrap_or("job"), &ports)
        });
        let placement = table
            .get("placement")
            .map(|v| self.placement(v))
            .unwrap_or_default();
        let update = table.get("update").map(|v| self.update(v)).unwrap_or_default();
        JobSpec {
            name: name.unwrap_or_default(),
            kind,
            instances: instances.unwrap_or(1),
            command: command.unwrap_or_default(),
            env,
            resources,
            restart,
            ports,
            network: network.unwrap_or_default(),
            driver: driver.unwrap_or_default(),
            health,
            image,
            routes,
            placement,
            update,
        }
    }

    /// `[update]`: how many of the job's tasks may be down at once while the platform moves
    /// them (a node drain; rolling deploys later).
    fn update(&mut self, v: &Item<'_>) -> UpdateSpec {
        let Some(table) = self.table(v, "update", "[update] with max_unavailable = 1") else {
            return UpdateSpec::default();
        };
        self.unknown_keys(table, "update", Place::Update);
        let max_unavailable = table.get("max_unavailable").map_or(Some(1), |v| {
            self.whole(
                v,
                "update.max_unavailable",
                1..=MAX_INSTANCES,
                "max_unavailable = 1",
            )
        });
        UpdateSpec {
            max_unavailable: max_unavailable.unwrap_or(1),
        }
    }

    /// The value of a required key, or a problem at the table that lacks it.
    fn required<'v>(
        &mut self,
        table: &'v DeTable<'_>,
        table_span: &Range<usize>,
        field: &str,
        example: &str,
    ) -> Option<&'v Item<'v>> {
        let key = field.rsplit('.').next().unwrap_or(field);
        let value = table.get(key);
        if value.is_none() {
            let message = format!("missing required key {key:?}; add it, e.g. {example}");
            self.report(table_span.clone(), field, message);
        }
        value
    }

    fn unknown_keys(&mut self, table: &DeTable<'_>, prefix: &str, place: Place) {
        for (key, _) in table.iter() {
            if !place.keys().contains(&key.get_ref().as_ref()) {
                let message = unknown_key_message(key.get_ref(), place);
                self.report(key.span(), &join(prefix, key.get_ref()), message);
            }
        }
    }

    fn name(&mut self, v: &Item<'_>) -> Option<String> {
        let s = self.string(v, "name", "name = \"web\"")?;
        self.check(v.span(), "name", job_name(s))
    }

    fn kind(&mut self, v: &Item<'_>) -> Option<JobKind> {
        let s = self.string(v, "kind", "kind = \"service\"")?;
        self.check(v.span(), "kind", job_kind(s))
    }

    fn instances(&mut self, v: &Item<'_>, kind: Option<JobKind>) -> Option<u32> {
        let n = self.whole(v, "instances", 0..=MAX_INSTANCES, "instances = 2")?;
        self.check(v.span(), "instances", instances_for(kind, n))
    }

    fn command(&mut self, v: &Item<'_>) -> Option<Vec<String>> {
        let Some(items) = v.get_ref().as_array() else {
            let hint = match v.get_ref().as_str() {
                Some(s) => format!("; to run it through a shell: [\"/bin/sh\", \"-c\", {s:?}]"),
                None => format!("; e.g. {COMMAND_EXAMPLE}"),
            };
            self.wrong_type(v, "command", "an array of strings", &hint);
            return None;
        };
        if items.is_empty() {
            let message = format!("is empty; give the program and its arguments, e.g. {COMMAND_EXAMPLE}");
            self.report(v.span(), "command", message);
            return None;
        }
        let args: Vec<Option<String>> = items
            .iter()
            .enumerate()
            .map(|(i, a)| self.argument(i, a))
            .collect();
        args.into_iter().collect()
    }

    fn argument(&mut self, index: usize, v: &Item<'_>) -> Option<String> {
        let field = format!("command[{index}]");
        let s = self.string(v, &field, "")?;
        self.check(v.span(), &field, argument(index, s))
    }

    fn env(&mut self, v: &Item<'_>) -> BTreeMap<String, String> {
        let Some(table) = self.table(v, "env", "env = { RUST_LOG = \"info\" }") else {
            return BTreeMap::new();
        };
        let mut env = BTreeMap::new();
        for (key, value) in table.iter() {
            let (name, field) = (key.get_ref().as_ref(), join("env", key.get_ref()));
            let name_ok = self.check(key.span(), &field, env_name(name)).is_some();
            let value = self.string(value, &field, "").map(|s| (value, s));
            let value = value.and_then(|(v, s)| self.check(v.span(), &field, env_value(s)));
            if let Some(value) = value
                && name_ok
            {
                env.insert(name.to_owned(), value);
            }
        }
        env
    }

    fn resources(&mut self, v: Option<&Item<'_>>) -> Resources {
        let mut resources = Resources {
            cpu: DEFAULT_CPU,
            memory_bytes: DEFAULT_MEMORY,
            pids: DEFAULT_PIDS,
        };
        let example = "[resources] with cpu = 0.5 and memory = \"128MiB\"";
        let Some(table) = v.and_then(|v| self.table(v, "resources", example)) else {
            return resources;
        };
        self.unknown_keys(table, "resources", Place::Resources);
        if let Some(cpu) = table.get("cpu").and_then(|v| self.cpu(v)) {
            resources.cpu = cpu;
        }
        if let Some(memory) = table.get("memory").and_then(|v| self.memory(v)) {
            resources.memory_bytes = memory;
        }
        if let Some(pids) = table.get("pids").and_then(|v| self.pids(v)) {
            resources.pids = pids;
        }
        resources
    }

    fn cpu(&mut self, v: &Item<'_>) -> Option<f64> {
        let field = "resources.cpu";
        let cores = match v.get_ref() {
            // Past i128 is past the limit too.
            DeValue::Integer(i) => int_value(i).map_or(f64::INFINITY, |n| n as f64),
            DeValue::Float(f) => f.as_str().parse().unwrap_or(f64::NAN),
            _ => {
                self.wrong_type(v, field, "a number of cores", "; e.g. cpu = 0.5");
                return None;
            }
        };
        let checked = cores_in_range(cores, &self.source(v));
        self.check(v.span(), field, checked)
    }

    fn memory(&mut self, v: &Item<'_>) -> Option<u64> {
        let field = "resources.memory";
        let bytes = match v.get_ref() {
            DeValue::String(s) => parse_memory(s).map_err(|e| e.to_string()),
            DeValue::Integer(i) => integer_bytes(i),
            _ => {
                let expected = "a size with a unit or an integer number of bytes";
                self.wrong_type(v, field, expected, "; e.g. memory = \"128MiB\"");
                return None;
            }
        };
        let bare = v.get_ref().is_integer();
        let checked = bytes.and_then(|b| memory_at_least_min(b, bare));
        self.check(v.span(), field, checked)
    }

    fn pids(&mut self, v: &Item<'_>) -> Option<u32> {
        self.whole(v, "resources.pids", 1..=MAX_PIDS, "pids = 256")
    }

    fn network(&mut self, v: &Item<'_>) -> Option<Network> {
        let s = self.string(v, "network", "network = \"host\"")?;
        self.check(v.span(), "network", network(s))
    }

    fn image(&mut self, v: &Item<'_>) -> Option<String> {
        let s = self.string(v, "image", "image = \"127.0.0.1:5000/team/app:1.2\"")?;
        self.check(v.span(), "image", image_reference(s))
    }

    fn driver(&mut self, v: &Item<'_>) -> Option<Driver> {
        let s = self.string(v, "driver", "driver = \"sandbox\"")?;
        self.check(v.span(), "driver", driver(s))
    }

    /// `[[ports]]` in a job whose network is "none": nothing could reach them.
    fn ports_without_network(&mut self, v: &Item<'_>) {
        let message = "a job with network = \"none\" gets a network namespace of its own with only \
                       loopback, so nothing outside could reach its ports; remove the [[ports]] or set \
                       network = \"host\"";
        self.report(v.span(), "ports", message.to_owned());
    }

    fn restart(&mut self, v: Option<&Item<'_>>, kind: JobKind) -> RestartSpec {
        let mut restart = RestartSpec {
            policy: kind.default_restart_policy(),
            attempts: DEFAULT_ATTEMPTS,
            delay: DEFAULT_DELAY,
        };
        let example = "[restart] with policy = \"on-failure\"";
        let Some(table) = v.and_then(|v| self.table(v, "restart", example)) else {
            return restart;
        };
        self.unknown_keys(table, "restart", Place::Restart);
        if let Some(policy) = table.get("policy").and_then(|v| self.policy(v)) {
            restart.policy = policy;
        }
        if let Some(attempts) = table.get("attempts").and_then(|v| self.attempts(v)) {
            restart.attempts = attempts;
        }
        if let Some(delay) = table.get("delay").and_then(|v| self.delay(v)) {
            restart.delay = delay;
        }
        restart
    }

    fn policy(&mut self, v: &Item<'_>) -> Option<RestartPolicy> {
        let s = self.string(v, "restart.policy", "policy = \"on-failure\"")?;
        self.check(v.span(), "restart.policy", restart_policy(s))
    }

    fn attempts(&mut self, v: &Item<'_>) -> Option<u32> {
        self.whole(v, "restart.attempts", 0..=MAX_ATTEMPTS, "attempts = 5")
    }

    fn delay(&mut self, v: &Item<'_>) -> Option<Duration> {
        let s = self.duration_string(v, "restart.delay", "delay = \"1s\"")?;
        self.check(v.span(), "restart.delay", restart_delay(s))
    }

    /// A string to parse as a duration, or a problem saying that a duration is one.
    fn duration_string<'v>(&mut self, v: &'v Item<'_>, field: &str, example: &str) -> Option<&'v str> {
        let s = v.get_ref().as_str();
        if s.is_none() {
            let hint = format!("; a duration is a string with a unit, e.g. {example} or \"500ms\"");
            self.wrong_type(v, field, "a duration string", &hint);
        }
        s
    }

    fn ports(&mut self, v: &Item<'_>) -> Vec<PortSpec> {
        let Some(items) = v.get_ref().as_array() else {
            let hint = "; declare each port in its own [[ports]] section (two brackets) with \
                        name = \"http\"";
            self.wrong_type(v, "ports", "an array of tables", hint);
            return Vec::new();
        };
        if let Some(extra) = items.get(MAX_PORTS) {
            let message = format!(
                "{} ports declared; a job may declare at most {MAX_PORTS}",
                items.len()
            );
            self.report(extra.span(), "ports", message);
        }
        let mut seen = HashMap::new();
        let ports = items.iter().enumerate();
        ports
            .filter_map(|(i, item)| self.port(i, item, &mut seen))
            .collect()
    }

    /// One `[[ports]]` entry; `seen` maps names to the index that first used them.
    fn port(&mut self, index: usize, v: &Item<'_>, seen: &mut HashMap<String, usize>) -> Option<PortSpec> {
        let field = format!("ports[{index}]");
        let table = self.table(v, &field, "{ name = \"http\" }")?;
        self.unknown_keys(table, &field, Place::Port);
        let name_field = format!("{field}.name");
        let item = self.required(table, &v.span(), &name_field, "name = \"http\"")?;
        let name = self.string(item, &name_field, "name = \"http\"")?;
        let name = self.check(item.span(), &name_field, port_name(name, seen))?;
        seen.insert(name.clone(), index);
        Some(PortSpec { name })
    }

    /// Passes on `result`'s value, or reports its message at `span`.
    fn check<T>(&mut self, span: Range<usize>, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.report(span, field, message)).ok()
    }

    /// A string, or a problem naming the expected type. `example` is TOML, or "" to hint at
    /// quoting a scalar instead.
    fn string<'v>(&mut self, v: &'v Item<'_>, field: &str, example: &str) -> Option<&'v str> {
        if let Some(s) = v.get_ref().as_str() {
            return Some(s);
        }
        let hint = match v.get_ref() {
            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                format!("; quote it: \"{}\"", self.source(v))
            }
            _ if example.is_empty() => String::new(),
            _ => format!("; e.g. {example}"),
        };
        self.wrong_type(v, field, "a string", &hint);
        None
    }

    fn table<'v>(&mut self, v: &'v Item<'_>, field: &str, example: &str) -> Option<&'v DeTable<'v>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(v, field, "a table", &format!("; e.g. {example}"));
                None
            }
        }
    }

    /// A whole number within `range`, or a problem saying which numbers would do.
    fn whole(
        &mut self,
        v: &Item<'_>,
        field: &str,
        range: std::ops::RangeInclusive<u32>,
        example: &str,
    ) -> Option<u32> {
        let (lo, hi) = (*range.start(), *range.end());
        let use_range = format!("use a whole number from {lo} to {hi}");
        let src = self.source(v);
        let message = match v.get_ref() {
            DeValue::Integer(i) => match int_value(i) {
                Some(n) => match u32::try_from(n) {
                    Ok(n) if range.contains(&n) => return Some(n),
                    _ if n < 0 => format!("{src} is negative; {use_range}"),
                    _ if n < i128::from(lo) => {
                        format!("{src} is less than the minimum of {lo}; {use_range}")
                    }
                    _ => format!("{src} is more than the maximum of {hi}; {use_range}"),
                },
                None if i.as_str().starts_with('-') => format!("{src} is negative; {use_range}"),
                None => format!("{src} is more than the maximum of {hi}; {use_range}"),
            },
            DeValue::Float(_) => format!("expected an integer, found float {src}; {use_range}"),
            DeValue::String(s) if s.trim().parse::<i64>().is_ok() => {
                format!("expected an integer, found string {src}; remove the quotes")
            }
            _ => {
                self.wrong_type(v, field, "an integer", &format!("; e.g. {example}"));
                return None;
            }
        };
        self.report(v.span(), field, message);
        None
    }

    fn wrong_type(&mut self, v: &Item<'_>, field: &str, expected: &str, hint: &str) {
        let message = format!("expected {expected}, found {}{hint}", self.describe(v));
        self.report(v.span(), field, message);
    }

    /// "integer 5", "string \"x\"", "an array": the type, and the value as written when short.
    fn describe(&self, v: &Item<'_>) -> String {
        let kind = match v.get_ref() {
            DeValue::String(_) => "string",
            DeValue::Integer(_) => "integer",
            DeValue::Float(_) => "float",
            DeValue::Boolean(_) => "boolean",
            DeValue::Datetime(_) => "datetime",
            DeValue::Array(_) => return "an array".to_owned(),
            DeValue::Table(_) => return "a table".to_owned(),
        };
        format!("{kind} {}", self.source(v))
    }

    /// The value as written in the file, first line only and shortened.
    fn source(&self, v: &Item<'_>) -> String {
        let written = self.text.get(v.span()).unwrap_or_default();
        shorten(written.lines().next().unwrap_or_default())
    }
}

/// A TOML integer's value; `None` when it does not fit in an `i128` (TOML allows any length;
/// the parser leaves range checks to us).
fn int_value(i: &DeInteger<'_>) -> Option<i128> {
    i128::from_str_radix(i.as_str(), i.radix()).ok()
}

/// A user's string, quoted for a message and cut short when long.
fn quote(s: &str) -> String {
    format!("{:?}", shorten_chars(s, 40))
}

fn shorten(s: &str) -> String {
    shorten_chars(s, 60)
}

fn shorten_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max).collect();
    cut.push('…');
    cut
}

/// `prefix.key`, or `key` at the top level.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An OCI image reference: `registry/repository[:tag][@sha256:<64 hex>]`, checked for shape here;
/// the agent's pull says whether it exists.
fn image_reference(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not an image reference ({why}); use registry/name:tag or registry/name@sha256:<digest>, \
             e.g. \"127.0.0.1:5000/team/app:1.2\""
        ))
    };
    if s.is_empty() || s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("empty, too long or with spaces");
    }
    // A local OCI layout directory, for sites without a registry: oci:/path[:tag].
    if let Some(path) = s.strip_prefix("oci:") {
        return match path.starts_with('/') {
            true => Ok(s.to_owned()),
            false => bad("an OCI layout is oci: and an absolute path, e.g. oci:/srv/images/app:1.2"),
        };
    }
    let Some((registry, _)) = s.split_once('/') else {
        return bad("no registry");
    };
    if registry.is_empty() {
        return bad("no registry");
    }
    if let Some((_, digest)) = s.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return bad("a digest is sha256: and 64 lowercase hex digits");
        }
    }
    Ok(s.to_owned())
}
