//! Runs the `Store` conformance suite against `RedbStore`, each check on a fresh file.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use paved_store::{RedbStore, conformance};

/// Makes a fresh store file in `dir` on every call.
fn maker(dir: &Path) -> impl Fn() -> std::future::Ready<RedbStore> + '_ {
    let count = AtomicUsize::new(0);
    move || {
        let n = count.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("store-{n}.redb"));
        std::future::ready(RedbStore::open(&path).expect("open a fresh store"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run(maker(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_the_compaction_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run_compaction(maker(dir.path())).await;
}
