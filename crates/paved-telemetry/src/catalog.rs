//! The catalog: every metric paved records, declared once, here, with its kind, unit, help text
//! and the tag keys it may carry.
//!
//! # Names
//!
//! `paved_<subsystem>_<name>_<unit>[_total]`, all lowercase snake case:
//!
//! - `<subsystem>` is one of [`SUBSYSTEMS`]: the part of paved that records it (`task` for what
//!   the agent measures of a task, `tsdb` for the store itself).
//! - `<name>` says what is measured; it may be left out when the unit already says it
//!   (`paved_task_pids`, `paved_tsdb_series`).
//! - `<unit>` is a base unit, never a scaled one: `seconds`, `bytes` or `ratio` (0..1), or for
//!   counts a plural noun naming what is counted (`requests`, `starts`, `pids`, `samples`).
//! - `_total` ends every counter and nothing else.
//!
//! Histograms measure a magnitude, so their unit is `seconds` or `bytes`. The tag key `bucket`
//! is reserved: the store keeps a histogram's buckets as series tagged with it.

use serde::Serialize;

/// How a metric's value behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only goes up (resets to zero when its process restarts); queried with `rate`.
    Counter,
    /// Goes up and down: a level such as bytes in use.
    Gauge,
    /// A distribution of observations; queried with `histogram_quantile`.
    Histogram,
}

/// The unit a metric name ends with (before `_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Seconds,
    Bytes,
    /// A fraction between 0 and 1.
    Ratio,
    /// A plural noun naming what is counted: `requests`, `pids`.
    Count(&'static str),
}

impl Unit {
    /// The word the metric name ends with (before `_total`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Ratio => "ratio",
            Unit::Count(noun) => noun,
        }
    }
}

/// One metric's declaration. Serialises for `paved metrics list` and the API.
#[derive(Debug, PartialEq, Eq, Hash, Serialize)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    #[serde(serialize_with = "unit_suffix")]
    pub unit: Unit,
    /// One sentence for `# HELP`, the dashboard and `paved metrics list`.
    pub help: &'static str,
    /// The tag keys every series of this metric carries, in this order.
    pub labels: &'static [&'static str],
}

fn unit_suffix<S: serde::Serializer>(unit: &Unit, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(unit.suffix())
}

/// A counter's declaration; [`crate::Registry::counter`] takes only these.
#[derive(Debug)]
pub struct CounterDef(MetricDef);

/// A gauge's declaration; [`crate::Registry::gauge`] takes only these.
#[derive(Debug)]
pub struct GaugeDef(MetricDef);

/// A histogram's declaration; [`crate::Registry::histogram`] takes only these.
#[derive(Debug)]
pub struct HistogramDef(MetricDef);

macro_rules! typed_def {
    ($ty:ident, $kind:ident) => {
        impl $ty {
            pub const fn new(
                name: &'static str,
                unit: Unit,
                labels: &'static [&'static str],
                help: &'static str,
            ) -> Self {
                $ty(MetricDef {
                    name,
                    kind: Kind::$kind,
                    unit,
                    help,
                    labels,
                })
            }

            pub const fn def(&self) -> &MetricDef {
                &self.0
            }
        }
    };
}

typed_def!(CounterDef, Counter);
typed_def!(GaugeDef, Gauge);
typed_def!(HistogramDef, Histogram);

/// The subsystems a metric name may start with (after `paved_`).
pub const SUBSYSTEMS: &[&str] = &["api", "control", "scheduler", "agent", "task", "proxy", "tsdb"];

const TASK: &[&str] = &["tenant", "job", "task", "node"];
const JOB_ON_NODE: &[&str] = &["tenant", "job", "node"];

// ---- control plane -------------------------------------------------------------------------

pub static API_REQUESTS: CounterDef = CounterDef::new(
    "paved_api_requests_total",
    Unit::Count("requests"),
    &["method", "status"],
    "API calls handled, by gRPC method and outcome (ok or the error code).",
);

pub static API_REQUEST_DURATION: HistogramDef = HistogramDef::new(
    "paved_api_request_duration_seconds",
    Unit::Seconds,
    &["method"],
    "Time to handle an API call, from request to response, by gRPC method.",
);

pub static CONTROL_RECONCILE_DURATION: HistogramDef = HistogramDef::new(
    "paved_control_reconcile_duration_seconds",
    Unit::Seconds,
    &["loop"],
    "Time one pass of a control loop took, by loop.",
);

pub static SCHEDULER_PLACEMENTS: CounterDef = CounterDef::new(
    "paved_scheduler_placements_total",
    Unit::Count("placements"),
    &["result"],
    "Placement decisions, by result: tasks placed, flex tasks preempted, asks left unschedulable.",
);

// ---- agent -----------------------------------------------------------------------------------

pub static AGENT_TASK_STARTS: CounterDef = CounterDef::new(
    "paved_agent_task_starts_total",
    Unit::Count("starts"),
    JOB_ON_NODE,
    "Task processes the agent started, first starts and restarts alike.",
);

pub static AGENT_TASK_RESTARTS: CounterDef = CounterDef::new(
    "paved_agent_task_restarts_total",
    Unit::Count("restarts"),
    JOB_ON_NODE,
    "Task processes the agent started again under their restart policy.",
);

pub static AGENT_HEALTH_CHANGES: CounterDef = CounterDef::new(
    "paved_agent_health_changes_total",
    Unit::Count("changes"),
    &["tenant", "job", "node", "to"],
    "Changes of a task's health, by the health it changed to.",
);

// ---- tasks (measured by the agent from their cgroups) ------------------------------------------

pub static TASK_CPU: CounterDef = CounterDef::new(
    "paved_task_cpu_seconds_total",
    Unit::Seconds,
    TASK,
    "CPU time the task's processes used, user and system.",
);

