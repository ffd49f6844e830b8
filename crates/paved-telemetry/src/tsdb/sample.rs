//! `Store::sample`: one pass over the registry (collectors included) that appends each series'
//! current value to the store, in the step that contains `now`.

use std::collections::HashMap;

use super::{AppendError, SeriesRef, Store};
use crate::catalog::Kind;
use crate::collector::{Source, Value};
use crate::histogram::{BUCKET_LABEL, format_bound};
use crate::labels::Labels;
use crate::registry::Registry;
use crate::sync::lock;
use crate::time::Timestamp;

/// What one [`Store::sample`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleReport {
    /// Samples stored (histograms count one per bucket, plus sum and count).
    pub appended: usize,
    /// Samples of new series refused by the per-metric cap.
    pub dropped: usize,
    /// Samples refused because their series already had one in this step or later.
    pub rejected: usize,
    /// Series removed by retention during this pass.
    pub evicted: usize,
    /// True when this step was already sampled: nothing was done.
    pub already_sampled: bool,
}

/// Store series already looked up, so a pass hashes each series' key once, not the store's
/// index; entries for series that were not gathered in a pass are forgotten.
#[derive(Default)]
pub(crate) struct Sampler {
    known: HashMap<Key, Known>,
    pass: u64,
    last_slot: Option<u64>,
    last_block: Option<u64>,
}

#[derive(Hash, PartialEq, Eq)]
struct Key {
    metric: &'static str,
    part: Part,
    labels: Labels,
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
enum Part {
    Value,
    Bucket,
    Sum,
    Count,
}

struct Known {
    series: SeriesRef,
    seen: u64,
}

impl Store {
    /// Gathers `registry` and appends one sample per series at the step containing `now`; call
    /// it once per step (more often is harmless: a step already sampled is skipped). Crossing
    /// into a new block also applies retention.
    ///
    /// A counter or histogram recorded through the registry that this store sees for the first
    /// time gets a zero one step earlier: it started at zero when created, after the previous
    /// pass, so `rate` counts what it gathered since (and a counter that restarted with the
    /// process reads as a reset). Collected counters get no such zero: their start is unknown.
    pub fn sample(&self, registry: &Registry, now: Timestamp) -> SampleReport {
        let mut report = SampleReport::default();
        let Some(slot) = self.slot(now) else { return report };
        let mut sampler = lock(&self.inner.sampler);
        if sampler.last_slot.is_some_and(|last| slot <= last) {
            report.already_sampled = true;
            return report;
        }
        sampler.last_slot = Some(slot);
        sampler.pass += 1;
        for family in registry.gather() {
            let def = family.def;
            for series in family.series {
                let zero_first = series.source == Source::Recorded && def.kind != Kind::Gauge;
                let mut put = |part, labels, value| {
                    let key = Key {
                        metric: def.name,
                        part,
                        labels,
                    };
                    self.put(&mut sampler, key, value, slot, zero_first, &mut report);
                };
                match series.value {
                    Value::Counter(v) | Value::Gauge(v) => put(Part::Value, series.labels, v),
                    Value::Histogram(h) => {
                        for bucket in &h.buckets {
                            let labels = series.labels.with(BUCKET_LABEL, &format_bound(bucket.upper));
                            put(Part::Bucket, labels, bucket.count as f64);
                        }
                        put(Part::Sum, series.labels.clone(), h.sum);
                        put(Part::Count, series.labels, h.count as f64);
                    }
                }
            }
        }
        let pass = sampler.pass;
        sampler.known.retain(|_, known| known.seen == pass);
        let block = slot / self.block_steps();
        if sampler.last_block != Some(block) {
            sampler.last_block = Some(block);
            report.evicted = self.evict(now);
        }
        report
    }

    fn put(
        &self,
        sampler: &mut Sampler,
        key: Key,
        value: f64,
        slot: u64,
        zero_first: bool,
        report: &mut SampleReport,
    ) {
        let pass = sampler.pass;
        let cached = sampler.known.get_mut(&key).map(|known| {
            known.seen = pass;
            known.series
        });
        let (series, new) = match cached {
            Some(series) => (series, false),
            None => match self.series(&key.stored_name(), &key.labels) {
                Ok(series) => (series, true),
                Err(_) => {
                    report.dropped += 1;
                    return;
                }
            },
        };
        if new && zero_first && slot > 0 {
            let _ = self.append_slot(series, slot - 1, 0.0);
        }
        match self.append_slot(series, slot, value) {
            Ok(()) => report.appended += 1,
            // Retention removed the series since it was looked up; the next pass creates it.
            Err(AppendError::UnknownSeries) => {
                sampler.known.remove(&key);
                report.dropped += 1;
                return;
            }
            Err(_) => report.rejected += 1,
        }
        if new {
            sampler.known.insert(key, Known { series, seen: pass });
        }
    }
}

impl Key {
    fn stored_name(&self) -> String {
        match self.part {
            Part::Value | Part::Bucket => self.metric.to_owned(),
            Part::Sum => format!("{}_sum", self.metric),
            Part::Count => format!("{}_count", self.metric),
        }
    }
}
