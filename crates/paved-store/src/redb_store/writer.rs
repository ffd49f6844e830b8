//! The writer thread of a `RedbStore`: group commit. It takes every queued request, applies
//! them in order in one redb write transaction (each transaction its own revision), commits
//! once, so one fsync covers the batch, then publishes the events and answers the callers.
//!
//! A request whose compare fails leaves no trace and the others still commit; if the commit
//! itself fails, no request of the batch is acknowledged.

use std::sync::{Arc, mpsc};

use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};
use tracing::error;

use super::{Batch, HISTORY, KV, META, META_COMPACTED, META_REVISION, Meta, RedbOptions};
use crate::{Event, EventKind, Op, StoreError};

/// One request to the writer, answered with a revision (for `Compact`: the revision history
/// is compacted through).
pub(super) struct Request {
    pub(super) work: Work,
    pub(super) reply: Reply,
}

pub(super) enum Work {
    /// A validated, non-empty transaction.
    Txn(Vec<Op>),
    Compact(u64),
}

pub(super) struct Writer {
    db: Arc<Database>,
    queue: mpsc::Receiver<Request>,
    events: broadcast::Sender<Batch>,
    /// The counters as of the last successful commit.
    meta: Meta,
    history: u64,
    max_batch: usize,
}

/// What one write transaction did, kept aside until it commits.
struct Outcome {
    meta: Meta,
    events: Vec<Event>,
    answers: Vec<Result<u64, StoreError>>,
}

struct Tables<'t> {
    kv: Table<'t, &'static str, (u64, u64, &'static [u8])>,
    history: Table<'t, (u64, u64), (u8, &'static str, &'static [u8])>,
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// Revisions of a stored key: (create, mod).
type Found = Option<(u64, u64)>;

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        queue: mpsc::Receiver<Request>,
        events: broadcast::Sender<Batch>,
        meta: Meta,
        options: &RedbOptions,
    ) -> Writer {
        Writer {
            db,
            queue,
            events,
            meta,
            history: options.history,
            max_batch: options.max_batch,
        }
    }

    /// Serves batches until every sender is gone, that is until the store closes.
    pub(super) fn run(mut self) {
        while let Ok(first) = self.queue.recv() {
            self.serve(first);
        }
    }

    /// Commits `first` with every request queued behind it, then answers them all.
    fn serve(&mut self, first: Request) {
        let mut replies = vec![first.reply];
        let answers = match self.write(first.work, &mut replies) {
            Ok(outcome) => self.publish(outcome),
            Err(e) => {
                error!(error = %e, requests = replies.len(), "store commit failed; batch not acknowledged");
                let failed = || Err(StoreError::Backend(format!("redb: {e}")));
                replies.iter().map(|_| failed()).collect()
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The caller may have stopped waiting; its write is committed all the same.
            let _ = reply.send(answer);
        }
    }

    fn publish(&mut self, outcome: Outcome) -> Vec<Result<u64, StoreError>> {
        self.meta = outcome.meta;
        if !outcome.events.is_empty() {
            // No receiver means no watcher, which is fine.
            let _ = self.events.send(outcome.events.into());
        }
        outcome.answers
    }

    /// Applies `first` and the requests queued behind it in one write transaction, and
    /// commits it unless it changed nothing. `replies` holds the reply of `first`; every
    /// request taken from the queue adds its own, so a failure reaches them all.
    fn write(&self, first: Work, replies: &mut Vec<Reply>) -> Result<Outcome, redb::Error> {
        let txn = self.db.begin_write()?;
        let mut out = Outcome {
            meta: self.meta,
            events: Vec::new(),
            answers: Vec::new(),
        };
        self.apply(&txn, first, replies, &mut out)?;
        if out.meta == self.meta {
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(out)
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        first: Work,
        replies: &mut Vec<Reply>,
        out: &mut Outcome,
    ) -> Result<(), redb::Error> {
        let mut tables = Tables {
            kv: txn.open_table(KV)?,
            history: txn.open_table(HISTORY)?,
        };
        // Requests that arrive while the batch is applied join it: one fsync covers them too.
        let mut next = Some(first);
        while let Some(work) = next {
            let answer = match work {
                Work::Txn(ops) => tables.apply_txn(&ops, out)?,
                Work::Compact(through) => Ok(tables.compact(&mut out.meta, through)?),
            };
            out.answers.push(answer);
            next = self.take_queued(replies);
        }
        let keep_after = out.meta.revision.saturating_sub(self.history);
        tables.compact(&mut out.meta, keep_after)?;
        if out.meta != self.meta {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_REVISION, out.meta.revision)?;
            meta.insert(META_COMPACTED, out.meta.compacted)?;
        }
        Ok(())
    }

    /// The next queued request's work, its reply added to `replies`, if the batch has room.
    fn take_queued(&self, replies: &mut Vec<Reply>) -> Option<Work> {
        if replies.len() >= self.max_batch {
            return None;
        }
        let Request { work, reply } = self.queue.try_recv().ok()?;
        replies.push(reply);
        Some(work)
    }
}

