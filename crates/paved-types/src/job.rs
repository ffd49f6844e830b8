//! Jobs: the runtime's unit of work, as submitted (`JobSpec`) and as stored (`Job`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a manifest asks for, validated. Only `manifest::parse_manifest` builds one from user
/// input, so every `JobSpec` in the system has passed validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub kind: JobKind,
    /// Service: tasks kept running. Batch: tasks to run to completion.
    pub instances: u32,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    pub restart: RestartSpec,
    pub ports: Vec<PortSpec>,
    /// Defaults keep specs stored before these fields existed decodable.
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub driver: Driver,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// OCI image reference whose root filesystem the task runs in; `None`: the host's system
    /// directories, read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Routes the manifest declares (`[[routes]]`), each with this job as its only backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<crate::Route>,
    /// Tier, constraints and distinct_hosts (`[placement]`).
    #[serde(default)]
    pub placement: crate::PlacementSpec,
    /// How tasks are moved (`[update]`).
    #[serde(default)]
    pub update: UpdateSpec,
}

/// How the platform moves a job's tasks: a drain stops at most `max_unavailable` of a
/// service's tasks that are not replaced yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSpec {
    pub max_unavailable: u32,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        UpdateSpec { max_unavailable: 1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Service,
    Batch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Cores, fractional.
    pub cpu: f64,
    pub memory_bytes: u64,
    /// Most processes and threads the task may have at once.
    #[serde(default = "default_pids")]
    pub pids: u32,
}

/// Which network a task sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The node's own network: ports bind on the host.
    #[default]
    Host,
    /// A network namespace of its own with only loopback: nothing outside can reach it.
    None,
}

/// What runs the task: the isolated sandbox, or a plain process (for trusted jobs only; who may
/// ask for it is decided where jobs are authorized, not here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Sandbox,
    Process,
}

/// How the agent tells whether a running task works, and when it gives up on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub check: HealthCheck,
    /// The `[[ports]]` name that http, tcp and grpc checks connect to; `None`: the first port.
    pub port: Option<String>,
    /// Between the starts of two checks; the first runs as soon as the task runs.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// A check that takes longer fails.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// After the task starts, failures do not count for this long (successes do).
    #[serde(with = "millis")]
    pub grace: Duration,
    /// Consecutive failures that make the task unhealthy.
    pub threshold: u32,
}

/// One way to check a task. http, tcp and grpc connect to `127.0.0.1:<port>` from the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HealthCheck {
    /// `GET <path>`; healthy on a 2xx or 3xx status.
    Http { path: String },
    /// Healthy when a TCP connection opens.
    Tcp,
    /// `grpc.health.v1.Health/Check` for `service` ("" asks about the whole server); healthy on
    /// SERVING.
    Grpc { service: String },
    /// Runs beside the task; healthy on exit code 0.
    Exec { command: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    /// Restarts allowed before the task fails for good.
    pub attempts: u32,
    /// First backoff delay; each restart doubles it, capped at `MAX_RESTART_DELAY`.
    #[serde(with = "millis")]
    pub delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// `[a-z0-9-]`; exposed to the task as `PORT_<NAME>` (upper case, `-` as `_`).
    pub name: String,
}

/// A job as the control plane stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Why the job is in its state, for people ("task 3f9a failed: exit code 2").
    pub reason: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted; not every task runs yet.
    Pending,
    /// Service: every desired task runs. Batch: tasks are running.
    Running,
    /// Batch: every task exited 0.
    Complete,
    /// A task failed for good.
    Failed,
    /// Stopped by a user.
    Killed,
}

/// The longest wait between restarts, whatever the manifest's `delay`.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Service => "service",
            JobKind::Batch => "batch",
        }
    }

    /// The restart policy a job of this kind gets when its manifest names none.
    pub fn default_restart_policy(self) -> RestartPolicy {
        match self {
            JobKind::Service => RestartPolicy::Always,
            JobKind::Batch => RestartPolicy::OnFailure,
        }
    }
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }

    /// Whether a task that exited with `exit_code` (None: killed by a signal) runs again.
    pub fn restarts_after(self, exit_code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != Some(0),
            RestartPolicy::Never => false,
        }
    }
}

