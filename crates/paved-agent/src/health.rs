//! Health checks. While a task runs, a [`Monitor`] runs its job's `[health]` check every
//! interval (the first at once), counts consecutive failures once the grace period is over,
//! writes the task's health to the store when it changes (not on every check), and tells the
//! supervisor when the task turns unhealthy, so a service's task can be restarted.
//!
//! http, tcp and grpc checks connect to `127.0.0.1:<port>` from the agent, which shares the
//! host network with tasks (`network = "host"`); exec checks run beside the task through the
//! runtime, inside whatever isolates it.

use paved_telemetry::Counter;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use paved_control::repo::{Change, Repo};
use paved_runtime::{Runtime, TaskRecord, TaskSpec};
use paved_types::units::format_duration;
use paved_types::{Health, HealthCheck, HealthSpec, PortSpec, TaskState};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tracing::{info, warn};

/// Checks one run of a task until stopped.
pub(crate) struct Monitor {
    checker: JoinHandle<()>,
    /// Set, with the reason, once the task is unhealthy.
    unhealthy: watch::Receiver<Option<String>>,
}

/// How to check a task, its port resolved to the number the agent assigned.
pub(crate) enum Probe {
    Http {
        port: u16,
        path: String,
    },
    Tcp {
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
    Exec(Box<ExecProbe>),
    /// The check cannot run; every attempt fails with this.
    Broken(String),
}

/// What an exec check needs to run beside the task.
pub(crate) struct ExecProbe {
    pub command: Vec<String>,
    pub runtime: Arc<dyn Runtime>,
    pub record: TaskRecord,
    pub spec: TaskSpec,
}

/// `paved_agent_health_changes_total` of one task's job, by the health it changed to.
pub(crate) struct HealthCounters {
    pub(crate) healthy: Counter,
    pub(crate) unhealthy: Counter,
}

impl HealthCounters {
    fn count(&self, to: Health) {
        match to {
            Health::Healthy => self.healthy.inc(),
            Health::Unhealthy => self.unhealthy.inc(),
            Health::Unknown => {}
        }
    }
}

/// Consecutive-failure counting, apart from time and I/O so it is a plain state machine.
#[derive(Debug)]
struct Tracker {
    threshold: u32,
    failures: u32,
    health: Health,
}

/// A change of health: the new one, and for `Unhealthy` the failure that decided it.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    health: Health,
    detail: String,
    failures: u32,
}

/// Most characters of an exec check's output kept in the task's health detail.
const EXEC_DETAIL_CHARS: usize = 200;

impl Monitor {
    /// Starts checking the task `task_id` now, as its process has just started (or been
    /// adopted).
    pub(crate) fn start(
        repo: Repo,
        task_id: &str,
        spec: HealthSpec,
        probe: Probe,
        counters: HealthCounters,
    ) -> Monitor {
        let (tell, unhealthy) = watch::channel(None);
        let task_id = task_id.to_owned();
        let checker =
            tokio::spawn(
                async move { check_until_stopped(repo, task_id, spec, probe, tell, counters).await },
            );
        Monitor { checker, unhealthy }
    }

    /// Resolves, with the reason, once the task is unhealthy; never when `monitor` is `None`.
    pub(crate) async fn unhealthy(monitor: Option<&mut Monitor>) -> String {
        let Some(monitor) = monitor else {
            return std::future::pending().await;
        };
        let verdict = monitor.unhealthy.wait_for(Option::is_some).await;
        match verdict.map(|reason| reason.clone().unwrap_or_default()) {
            Ok(reason) => reason,
            // The checker ended (it panicked): no verdict will come.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops checking; returns once no check of this run can write to the store any more.
    pub(crate) async fn stop(self) {
        self.checker.abort();
        let _ = self.checker.await;
    }
}

impl Probe {
    /// The probe for `check` on a task whose job declares `ports`, numbered as in `assigned`.
    pub(crate) fn new(
        spec: &HealthSpec,
        ports: &[PortSpec],
        assigned: &BTreeMap<String, u16>,
        exec: impl FnOnce(Vec<String>) -> ExecProbe,
    ) -> Probe {
        let name = spec.port.as_deref().or(ports.first().map(|p| p.name.as_str()));
        let port = name.and_then(|n| assigned.get(n).copied());
        let port = match (&spec.check, port) {
            (HealthCheck::Exec { command }, _) => return Probe::Exec(Box::new(exec(command.clone()))),
            (_, Some(port)) => port,
            // Validation requires a declared port; one not assigned is the agent's fault.
            (_, None) => return Probe::Broken(format!("no port {name:?} assigned to the task")),
        };
        match &spec.check {
            HealthCheck::Http { path } => Probe::Http {
                port,
                path: path.clone(),
            },
            HealthCheck::Grpc { service } => Probe::Grpc {
                port,
                service: service.clone(),
            },
            _ => Probe::Tcp { port },
        }
    }

    /// Runs the check once, bounded by `timeout`; the error says what failed, for people.
    async fn attempt(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.check(timeout)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{}: no answer within {}",
                self.name(),
                format_duration(timeout)
            )),
        }
    }

    /// One check; exec checks bound themselves by `timeout` (the runtime kills the command).
    async fn check(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Probe::Http { port, path } => http(*port, path).await,
            Probe::Tcp { port } => TcpStream::connect(loopback(*port))
                .await
                .map(drop)
                .map_err(|e| format!("connect {}: {}", loopback(*port), io_text(&e))),
            Probe::Grpc { port, service } => grpc(*port, service).await,
            Probe::Exec(exec) => run_exec(exec, timeout).await,
            Probe::Broken(why) => Err(why.clone()),
        }
    }

    /// How a failure's text starts when the check itself took too long.
    fn name(&self) -> String {
        match self {
            Probe::Http { path, .. } => format!("GET {path}"),
            Probe::Tcp { port } => format!("connect {}", loopback(*port)),
            Probe::Grpc { service, .. } => grpc_name(service),
            Probe::Exec(exec) => format!("exec {}", exec.command.join(" ")),
            Probe::Broken(_) => "check".to_owned(),
        }
    }
}