pub static TASK_MEMORY: GaugeDef = GaugeDef::new(
    "paved_task_memory_bytes",
    Unit::Bytes,
    TASK,
    "Memory the task's cgroup uses now.",
);

pub static TASK_MEMORY_PEAK: GaugeDef = GaugeDef::new(
    "paved_task_memory_peak_bytes",
    Unit::Bytes,
    TASK,
    "Most memory the task's cgroup has used since it started.",
);

pub static TASK_PIDS: GaugeDef = GaugeDef::new(
    "paved_task_pids",
    Unit::Count("pids"),
    TASK,
    "Processes and threads in the task's cgroup.",
);

/// One task's usage as its `paved_task_*` series: what a node's agent measures and what a
/// server shows for a remote node's tasks; `labels` are tenant, job, task and node.
pub fn emit_task_usage(
    out: &mut crate::Emitter<'_>,
    labels: &[(&str, &str)],
    cpu_usage_ns: u64,
    memory_bytes: u64,
    memory_peak_bytes: u64,
    pids: u64,
) {
    out.counter(&TASK_CPU, labels, cpu_usage_ns as f64 / 1e9);
    out.gauge(&TASK_MEMORY, labels, memory_bytes as f64);
    out.gauge(&TASK_MEMORY_PEAK, labels, memory_peak_bytes as f64);
    out.gauge(&TASK_PIDS, labels, pids as f64);
}

// ---- the edge proxy ------------------------------------------------------------------------------

const ROUTE_JOB: &[&str] = &["route", "job"];

pub static PROXY_REQUESTS: CounterDef = CounterDef::new(
    "paved_proxy_requests_total",
    Unit::Count("requests"),
    &["route", "job", "class"],
    "Requests the proxy answered, by route, backend job and status class (1xx to 5xx); route and \
     job are - for requests no route matched.",
);

pub static PROXY_REQUEST_DURATION: HistogramDef = HistogramDef::new(
    "paved_proxy_request_duration_seconds",
    Unit::Seconds,
    ROUTE_JOB,
    "Time from a request's arrival to its response headers, retries and injected delays included.",
);

pub static PROXY_IN_FLIGHT: GaugeDef = GaugeDef::new(
    "paved_proxy_in_flight_requests",
    Unit::Count("requests"),
    ROUTE_JOB,
    "Requests proxied to an upstream whose response has not yet ended.",
);

pub static PROXY_UPSTREAM_ERRORS: CounterDef = CounterDef::new(
    "paved_proxy_upstream_errors_total",
    Unit::Count("errors"),
    &["route", "job", "kind"],
    "Upstream attempts that failed, by kind: connect, timeout, reset, or status (a 5xx answer).",
);

pub static PROXY_RETRIES: CounterDef = CounterDef::new(
    "paved_proxy_retries_total",
    Unit::Count("retries"),
    ROUTE_JOB,
    "Requests sent again to another endpoint after a failed attempt.",
);

pub static PROXY_EJECTIONS: CounterDef = CounterDef::new(
    "paved_proxy_ejections_total",
    Unit::Count("ejections"),
    ROUTE_JOB,
    "Endpoints taken out of balancing after consecutive failures, by the route that saw the last.",
);

pub static PROXY_INJECTED_FAULTS: CounterDef = CounterDef::new(
    "paved_proxy_injected_faults_total",
    Unit::Count("faults"),
    &["route", "action"],
    "Requests hit by an injected fault, by action (delay or abort).",
);

// ---- the time-series store ---------------------------------------------------------------------

pub static TSDB_SERIES: GaugeDef = GaugeDef::new(
    "paved_tsdb_series",
    Unit::Count("series"),
    &["metric"],
    "Series the embedded store holds, by metric.",
);

pub static TSDB_SAMPLES: CounterDef = CounterDef::new(
    "paved_tsdb_samples_total",
    Unit::Count("samples"),
    &[],
    "Samples appended to the embedded store.",
);

pub static TSDB_DROPPED_SAMPLES: CounterDef = CounterDef::new(
    "paved_tsdb_dropped_samples_total",
    Unit::Count("samples"),
    &["metric"],
    "Samples the store refused because their metric reached its series cap.",
);

pub static TSDB_MEMORY: GaugeDef = GaugeDef::new(
    "paved_tsdb_memory_bytes",
    Unit::Bytes,
    &[],
    "Heap memory the embedded store holds for series and their compressed blocks.",
);

/// Every declaration above, sorted by name.
pub static ALL: &[&MetricDef] = &[
    &AGENT_HEALTH_CHANGES.0,
    &AGENT_TASK_RESTARTS.0,
    &AGENT_TASK_STARTS.0,
    &API_REQUEST_DURATION.0,
    &API_REQUESTS.0,
    &CONTROL_RECONCILE_DURATION.0,
    &PROXY_EJECTIONS.0,
    &PROXY_IN_FLIGHT.0,
    &PROXY_INJECTED_FAULTS.0,
    &PROXY_REQUEST_DURATION.0,
    &PROXY_REQUESTS.0,
    &PROXY_RETRIES.0,
    &PROXY_UPSTREAM_ERRORS.0,
    &SCHEDULER_PLACEMENTS.0,
    &TASK_CPU.0,
    &TASK_MEMORY.0,
    &TASK_MEMORY_PEAK.0,
    &TASK_PIDS.0,
    &TSDB_DROPPED_SAMPLES.0,
    &TSDB_MEMORY.0,
    &TSDB_SAMPLES.0,
    &TSDB_SERIES.0,
];

/// The declaration named `name`, if there is one.
pub fn lookup(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().copied().find(|def| def.name == name)
}

#[cfg(test)]
mod tests;
