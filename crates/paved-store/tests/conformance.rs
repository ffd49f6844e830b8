//! Runs the `Store` conformance suite against `RedbStore`, each check on a fresh file: once
//! with the default options, and once committing to redb only every second, so that reads,
//! listings and watches are answered from the writer's overlay of acknowledged writes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use paved_store::{RedbOptions, RedbStore, conformance};

/// Makes a fresh store file in `dir`, opened with `options`, on every call.
fn maker(dir: &Path, options: RedbOptions) -> impl Fn() -> std::future::Ready<RedbStore> + '_ {
    let count = AtomicUsize::new(0);
    move || {
        let n = count.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("store-{n}.redb"));
        std::future::ready(RedbStore::open_with(&path, options.clone()).expect("open a fresh store"))
    }
}

/// redb commits once a second: nearly every read goes through the overlay.
fn rare_commits() -> RedbOptions {
    RedbOptions {
        commit_interval: Duration::from_secs(1),
        ..RedbOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run(maker(dir.path(), RedbOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_the_suite_reading_uncommitted_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run(maker(dir.path(), rare_commits())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_the_compaction_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run_compaction(maker(dir.path(), RedbOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_the_compaction_checks_reading_uncommitted_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run_compaction(maker(dir.path(), rare_commits())).await;
}
