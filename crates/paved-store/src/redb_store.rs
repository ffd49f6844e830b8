//! `RedbStore`: the embedded backend of [`Store`], one redb file written through one writer
//! thread that group-commits, read through redb's lock-free read transactions.
//!
//! Writes are made durable by a write-ahead log beside the file (`<file>.wal`, see `wal`),
//! committed to redb every few milliseconds, and written to the redb file itself at
//! checkpoints. Reads see what is acknowledged but not yet committed through an overlay (see
//! `overlay`).
//!
//! The file holds three tables: `kv` maps a key to (create revision, mod revision, value);
//! `history` maps (revision, index) to (kind, key, value), the changes a watch replays; `meta`
//! keeps the format version, the revision counter and how far history is compacted.

mod overlay;
#[cfg(test)]
mod tests;
mod wal;
mod watch;
mod writer;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, error};

use crate::conformance::Compact;
use crate::{Event, KeyValue, Op, Store, StoreError, WatchStream, validate_key, validate_txn};

/// Tuning of a [`RedbStore`]. The defaults suit a control plane; tests shrink them to reach
/// compaction and watch lag quickly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedbOptions {
    /// How many of the newest revisions the history keeps for watches; a watch from an older
    /// revision fails with `Compacted`. At least 1. Default 100 000.
    pub history: u64,
    /// The most transactions one commit (one fsync) takes from the queue. At least 1.
    /// Default 1024.
    pub max_batch: usize,
    /// How many commits a watcher may fall behind before it falls back to reading history;
    /// the events of that many recent commits stay in memory. At least 1. Default 1024.
    pub watch_buffer: usize,
    /// Verify every page's checksum when opening, so a damaged file is refused with
    /// `StoreError::Open` instead of failing later. Reads the whole file. Default true.
    pub verify_on_open: bool,
    /// How many bytes of write-ahead log make the writer checkpoint (one durable redb commit
    /// of everything since the last), after which the log starts over. It also checkpoints
    /// after a second without writes, and when it stops. Bigger means fewer, longer
    /// checkpoints, more memory for pages not yet in the file, and a longer replay after a
    /// crash. At least 1. Default 32 MiB.
    pub checkpoint_bytes: u64,
    /// redb's page cache. Kept small on purpose: redb writes the pages of commits beyond half
    /// of it to the file as they come, where a background flush writes them back, so a
    /// checkpoint has little left to write; reads beyond it come from the kernel's page cache.
    /// Default 4 MiB.
    pub cache_bytes: usize,
    /// How long the writer keeps one redb transaction open for the batches that come (each
    /// durable in the log when acknowledged, and visible to reads at once). One commit for
    /// many batches saves the CPU of a commit per batch; a longer interval also holds more
    /// acknowledged writes in memory (readers find them there). Zero commits every batch.
    /// Default 10 ms.
    pub commit_interval: Duration,
}

/// A [`Store`] in one redb file and its write-ahead log (`<file>.wal`). Writes are durable
/// (the log fdatasync'd) when acknowledged; concurrent writers share a log append, so
/// throughput grows with the number of writers.
///
/// Dropping it (or [`RedbStore::close`]) stops the writer after the commit in flight, makes
/// everything durable in the redb file, and ends every watch with `StoreError::Closed`.
///
/// An I/O error on the log (disk full) fails every transaction of that batch with
/// `StoreError::Backend`, and nothing of it is visible; later writes succeed once the disk
/// has room again. A batch that reached the log but failed to commit in redb stops every
/// later write with `Backend` until the store is opened again, which applies the log. Reads
/// keep working.
pub struct RedbStore {
    path: PathBuf,
    db: Arc<Database>,
    /// Batches acknowledged but not yet committed to redb, which every read looks at first.
    overlay: overlay::Shared,
    running: Mutex<Option<Running>>,
}

/// The writer thread and the channels that reach it; `None` once closed.
struct Running {
    requests: mpsc::Sender<writer::Request>,
    events: broadcast::Sender<Batch>,
    thread: JoinHandle<()>,
}

/// The events of one commit, in revision order, as the writer broadcasts them to watchers.
type Batch = Arc<[Event]>;

