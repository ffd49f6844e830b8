//! Fault injection: a redb storage backend that fails on demand, as a full disk would.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use super::wal::{Wal, WalFile};
use super::{RedbOptions, RedbStore};
use crate::{Expect, Store, StoreError};

/// Memory that refuses every write and sync while `full` is set.
#[derive(Debug)]
struct FullDisk {
    memory: InMemoryBackend,
    full: Arc<AtomicBool>,
}

/// The error a write gets while `full` is set, as from a full disk.
fn refuse_when(full: &AtomicBool) -> io::Result<()> {
    if full.load(Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "injected: no space left on device",
        ));
    }
    Ok(())
}

impl FullDisk {
    fn check(&self) -> io::Result<()> {
        refuse_when(&self.full)
    }
}

impl StorageBackend for FullDisk {
    fn len(&self) -> io::Result<u64> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.memory.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.memory.write(offset, data)
    }
}

/// A write-ahead log in memory that fails every write and sync while `full` is set.
struct FullLog {
    bytes: std::sync::Mutex<Vec<u8>>,
    full: Arc<AtomicBool>,
}

impl FullLog {
    fn check(&self) -> io::Result<()> {
        refuse_when(&self.full)
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().expect("log lock")
    }
}

impl WalFile for FullLog {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = self.bytes();
        let start = offset as usize;
        let found = bytes.get(start..start + buf.len());
        buf.copy_from_slice(found.ok_or(io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let mut bytes = self.bytes();
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.check()
    }

    fn clear(&self) -> io::Result<()> {
        self.check()?;
        self.bytes().clear();
        Ok(())
    }
}

fn store_on_full_disk() -> (RedbStore, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let backend = FullDisk {
        memory: InMemoryBackend::new(),
        full: full.clone(),
    };
    let db = redb::Database::builder()
        .create_with_backend(backend)
        .expect("in-memory database");
    let log = FullLog {
        bytes: Default::default(),
        full: full.clone(),
    };
    // redb commits once a second: the writes before a failure are still in the writer's open
    // transaction when it fails.
    let options = RedbOptions {
        commit_interval: std::time::Duration::from_secs(1),
        ..RedbOptions::default()
    };
    let store = RedbStore::start("memory".into(), db, Box::new(log), None, &options).expect("start");
    (store, full)
}

#[tokio::test]
async fn a_full_disk_fails_the_write_without_acknowledging_it() {
    let (store, full) = store_on_full_disk();
    let first = store
        .put("/a", b"1".to_vec(), Expect::Any)
        .await
        .expect("put before the disk fills");
    let mut watch = store.watch("", first).await.expect("watch");

    full.store(true, Ordering::SeqCst);
    let failed = store.put("/a", b"2".to_vec(), Expect::Any).await;
    assert!(
        matches!(failed, Err(StoreError::Backend(_))),
        "write on a full disk: {failed:?}"
    );
    let kv = store.get("/a").await.expect("reads still work").expect("/a");
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"1"[..], first),
        "the failed write is not visible"
    );

    full.store(false, Ordering::SeqCst);
    let later = store.put("/b", vec![], Expect::Any).await;
    assert!(
        !matches!(later, Err(StoreError::Closed)),
        "the writer survives a failed commit: {later:?}"
    );
    store.close();
    let item = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("in time");
    match (item, later) {
        (Some(Err(StoreError::Closed)), Err(_)) => {}
        (Some(Ok(event)), Ok(revision)) => assert_eq!((event.key.as_str(), event.revision), ("/b", revision)),
        (item, later) => panic!("watch must see only acknowledged writes: {item:?} after {later:?}"),
    }
    // Closing committed everything to redb: the write acknowledged before the failure is there
    // (the failed batch's transaction was rebuilt without it, not dropped with it).
    let kv = store.get("/a").await.expect("read after close").expect("/a");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"1"[..], first));
}

/// A listing longer than what is read inline goes on in the blocking pool: every entry, in key
/// order, from one snapshot, and nothing beyond the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_listing_is_whole_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    let n = 3 * super::INLINE_LISTING + 7;
    let ops: Vec<_> = (0..n)
        .map(|i| crate::Op::Put {
            key: format!("/a/{i:05}"),
            value: vec![1],
            expect: Expect::Any,
        })
        .chain([crate::Op::Put {
            key: "/b/after".into(),
            value: vec![2],
            expect: Expect::Any,
        }])
        .collect();
    let revision = store.txn(ops).await.unwrap();
    let (found, at) = store.list("/a/").await.unwrap();
    assert_eq!(at, revision);
    let keys: Vec<String> = found.into_iter().map(|kv| kv.key).collect();
    let want: Vec<String> = (0..n).map(|i| format!("/a/{i:05}")).collect();
    assert_eq!(keys, want);
}

fn log_file() -> (Box<dyn WalFile>, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let log = FullLog {
        bytes: Default::default(),
        full: full.clone(),
    };
    (Box::new(log), full)
}

fn put(revision: u64, key: &str) -> crate::Event {
    crate::Event {
        revision,
        kind: crate::EventKind::Put,
        key: key.into(),
        value: key.as_bytes().to_vec(),
    }
}

fn meta(revision: u64, compacted: u64) -> super::Meta {
    super::Meta { revision, compacted }
}

/// Appends records taking a store from revision `from` to `to`, one revision each.
fn append_revisions(wal: &mut Wal, from: u64, to: u64) {
    for revision in from + 1..=to {
        let event = put(revision, &format!("/k/{revision}"));
        wal.append(meta(revision - 1, 0), meta(revision, 0), &[event])
            .expect("append");
    }
}

