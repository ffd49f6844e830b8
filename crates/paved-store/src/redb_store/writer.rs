//! The writer thread of a `RedbStore`: group commit. It takes every queued request, applies
//! them in order to its open redb write transaction (each transaction its own revision),
//! appends the batch's record to the write-ahead log, so one fsync covers the batch, publishes
//! the batch to the overlay readers look at first (see `overlay`), then broadcasts the events
//! and answers the callers. The open redb transaction is committed, without an fsync of its
//! own, every `RedbOptions::commit_interval`; every so often the writer checkpoints: one
//! durable redb commit, after which the log starts over.
//!
//! A request whose compare fails leaves no trace and the others still commit; if the log
//! append fails, no request of the batch is acknowledged, and the open transaction is rebuilt
//! from the overlay without that batch.

use std::fs::File;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, error};

use super::overlay::{self, Shared};
use super::wal::{Record, Wal};
use super::{Batch, HISTORY, KV, META, META_COMPACTED, META_REVISION, Meta, RedbOptions, kind_code, kind_of};
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
    /// The counters as of the last batch.
    meta: Meta,
    /// The counters as of redb's last commit.
    committed: Meta,
    history: u64,
    max_batch: usize,
    wal: Wal,
    checkpoint_bytes: u64,
    /// Set when a batch reached the log but not redb's memory: what follows would fork the
    /// log's chain, so every later write is refused until the store is opened again (which
    /// applies the log).
    failed: Option<String>,
    /// Writes back the redb file's pages in the background; `None` for a store not in a file.
    flusher: Option<Flusher>,
    /// The redb transaction the batches since the last commit went to, and when it began.
    open: Option<(WriteTransaction, Instant)>,
    commit_interval: Duration,
    overlay: Shared,
}

/// A writer that has had nothing to do for this long checkpoints, so an idle store keeps no
/// log to replay and no pages in memory that are not on disk.
pub(super) const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// How long the flusher lets commits gather after one wakes it, before it writes back what
/// redb spilled to its file.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// What one batch did, kept aside until it is logged.
struct Outcome {
    meta: Meta,
    events: Vec<Event>,
    /// The create revision of each event's key (for a delete, 0).
    creates: Vec<u64>,
    answers: Vec<Result<u64, StoreError>>,
}

