//! paved-telemetry: the metrics registry every paved component records into, the catalog that
//! declares each metric once, and the Prometheus text exposition.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod collector;
pub mod histogram;
pub mod labels;
pub mod otlp;
pub mod prometheus;
pub mod query;
pub mod registry;
pub mod snapshot;
mod sync;
pub mod time;
pub mod tsdb;

pub use catalog::{CounterDef, GaugeDef, HistogramDef, Kind, MetricDef, Unit};
pub use collector::{CollectorId, Emitter, MetricFamily, SeriesValue, Source, Value};
pub use histogram::{Bucket, HistogramValue};
pub use labels::Labels;
pub use registry::{Counter, Family, Gauge, Histogram, LabelError, Registry};
pub use time::Timestamp;
