//! Tests of what is particular to `RedbStore`: reopening, refusing bad files, the history
//! bound, watch lag, closing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use paved_store::{Expect, RedbOptions, RedbStore, Store, StoreError, WatchStream};

fn temp_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    (dir, path)
}

fn open_with(path: &Path, options: RedbOptions) -> RedbStore {
    RedbStore::open_with(path, options).expect("open store")
}

async fn next(watch: &mut WatchStream) -> Result<paved_store::Event, StoreError> {
    let item = tokio::time::timeout(Duration::from_secs(20), watch.next()).await;
    item.expect("watch event within the deadline")
        .expect("watch stream not ended")
}

#[tokio::test]
async fn reopen_keeps_data_and_revision() {
    let (_dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    let created = store.put("/a", b"1".to_vec(), Expect::Absent).await.expect("put");
    let last = store
        .put("/a", b"2".to_vec(), Expect::Revision(created))
        .await
        .expect("put");
    drop(store);

    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.revision().await.expect("revision"), last);
    let kv = store.get("/a").await.expect("get").expect("/a survives a reopen");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], created, last)
    );
    let next_revision = store.put("/b", vec![], Expect::Absent).await.expect("put");
    assert_eq!(next_revision, last + 1, "the counter continues after a reopen");
    let mut watch = store.watch("", 0).await.expect("watch");
    assert_eq!(
        next(&mut watch).await.expect("event").revision,
        created,
        "history survives too"
    );
}