const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
const HISTORY: TableDefinition<(u64, u64), (u8, &str, &[u8])> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bumped when the layout of the tables changes; a file of another format is refused.
const FORMAT: u64 = 1;
const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// The counters of `meta`: every revision up to `revision` is committed, history keeps the
/// revisions after `compacted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Meta {
    revision: u64,
    compacted: u64,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            history: 100_000,
            max_batch: 1024,
            watch_buffer: 1024,
            verify_on_open: true,
            checkpoint_bytes: 32 << 20,
            cache_bytes: 4 << 20,
            commit_interval: Duration::from_millis(10),
        }
    }
}

impl RedbOptions {
    fn validate(&self) -> Result<(), &'static str> {
        if self.history == 0 {
            return Err("options: history must keep at least 1 revision");
        }
        if self.max_batch == 0 || self.watch_buffer == 0 || self.checkpoint_bytes == 0 {
            return Err("options: max_batch, watch_buffer and checkpoint_bytes must be at least 1");
        }
        if self.commit_interval > writer::IDLE_CHECKPOINT {
            return Err("options: commit_interval must be at most 1 s (the idle checkpoint's delay)");
        }
        Ok(())
    }
}

impl RedbStore {
    /// Opens the store at `path` with default options, creating the file if missing.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path, RedbOptions::default())
    }

    /// Opens the store at `path`, creating the file if missing. Fails with `StoreError::Open`
    /// when the file is in use by another store, is not a paved store, or is damaged.
    pub fn open_with(path: &Path, options: RedbOptions) -> Result<RedbStore, StoreError> {
        options
            .validate()
            .map_err(|reason| open_error(path, reason.into()))?;
        let db = open_database(path, options.verify_on_open, options.cache_bytes)
            .map_err(|r| open_error(path, r))?;
        // Opened after the database, whose lock keeps a second store off the log too.
        let log_path = wal_path(path);
        let log = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(|e| {
                open_error(
                    path,
                    format!("cannot open the write-ahead log {}: {e}", log_path.display()),
                )
            })?;
        // A second handle on the file, for the background flusher: fdatasync writes back the
        // file's pages whichever handle asks.
        let file = std::fs::File::open(path).ok();
        RedbStore::start(path.to_owned(), db, Box::new(log), file, &options)
    }

    /// Prepares the tables of an opened database, applies its write-ahead log, and starts its
    /// writer.
    fn start(
        path: PathBuf,
        db: Database,
        log: Box<dyn wal::WalFile>,
        file: Option<std::fs::File>,
        options: &RedbOptions,
    ) -> Result<RedbStore, StoreError> {
        let db = Arc::new(db);
        let (meta, created) = prepare(&db).map_err(|reason| open_error(&path, reason))?;
        let (wal, meta) = recover(&db, meta, created, log).map_err(|reason| open_error(&path, reason))?;
        let overlay = overlay::shared(meta);
        let running = start_writer(&db, meta, wal, file, &overlay, options)
            .map_err(|e| open_error(&path, format!("cannot start the writer thread: {e}")))?;
        debug!(path = %path.display(), revision = meta.revision, "store opened");
        Ok(RedbStore {
            path,
            db,
            overlay,
            running: Mutex::new(Some(running)),
        })
    }

    /// Drops history up to and including revision `through` (at most the current revision);
    /// a watch from before it then fails with `Compacted`. Returns the revision history is now
    /// compacted through. The writer also compacts on its own to keep `RedbOptions::history`.
    pub async fn compact(&self, through: u64) -> Result<u64, StoreError> {
        self.submit(writer::Work::Compact(through)).await
    }

    /// Stops the writer once the transactions already queued are committed. Later writes and
    /// watches fail with `Closed`, running watches end with `Closed`; reads keep answering from
    /// the last commit until the store is dropped. Blocks for at most one commit; idempotent.
    pub fn close(&self) {
        let running = self.lock_running().take();
        let Some(Running {
            requests,
            events,
            thread,
        }) = running
        else {
            return;
        };
        drop((requests, events));
        if thread.join().is_err() {
            error!(path = %self.path.display(), "store writer thread panicked");
        }
        debug!(path = %self.path.display(), "store closed");
    }

    async fn submit(&self, work: writer::Work) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let running = self.lock_running();
            let running = running.as_ref().ok_or(StoreError::Closed)?;
            let request = writer::Request { work, reply };
            running.requests.send(request).map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn subscribe(&self) -> Result<broadcast::Receiver<Batch>, StoreError> {
        let running = self.lock_running();
        Ok(running.as_ref().ok_or(StoreError::Closed)?.events.subscribe())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        // Nothing panics while holding this lock, and the state stays valid if something did.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        validate_key(key)?;
        if let Some(state) = overlay::read(&self.overlay).get(key) {
            return Ok(state);
        }
        // Not written since redb's last commit (or committed since: redb has it either way). A
        // point read is a few microseconds: cheaper inline than a hop to the blocking pool.
        read_key(&self.db, key).map_err(backend)
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), StoreError> {
        // One snapshot: the overlay's keys and a redb read transaction taken together (see
        // `overlay` for why that is consistent).
        let (recent, revision, txn) = {
            let overlay = overlay::read(&self.overlay);
            let txn = self.db.begin_read().map_err(|e| backend(e.into()))?;
            (overlay.list(prefix), overlay.meta().revision, txn)
        };
        // Most listings are short (a job's tasks) and cheaper inline than a hop to the blocking
        // pool, which costs two thread wake-ups; a long scan goes on there, in the same read
        // transaction, so the listing stays one snapshot.
        let mut found = Vec::new();
        let Some(rest) = scan_prefix(&txn, prefix, prefix, &mut found, INLINE_LISTING).map_err(backend)?
        else {
            return Ok((overlay::merge(found, recent), revision));
        };
        let prefix = prefix.to_owned();
        blocking(move || {
            scan_prefix(&txn, &prefix, &rest, &mut found, usize::MAX)?;
            Ok((overlay::merge(found, recent), revision))
        })
        .await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        validate_txn(&ops)?;
        if ops.is_empty() {
            return self.revision().await;
        }
        self.submit(writer::Work::Txn(ops)).await
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, StoreError> {
        // Subscribe before reading the revision, so no commit falls between replay and live.
        let live = self.subscribe()?;
        watch::start(&self.db, &self.overlay, live, prefix, after)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(overlay::read(&self.overlay).meta().revision)
    }

    fn describe(&self) -> String {
        format!("redb:{}", self.path.display())
    }
}

