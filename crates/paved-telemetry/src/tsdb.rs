//! The embedded time-series store: recent history of every series, in memory, compressed.
//!
//! Samples sit on a fixed step (default 10 s): a series has at most one sample per step, stamped
//! with the step's start. Each series keeps its samples in compressed blocks of a fixed run of
//! steps (default 1 h), and retention (default 6 h) drops whole blocks. A per-metric cap bounds
//! the number of series; samples of series beyond it are dropped and counted, never queued.
//!
//! # Encoding
//!
//! Because the step is fixed, a sample's time is implied by its position in its block: no
//! timestamps are stored (Gorilla spends at least a bit per sample on them), and a missed step
//! costs a 3- or 6-bit code. Values that are decimals with up to 9 digits after the point
//! (counts, bytes, seconds from a µs or ns clock) are stored as delta-of-deltas of integers,
//! others with Gorilla's XOR coding; each block keeps whichever is shorter. Every value
//! round-trips bit for bit. A constant series costs 1 bit per sample, a steady counter about 1,
//! page-aligned memory about 11, a noisy microsecond cpu counter about 27; with tags and
//! bookkeeping, the cgroup-like mix in `tests/memory.rs` holds 1.7 bytes per sample (goal ≤ 2).
//! The bit layout is documented in `src/tsdb/codec.rs`.
//!
//! Series live in shards, each behind its own mutex; writers that hold a [`SeriesRef`] take only
//! their shard's lock, for one append. Queries copy the blocks they need (sealed blocks are
//! shared, not copied) and decode them after letting go, so a query never stalls ingestion for
//! longer than one series' block list takes to clone.
//!
//! Histograms are stored as plain series (see [`Store::sample`]): one per non-empty bucket,
//! tagged `bucket` with its upper bound and holding that bucket's own count (not cumulative),
//! plus `<name>_sum` and `<name>_count`. A bucket series appears when its bucket is first hit
//! and starts from a zero one step earlier, so rates and quantiles across series and time see
//! every observation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::{TSDB_DROPPED_SAMPLES, TSDB_MEMORY, TSDB_SAMPLES, TSDB_SERIES};
use crate::collector::Emitter;
use crate::labels::{Labels, is_valid_label_name, is_valid_metric_name};
use crate::sync::{lock, read, write};
use crate::time::Timestamp;

mod bits;
pub(crate) mod codec;
mod config;
mod sample;
pub(crate) mod series;

pub use config::{ConfigError, MAX_BLOCK_STEPS, StoreConfig};
pub use sample::SampleReport;
use series::{Block, SeriesData};

/// The store. Cheap to clone: clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A series' address in the store, for appending without looking its tags up again. It goes
/// stale when retention removes the series; appends then fail with [`AppendError::UnknownSeries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesRef {
    shard: u32,
    slot: u32,
    generation: u32,
}

/// Why a sample was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error(
        "metric {metric} has reached its cap of {limit} series; the sample is dropped (raise max_series_per_metric or tag with fewer values)"
    )]
    TooManySeries { metric: String, limit: usize },
    #[error("series already has a sample at or after {at}; the store keeps one sample per step, in order")]
    NotNewer { at: Timestamp },
    #[error("timestamp {at} is before 1970; pass milliseconds since the unix epoch")]
    BeforeEpoch { at: Timestamp },
    #[error("series reference is stale (retention removed the series); look the series up again")]
    UnknownSeries,
    #[error(
        "invalid metric name {name:?} or tag key; use [a-zA-Z_:][a-zA-Z0-9_:]* and [a-zA-Z_][a-zA-Z0-9_]*"
    )]
    InvalidName { name: String },
}

/// What the store holds, for `paved_tsdb_*` metrics and the memory benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    pub series: usize,
    /// Samples held now.
    pub samples: u64,
    /// Samples appended since the store was created or loaded.
    pub appended: u64,
    /// Heap bytes held: blocks, series records, tags and the index.
    pub memory_bytes: usize,
    /// Per metric, sorted by name.
    pub metrics: Vec<MetricStats>,
}

