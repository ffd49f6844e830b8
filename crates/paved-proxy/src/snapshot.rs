//! The proxy's input: everything it needs to route, as one immutable value the platform
//! publishes on a watch channel whenever routes, tasks or faults change.

use std::collections::HashMap;
use std::net::SocketAddr;

use paved_types::{Fault, Route};
use serde::{Deserialize, Serialize};

/// Routes, the endpoints of every routed job, and the active faults, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every route; invalid ones (see [`Route::validate`]) are skipped with a warning.
    pub routes: Vec<Route>,
    /// By job name: one entry per task and port. List each task's ports in the job's declared
    /// order: a backend whose port is `""` uses the port named by the job's first entry.
    pub endpoints: HashMap<String, Vec<Endpoint>>,
    /// Faults; expired or invalid ones are ignored.
    pub faults: Vec<Fault>,
}

/// One port of one running, healthy task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The task's id: sticky requests hash onto it, so it must stay the same across snapshots.
    pub task: String,
    pub addr: SocketAddr,
    pub port_name: String,
    /// Being stopped: it gets no new requests; those already sent finish.
    pub draining: bool,
}
