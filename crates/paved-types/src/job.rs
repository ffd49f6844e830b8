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

impl PortSpec {
    /// The environment variable carrying this port's number.
    pub fn env_var(&self) -> String {
        format!("PORT_{}", self.name.to_ascii_uppercase().replace('-', "_"))
    }
}

/// Serde for a `Duration` as whole milliseconds, the unit the API uses.
mod millis {
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

    #[test]
    fn port_env_var() {
        let p = PortSpec {
            name: "admin-http".into(),
        };
        assert_eq!(p.env_var(), "PORT_ADMIN_HTTP");
    }
}
