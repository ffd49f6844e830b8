//! What readers see of the writes that are durable (in the write-ahead log) and acknowledged
//! but not yet committed to redb.
//!
//! The writer keeps one redb write transaction open across batches and commits it every
//! `RedbOptions::commit_interval`: a redb commit (the table tree's root updates, page
//! checksums, the allocator state) costs about as much CPU as the log append itself, and paying
//! it once per few milliseconds instead of once per batch leaves the writer thread free for the
//! next batch sooner. Until that commit, redb's read transactions do not see those batches, so
//! the writer also publishes each batch here, and every read looks here first.
//!
//! Consistency: a reader takes its copy of the overlay and begins its redb read transaction
//! under the read lock. The writer commits redb *then* clears the overlay under the write lock,
//! and publishes new batches under the write lock too. So, during one reader's critical
//! section, at most one commit can land, and what it commits is exactly what the reader's copy
//! holds: the reader's merged view is the published state either way.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Batch, Meta};
use crate::{Event, EventKind, KeyValue};

pub(super) type Shared = Arc<RwLock<Overlay>>;

pub(super) struct Overlay {
    /// The counters as of the last published batch (at or after redb's last commit).
    meta: Meta,
    /// Keys written since redb's last commit: where their latest event is.
    keys: BTreeMap<String, Slot>,
    /// The batches since redb's last commit, in order.
    batches: Vec<Batch>,
}

/// The latest state of a key: deleted, or the event (batch, index) that put it and its
/// create revision.
#[derive(Clone, Copy)]
enum Slot {
    Deleted,
    Put { create: u64, batch: usize, index: usize },
}

/// What a listing's snapshot found under its prefix in the overlay: the key and, unless it
/// was deleted, its value.
pub(super) type Found = Vec<(String, Option<KeyValue>)>;

pub(super) fn shared(meta: Meta) -> Shared {
    Arc::new(RwLock::new(Overlay {
        meta,
        keys: BTreeMap::new(),
        batches: Vec::new(),
    }))
}

// Nothing panics while holding the lock, and the state stays whole if something did.
pub(super) fn read(overlay: &Shared) -> RwLockReadGuard<'_, Overlay> {
    overlay.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write(overlay: &Shared) -> RwLockWriteGuard<'_, Overlay> {
    overlay.write().unwrap_or_else(PoisonError::into_inner)
}

impl Overlay {
    pub(super) fn meta(&self) -> Meta {
        self.meta
    }

    /// The key as the last published batch left it: `None` when no batch since redb's last
    /// commit touched it (redb has the answer), `Some(None)` when one deleted it.
    pub(super) fn get(&self, key: &str) -> Option<Option<KeyValue>> {
        self.keys.get(key).map(|slot| self.key_value(key, *slot))
    }

    /// The keys under `prefix` that batches since redb's last commit touched, in key order.
    pub(super) fn list(&self, prefix: &str) -> Found {
        self.keys
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, slot)| (key.clone(), self.key_value(key, *slot)))
            .collect()
    }

    /// The events after revision `after`, through `through`, under `prefix`.
    pub(super) fn events(&self, after: u64, through: u64, prefix: &str) -> Vec<Event> {
        self.batches
            .iter()
            .flat_map(|batch| batch.iter())
            .filter(|e| e.revision > after && e.revision <= through && e.key.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The batches since redb's last commit, to apply again to a new write transaction.
    pub(super) fn batches(&self) -> &[Batch] {
        &self.batches
    }

    /// Makes a batch visible; `creates` holds the create revision of each of its events (for a
    /// delete, anything).
    pub(super) fn publish(&mut self, meta: Meta, batch: &Batch, creates: &[u64]) {
        let b = self.batches.len();
        for (index, (event, create)) in batch.iter().zip(creates).enumerate() {
            let slot = match event.kind {
                EventKind::Put => Slot::Put {
                    create: *create,
                    batch: b,
                    index,
                },
                EventKind::Delete => Slot::Deleted,
            };
            self.keys.insert(event.key.clone(), slot);
        }
        if !batch.is_empty() {
            self.batches.push(batch.clone());
        }
        self.meta = meta;
    }

    /// Forgets the batches redb has just committed: its read transactions see them now.
    pub(super) fn committed(&mut self) {
        self.keys.clear();
        self.batches.clear();
    }

    fn key_value(&self, key: &str, slot: Slot) -> Option<KeyValue> {
        match slot {
            Slot::Deleted => None,
            Slot::Put { create, batch, index } => {
                let event = &self.batches[batch][index];
                Some(KeyValue {
                    key: key.to_owned(),
                    value: event.value.clone(),
                    create_revision: create,
                    mod_revision: event.revision,
                })
            }
        }
    }
}

/// Lays the overlay's `found` (sorted by key) over a listing read from redb (sorted by key).
pub(super) fn merge(base: Vec<KeyValue>, found: Found) -> Vec<KeyValue> {
    if found.is_empty() {
        return base;
    }
    let mut merged = Vec::with_capacity(base.len() + found.len());
    let mut base = base.into_iter().peekable();
    for (key, value) in found {
        // redb's keys before this one stand as they are.
        while let Some(kv) = base.next_if(|kv| kv.key < key) {
            merged.push(kv);
        }
        // redb's state of this key, if it has one, gives way to the overlay's.
        base.next_if(|kv| kv.key == key);
        merged.extend(value);
    }
    merged.extend(base);
    merged
}
