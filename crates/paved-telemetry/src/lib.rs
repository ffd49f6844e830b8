//! paved-telemetry: the metrics every paved component records, the embedded time-series store
//! that keeps their recent history, the query language over it, the Prometheus exposition, and
//! store snapshots.
//!
//! # The parts
//!
//! - [`catalog`]: every metric declared once, with kind, unit, help and tag keys; names follow
//!   `paved_<subsystem>_<name>_<unit>[_total]`.
//! - [`Registry`]: counter, gauge and histogram families of those declarations, with tagged
//!   series behind cached atomic handles, plus collectors that emit series at gather time.
//!   Histograms use sparse log-linear buckets ([`histogram`]), ±4.5 % at any quantile.
//! - [`Store`] ([`tsdb`]): recent history in memory, one sample per series per fixed step,
//!   compressed in blocks (about 1 to 4 bytes per sample, see [`tsdb`]'s `codec`), a series cap per
//!   metric, retention by whole blocks. [`Store::sample`] walks the registry once per step.
//! - [`query`]: `sum by (job) (rate(paved_task_cpu_seconds_total[1m]))` and friends, evaluated
//!   by [`Store::query`] into [`Series`] ready for JSON.
//! - [`prometheus::render`]: the text format for `/metrics`.
//! - [`Store::save`] / [`Store::load`]: one checked file, written atomically.
//!
//! # Invariants
//!
//! - **No network I/O, no clock, no threads.** Time is passed in ([`Timestamp`]); the caller
//!   drives sampling, serves queries and pushes OTLP. Only snapshots touch the disk.
//! - **Writers never wait on readers for long.** A recorded value is an atomic add. The store
//!   appends under one of 16 shard locks; queries copy block handles under it and decode after.
//! - **Cardinality is bounded.** Past `max_series_per_metric`, new series are dropped and counted
//!   (`paved_tsdb_dropped_samples_total{metric}`), never queued.
//! - **Nothing here panics on input**: tags, queries, and snapshot bytes are checked, with errors
//!   that name the thing and the fix. (Undeclared tag *keys* are a caller bug: debug builds panic.)
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use paved_telemetry::{Query, Registry, Store, StoreConfig, Timestamp, catalog, prometheus};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Record: look a series up once and keep the handle; each increment is one atomic add.
//! let registry = Registry::new();
//! let created = registry.counter(&catalog::API_REQUESTS).with(&[("method", "CreateJob"), ("status", "ok")]);
//! created.inc();
//! let latency = registry.histogram(&catalog::API_REQUEST_DURATION).with(&[("method", "CreateJob")]);
//! latency.observe(0.004);
//!
//! // Collect: series computed at each gather, e.g. per-task usage read from a stats cache.
//! // A task that ended is simply not emitted, and its series is gone.
//! registry.register_collector(|emit| {
//!     let tags = [("tenant", "acme"), ("job", "web"), ("task", "web-1"), ("node", "n1")];
//!     emit.gauge(&catalog::TASK_MEMORY, &tags, 64.0 * 1024.0 * 1024.0);
//! });
//!
//! // Sample into the store once per step, from the caller's loop.
//! let store = Store::new(StoreConfig::default())?;
//! registry.register_collector(store.collector()); // the store's own paved_tsdb_* metrics
//! let t0 = Timestamp::from_secs(1_700_000_000);
//! for step in 0..6 {
//!     created.inc();
//!     store.sample(&registry, t0.saturating_add(Duration::from_secs(10 * step)));
//! }
//!
//! // Query.
//! let end = t0.saturating_add(Duration::from_secs(50));
//! let query = Query::new("sum by (method) (rate(paved_api_requests_total[30s]))", t0, end, Duration::from_secs(10));
//! let series = store.query(&query)?;
//! assert_eq!(series[0].labels.get("method"), Some("CreateJob"));
//! assert_eq!(series[0].points.last().map(|(_, rate)| *rate), Some(0.1));
//!
//! // Serve /metrics.
//! let text = prometheus::render(&registry);
//! assert!(text.contains("paved_api_requests_total{method=\"CreateJob\",status=\"ok\"} 7\n"));
//!
//! // Snapshot on clean shutdown; at start, load it or begin empty.
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("telemetry.snapshot");
//! store.save(&path)?;
//! let store = match Store::load(&path, StoreConfig::default()) {
//!     Ok(store) => store,
//!     Err(e) => {
//!         eprintln!("{e}"); // e.code() == "snapshot.missing" on first start
//!         Store::new(StoreConfig::default())?
//!     }
//! };
//! assert_eq!(store.query(&query)?, series);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod catalog;
mod collector;
pub mod histogram;
mod labels;
pub mod otlp;
pub mod prometheus;
pub mod query;
mod registry;
mod snapshot;
mod sync;
mod time;
pub mod tsdb;

pub use catalog::{CounterDef, GaugeDef, HistogramDef, Kind, MetricDef, Unit};
pub use collector::{CollectorId, Emitter, MetricFamily, SeriesValue, Source, Value};
pub use histogram::{Bucket, HistogramValue};
pub use labels::{Labels, is_valid_label_name, is_valid_metric_name};
pub use query::{Query, QueryError, Series};
pub use registry::{Counter, Family, Gauge, Histogram, LabelError, Metric, Registry};
pub use snapshot::{SnapshotError, SnapshotStats};
pub use time::Timestamp;
pub use tsdb::{AppendError, ConfigError, SampleReport, SeriesRef, Store, StoreConfig, StoreStats};

/// Every error of this crate, for callers that handle them together.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Label(#[from] LabelError),
}