impl RestartSpec {
    /// Backoff before restart number `restart` (1-based): `delay * 2^(restart-1)`, capped.
    /// Jitter is the caller's, since this crate has no randomness.
    pub fn backoff(&self, restart: u32) -> Duration {
        let factor = 1u32.checked_shl(restart.saturating_sub(1)).unwrap_or(u32::MAX);
        self.delay
            .checked_mul(factor)
            .unwrap_or(MAX_RESTART_DELAY)
            .min(MAX_RESTART_DELAY)
    }
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Complete => "complete",
            JobState::Failed => "failed",
            JobState::Killed => "killed",
        }
    }

    /// A terminal job has no task to run and never changes state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Complete | JobState::Failed | JobState::Killed)
    }
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
        }
    }
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Sandbox => "sandbox",
            Driver::Process => "process",
        }
    }
}

impl HealthCheck {
    /// "http", "tcp", "grpc" or "exec": the manifest key of the check.
    pub fn kind(&self) -> &'static str {
        match self {
            HealthCheck::Http { .. } => "http",
            HealthCheck::Tcp => "tcp",
            HealthCheck::Grpc { .. } => "grpc",
            HealthCheck::Exec { .. } => "exec",
        }
    }

    /// Whether the check connects to one of the task's ports.
    pub fn uses_port(&self) -> bool {
        !matches!(self, HealthCheck::Exec { .. })
    }
}

impl PortSpec {
    /// The environment variable carrying this port's number.
    pub fn env_var(&self) -> String {
        format!("PORT_{}", self.name.to_ascii_uppercase().replace('-', "_"))
    }
}

fn default_pids() -> u32 {
    crate::manifest::DEFAULT_PIDS
}

/// Serde for a `Duration` as whole milliseconds, the unit the API uses.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(delay_ms: u64) -> RestartSpec {
        RestartSpec {
            policy: RestartPolicy::Always,
            attempts: 5,
            delay: Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let s = spec(1000);
        let got: Vec<u64> = (1..=8).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(s.backoff(u32::MAX), MAX_RESTART_DELAY);
    }

    #[test]
    fn restart_policy_decisions() {
        let cases = [
            (RestartPolicy::Always, Some(0), true),
            (RestartPolicy::Always, None, true),
            (RestartPolicy::OnFailure, Some(0), false),
            (RestartPolicy::OnFailure, Some(1), true),
            (RestartPolicy::OnFailure, None, true),
            (RestartPolicy::Never, Some(1), false),
        ];
        for (policy, code, want) in cases {
            assert_eq!(policy.restarts_after(code), want, "{policy:?} {code:?}");
        }
    }

    /// Specs stored before `pids`, `network`, `driver` and `health` existed still decode, with
    /// the defaults a manifest gets.
    #[test]
    fn older_specs_decode_with_defaults() {
        let old = r#"{"name":"web","kind":"service","instances":1,"command":["x"],"env":{},
            "resources":{"cpu":0.1,"memory_bytes":67108864},
            "restart":{"policy":"always","attempts":5,"delay":1000},"ports":[]}"#;
        let spec: JobSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.resources.pids, crate::manifest::DEFAULT_PIDS);
        assert_eq!(
            (spec.network, spec.driver, spec.health),
            (Network::Host, Driver::Sandbox, None)
        );
    }

    #[test]
    fn health_spec_round_trips_as_json() {
        let checks = [
            HealthCheck::Http { path: "/h".into() },
            HealthCheck::Tcp,
            HealthCheck::Grpc {
                service: String::new(),
            },
            HealthCheck::Exec {
                command: vec!["true".into()],
            },
        ];
        for check in checks {
            let spec = HealthSpec {
                check,
                port: Some("http".into()),
                interval: Duration::from_secs(10),
                timeout: Duration::from_millis(1500),
                grace: Duration::ZERO,
                threshold: 3,
            };
            let json = serde_json::to_string(&spec).unwrap();
            assert!(json.contains("\"timeout\":1500"), "{json}");
            assert_eq!(serde_json::from_str::<HealthSpec>(&json).unwrap(), spec);
        }
    }

    #[test]
    fn port_env_var() {
        let p = PortSpec {
            name: "admin-http".into(),
        };
        assert_eq!(p.env_var(), "PORT_ADMIN_HTTP");
    }
}
