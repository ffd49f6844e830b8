//! paved's domain types: jobs, tasks and nodes, the manifest that describes a job, the task
//! state machine, and the proxy's routes and faults. Pure data and rules; this crate does no
//! I/O, so every rule is testable as a plain function.
#![forbid(unsafe_code)]

pub mod edge;
pub mod job;
pub mod manifest;
pub mod node;
pub mod placement;
pub mod route;
pub mod task;
pub mod units;

pub use job::{
    Driver, HealthCheck, HealthSpec, Job, JobKind, JobSpec, JobState, Network, PortSpec, Resources,
    RestartPolicy, RestartSpec, UpdateSpec,
};
pub use manifest::{ManifestError, ManifestProblem, parse_manifest};
pub use node::Node;
pub use placement::{Constraint, PlacementSpec, Tier};
pub use route::{Backend, Fault, FaultAction, Route, RouteError, Sticky};
pub use task::{Desired, Health, Task, TaskState, TransitionError};

/// The tenant every object belongs to until multi-tenancy brings more of them.
pub const DEFAULT_TENANT: &str = "default";