#[async_trait]
impl Compact for RedbStore {
    async fn compact(&self, through: u64) -> Result<u64, StoreError> {
        RedbStore::compact(self, through).await
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish()
    }
}

impl Meta {
    fn load(table: &impl ReadableTable<&'static str, u64>) -> Result<Meta, StorageError> {
        let read = |name| Ok::<_, StorageError>(table.get(name)?.map_or(0, |v| v.value()));
        Ok(Meta {
            revision: read(META_REVISION)?,
            compacted: read(META_COMPACTED)?,
        })
    }
}

fn open_error(path: &Path, reason: String) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason,
    }
}

/// Opens or creates the redb file, turning every failure (including a panic on a damaged
/// file) into a reason for `StoreError::Open`.
fn open_database(path: &Path, verify: bool, cache_bytes: usize) -> Result<Database, String> {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(verify);
    builder.set_cache_size(cache_bytes);
    // redb verifies what it reads but may still panic on a damaged file it was told to trust.
    match catch_unwind(AssertUnwindSafe(|| builder.create(path))) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_reason(e)),
        Err(_) => Err(PANICKED.into()),
    }
}

const PANICKED: &str =
    "redb panicked reading the file: it is damaged or not a redb database; move it away or restore a backup";

fn open_reason(e: DatabaseError) -> String {
    match e {
        DatabaseError::DatabaseAlreadyOpen => "the file is already open in another store \
            (this process or another one); stop that one or use another path"
            .into(),
        DatabaseError::Storage(StorageError::Corrupted(what)) => {
            format!("the file is damaged or not a redb database ({what}); move it away or restore a backup")
        }
        DatabaseError::Storage(StorageError::Io(io)) if is_not_redb(&io) => {
            format!("not a redb database, or truncated ({io}); move it away or restore a backup")
        }
        DatabaseError::Storage(StorageError::Io(io)) => format!("i/o error: {io}"),
        other => format!("{other}; the file may not be a paved store"),
    }
}

fn is_not_redb(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    )
}

/// Creates the tables of a new store, checks the format of an existing one, and returns its
/// counters and whether it was created just now.
fn prepare(db: &Database) -> Result<(Meta, bool), String> {
    match init_tables(db) {
        Ok((meta, None)) => Ok((meta, true)),
        Ok((meta, Some(FORMAT))) => Ok((meta, false)),
        Ok((_, Some(other))) => Err(format!(
            "store format {other} is not {FORMAT}: written by another paved version"
        )),
        Err(e) => Err(format!("not a paved store, or not writable: {e}")),
    }
}

