//! `EtcdStore` and `Election` against a real three-member etcd cluster (child processes on
//! loopback, see `paved_store::testing`): the conformance suite, then what only a cluster
//! can show: acknowledged writes and watches surviving the death of members, and leader
//! election handing over. Needs the `etcd` binary; `cargo xtask test` installs it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use paved_store::testing::{EtcdCluster, test_options};
use paved_store::{EtcdOptions, EtcdStore, EventKind, Expect, Store, StoreError, conformance};

/// A three-member cluster, or a failure that says how to get etcd.
async fn cluster() -> EtcdCluster {
    match EtcdCluster::start(3).await {
        Ok(cluster) => cluster,
        Err(error) => panic!("{error}"),
    }
}

/// Makes a store on a fresh prefix of `cluster` on every call.
fn maker(cluster: &EtcdCluster) -> impl Fn() -> BoxFuture<'static, EtcdStore> {
    let (count, endpoints) = (AtomicUsize::new(0), cluster.endpoints());
    move || {
        let prefix = format!("/check-{}", count.fetch_add(1, Ordering::Relaxed));
        let endpoints = endpoints.clone();
        Box::pin(async move {
            EtcdStore::connect_with(&endpoints, &prefix, test_options())
                .await
                .expect("connect")
        })
    }
}

// The suite's checks that compare revisions exactly (a no-op returns the revision of the
// write before it, a list returns the revision of the last write) hold on etcd only while
// nobody else writes to the cluster: its revision counts every prefix's writes. The checks run
// one after another, each on its own prefix, on a cluster of their own, so they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_passes_the_suite() {
    let cluster = cluster().await;
    conformance::run(maker(&cluster)).await;
}

// Compaction is cluster-wide on etcd: this check gets its own cluster so it cannot break a
// replay in another test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_passes_the_compaction_checks() {
    let cluster = cluster().await;
    conformance::run_compaction(maker(&cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_larger_than_a_page_are_read_at_one_revision() {
    let cluster = cluster().await;
    let options = EtcdOptions {
        page_size: 7,
        ..test_options()
    };
    let store = EtcdStore::connect_with(&cluster.endpoints(), "/paging", options)
        .await
        .expect("connect");
    let mut last = 0;
    for i in 0..50 {
        last = store
            .put(&format!("/k/{i:02}"), vec![i], Expect::Absent)
            .await
            .expect("put");
    }
    store
        .put("/l", vec![], Expect::Any)
        .await
        .expect("put outside the prefix");
    let (kvs, revision) = store.list("/k/").await.expect("list");
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<_> = (0..50).map(|i| format!("/k/{i:02}")).collect();
    assert_eq!(keys, want, "every key, in order, across pages");
    assert_eq!(revision, last + 1, "the revision the first page was read at");
}

/// Writers create keys as fast as they can while the etcd leader is killed with SIGKILL:
/// every create acknowledged must be readable afterwards, from the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_killing_the_leader() {
    let mut cluster = cluster().await;
    let store = Arc::new(cluster.store("/durable").await.expect("connect"));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(write_until(store.clone(), stop.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader);
    let killed = Instant::now();
    // Writes in flight on a follower when the leader dies wait for etcd's request timeout
    // (5 s in the test options) and fail as of unknown outcome; those sent after the new
    // leader is elected (under a second) go through.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut unknown, mut after_kill) = (BTreeSet::new(), 0, 0);
    for writer in writers {
        let outcome = writer.await.expect("writer");
        acked.extend(outcome.acked);
        unknown += outcome.unknown;
        after_kill += outcome.acked_after.iter().filter(|t| **t > killed).count();
    }
    eprintln!(
        "{} creates acknowledged ({after_kill} after the kill), {unknown} of unknown outcome",
        acked.len()
    );
    assert!(after_kill > 0, "writes go on after the leader dies");
    let (kvs, _) = store.list("/w/").await.expect("list after the kill");
    let stored: BTreeSet<_> = kvs.into_iter().map(|kv| kv.key).collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        stored.len() <= acked.len() + unknown,
        "only acknowledged or unknown-outcome writes are stored"
    );

    // The killed member comes back on its data and catches up with what it missed.
    cluster.restart(leader).await.expect("restart the old leader");
    let alone = EtcdStore::connect_with(&[cluster.endpoint(leader)], "/durable", test_options())
        .await
        .expect("connect to the restarted member");
    let (kvs, _) = alone.list("/w/").await.expect("list on the restarted member");
    let caught_up: BTreeSet<_> = kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(caught_up, stored, "the restarted member serves the same keys");
}

struct Written {
    acked: Vec<String>,
    acked_after: Vec<Instant>,
    unknown: usize,
}

async fn write_until(store: Arc<EtcdStore>, stop: Arc<AtomicBool>, writer: usize) -> Written {
    let mut written = Written {
        acked: Vec::new(),
        acked_after: Vec::new(),
        unknown: 0,
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("/w/{writer}/{i:06}");
        match store.put(&key, vec![1], Expect::Absent).await {
            Ok(_) => {
                written.acked.push(key);
                written.acked_after.push(Instant::now());
            }
            // A connection broken mid-commit: the write may or may not have been applied.
            Err(StoreError::Backend(_)) => written.unknown += 1,
            Err(error) => panic!("{key}: {error}"),
        }
        i += 1;
    }
    written
}

/// A watch follows writes while the member it reads from is killed: it resumes on another
/// member and delivers every write once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_survives_a_member_kill() {
    let mut cluster = cluster().await;
    let store = cluster.store("/watched").await.expect("connect");
    let start = store.revision().await.expect("revision");
    // Calls and watches start on the first endpoint: member 0 is the one the watch uses.
    let mut watch = store.watch("/e/", start).await.expect("watch");
    let (mut acked, mut maybe) = (Vec::new(), HashSet::new());
    for i in 0..200 {
        if i == 100 {
            cluster.kill(0);
        }
        let key = format!("/e/{i:03}");
        match store.put(&key, vec![], Expect::Absent).await {
            Ok(revision) => acked.push((revision, key)),
            Err(StoreError::Backend(_)) => {
                maybe.insert(key);
            }
            Err(error) => panic!("{key}: {error}"),
        }
    }
    let end = store
        .put("/e/end", vec![], Expect::Absent)
        .await
        .expect("last put");
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("an event within 30 s")
            .expect("the watch goes on")
            .expect("no error");
        assert_eq!(event.kind, EventKind::Put);
        if event.revision == end {
            break;
        }
        seen.push((event.revision, event.key));
    }
    let revisions_increase = seen.windows(2).all(|w| w[0].0 < w[1].0);
    assert!(revisions_increase, "in order, no duplicate");
    let unexpected: Vec<_> = seen
        .iter()
        .filter(|e| !acked.contains(e) && !maybe.contains(&e.1))
        .collect();
    assert!(unexpected.is_empty(), "events of no write: {unexpected:?}");
    let missed: Vec<_> = acked.iter().filter(|e| !seen.contains(e)).collect();
    assert!(
        missed.is_empty(),
        "acknowledged writes the watch missed: {missed:?}"
    );
}