#[test]
fn the_log_gives_back_the_chain_after_the_durable_state() {
    let (file, _) = log_file();
    let (mut wal, none) = Wal::recover(file, meta(0, 0)).expect("recover");
    assert!(none.is_empty());
    append_revisions(&mut wal, 0, 5);
    let compaction = [];
    wal.append(meta(5, 0), meta(5, 3), &compaction)
        .expect("append a compaction");

    let file = wal.into_file();
    let (_, records) = Wal::recover(file, meta(2, 0)).expect("recover");
    let got: Vec<(u64, Vec<u64>)> = records
        .iter()
        .map(|r| (r.after.revision, r.events.iter().map(|e| e.revision).collect()))
        .collect();
    assert_eq!(
        got,
        [(3, vec![3]), (4, vec![4]), (5, vec![5]), (5, vec![])],
        "revisions 3..=5 and the compaction follow a store durable at 2"
    );
    assert_eq!(records[0].events[0], put(3, "/k/3"));
    assert_eq!(records[3].after, meta(5, 3));
}

#[test]
fn a_torn_or_damaged_record_ends_the_chain() {
    let (file, _) = log_file();
    let (mut wal, _) = Wal::recover(file, meta(0, 0)).expect("recover");
    append_revisions(&mut wal, 0, 3);
    let end = wal.len();
    let file = wal.into_file();
    // Flip one byte of the last record: its checksum fails.
    let mut byte = [0];
    file.read_exact_at(&mut byte, end - 1).expect("read");
    file.write_all_at(&[byte[0] ^ 0xff], end - 1).expect("write");
    let (_, records) = Wal::recover(file, meta(0, 0)).expect("recover");
    assert_eq!(
        records.len(),
        2,
        "the damaged third record and all after it are dropped"
    );
}

#[test]
fn records_left_from_before_a_restart_are_not_replayed() {
    let (file, _) = log_file();
    let (mut wal, _) = Wal::recover(file, meta(0, 0)).expect("recover");
    append_revisions(&mut wal, 0, 10);
    // A checkpoint made revision 10 durable; the log starts over and takes one more record,
    // shorter than what it overwrites.
    wal.restart().expect("restart");
    append_revisions(&mut wal, 10, 11);
    let file = wal.into_file();
    let (_, records) = Wal::recover(file, meta(10, 0)).expect("recover");
    let revisions: Vec<u64> = records.iter().map(|r| r.after.revision).collect();
    assert_eq!(revisions, [11], "revisions 2..=10 behind it are stale");
}

#[test]
fn a_log_that_fails_to_append_takes_the_same_place_next_time() {
    let (file, full) = log_file();
    let (mut wal, _) = Wal::recover(file, meta(0, 0)).expect("recover");
    append_revisions(&mut wal, 0, 1);
    full.store(true, Ordering::SeqCst);
    let failed = wal.append(meta(1, 0), meta(2, 0), &[put(2, "/lost")]);
    assert!(failed.is_err());
    full.store(false, Ordering::SeqCst);
    wal.append(meta(1, 0), meta(2, 0), &[put(2, "/kept")])
        .expect("append");
    let (_, records) = Wal::recover(wal.into_file(), meta(0, 0)).expect("recover");
    let keys: Vec<&str> = records
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["/k/1", "/kept"]);
}

/// A store reopened on a file whose log holds writes the redb file lacks (as after a crash:
/// redb's file is at its last checkpoint) applies them: keys, revisions, history, counters.
#[tokio::test]
async fn reopening_applies_the_log_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = RedbStore::open(&path).unwrap();
    let first = store.put("/a", b"1".to_vec(), Expect::Absent).await.unwrap();
    drop(store);
    // The log as a crash would leave it: records after the file's durable revision.
    let log = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(super::wal_path(&path))
        .unwrap();
    let (mut wal, stale) = Wal::recover(Box::new(log), meta(first, 0)).unwrap();
    assert!(stale.is_empty(), "a clean close leaves nothing to replay");
    wal.append(
        meta(first, 0),
        meta(first + 2, 0),
        &[
            put(first + 1, "/a"),
            put(first + 1, "/b"),
            crate::Event {
                revision: first + 2,
                kind: crate::EventKind::Delete,
                key: "/b".into(),
                value: vec![],
            },
        ],
    )
    .unwrap();
    drop(wal);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), first + 2);
    let a = store.get("/a").await.unwrap().expect("/a");
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"/a"[..], first, first + 1),
        "a put on an existing key keeps its create revision"
    );
    assert!(store.get("/b").await.unwrap().is_none(), "/b was deleted");
    let mut watch = store.watch("", first).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("in time")
            .expect("event")
            .expect("no error");
        seen.push((event.revision, event.kind, event.key));
    }
    use crate::EventKind::{Delete, Put};
    assert_eq!(
        seen,
        [
            (first + 1, Put, "/a".to_owned()),
            (first + 1, Put, "/b".to_owned()),
            (first + 2, Delete, "/b".to_owned())
        ]
    );
    let next = store.put("/c", vec![], Expect::Absent).await.unwrap();
    assert_eq!(next, first + 3, "revisions go on after the replayed ones");
}

/// A new store clears a log left by another store at the same path.
#[tokio::test]
async fn a_new_store_ignores_a_foreign_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let log = std::fs::File::create(super::wal_path(&path)).unwrap();
    let (mut wal, _) = Wal::recover(Box::new(log), meta(0, 0)).unwrap();
    append_revisions(&mut wal, 0, 3);
    drop(wal);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 0);
    assert!(store.get("/k/1").await.unwrap().is_none());
}
