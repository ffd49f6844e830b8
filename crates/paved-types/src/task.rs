//! Tasks, one running instance of a job on a node, and the state machine their lives follow.
//!
//! ```text
//! pending ─► starting ─► running ─► exited | failed | killed | lost
//!               │  ▲         │
//!               ▼  │         ▼
//!             restarting ◄───┘        (any live state may also end killed or lost)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub job_id: String,
    pub job_name: String,
    pub tenant: String,
    /// Slot within the job, `0..instances`; a replacement task takes the slot it replaces.
    pub index: u32,
    pub node: String,
    pub state: TaskState,
    /// What the control plane wants; the agent converges the process toward it.
    pub desired: Desired,
    /// Why the task is in its state, in words a person can act on.
    pub reason: String,
    pub restarts: u32,
    /// Exit code of the last run; `None` while it never exited or when a signal ended it.
    pub exit_code: Option<i32>,
    /// Signal that ended the last run, if one did.
    pub signal: Option<i32>,
    pub pid: Option<u32>,
    /// Port name to the number the agent assigned.
    pub ports: BTreeMap<String, u16>,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// What the job's `[health]` check last concluded; `Unknown` without one, and again after
    /// each (re)start until a check decides.
    #[serde(default)]
    pub health: Health,
    /// The last failure that changed `health` ("GET /healthz: status 500"); empty when healthy.
    #[serde(default)]
    pub health_detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Placed on a node, not yet picked up by its agent.
    Pending,
    /// The agent is launching the process.
    Starting,
    Running,
    /// The process ended and the restart policy runs it again after a backoff.
    Restarting,
    /// Ended with exit code 0 and will not run again.
    Exited,
    /// Ended unsuccessfully and will not run again (attempts used up, or policy `never`).
    Failed,
    /// Stopped because somebody asked.
    Killed,
    /// Its node stopped knowing about it; what became of the process is unknown.
    Lost,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Run,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: TaskState,
    pub to: TaskState,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Restarting,
        TaskState::Exited,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Restarting => "restarting",
            TaskState::Exited => "exited",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// A terminal task never changes state again; its slot is free for a replacement.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Exited | TaskState::Failed | TaskState::Killed | TaskState::Lost
        )
    }

    /// The one rule for which state may follow which.
    // A table reads better than one `matches!` over every pair.
    #[allow(clippy::match_like_matches_macro)]
    pub fn can_become(self, to: TaskState) -> bool {
        use TaskState::*;
        if self.is_terminal() {
            return false;
        }
        match (self, to) {
            (_, Killed | Lost) => true,
            (Pending, Starting) => true,
            (Starting, Running | Restarting | Failed) => true,
            (Running, Restarting | Exited | Failed) => true,
            (Restarting, Starting | Failed) => true,
            _ => false,
        }
    }

    /// Checked transition: the state to store, or why it may not be stored.
    pub fn transition(self, to: TaskState) -> Result<TaskState, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Run => "run",
            Desired::Stop => "stop",
        }
    }
}

impl Task {
    /// Moves the task to `to`, stamping the times that state implies.
    pub fn set_state(&mut self, to: TaskState, now_ms: u64) -> Result<(), TransitionError> {
        self.state = self.state.transition(to)?;
        match to {
            TaskState::Running => self.started_at_ms = Some(now_ms),
            s if s.is_terminal() => {
                self.finished_at_ms = Some(now_ms);
                self.pid = None;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::{self, *};
    use proptest::prelude::*;

    fn check(from: TaskState, allowed: &[TaskState]) {
        for to in TaskState::ALL {
            assert_eq!(from.can_become(to), allowed.contains(&to), "{from} -> {to}");
        }
    }

    #[test]
    fn transitions() {
        check(Pending, &[Starting, Killed, Lost]);
        check(Starting, &[Running, Restarting, Failed, Killed, Lost]);
        check(Running, &[Restarting, Exited, Failed, Killed, Lost]);
        check(Restarting, &[Starting, Failed, Killed, Lost]);
        for terminal in [Exited, Failed, Killed, Lost] {
            check(terminal, &[]);
        }
    }

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(TaskState::parse("zombie"), None);
    }

    /// Tasks stored before health existed decode as `unknown`.
    #[test]
    fn older_tasks_decode_with_unknown_health() {
        let old = r#"{"id":"t","job_id":"j","job_name":"web","tenant":"default","index":0,"node":"n",
            "state":"running","desired":"run","reason":"","restarts":0,"exit_code":null,
            "signal":null,"pid":7,"ports":{},"created_at_ms":1,"started_at_ms":2,"finished_at_ms":null}"#;
        let task: super::Task = serde_json::from_str(old).unwrap();
        assert_eq!(
            (task.health, task.health_detail.as_str()),
            (super::Health::Unknown, "")
        );
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains("\"health\":\"unknown\""), "{json}");
    }

    proptest! {
        /// Whatever a task goes through, once terminal it stays so, and a task never reaches
        /// `running` without passing `starting`.
        #[test]
        fn walks_respect_the_machine(steps in proptest::collection::vec(0usize..8, 0..40)) {
            let mut state = Pending;
            let mut started = false;
            for step in steps {
                let to = TaskState::ALL[step];
                match state.transition(to) {
                    Ok(next) => {
                        prop_assert!(!state.is_terminal());
                        if next == Running { prop_assert!(started); }
                        if next == Starting { started = true; }
                        state = next;
                    }
                    Err(e) => prop_assert_eq!((e.from, e.to), (state, to)),
                }
            }
        }
    }
}