struct Tables<'t> {
    kv: Table<'t, &'static str, (u64, u64, &'static [u8])>,
    history: Table<'t, (u64, u64), (u8, &'static str, &'static [u8])>,
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// Where the writer makes its batches known: the overlay that reads look at first, and the
/// broadcast that watches follow.
pub(super) struct Outlets {
    pub(super) events: broadcast::Sender<Batch>,
    pub(super) overlay: Shared,
}

/// Revisions of a stored key: (create, mod).
type Found = Option<(u64, u64)>;

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        queue: mpsc::Receiver<Request>,
        outlets: Outlets,
        meta: Meta,
        wal: Wal,
        file: Option<File>,
        options: &RedbOptions,
    ) -> Writer {
        let Outlets { events, overlay } = outlets;
        Writer {
            db,
            queue,
            events,
            meta,
            committed: meta,
            history: options.history,
            max_batch: options.max_batch,
            wal,
            checkpoint_bytes: options.checkpoint_bytes,
            failed: None,
            flusher: file.map(Flusher::start),
            open: None,
            commit_interval: options.commit_interval,
            overlay,
        }
    }

    /// Serves batches until every sender is gone, that is until the store closes, then
    /// checkpoints so that a clean stop leaves nothing to replay.
    pub(super) fn run(mut self) {
        loop {
            let wait = match &self.open {
                Some((_, since)) => self.commit_interval.saturating_sub(since.elapsed()),
                None => IDLE_CHECKPOINT,
            };
            match self.queue.recv_timeout(wait) {
                Ok(first) => {
                    self.serve(first);
                    if self.wal.len() >= self.checkpoint_bytes {
                        self.checkpoint();
                    } else if self.commit_due() {
                        self.commit();
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.open.is_some() => self.commit(),
                Err(RecvTimeoutError::Timeout) => self.checkpoint(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.checkpoint();
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
    }

    /// Makes every commit so far durable in redb itself; then the log can start over. A
    /// failure leaves the log as it is, still covering every commit, and is tried again later.
    fn checkpoint(&mut self) {
        self.commit();
        if self.wal.len() == 0 || self.failed.is_some() {
            return;
        }
        let started = Instant::now();
        match checkpoint(&self.db) {
            Ok(()) => {
                debug!(
                    log_bytes = self.wal.len(),
                    revision = self.meta.revision,
                    took = ?started.elapsed(),
                    "store checkpointed"
                );
                if let Err(e) = self.wal.restart() {
                    debug!(error = %e, "write-ahead log not cleared; the next open skips its records");
                }
            }
            Err(e) => error!(error = %e, "store checkpoint failed; the write-ahead log keeps every write"),
        }
    }

    fn commit_due(&self) -> bool {
        let since = self.open.as_ref().map(|(_, since)| since);
        since.is_some_and(|since| since.elapsed() >= self.commit_interval)
    }

    /// Commits the open redb transaction (without an fsync: the log has every batch in it),
    /// then lets readers find its batches in redb instead of the overlay. A failed commit stops
    /// every later write: the log holds batches redb does not, until a reopen applies them.
    fn commit(&mut self) {
        let Some((txn, _)) = self.open.take() else {
            return;
        };
        if let Err(e) = txn.commit() {
            error!(error = %e, "store commit failed; writes stop until paved is restarted on this data");
            self.failed = Some(stopped(e));
            return;
        }
        self.committed = self.meta;
        overlay::write(&self.overlay).committed();
        if let Some(flusher) = &self.flusher {
            flusher.kick();
        }
    }

    /// Commits `first` with every request queued behind it, then answers them all.
    fn serve(&mut self, first: Request) {
        let mut replies = vec![first.reply];
        let answers = match self.write(first.work, &mut replies) {
            Ok(outcome) => self.publish(outcome),
            Err(e) => {
                error!(error = %e, requests = replies.len(), "store commit failed; batch not acknowledged");
                replies
                    .iter()
                    .map(|_| Err(StoreError::Backend(e.clone())))
                    .collect()
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The caller may have stopped waiting; its write is committed all the same.
            let _ = reply.send(answer);
        }
    }

    fn publish(&mut self, outcome: Outcome) -> Vec<Result<u64, StoreError>> {
        if outcome.meta == self.meta {
            return outcome.answers;
        }
        self.meta = outcome.meta;
        let batch: Batch = outcome.events.into();
        overlay::write(&self.overlay).publish(outcome.meta, &batch, &outcome.creates);
        if !batch.is_empty() {
            // No receiver means no watcher, which is fine.
            let _ = self.events.send(batch);
        }
        outcome.answers
    }

    /// Applies `first` and the requests queued behind it to the open write transaction and
    /// logs them, unless they changed nothing. `replies` holds the reply of `first`; every
    /// request taken from the queue adds its own, so a failure reaches them all.
    fn write(&mut self, first: Work, replies: &mut Vec<Reply>) -> Result<Outcome, String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        let (txn, since) = match self.open.take() {
            Some(open) => open,
            None => (begin(&self.db).map_err(redb_failure)?, Instant::now()),
        };
        let mut out = Outcome {
            meta: self.meta,
            events: Vec::new(),
            creates: Vec::new(),
            answers: Vec::new(),
        };
        let applied = self.apply(&txn, first, replies, &mut out).map_err(redb_failure);
        let logged = applied.and_then(|()| {
            if out.meta == self.meta {
                return Ok(());
            }
            self.wal
                .append(self.meta, out.meta, &out.events)
                .map_err(|e| format!("write-ahead log: {e}"))
        });
        match logged {
            Ok(()) => {
                self.open = Some((txn, since));
                Ok(out)
            }
            Err(e) => {
                // The transaction holds some of this batch, which no one will hear of: start
                // again from what was published. The next record goes to the same place.
                drop(txn);
                self.rebuild();
                Err(e)
            }
        }
    }

    /// A new open transaction holding every published batch since redb's last commit; on
    /// failure, writes stop until a reopen (the log has those batches).
    fn rebuild(&mut self) {
        if self.meta == self.committed {
            return;
        }
        let rebuilt = begin(&self.db).and_then(|txn| {
            let overlay = overlay::read(&self.overlay);
            let batches = overlay.batches().iter().map(|b| &b[..]);
            reapply(&txn, self.committed, batches, self.meta)?;
            Ok(txn)
        });
        match rebuilt {
            Ok(txn) => self.open = Some((txn, Instant::now())),
            Err(e) => {
                error!(error = %e, "store transaction not rebuilt; writes stop until paved is restarted on this data");
                self.failed = Some(stopped(e));
            }
        }
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
            save_meta(txn, out.meta)?;
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

/// Writes back, in the background, the pages redb spills to its file between checkpoints.
///
/// redb keeps a non-durable commit's pages in memory up to half its cache and writes the rest
/// to the file without a sync; with a small cache (`RedbOptions::cache_bytes`) most pages take
/// that road as the writes come. Left to the kernel, they would sit dirty until the
/// checkpoint's fsync wrote them all at once while every writer waited (140 ms for 32 MiB of
/// log in `cargo xtask bench api`). An `fdatasync` `FLUSH_EVERY` after a commit, on another thread,
/// writes them while the writer goes on, and leaves the checkpoint little to do (6 to 20 ms).
/// Durability does not depend on it: the log and the checkpoint provide that.
/// An idle store wakes nothing: the thread sleeps until a commit kicks it.
struct Flusher {
    kicks: mpsc::SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(file: File) -> Flusher {
        let (kicks, kicked) = mpsc::sync_channel::<()>(1);
        let flush = move || {
            while kicked.recv().is_ok() {
                // Let a few commits' pages gather, then write them back in one go.
                std::thread::sleep(FLUSH_EVERY);
                while kicked.try_recv().is_ok() {}
                if let Err(e) = file.sync_data() {
                    debug!(error = %e, "background flush of the store file failed; the checkpoint retries");
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("paved-store-flush".into())
            .spawn(flush)
            .inspect_err(|e| debug!(error = %e, "no background flusher; checkpoints write everything"))
            .ok();
        Flusher { kicks, thread }
    }

    /// Tells the flusher a commit left pages to write back.
    fn kick(&self) {
        // Full means a flush is already due, and it covers these pages too.
        let _ = self.kicks.try_send(());
    }

    fn stop(self) {
        drop(self.kicks);
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
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
            if let Some(event) = op_event(op, current.is_some(), revision) {
                let create = self.store(&event, current, out.events.len() as u64)?;
                out.events.push(event);
                out.creates.push(create);
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

    /// Writes an event to the keys (`current` is what the key holds) and to the history, as
    /// the `index`th event of its batch; returns the key's create revision (0 for a delete).
    fn store(&mut self, event: &Event, current: Found, index: u64) -> Result<u64, redb::Error> {
        let key = event.key.as_str();
        let create = match event.kind {
            EventKind::Put => {
                let create = current.map_or(event.revision, |(c, _)| c);
                let row = (create, event.revision, event.value.as_slice());
                self.kv.insert(key, row)?;
                create
            }
            EventKind::Delete => {
                self.kv.remove(key)?;
                0
            }
        };
        self.record(event, index)?;
        Ok(create)
    }

    /// Appends an event to the history; `index` keeps the events of a batch in order.
    fn record(&mut self, event: &Event, index: u64) -> Result<(), redb::Error> {
        let row = (kind_code(event.kind), event.key.as_str(), event.value.as_slice());
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

/// The event of an op whose compare held; `None` for a delete of nothing.
fn op_event(op: &Op, exists: bool, revision: u64) -> Option<Event> {
    let (kind, key, value) = match op {
        Op::Put { key, value, .. } => (EventKind::Put, key, value.clone()),
        Op::Delete { key, .. } if exists => (EventKind::Delete, key, Vec::new()),
        Op::Delete { .. } => return None,
    };
    Some(Event {
        revision,
        kind,
        key: key.clone(),
        value,
    })
}

/// Applies the log's records (those after `meta`, the last durable commit) again, in one
/// durable commit; returns the counters after them.
pub(super) fn replay(db: &Database, meta: Meta, records: &[Record]) -> Result<Meta, redb::Error> {
    let after = records.last().map_or(meta, |r| r.after);
    let txn = db.begin_write()?;
    reapply(&txn, meta, records.iter().map(|r| &r.events[..]), after)?;
    txn.commit()?;
    Ok(after)
}

/// Writes batches of events again, in order, each event at its index in its batch, to a
/// store at `from`; then compacts history and saves the counters as `after` says.
fn reapply<'e>(
    txn: &WriteTransaction,
    mut from: Meta,
    batches: impl Iterator<Item = &'e [Event]>,
    after: Meta,
) -> Result<(), redb::Error> {
    {
        let mut tables = Tables {
            kv: txn.open_table(KV)?,
            history: txn.open_table(HISTORY)?,
        };
        for batch in batches {
            for (index, event) in batch.iter().enumerate() {
                let current = tables.found(&event.key)?;
                tables.store(event, current, index as u64)?;
            }
        }
        from.revision = after.revision;
        tables.compact(&mut from, after.compacted)?;
    }
    save_meta(txn, after)
}

/// A write transaction whose commit redb does not fsync: the log makes its batches durable,
/// and the checkpoint, redb's file.
fn begin(db: &Database) -> Result<WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)?;
    Ok(txn)
}

fn stopped(e: impl std::fmt::Display) -> String {
    format!(
        "redb: {e}; writes reached the log but not the store, so writes stop until paved is \
         restarted on this data, which applies the log"
    )
}

/// A durable commit of nothing: it makes every non-durable commit before it durable.
fn checkpoint(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

fn save_meta(txn: &WriteTransaction, meta: Meta) -> Result<(), redb::Error> {
    let mut table = txn.open_table(META)?;
    table.insert(META_REVISION, meta.revision)?;
    table.insert(META_COMPACTED, meta.compacted)?;
    Ok(())
}

fn redb_failure(e: impl Into<redb::Error>) -> String {
    format!("redb: {}", e.into())
}

/// Decodes the kind stored in a history row.
pub(super) fn event_kind(code: u8) -> Result<EventKind, redb::Error> {
    kind_of(code).ok_or_else(|| redb::Error::Corrupted(format!("unknown event kind {code} in history")))
}