#[tokio::test]
async fn describe_names_the_file() {
    let (_dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    assert_eq!(store.describe(), format!("redb:{}", path.display()));
}

/// Bytes that are not a store, each of which must be refused with `Open`, never a panic.
fn garbage_cases(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut zeroed_header = valid.to_vec();
    zeroed_header[..512].fill(0);
    vec![
        ("text", b"this is not a database\n".repeat(100)),
        ("one byte", vec![7]),
        (
            "random-ish",
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        (
            "redb magic then junk",
            [b"redb\x1a\x0a\xa9\x0d\x0a".as_slice(), &[0xff; 4096]].concat(),
        ),
        ("valid store, header zeroed", zeroed_header),
        ("valid store, truncated to 100 bytes", valid[..100].to_vec()),
    ]
}

#[tokio::test]
async fn bad_files_are_refused() {
    let (dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    store.put("/a", vec![1; 3000], Expect::Any).await.expect("put");
    drop(store);
    let valid = std::fs::read(&path).expect("read the store file");
    for (name, bytes) in garbage_cases(&valid) {
        let bad = dir.path().join(format!("{name}.redb"));
        std::fs::write(&bad, bytes).expect("write bad file");
        match RedbStore::open(&bad) {
            Err(StoreError::Open { reason, .. }) => assert!(!reason.is_empty(), "{name}"),
            Err(e) => panic!("{name}: want StoreError::Open, got {e}"),
            Ok(_) => panic!("{name}: a bad file was opened as a store"),
        }
    }
}

/// Damage in the middle of a store: refused with `Open`, or opened if redb can fall back to
/// the previous commit, but never a panic and never wrong data.
#[tokio::test]
async fn damaged_pages_never_panic() {
    let (dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    for i in 0..50 {
        store
            .put(&format!("/k/{i}"), vec![i as u8; 500], Expect::Any)
            .await
            .expect("put");
    }
    drop(store);
    let valid = std::fs::read(&path).expect("read the store file");
    for offset in (4096..valid.len()).step_by(4096) {
        let mut bytes = valid.clone();
        bytes[offset + 100..offset + 140].fill(0xa5);
        let bad = dir.path().join(format!("damaged-{offset}.redb"));
        std::fs::write(&bad, bytes).expect("write damaged file");
        match RedbStore::open(&bad) {
            Err(StoreError::Open { .. }) => {}
            Err(e) => panic!("offset {offset}: want StoreError::Open, got {e}"),
            Ok(store) => check_intact(&store, offset).await,
        }
    }
}

async fn check_intact(store: &RedbStore, offset: usize) {
    let (kvs, _) = store.list("/k/").await.expect("list");
    for kv in kvs {
        let i: u8 = kv.key["/k/".len()..].parse().expect("key number");
        assert_eq!(kv.value, vec![i; 500], "offset {offset}: {} was altered", kv.key);
    }
}

#[tokio::test]
async fn missing_directory_is_an_open_error() {
    let (dir, _) = temp_store();
    let result = RedbStore::open(&dir.path().join("no/such/dir/store.redb"));
    assert!(matches!(result, Err(StoreError::Open { .. })), "got {result:?}");
}

#[tokio::test]
async fn second_open_in_one_process_is_refused() {
    let (_dir, path) = temp_store();
    let _first = RedbStore::open(&path).expect("open");
    match RedbStore::open(&path) {
        Err(StoreError::Open { reason, .. }) => {
            assert!(reason.contains("already open"), "reason should say why: {reason}");
        }
        other => panic!("want StoreError::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let (_dir, path) = temp_store();
    let cases = [
        RedbOptions {
            history: 0,
            ..RedbOptions::default()
        },
        RedbOptions {
            max_batch: 0,
            ..RedbOptions::default()
        },
        RedbOptions {
            watch_buffer: 0,
            ..RedbOptions::default()
        },
    ];
    for options in cases {
        let result = RedbStore::open_with(&path, options.clone());
        assert!(
            matches!(result, Err(StoreError::Open { .. })),
            "{options:?}: got {result:?}"
        );
    }
}

#[tokio::test]
async fn history_keeps_the_configured_revisions() {
    let (_dir, path) = temp_store();
    let store = open_with(
        &path,
        RedbOptions {
            history: 5,
            ..RedbOptions::default()
        },
    );
    for i in 0..10 {
        store
            .put(&format!("/h/{i}"), vec![], Expect::Any)
            .await
            .expect("put");
    }
    let old = store.watch("", 4).await.err();
    assert!(
        matches!(
            old,
            Some(StoreError::Compacted {
                requested: 5,
                oldest: 6
            })
        ),
        "history keeps revisions 6..=10 only, got {old:?}"
    );
    let mut watch = store.watch("", 5).await.expect("watch the oldest kept");
    assert_eq!(next(&mut watch).await.expect("event").revision, 6);
}

#[tokio::test]
async fn compact_is_clamped_to_the_current_revision() {
    let (_dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    store.put("/a", vec![], Expect::Any).await.expect("put");
    assert_eq!(store.compact(100).await.expect("compact"), 1);
    assert_eq!(
        store.compact(0).await.expect("compact"),
        1,
        "compaction never goes back"
    );
    let mut watch = store.watch("", 1).await.expect("watch from the compaction point");
    let revision = store.put("/b", vec![], Expect::Any).await.expect("put");
    assert_eq!(next(&mut watch).await.expect("event").revision, revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_replays_what_it_missed() {
    let (_dir, path) = temp_store();
    let store = open_with(
        &path,
        RedbOptions {
            watch_buffer: 2,
            ..RedbOptions::default()
        },
    );
    let mut watch = store.watch("/l/", 0).await.expect("watch");
    let mut revisions = Vec::new();
    for i in 0..40 {
        store
            .put(&format!("/other/{i}"), vec![], Expect::Any)
            .await
            .expect("put");
        revisions.push(
            store
                .put(&format!("/l/{i}"), vec![], Expect::Any)
                .await
                .expect("put"),
        );
    }
    for (i, want) in revisions.into_iter().enumerate() {
        let event = next(&mut watch).await.expect("no error after a lag");
        assert_eq!(
            (event.revision, event.key),
            (want, format!("/l/{i}")),
            "event {i}"
        );
    }
}

#[tokio::test]
async fn close_ends_watches_and_refuses_writes() {
    let (_dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    let revision = store.put("/a", vec![1], Expect::Any).await.expect("put");
    let mut watch = store.watch("", revision).await.expect("watch");
    store.close();
    assert!(
        matches!(next(&mut watch).await, Err(StoreError::Closed)),
        "watch ends with Closed"
    );
    let put = store.put("/b", vec![], Expect::Any).await;
    assert!(
        matches!(put, Err(StoreError::Closed)),
        "write after close: {put:?}"
    );
    let watch = store.watch("", 0).await.err();
    assert!(
        matches!(watch, Some(StoreError::Closed)),
        "watch after close: {watch:?}"
    );
    let kv = store.get("/a").await.expect("reads still answer");
    assert_eq!(kv.map(|kv| kv.value), Some(vec![1]));
    store.close();
}

#[tokio::test]
async fn dropping_the_store_ends_watches_and_unlocks_the_file() {
    let (_dir, path) = temp_store();
    let store = RedbStore::open(&path).expect("open");
    let mut watch = store.watch("", 0).await.expect("watch");
    drop(store);
    assert!(matches!(next(&mut watch).await, Err(StoreError::Closed)));
    RedbStore::open(&path).expect("the file is free once the store is dropped, even with a watch left");
}

#[tokio::test]
async fn foreign_redb_files_and_other_formats_are_refused() {
    let (dir, path) = temp_store();
    let foreign = dir.path().join("foreign.redb");
    write_redb(&foreign, |txn| {
        let mut table = txn.open_table(redb::TableDefinition::<&str, u64>::new("kv"))?;
        Ok(table.insert("x", 1).map(drop)?)
    });
    drop(RedbStore::open(&path).expect("create a store"));
    write_redb(&path, |txn| {
        let mut meta = txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))?;
        Ok(meta.insert("format", 999).map(drop)?)
    });
    let cases = [(&foreign, "not a paved store"), (&path, "format 999")];
    for (file, want) in cases {
        match RedbStore::open(file) {
            Err(StoreError::Open { reason, .. }) => assert!(reason.contains(want), "{reason}"),
            other => panic!("{}: want StoreError::Open, got {other:?}", file.display()),
        }
    }
}

/// Writes to a redb file directly, as another program (or another paved version) would.
fn write_redb(path: &Path, write: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>) {
    let db = redb::Database::create(path).expect("create redb file");
    let txn = db.begin_write().expect("begin write");
    write(&txn).expect("write");
    txn.commit().expect("commit");
}
