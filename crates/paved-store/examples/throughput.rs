//! Rough write throughput of the stores, side by side: N concurrent tasks doing durable
//! creates for a few seconds against `RedbStore` and then `EtcdStore` (on a three-member
//! etcd cluster of child processes, `paved_store::testing`, or the one `--etcd URL` names),
//! printed as transactions per second and the etcd/redb ratio. Not a benchmark gate:
//! `cargo run --release -p paved-store --example throughput -- [tasks] [seconds] [dir] [--etcd URL]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use paved_store::testing::{EtcdCluster, test_options};
use paved_store::{EtcdOptions, EtcdStore, Expect, RedbStore, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let etcd_url = match args.iter().position(|a| a == "--etcd") {
        Some(at) if at + 1 < args.len() => Some(args.drain(at..at + 2).nth(1).unwrap_or_default()),
        Some(_) => return Err("--etcd needs a URL, etcd://host:port[,...][/prefix]".into()),
        None => None,
    };
    let mut args = args.into_iter();
    let tasks: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let run = Duration::from_secs(args.next().map_or(Ok(5), |a| a.parse())?);
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };

    let redb = Arc::new(RedbStore::open(&dir.path().join("bench.redb"))?);
    let redb_rates = measure("redb", &redb, tasks, run).await;
    let (gets, lists) = reads_per_second(&*redb, Duration::from_secs(1)).await;
    println!("redb sequential get: {gets:.0}/s, list of 100 keys: {lists:.0}/s");

    // Keep the cluster (if we started one) alive while the store uses it.
    let (etcd, _cluster) = match etcd_url {
        Some(url) => (EtcdStore::connect_url(&url, EtcdOptions::default()).await?, None),
        None => {
            let cluster = EtcdCluster::start(3).await?;
            let prefix = format!("/bench-{}", std::process::id());
            let store = EtcdStore::connect_with(&cluster.endpoints(), &prefix, test_options()).await?;
            (store, Some(cluster))
        }
    };
    println!("etcd: {}", etcd.describe());
    let etcd = Arc::new(etcd);
    let etcd_rates = measure("etcd", &etcd, tasks, run).await;
    let (gets, lists) = reads_per_second(&*etcd, Duration::from_secs(1)).await;
    println!("etcd sequential get: {gets:.0}/s, list of 100 keys: {lists:.0}/s");
    for ((writers, redb), (_, etcd)) in redb_rates.iter().zip(&etcd_rates) {
        println!("{writers:>4} writers: etcd/redb = {:.2}", etcd / redb);
    }
    Ok(())
}

/// Creates/s from 1 writer, then from `tasks`.
async fn measure<S: Store>(name: &str, store: &Arc<S>, tasks: usize, run: Duration) -> Vec<(usize, f64)> {
    let mut rates = Vec::new();
    for writers in [1, tasks] {
        let rate = creates_per_second(store, writers, run).await;
        println!("{name} {writers:>4} concurrent writers: {rate:>8.0} durable creates/s");
        rates.push((writers, rate));
    }
    rates
}

async fn creates_per_second<S: Store>(store: &Arc<S>, tasks: usize, run: Duration) -> f64 {
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

async fn reads_per_second(store: &impl Store, run: Duration) -> (f64, f64) {
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
