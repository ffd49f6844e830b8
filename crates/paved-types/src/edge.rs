//! The edge router's input: everything a proxy needs to route, as one immutable value. The
//! control plane builds it from the store; `paved up` hands it to its proxy in-process, and a
//! standalone `paved proxy` receives it over the `Routing.WatchEdge` stream.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::route::{Fault, Route};

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