impl Tables<'_> {
    /// Checks every compare, then writes every op under the next revision. The outer error is
    /// the backend failing, the inner one this transaction's conflict.
    fn apply_txn(&mut self, ops: &[Op], out: &mut Outcome) -> Result<Result<u64, StoreError>, redb::Error> {
        let mut found = Vec::with_capacity(ops.len());
        for op in ops {
            let current = self.found(op.key())?;
            let mod_revision = current.map(|(_, m)| m);
            if !op.expect().matches(mod_revision) {
                let key = op.key().to_owned();
                return Ok(Err(StoreError::Conflict {
                    key,
                    expected: op.expect(),
                    found: mod_revision,
                }));
            }
            found.push(current);
        }
        let changes = ops
            .iter()
            .zip(&found)
            .any(|(op, f)| matches!(op, Op::Put { .. }) || f.is_some());
        if !changes {
            // Only deletes of absent keys: nothing to commit, so no new revision.
            return Ok(Ok(out.meta.revision));
        }
        let revision = out.meta.revision + 1;
        for (op, current) in ops.iter().zip(found) {
            if let Some(event) = self.write_op(op, current, revision)? {
                self.record(&event, out.events.len() as u64)?;
                out.events.push(event);
            }
        }
        out.meta.revision = revision;
        Ok(Ok(revision))
    }

    fn found(&self, key: &str) -> Result<Found, redb::Error> {
        let entry = self.kv.get(key)?;
        Ok(entry.map(|e| {
            let (create, modified, _) = e.value();
            (create, modified)
        }))
    }

    /// Writes one op whose compare held; returns its event, `None` for a delete of nothing.
    fn write_op(&mut self, op: &Op, current: Found, revision: u64) -> Result<Option<Event>, redb::Error> {
        let (kind, key, value) = match op {
            Op::Put { key, value, .. } => {
                let create = current.map_or(revision, |(c, _)| c);
                self.kv
                    .insert(key.as_str(), (create, revision, value.as_slice()))?;
                (EventKind::Put, key, value.clone())
            }
            Op::Delete { key, .. } if current.is_some() => {
                self.kv.remove(key.as_str())?;
                (EventKind::Delete, key, Vec::new())
            }
            Op::Delete { .. } => return Ok(None),
        };
        Ok(Some(Event {
            revision,
            kind,
            key: key.clone(),
            value,
        }))
    }

    /// Appends an event to the history; `index` keeps the events of a batch in order.
    fn record(&mut self, event: &Event, index: u64) -> Result<(), redb::Error> {
        let kind = match event.kind {
            EventKind::Put => KIND_PUT,
            EventKind::Delete => KIND_DELETE,
        };
        let row = (kind, event.key.as_str(), event.value.as_slice());
        self.history.insert((event.revision, index), row)?;
        Ok(())
    }

    /// Drops the history through `through` (at most the current revision); returns the
    /// revision history is compacted through.
    fn compact(&mut self, meta: &mut Meta, through: u64) -> Result<u64, redb::Error> {
        let through = through.min(meta.revision);
        if through > meta.compacted {
            let dropped = (meta.compacted + 1, 0)..=(through, u64::MAX);
            self.history.retain_in(dropped, |_, _| false)?;
            meta.compacted = through;
        }
        Ok(meta.compacted)
    }
}

/// Decodes the kind stored in a history row.
pub(super) fn event_kind(code: u8) -> Result<EventKind, redb::Error> {
    match code {
        KIND_PUT => Ok(EventKind::Put),
        KIND_DELETE => Ok(EventKind::Delete),
        other => Err(redb::Error::Corrupted(format!(
            "unknown event kind {other} in history"
        ))),
    }
}
