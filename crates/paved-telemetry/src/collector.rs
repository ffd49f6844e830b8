//! What a gather yields (`MetricFamily`, `SeriesValue`, `Value`) and the `Emitter` through which
//! collectors add series computed at gather time.

use std::collections::BTreeMap;

use crate::catalog::{CounterDef, GaugeDef, MetricDef};
use crate::histogram::HistogramValue;
use crate::labels::Labels;
use crate::registry::{kind_of, tag_values};

/// Identifies a registered collector, to unregister it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CollectorId(pub(crate) u64);

/// One metric's series at gather time.
#[derive(Debug, Clone)]
pub struct MetricFamily {
    pub def: &'static MetricDef,
    /// Sorted by tags, each tag set once.
    pub series: Vec<SeriesValue>,
}

/// One series at gather time.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub labels: Labels,
    pub value: Value,
    pub source: Source,
}

/// A series' value at gather time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(f64),
    Gauge(f64),
    Histogram(HistogramValue),
}

/// Where a gathered series came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Recorded through a registry handle: a counter started at zero when its series was created.
    Recorded,
    /// Emitted by a collector: a counter may have counted long before it was first seen.
    Collected,
}

/// Hands a collector's series to the gather in progress.
pub struct Emitter<'a> {
    out: &'a mut BTreeMap<&'static str, MetricFamily>,
}

pub(crate) type CollectorFn = dyn Fn(&mut Emitter<'_>) + Send + Sync;

impl<'a> Emitter<'a> {
    pub(crate) fn new(out: &'a mut BTreeMap<&'static str, MetricFamily>) -> Self {
        Emitter { out }
    }

    /// Emits one series of a counter: its total so far.
    pub fn counter(&mut self, def: &'static CounterDef, labels: &[(&str, &str)], value: f64) {
        self.push(def.def(), labels, Value::Counter(value));
    }

    /// Emits one series of a gauge.
    pub fn gauge(&mut self, def: &'static GaugeDef, labels: &[(&str, &str)], value: f64) {
        self.push(def.def(), labels, Value::Gauge(value));
    }

    /// Tags that do not match the declaration are a bug in the collector: debug builds panic,
    /// release builds log an error and leave the series out.
    fn push(&mut self, def: &'static MetricDef, labels: &[(&str, &str)], value: Value) {
        let values = match tag_values(def, labels) {
            Ok(values) => values,
            Err(e) => {
                if cfg!(debug_assertions) {
                    panic!("{e}");
                }
                tracing::error!(error = %e, "collector emitted undeclared tags");
                return;
            }
        };
        let family = self.out.entry(def.name).or_insert_with(|| MetricFamily {
            def,
            series: Vec::new(),
        });
        if family.def.kind != kind_of(&value) {
            tracing::error!(metric = def.name, "collector emitted a series of another kind");
            return;
        }
        family.series.push(SeriesValue {
            labels: Labels::from_pairs(def.labels.iter().copied().zip(values.into_vec())),
            value,
            source: Source::Collected,
        });
    }
}

impl MetricFamily {
    /// Sorts the series by tags and keeps the first of each tag set (recorded before collected).
    pub(crate) fn sorted(mut self) -> Self {
        self.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        self.series.dedup_by(|later, first| later.labels == first.labels);
        self
    }
}
