//! Watches on a `RedbStore`: replay the history table page by page, then follow the writer's
//! broadcast, skipping what the replay already delivered. A watcher that falls behind the
//! broadcast goes back to replaying history, so lag costs time, not events. History is redb's
//! table up to its last commit, then the overlay's batches.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase};
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::debug;

use super::overlay::{self, Shared};
use super::{Batch, HISTORY, META, Meta, blocking, writer::event_kind};
use crate::{Event, StoreError, WatchStream};

/// Revisions of history read per step of a replay.
const PAGE: u64 = 512;

/// The state of one watch stream.
struct Watcher {
    /// Weak, so a watch left open does not keep the file locked after the store is dropped.
    db: Weak<Database>,
    overlay: Shared,
    prefix: String,
    live: broadcast::Receiver<Batch>,
    /// Every revision up to this one was delivered (or did not match the prefix).
    seen: u64,
    /// Replay history until `seen` reaches this revision, then follow `live`.
    replay_to: u64,
    pending: VecDeque<Event>,
    ended: bool,
}

/// Starts a watch; `live` must be subscribed before this reads the store's revision.
pub(super) fn start(
    db: &Arc<Database>,
    overlay: &Shared,
    live: broadcast::Receiver<Batch>,
    prefix: &str,
    after: u64,
) -> Result<WatchStream, StoreError> {
    let meta = overlay::read(overlay).meta();
    check_kept(after, meta)?;
    let watcher = Watcher {
        db: Arc::downgrade(db),
        overlay: overlay.clone(),
        prefix: prefix.to_owned(),
        live,
        seen: after,
        replay_to: meta.revision,
        pending: VecDeque::new(),
        ended: false,
    };
    Ok(Box::pin(futures::stream::unfold(watcher, Watcher::next)))
}

impl Watcher {
    /// The next event, or the error that ends the stream.
    async fn next(mut self) -> Option<(Result<Event, StoreError>, Watcher)> {
        while !self.ended {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if let Err(e) = self.fill().await {
                self.ended = true;
                return Some((Err(e), self));
            }
        }
        None
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        if self.seen < self.replay_to {
            self.replay_page().await
        } else {
            self.follow().await
        }
    }

    async fn replay_page(&mut self) -> Result<(), StoreError> {
        let db = self.db.upgrade().ok_or(StoreError::Closed)?;
        let (after, prefix) = (self.seen, self.prefix.clone());
        let through = self.replay_to.min(after.saturating_add(PAGE));
        // One snapshot of both: the overlay's events and a redb read transaction.
        let (meta, recent, txn) = {
            let overlay = overlay::read(&self.overlay);
            let txn = db.begin_read().map_err(|e| super::backend(e.into()))?;
            (overlay.meta(), overlay.events(after, through, &prefix), txn)
        };
        check_kept(after, meta)?;
        let (committed, mut events) = blocking(move || read_history(&txn, after, through, &prefix)).await?;
        // redb's events come first; the overlay's are those after its last commit.
        events.extend(recent.into_iter().filter(|e| e.revision > committed));
        self.pending.extend(events);
        self.seen = through;
        Ok(())
    }

    async fn follow(&mut self) -> Result<(), StoreError> {
        match self.live.recv().await {
            Ok(batch) => {
                let fresh = batch.iter().filter(|e| e.revision > self.seen);
                let matching = fresh.filter(|e| e.key.starts_with(&self.prefix));
                self.pending.extend(matching.cloned());
                let last = batch.last().map_or(0, |e| e.revision);
                self.seen = self.seen.max(last);
                Ok(())
            }
            Err(RecvError::Lagged(missed)) => {
                debug!(missed, seen = self.seen, "watch fell behind; replaying history");
                self.replay_to = overlay::read(&self.overlay).meta().revision;
                Ok(())
            }
            Err(RecvError::Closed) => Err(StoreError::Closed),
        }
    }
}

/// A watch from `after` needs every revision after it, so none of them may be compacted.
fn check_kept(after: u64, meta: Meta) -> Result<(), StoreError> {
    if after < meta.compacted {
        return Err(StoreError::Compacted {
            requested: after.saturating_add(1),
            oldest: meta.compacted + 1,
        });
    }
    Ok(())
}

/// The events of revisions `after+1 ..= through` under `prefix` that `txn` sees in history,
/// and the revision of the commit `txn` reads.
fn read_history(
    txn: &ReadTransaction,
    after: u64,
    through: u64,
    prefix: &str,
) -> Result<(u64, Vec<Event>), redb::Error> {
    let committed = Meta::load(&txn.open_table(META)?)?.revision;
    let history: ReadOnlyTable<(u64, u64), (u8, &str, &[u8])> = txn.open_table(HISTORY)?;
    let mut events = Vec::new();
    for row in history.range((after + 1, 0)..=(through, u64::MAX))? {
        let (id, row) = row?;
        let (kind, key, value) = row.value();
        if key.starts_with(prefix) {
            let revision = id.value().0;
            let (key, value) = (key.to_owned(), value.to_vec());
            events.push(Event {
                revision,
                kind: event_kind(kind)?,
                key,
                value,
            });
        }
    }
    Ok((committed, events))
}
