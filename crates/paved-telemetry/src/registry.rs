//! The `Registry` every component records into: counter, gauge and histogram families declared in
//! the [catalog](crate::catalog), their tagged series, and the collectors that add series at
//! gather time.
//!
//! The hot path is a cached handle: `family.with(tags)` hashes the tags once and returns a
//! [`Counter`], [`Gauge`] or [`Histogram`] that is one `Arc` around atomics, so a repeat
//! increment is a single `fetch_add`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::catalog::{CounterDef, GaugeDef, HistogramDef, Kind, MetricDef};
use crate::collector::{CollectorFn, CollectorId, Emitter, MetricFamily, SeriesValue, Source, Value};
use crate::histogram::{HistogramCell, HistogramValue, add_f64};
use crate::labels::Labels;
use crate::sync::{read, write};

/// Where every metric of a process is recorded. Cheap to clone: clones share one registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// The series of one declared metric, by tag values. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Family<M> {
    def: &'static MetricDef,
    series: Arc<RwLock<HashMap<Box<[String]>, M>>>,
}

/// A monotonic counter. Counts whole increments with one atomic add; fractional ones (seconds,
/// say) go to a second atomic, so the value is exact for integers up to 2^53.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<CounterCell>);

/// A value that goes up and down, kept as the bits of an f64 in one atomic.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

/// A distribution of observations in log-linear buckets (see [`crate::histogram`]).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCell>);

/// Tags that do not match a metric's declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "metric {metric} takes the tags {expected:?} but was given {given:?}; pass exactly the declared tags"
)]
pub struct LabelError {
    pub metric: &'static str,
    pub expected: &'static [&'static str],
    pub given: Vec<String>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// The family of `def`, created empty the first time.
    pub fn counter(&self, def: &'static CounterDef) -> Family<Counter> {
        self.family(def.def(), AnyFamily::Counter, |any| match any {
            AnyFamily::Counter(f) => Some(f.clone()),
            _ => None,
        })
    }

    /// The family of `def`, created empty the first time.
    pub fn gauge(&self, def: &'static GaugeDef) -> Family<Gauge> {
        self.family(def.def(), AnyFamily::Gauge, |any| match any {
            AnyFamily::Gauge(f) => Some(f.clone()),
            _ => None,
        })
    }

    /// The family of `def`, created empty the first time.
    pub fn histogram(&self, def: &'static HistogramDef) -> Family<Histogram> {
        self.family(def.def(), AnyFamily::Histogram, |any| match any {
            AnyFamily::Histogram(f) => Some(f.clone()),
            _ => None,
        })
    }

    /// Registers `collect`, called at every gather (each store sample and each `/metrics`
    /// scrape) to emit series computed on the spot, such as per-task usage read from a stats
    /// cache: a series it stops emitting is gone from the next gather. It runs on the gathering
    /// thread, so it should only read memory; it must not register or unregister collectors.
    pub fn register_collector(
        &self,
        collect: impl Fn(&mut Emitter<'_>) + Send + Sync + 'static,
    ) -> CollectorId {
        let id = CollectorId(self.inner.next_collector.fetch_add(1, Relaxed));
        write(&self.inner.collectors).push((id, Arc::new(collect)));
        id
    }

    /// Removes a collector; false if it was not registered.
    pub fn unregister_collector(&self, id: CollectorId) -> bool {
        let mut collectors = write(&self.inner.collectors);
        let before = collectors.len();
        collectors.retain(|(c, _)| *c != id);
        collectors.len() != before
    }

    /// Every metric's current series, recorded and collected, sorted by metric name and then by
    /// tags. A series both recorded and collected appears once, with the recorded value.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let families: Vec<AnyFamily> = read(&self.inner.families).values().cloned().collect();
        let mut out: BTreeMap<&'static str, MetricFamily> = BTreeMap::new();
        for family in families {
            let gathered = family.gather();
            out.insert(gathered.def.name, gathered);
        }
        let collectors: Vec<Arc<CollectorFn>> = read(&self.inner.collectors)
            .iter()
            .map(|(_, c)| c.clone())
            .collect();
        for collect in collectors {
            collect(&mut Emitter::new(&mut out));
        }
        out.into_values()
            .filter(|f| !f.series.is_empty())
            .map(MetricFamily::sorted)
            .collect()
    }

    fn family<M: Metric>(
        &self,
        def: &'static MetricDef,
        wrap: fn(Family<M>) -> AnyFamily,
        unwrap: fn(&AnyFamily) -> Option<Family<M>>,
    ) -> Family<M> {
        if let Some(existing) = read(&self.inner.families).get(def.name)
            && let Some(family) = unwrap(existing)
        {
            return family;
        }
        let mut families = write(&self.inner.families);
        let existing = families.entry(def.name).or_insert_with(|| wrap(Family::new(def)));
        unwrap(existing).unwrap_or_else(|| {
            tracing::error!(
                metric = def.name,
                "two declarations share a name; this one records nowhere"
            );
            Family::new(def)
        })
    }
}

impl<M: Metric> Family<M> {
    fn new(def: &'static MetricDef) -> Self {
        Family {
            def,
            series: Arc::default(),
        }
    }