/// Creates missing tables and stamps a new file with `FORMAT`; returns the counters and the
/// format the file carried (`None`: none, it is new).
fn init_tables(db: &Database) -> Result<(Meta, Option<u64>), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(KV)?;
    txn.open_table(HISTORY)?;
    let found = {
        let mut table = txn.open_table(META)?;
        let format = table.get(META_FORMAT)?.map(|v| v.value());
        if format.is_none() {
            table.insert(META_FORMAT, FORMAT)?;
        }
        (Meta::load(&table)?, format)
    };
    txn.commit()?;
    Ok(found)
}

/// The write-ahead log of a store at `meta` (its last durable commit), with the writes it
/// holds after that applied; returns the store's counters after them. A store created just
/// now clears the log: what it held came from another store.
fn recover(
    db: &Database,
    meta: Meta,
    created: bool,
    log: Box<dyn wal::WalFile>,
) -> Result<(wal::Wal, Meta), String> {
    let failed = |e: std::io::Error| format!("cannot read the write-ahead log: {e}");
    if created {
        return Ok((wal::Wal::fresh(log).map_err(failed)?, meta));
    }
    let (mut wal, records) = wal::Wal::recover(log, meta).map_err(failed)?;
    if records.is_empty() {
        return Ok((wal, meta));
    }
    let after = writer::replay(db, meta, &records)
        .map_err(|e| format!("cannot apply the write-ahead log ({} writes): {e}", records.len()))?;
    debug!(
        records = records.len(),
        from = meta.revision,
        to = after.revision,
        "write-ahead log applied"
    );
    wal.restart().map_err(failed)?;
    Ok((wal, after))
}

/// The write-ahead log's file: the store's file name with `.wal` added.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

fn start_writer(
    db: &Arc<Database>,
    meta: Meta,
    wal: wal::Wal,
    file: Option<std::fs::File>,
    overlay: &overlay::Shared,
    options: &RedbOptions,
) -> std::io::Result<Running> {
    let (requests, queue) = mpsc::channel();
    let (events, _) = broadcast::channel(options.watch_buffer);
    let outlets = writer::Outlets {
        events: events.clone(),
        overlay: overlay.clone(),
    };
    let writer = writer::Writer::new(db.clone(), queue, outlets, meta, wal, file, options);
    let thread = std::thread::Builder::new()
        .name("paved-store-writer".into())
        .spawn(move || writer.run())?;
    Ok(Running {
        requests,
        events,
        thread,
    })
}

fn read_key(db: &Database, key: &str) -> Result<Option<KeyValue>, redb::Error> {
    let txn = db.begin_read()?;
    let kv = txn.open_table(KV)?;
    let found = kv.get(key)?;
    Ok(found.map(|entry| key_value(key, entry.value())))
}

/// Entries a listing reads on the calling task before it moves to the blocking pool.
const INLINE_LISTING: usize = 256;

/// Appends to `found` the entries under `prefix` from key `from` on, at most `limit` of them;
/// returns the key to go on from when the limit stopped the scan.
fn scan_prefix(
    txn: &ReadTransaction,
    prefix: &str,
    from: &str,
    found: &mut Vec<KeyValue>,
    limit: usize,
) -> Result<Option<String>, redb::Error> {
    let kv: ReadOnlyTable<&str, (u64, u64, &[u8])> = txn.open_table(KV)?;
    for (read, entry) in kv.range(from..)?.enumerate() {
        let (key, value) = entry?;
        if !key.value().starts_with(prefix) {
            break;
        }
        if read == limit {
            return Ok(Some(key.value().to_owned()));
        }
        found.push(key_value(key.value(), value.value()));
    }
    Ok(None)
}

fn key_value(key: &str, (create_revision, mod_revision, value): (u64, u64, &[u8])) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

/// Runs a read on the blocking pool: scans can take longer than an async task should block.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, StoreError> {
    let joined = tokio::task::spawn_blocking(read).await;
    joined
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
        .map_err(backend)
}

/// How an event's kind is stored, in the history table and in the write-ahead log.
fn kind_code(kind: crate::EventKind) -> u8 {
    match kind {
        crate::EventKind::Put => 0,
        crate::EventKind::Delete => 1,
    }
}

fn kind_of(code: u8) -> Option<crate::EventKind> {
    match code {
        0 => Some(crate::EventKind::Put),
        1 => Some(crate::EventKind::Delete),
        _ => None,
    }
}

fn backend(e: redb::Error) -> StoreError {
    StoreError::Backend(format!("redb: {e}"))
}
