//! Fault injection: a redb storage backend that fails on demand, as a full disk would.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use super::{RedbOptions, RedbStore};
use crate::{Expect, Store, StoreError};

/// Memory that refuses every write and sync while `full` is set.
#[derive(Debug)]
struct FullDisk {
    memory: InMemoryBackend,
    full: Arc<AtomicBool>,
}

impl FullDisk {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        Ok(())
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

fn store_on_full_disk() -> (RedbStore, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let backend = FullDisk {
        memory: InMemoryBackend::new(),
        full: full.clone(),
    };
    let db = redb::Database::builder()
        .create_with_backend(backend)
        .expect("in-memory database");
    let store = RedbStore::start("memory".into(), db, &RedbOptions::default()).expect("start");
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