    pub fn def(&self) -> &'static MetricDef {
        self.def
    }

    /// The series tagged `labels` (each declared key once, in any order), created at zero the
    /// first time. Keep the handle where the same series is recorded again: it skips this lookup.
    ///
    /// Tags that do not match the declaration are a bug in the caller: debug builds panic,
    /// release builds log an error and return a handle that records nowhere.
    pub fn with(&self, labels: &[(&str, &str)]) -> M {
        match self.try_with(labels) {
            Ok(metric) => metric,
            Err(e) => {
                if cfg!(debug_assertions) {
                    panic!("{e}");
                }
                tracing::error!(error = %e, "metric recorded with undeclared tags");
                M::default()
            }
        }
    }

    /// As [`Family::with`], returning the mismatch instead.
    pub fn try_with(&self, labels: &[(&str, &str)]) -> Result<M, LabelError> {
        let key = tag_values(self.def, labels)?;
        if let Some(metric) = read(&self.series).get(&key) {
            return Ok(metric.clone());
        }
        Ok(write(&self.series).entry(key).or_default().clone())
    }

    /// Forgets the series tagged `labels`; true if it existed. Handles to it still work but
    /// record nowhere.
    pub fn remove(&self, labels: &[(&str, &str)]) -> bool {
        match tag_values(self.def, labels) {
            Ok(key) => write(&self.series).remove(&key).is_some(),
            Err(_) => false,
        }
    }

    /// Forgets every series for which `keep` is false (given the tag values in declared order).
    pub fn retain(&self, mut keep: impl FnMut(&[String]) -> bool) {
        write(&self.series).retain(|key, _| keep(key));
    }

    /// How many series the family holds.
    pub fn len(&self) -> usize {
        read(&self.series).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn gather(&self) -> MetricFamily {
        let series = read(&self.series)
            .iter()
            .map(|(values, metric)| SeriesValue {
                labels: Labels::from_pairs(self.def.labels.iter().copied().zip(values.iter().cloned())),
                value: metric.value(),
                source: Source::Recorded,
            })
            .collect();
        MetricFamily {
            def: self.def,
            series,
        }
    }
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.whole.fetch_add(n, Relaxed);
    }

    /// Adds `x`; a negative or NaN `x` is ignored, as a counter never goes down.
    pub fn add(&self, x: f64) {
        if x.is_nan() || x <= 0.0 {
            return;
        }
        if x.fract() == 0.0 && x < (1u64 << 53) as f64 {
            self.inc_by(x as u64);
        } else {
            add_f64(&self.0.frac, x);
        }
    }

    pub fn get(&self) -> f64 {
        self.0.whole.load(Relaxed) as f64 + f64::from_bits(self.0.frac.load(Relaxed))
    }
}

impl Gauge {
    pub fn set(&self, x: f64) {
        self.0.store(x.to_bits(), Relaxed);
    }

    pub fn add(&self, x: f64) {
        add_f64(&self.0, x);
    }

    pub fn sub(&self, x: f64) {
        add_f64(&self.0, -x);
    }

    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn dec(&self) {
        self.add(-1.0);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
}

impl Histogram {
    pub fn observe(&self, x: f64) {
        self.0.observe(x);
    }

    /// Observes `d` in seconds, the unit every duration histogram uses.
    pub fn observe_duration(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    pub fn get(&self) -> HistogramValue {
        self.0.value()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram(Arc::new(HistogramCell::new()))
    }
}

/// What a family holds: one of the three handle types.
pub trait Metric: Clone + Default + sealed::Sealed {
    #[doc(hidden)]
    fn value(&self) -> Value;
}

impl Metric for Counter {
    fn value(&self) -> Value {
        Value::Counter(self.get())
    }
}

impl Metric for Gauge {
    fn value(&self) -> Value {
        Value::Gauge(self.get())
    }
}

impl Metric for Histogram {
    fn value(&self) -> Value {
        Value::Histogram(self.get())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Counter {}
    impl Sealed for super::Gauge {}
    impl Sealed for super::Histogram {}
}

/// The tag values of `labels` in the order `def` declares its keys.
pub(crate) fn tag_values(
    def: &'static MetricDef,
    labels: &[(&str, &str)],
) -> Result<Box<[String]>, LabelError> {
    let mismatch = || LabelError {
        metric: def.name,
        expected: def.labels,
        given: labels.iter().map(|(k, _)| (*k).to_owned()).collect(),
    };
    if labels.len() != def.labels.len() {
        return Err(mismatch());
    }
    def.labels
        .iter()
        .enumerate()
        .map(|(i, key)| match labels.get(i) {
            Some((k, v)) if k == key => Ok((*v).to_owned()),
            _ => labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| (*v).to_owned())
                .ok_or_else(mismatch),
        })
        .collect()
}

#[derive(Default)]
struct Inner {
    families: RwLock<BTreeMap<&'static str, AnyFamily>>,
    collectors: RwLock<Vec<(CollectorId, Arc<CollectorFn>)>>,
    next_collector: AtomicU64,
}

#[derive(Clone)]
enum AnyFamily {
    Counter(Family<Counter>),
    Gauge(Family<Gauge>),
    Histogram(Family<Histogram>),
}

impl AnyFamily {
    fn gather(&self) -> MetricFamily {
        match self {
            AnyFamily::Counter(f) => f.gather(),
            AnyFamily::Gauge(f) => f.gather(),
            AnyFamily::Histogram(f) => f.gather(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct CounterCell {
    whole: AtomicU64,
    frac: AtomicU64,
}

impl<M> std::fmt::Debug for Family<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("metric", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = read(&self.inner.families).keys().copied().collect();
        f.debug_struct("Registry")
            .field("metrics", &names)
            .finish_non_exhaustive()
    }
}

/// Kinds match their handles; used by the emitter to refuse a collected series whose metric was
/// recorded as another kind.
pub(crate) fn kind_of(value: &Value) -> Kind {
    match value {
        Value::Counter(_) => Kind::Counter,
        Value::Gauge(_) => Kind::Gauge,
        Value::Histogram(_) => Kind::Histogram,
    }
}

#[cfg(test)]
mod tests;
