//! paved-proxy: the edge router. An HTTP/1.1 and HTTP/2 reverse proxy (gRPC included, h2c to
//! upstreams) that routes by host and path to the healthy tasks of weighted backend jobs,
//! balances with power of two choices over peak-EWMA latency, retries within a budget, ejects
//! failing endpoints, injects faults, and records everything into the metrics registry.
//!
//! The proxy reads one input, a live [`Snapshot`] of routes, endpoints and faults from a
//! `tokio::sync::watch` channel; each new snapshot is compiled into a routing table and swapped
//! in atomically, so connections (idle or busy) never notice. See `ARCHITECTURE.md` for the
//! request path.
#![forbid(unsafe_code)]

mod balance;
mod body;
mod budget;
pub mod config;
mod downstream;
mod endpoint;
pub mod env;
mod error;
mod fault;
mod h1;
mod handler;
mod headers;
mod metrics;
mod percore;
mod server;
pub mod snapshot;
mod table;
mod timer;
mod upstream;

pub use config::{ConfigError, EjectionConfig, PoolConfig, ProxyConfig, RetryBudgetConfig, TlsConfig};
pub use env::{Clock, ManualClock, SystemClock};
pub use error::ProxyError;
pub use percore::PerCore;
pub use server::Proxy;
pub use snapshot::{Endpoint, Snapshot};