/// One metric's share of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricStats {
    pub name: String,
    pub series: usize,
    /// Samples refused because the metric was at its series cap.
    pub dropped: u64,
}

/// Decoded samples of one selected series.
pub(crate) struct Selected {
    pub(crate) labels: Arc<Labels>,
    /// (milliseconds, value), oldest first.
    pub(crate) samples: Vec<(i64, f64)>,
}

impl Store {
    pub fn new(config: StoreConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let shards = (0..SHARDS).map(|_| Mutex::default()).collect();
        Ok(Store {
            inner: Arc::new(Inner {
                step_ms: config.step_ms(),
                block_steps: config.block_steps(),
                config,
                index: RwLock::default(),
                shards,
                next_shard: AtomicUsize::new(0),
                sampler: Mutex::default(),
            }),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The series `metric{labels}`, created if the metric is under its cap. Past the cap the
    /// sample is counted as dropped for `metric` and this fails with `TooManySeries`.
    pub fn series(&self, metric: &str, labels: &Labels) -> Result<SeriesRef, AppendError> {
        let limit = self.inner.config.max_series_per_metric;
        if let Some(m) = read(&self.inner.index).metrics.get(metric) {
            if let Some(found) = m.series.get(labels) {
                return Ok(*found);
            }
            if m.series.len() >= limit {
                return Err(m.drop_sample(metric, limit));
            }
        }
        if !is_valid_metric_name(metric) || !labels.iter().all(|(k, _)| is_valid_label_name(k)) {
            return Err(AppendError::InvalidName {
                name: metric.to_owned(),
            });
        }
        let mut index = write(&self.inner.index);
        let name: Arc<str> = index
            .metrics
            .get_key_value(metric)
            .map_or_else(|| metric.into(), |(k, _)| k.clone());
        let m = index.metrics.entry(name.clone()).or_default();
        if let Some(found) = m.series.get(labels) {
            return Ok(*found);
        }
        if m.series.len() >= limit {
            return Err(m.drop_sample(metric, limit));
        }
        let labels = Arc::new(labels.clone());
        let found = self.inner.allocate(name, labels.clone(), SeriesData::default());
        m.series.insert(labels, found);
        Ok(found)
    }

    /// Appends `value` to `series` in the step that contains `at`.
    pub fn append(&self, series: SeriesRef, at: Timestamp, value: f64) -> Result<(), AppendError> {
        let slot = self.slot(at).ok_or(AppendError::BeforeEpoch { at })?;
        self.append_slot(series, slot, value)
    }

    /// Drops blocks that ended more than the retention before `now`, and series left empty.
    /// [`Store::sample`] calls this once per block; returns how many series were removed. It
    /// holds the index while it walks the shards: new series and query selection wait for it,
    /// appends to existing series only for their own shard's turn.
    pub fn evict(&self, now: Timestamp) -> usize {
        let cutoff = now.saturating_sub(self.inner.config.retention);
        let Some(cutoff) = self.slot(cutoff) else { return 0 };
        let steps = self.inner.block_steps;
        let mut index = write(&self.inner.index);
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            let mut shard = lock(shard);
            for i in 0..shard.slots.len() {
                let emptied = shard.slots[i]
                    .series
                    .as_mut()
                    .is_some_and(|x| x.data.drop_before(cutoff, steps));
                if !emptied {
                    continue;
                }
                if let Some(series) = shard.release(i) {
                    removed += 1;
                    if let Some(m) = index.metrics.get_mut(&series.metric) {
                        m.series.remove(&series.labels);
                    }
                }
            }
        }
        removed
    }

    /// Sizes and counts, walking every shard.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        for shard in self.inner.shards.iter() {
            let shard = lock(shard);
            stats.appended += shard.appended;
            stats.memory_bytes += shard.slots.capacity() * size_of::<Slot>();
            for series in shard.slots.iter().filter_map(|s| s.series.as_ref()) {
                stats.series += 1;
                stats.samples += series.data.samples();
                stats.memory_bytes += series.data.heap_bytes() + series.labels.heap_bytes() + ARC_LABELS;
            }
        }
        let index = read(&self.inner.index);
        for (name, m) in &index.metrics {
            stats.memory_bytes += name.len() + m.series.capacity() * INDEX_ENTRY;
            stats.metrics.push(MetricStats {
                name: name.to_string(),
                series: m.series.len(),
                dropped: m.dropped.load(Relaxed),
            });
        }
        stats.metrics.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// A collector that reports the store's own metrics (`paved_tsdb_*`); register it on the
    /// registry the store samples.
    pub fn collector(&self) -> impl Fn(&mut Emitter<'_>) + Send + Sync + 'static {
        let store = self.clone();
        move |emit| {
            let stats = store.stats();
            emit.counter(&TSDB_SAMPLES, &[], stats.appended as f64);
            emit.gauge(&TSDB_MEMORY, &[], stats.memory_bytes as f64);
            for m in &stats.metrics {
                emit.gauge(&TSDB_SERIES, &[("metric", &m.name)], m.series as f64);
                if m.dropped > 0 {
                    emit.counter(&TSDB_DROPPED_SAMPLES, &[("metric", &m.name)], m.dropped as f64);
                }
            }
        }
    }

    /// The names of the metrics the store holds series of, sorted.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.inner.index)
            .metrics
            .keys()
            .map(|k| k.to_string())
            .collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn step_ms(&self) -> i64 {
        self.inner.step_ms
    }

    pub(crate) fn block_steps(&self) -> u64 {
        self.inner.block_steps
    }

    /// The step containing `at`; `None` before 1970.
    pub(crate) fn slot(&self, at: Timestamp) -> Option<u64> {
        u64::try_from(at.as_millis().div_euclid(self.inner.step_ms)).ok()
    }

    pub(crate) fn append_slot(&self, series: SeriesRef, slot: u64, value: f64) -> Result<(), AppendError> {
        let shard = self
            .inner
            .shards
            .get(series.shard as usize)
            .ok_or(AppendError::UnknownSeries)?;
        let mut shard = lock(shard);
        let data = shard.get_mut(series).ok_or(AppendError::UnknownSeries)?;
        data.append(slot, value, self.inner.block_steps)
            .map_err(|e| AppendError::NotNewer {
                at: Timestamp::from_millis((e.last_slot as i64).saturating_mul(self.inner.step_ms)),
            })?;
        shard.appended += 1;
        Ok(())
    }

    /// Decoded samples in `from..=to` of the series of `metric` whose tags `keep` accepts.
    pub(crate) fn select(
        &self,
        metric: &str,
        keep: impl Fn(&Labels) -> bool,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<Selected> {
        let step = self.inner.step_ms;
        let first = u64::try_from(from.as_millis().max(0).div_euclid(step)).unwrap_or(0);
        let Some(last) = self.slot(to) else {
            return Vec::new();
        };
        let mut refs: Vec<(Arc<Labels>, SeriesRef)> = match read(&self.inner.index).metrics.get(metric) {
            Some(m) => m
                .series
                .iter()
                .filter(|(l, _)| keep(l))
                .map(|(l, r)| (l.clone(), *r))
                .collect(),
            None => return Vec::new(),
        };
        refs.sort_by_key(|(_, r)| (r.shard, r.slot));
        let steps = self.inner.block_steps;
        let mut blocks: Vec<(Arc<Labels>, Vec<Block>)> = Vec::with_capacity(refs.len());
        for group in refs.chunk_by(|a, b| a.1.shard == b.1.shard) {
            let mut shard = lock(&self.inner.shards[group[0].1.shard as usize]);
            for (labels, r) in group {
                if let Some(data) = shard.get_mut(*r) {
                    blocks.push((labels.clone(), data.blocks(first, last, steps)));
                }
            }
        }
        blocks
            .into_iter()
            .filter_map(|(labels, blocks)| {
                let mut samples = Vec::with_capacity(blocks.iter().map(|b| usize::from(b.samples)).sum());
                for block in blocks {
                    let decoded = block.decode(steps, |s, v| {
                        if (first..=last).contains(&s) {
                            samples.push(((s as i64).saturating_mul(step), v));
                        }
                    });
                    if let Err(e) = decoded {
                        tracing::error!(metric, error = %e, "a block in memory does not decode; skipping its series");
                        return None;
                    }
                }
                (!samples.is_empty()).then_some(Selected { labels, samples })
            })
            .collect()
    }

    /// Every series with its blocks, for snapshots.
    pub(crate) fn dump(&self) -> Vec<(Arc<str>, Arc<Labels>, Vec<Block>)> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = lock(shard);
            for series in shard.slots.iter().filter_map(|s| s.series.as_ref()) {
                out.push((
                    series.metric.clone(),
                    series.labels.clone(),
                    series.data.all_blocks(),
                ));
            }
        }
        out
    }

    /// Adds a series read back from a snapshot, within the cap; false if the cap refused it.
    pub(crate) fn restore(&self, metric: &str, labels: Labels, data: SeriesData) -> bool {
        let mut index = write(&self.inner.index);
        let name: Arc<str> = index
            .metrics
            .get_key_value(metric)
            .map_or_else(|| metric.into(), |(k, _)| k.clone());
        let m = index.metrics.entry(name.clone()).or_default();
        if m.series.len() >= self.inner.config.max_series_per_metric || m.series.contains_key(&labels) {
            return false;
        }
        let labels = Arc::new(labels);
        let found = self.inner.allocate(name, labels.clone(), data);
        m.series.insert(labels, found);
        true
    }
}

struct Inner {
    config: StoreConfig,
    step_ms: i64,
    block_steps: u64,
    index: RwLock<Index>,
    shards: Box<[Mutex<Shard>]>,
    next_shard: AtomicUsize,
    sampler: Mutex<sample::Sampler>,
}

#[derive(Default)]
struct Index {
    metrics: HashMap<Arc<str>, MetricSeries>,
}

#[derive(Default)]
struct MetricSeries {
    series: HashMap<Arc<Labels>, SeriesRef>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    appended: u64,
}

struct Slot {
    generation: u32,
    series: Option<Series>,
}

struct Series {
    metric: Arc<str>,
    labels: Arc<Labels>,
    data: SeriesData,
}

impl Inner {
    /// Places a new series in the next shard, round robin. Called with the index locked.
    fn allocate(&self, metric: Arc<str>, labels: Arc<Labels>, data: SeriesData) -> SeriesRef {
        let s = self.next_shard.fetch_add(1, Relaxed) % self.shards.len();
        let mut shard = lock(&self.shards[s]);
        let series = Some(Series { metric, labels, data });
        let slot = match shard.free.pop() {
            Some(i) => {
                shard.slots[i as usize].series = series;
                i
            }
            None => {
                shard.slots.push(Slot {
                    generation: 0,
                    series,
                });
                (shard.slots.len() - 1) as u32
            }
        };
        SeriesRef {
            shard: s as u32,
            slot,
            generation: shard.slots[slot as usize].generation,
        }
    }
}

impl Shard {
    fn get_mut(&mut self, r: SeriesRef) -> Option<&mut SeriesData> {
        let slot = self.slots.get_mut(r.slot as usize)?;
        if slot.generation != r.generation {
            return None;
        }
        slot.series.as_mut().map(|s| &mut s.data)
    }

    /// Empties slot `i`, making every reference to it stale.
    fn release(&mut self, i: usize) -> Option<Series> {
        let slot = &mut self.slots[i];
        let series = slot.series.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(i as u32);
        Some(series)
    }
}

impl MetricSeries {
    fn drop_sample(&self, metric: &str, limit: usize) -> AppendError {
        self.dropped.fetch_add(1, Relaxed);
        AppendError::TooManySeries {
            metric: metric.to_owned(),
            limit,
        }
    }
}

const SHARDS: usize = 16;
/// An `Arc<Labels>` allocation beyond the tags' own heap: counts and the vector's header.
const ARC_LABELS: usize = 16 + size_of::<Labels>();
/// A hash map entry of the index: key, reference and control byte, rounded.
const INDEX_ENTRY: usize = size_of::<(Arc<Labels>, SeriesRef)>() + 8;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