impl Tracker {
    fn new(threshold: u32) -> Tracker {
        Tracker {
            threshold: threshold.max(1),
            failures: 0,
            health: Health::Unknown,
        }
    }

    /// Takes one check's result; `counts` is false during the grace period, when failures are
    /// ignored (successes are not). Returns the new health when it changes.
    fn observe(&mut self, result: Result<(), String>, counts: bool) -> Option<Verdict> {
        let detail = match result {
            Ok(()) => {
                self.failures = 0;
                return self.turn(Health::Healthy, String::new());
            }
            Err(_) if !counts => return None,
            Err(detail) => detail,
        };
        self.failures = self.failures.saturating_add(1);
        if self.failures < self.threshold {
            return None;
        }
        self.turn(Health::Unhealthy, detail)
    }

    fn turn(&mut self, health: Health, detail: String) -> Option<Verdict> {
        if self.health == health {
            return None;
        }
        self.health = health;
        let failures = self.failures;
        Some(Verdict {
            health,
            detail,
            failures,
        })
    }
}

impl Verdict {
    /// Why the supervisor stops the task: "unhealthy: GET /: status 500 (3 consecutive failures)".
    fn reason(&self) -> String {
        let plural = if self.failures == 1 { "" } else { "s" };
        format!(
            "unhealthy: {} ({} consecutive failure{plural})",
            self.detail, self.failures
        )
    }
}

async fn check_until_stopped(
    repo: Repo,
    task_id: String,
    spec: HealthSpec,
    probe: Probe,
    tell: watch::Sender<Option<String>>,
    counters: HealthCounters,
) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(spec.interval);
    // A check that ran long postpones the next rather than bunching them up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracker = Tracker::new(spec.threshold);
    loop {
        ticks.tick().await;
        let result = probe.attempt(spec.timeout).await;
        let counts = started.elapsed() >= spec.grace;
        let Some(verdict) = tracker.observe(result, counts) else {
            continue;
        };
        let health = verdict.health.as_str();
        info!(task = %task_id, health, detail = %verdict.detail, "task health changed");
        counters.count(verdict.health);
        record(&repo, &task_id, &verdict).await;
        if verdict.health == Health::Unhealthy {
            tell.send_replace(Some(verdict.reason()));
        }
    }
}

/// Writes the verdict to the task, unless the task no longer runs (the supervisor's word on a
/// task that ended wins over a late check's).
async fn record(repo: &Repo, task_id: &str, verdict: &Verdict) {
    let written = repo
        .update_task(task_id, |t| {
            if t.state != TaskState::Running {
                return Ok(Change::Keep);
            }
            t.health = verdict.health;
            t.health_detail.clone_from(&verdict.detail);
            Ok(Change::Write)
        })
        .await;
    if let Err(e) = written {
        warn!(task = %task_id, error = %e, "cannot record the task's health");
    }
}

async fn http(port: u16, path: &str) -> Result<(), String> {
    let what = format!("GET {path}");
    let addr = loopback(port);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{what}: connect {addr}: {}", io_text(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{what}: {}", chain(&e)))?;
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "paved-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{what}: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut send => response,
        // The connection ended (an HTTP/1.0 server closes it after answering): the answer, if
        // one came, is waiting.
        _ = &mut conn => send.await,
    };
    let status = response.map_err(|e| format!("{what}: {}", chain(&e)))?.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("{what}: status {}", status.as_u16()))
    }
}

async fn grpc(port: u16, service: &str) -> Result<(), String> {
    let what = grpc_name(service);
    let addr = loopback(port);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{what}: {e}"))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("{what}: connect {addr}: {}", chain(&e)))?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let reply = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))?;
    match reply.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("{what}: {}", other.as_str_name())),
    }
}

async fn run_exec(exec: &ExecProbe, timeout: Duration) -> Result<(), String> {
    let what = format!("exec {}", exec.command.join(" "));
    let ran = exec
        .runtime
        .exec(&exec.record, &exec.spec, &exec.command, timeout)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if ran.status.success() {
        return Ok(());
    }
    let ended = match (&ran.status.error, ran.status.code, ran.status.signal) {
        (Some(error), _, _) => error.clone(),
        (None, Some(code), _) => format!("exit code {code}"),
        (None, None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None, None) => "ended".to_owned(),
    };
    let said = ran.output.trim();
    if said.is_empty() {
        return Err(format!("{what}: {ended}"));
    }
    let said: String = said.chars().take(EXEC_DETAIL_CHARS).collect();
    Err(format!("{what}: {ended}: {said}"))
}

fn grpc_name(service: &str) -> String {
    if service.is_empty() {
        "grpc health of the server".to_owned()
    } else {
        format!("grpc health of {service:?}")
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// "connection refused": an I/O error without the "(os error 111)" people need not read.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// An error and its sources, "a: b: c": hyper's and tonic's own messages say little alone.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io_text(io),
            None => s.to_string(),
        };
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
