//! Rough write throughput of `RedbStore`: N concurrent tasks doing durable creates for a few
//! seconds, printed as transactions per second. Not a benchmark gate, a sanity check:
//! `cargo run -p paved-store --example throughput -- [tasks] [seconds] [dir]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use paved_store::{Expect, RedbStore, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let store = Arc::new(RedbStore::open(&dir.path().join("bench.redb"))?);
    for tasks in [1, tasks] {
        let rate = creates_per_second(&store, tasks, Duration::from_secs(seconds)).await;
        println!("{tasks:>4} concurrent writers: {rate:>8.0} durable creates/s");
    }
    let (gets, lists) = reads_per_second(&store, Duration::from_secs(1)).await;
    println!("sequential get: {gets:.0}/s, list of 100 keys: {lists:.0}/s");
    Ok(())
}

async fn creates_per_second(store: &Arc<RedbStore>, tasks: usize, run: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < run {
                    let key = format!("/bench/{tasks}/{t}/{i}");
                    store
                        .put(&key, vec![0; 200], Expect::Absent)
                        .await
                        .expect("create");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn reads_per_second(store: &RedbStore, run: Duration) -> (f64, f64) {
    let start = Instant::now();
    let mut gets = 0u64;
    while start.elapsed() < run {
        store.get("/bench/1/0/0").await.expect("get");
        gets += 1;
    }
    let start = Instant::now();
    let mut lists = 0u64;
    while start.elapsed() < run {
        store.list("/bench/64/0/1").await.expect("list");
        lists += 1;
    }
    (gets as f64 / run.as_secs_f64(), lists as f64 / run.as_secs_f64())
}