const TTL: Duration = Duration::from_secs(2);

/// Within how long a waiting candidate must take over.
const HANDOVER: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_hands_over_on_resign_and_on_death() {
    let cluster = cluster().await;
    let store = cluster.store("/ha").await.expect("connect");
    let election = store.election("control").expect("election");
    let a = election.campaign("a", TTL).await.expect("a campaigns");
    assert_eq!(
        store.current_leader("control").await.expect("leader"),
        Some("a".into())
    );

    let waiting = election.clone();
    let b = tokio::spawn(async move { waiting.campaign("b", TTL).await });
    tokio::time::sleep(TTL * 2).await;
    assert!(!b.is_finished(), "b waits while a leads");
    assert!(!a.is_lost(), "a keeps its lease alive");
    let resigned = Instant::now();
    a.resign().await.expect("resign");
    let b = tokio::time::timeout(HANDOVER, b)
        .await
        .expect("b leads soon after a resigns")
        .expect("task")
        .expect("b campaigns");
    assert!(
        resigned.elapsed() < Duration::from_secs(3),
        "resigning hands over at once"
    );
    assert_eq!(
        store.current_leader("control").await.expect("leader"),
        Some("b".into())
    );
    assert!(b.revision() > 0);

    let waiting = election.clone();
    let c = tokio::spawn(async move { waiting.campaign("c", TTL).await });
    let died = Instant::now();
    drop(b); // b dies: its keepalive stops, its lease expires within TTL
    let c = tokio::time::timeout(HANDOVER, c)
        .await
        .expect("c leads soon after b dies")
        .expect("task")
        .expect("c campaigns");
    assert!(died.elapsed() >= TTL / 2, "c waited for b's lease to expire");
    assert_eq!(
        store.current_leader("control").await.expect("leader"),
        Some("c".into())
    );
    c.resign().await.expect("resign");
    assert_eq!(store.current_leader("control").await.expect("leader"), None);
}

/// The leader keeps its lease through the death of the etcd member it talks to, and loses
/// leadership (and knows it) when its key is taken from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_survives_a_member_kill_and_notices_its_loss() {
    let mut cluster = cluster().await;
    let store = cluster.store("/ha").await.expect("connect");
    let election = store.election("control").expect("election");
    // Keepalives must bridge a dead member's timeout and the etcd re-election that follows if it
    // led (up to about a second each here): 2 s leaves too little room on a loaded machine.
    let ttl = TTL * 2;
    let leader = election.campaign("a", ttl).await.expect("campaign");
    cluster.kill(0);
    tokio::time::sleep(ttl * 3).await;
    assert!(
        !leader.is_lost(),
        "the lease outlives the member the leader talked to"
    );
    assert_eq!(
        store.current_leader("control").await.expect("leader"),
        Some("a".into())
    );

    // An operator deletes the election key by hand: the leader must notice.
    let admin = EtcdStore::connect_with(&cluster.endpoints()[1..], "/ha.elections", test_options())
        .await
        .expect("connect");
    admin.delete("control", Expect::Any).await.expect("delete");
    tokio::time::timeout(ttl * 2, leader.lost())
        .await
        .expect("lost() resolves");
    assert!(leader.is_lost());
}

fn check_url(url: &str, fragment: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(EtcdStore::connect_url(url, test_options()));
    match result {
        Err(error @ StoreError::Open { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(fragment),
                "{url}: {message:?} lacks {fragment:?}"
            );
        }
        Err(other) => panic!("{url}: want Open, got {other}"),
        Ok(_) => panic!("{url}: connected"),
    }
}

#[test]
fn bad_store_urls_say_what_is_wrong() {
    check_url("etcd:/127.0.0.1:2379", "does not start with etcd://");
    check_url("etcd://", "names no etcd member");
    check_url("etcd://h1:2379,,h3", "member 2 is empty");
    check_url("etcd://h1:port", "bad port \"port\"");
    check_url("etcd://h1:2379//x", "empty segment");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    check_url(
        &format!("etcd://127.0.0.1:{port}"),
        "is etcd running? check --store",
    );
    check_url(
        &format!("etcd://127.0.0.1:{port}"),
        "cannot reach etcd at http://127.0.0.1",
    );
}
