//! paved's control plane: the API (gRPC and JSON on one port, behind bearer tokens), the store
//! schema, and the reconciler that converges jobs toward their desired tasks.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod caller;
pub mod convert;
pub mod edge;
pub mod env;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod mirror;
pub mod nodestore;
pub mod reconcile;
pub mod repo;
pub mod routing;
pub mod schedule;
pub mod server;
pub mod tokens;

pub use api::{Api, ServerInfo, TaskSource};
pub use caller::{Caller, Role, Roles};
pub use env::{Clock, Ids, SystemClock};
pub use error::ApiError;
pub use metrics::Telemetry;
pub use repo::Repo;
