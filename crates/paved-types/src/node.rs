//! Nodes: machines running an agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    /// Cores the node offers to tasks.
    pub cpu: f64,
    pub memory_bytes: u64,
    /// `ready` while its agent reports; `down` once it stops.
    pub state: String,
    pub agent_version: String,
    pub heartbeat_at_ms: u64,
    /// How the node runs tasks, for people: `sandbox (cgroup v1 (...))`, or why it cannot.
    #[serde(default)]
    pub runtime: String,
    /// The IP address other machines reach the node's tasks at (the edge router sends to
    /// `address:port`); empty: loopback, for a node on the server's own machine.
    #[serde(default)]
    pub address: String,
    /// How often the agent reports; the control plane marks the node down after three missed.
    /// 0 (records from before it existed): the control plane's default.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// False while the node is drained: it keeps its tasks and gets no new ones. Records
    /// written before the field existed are eligible.
    #[serde(default = "yes")]
    pub eligible: bool,
    /// While a drain moves the node's tasks off: when it stops waiting for their jobs'
    /// disruption budgets and stops what is left (ms since the epoch). `None` once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
    /// How many ports its agent hands out to tasks (its port range); `None` from agents that
    /// did not say, which placement treats as no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_ports: Option<u32>,
}

fn yes() -> bool {
    true
}
