//! The conformance suite every `Store` backend passes: the semantics documented in `lib.rs`,
//! checked one small named function at a time.
//!
//! A backend's tests call [`run`] with a function that makes an empty store, and
//! [`run_compaction`] too if the backend can drop history on demand ([`Compact`]). Every check
//! gets a fresh store. Run it on a multi-threaded tokio runtime: some checks race writers.
//!
//! Revisions: no check assumes a fresh store starts at revision 0 or that revisions are
//! consecutive, only that they increase; a backend whose revision counter is shared (etcd, one
//! counter for every prefix) passes as is. The checks that compare revisions exactly (a no-op
//! returns the revision of the last write; `revision()` and `list` return it) do assume that
//! nothing else advances the counter while a check runs: give such a backend a store of its own
//! (for etcd, a cluster that only the suite writes to; the checks run one at a time).

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};

use crate::{Event, EventKind, Expect, KeyValue, Op, Store, StoreError, WatchStream};

/// A backend that can drop its watch history on demand, so the suite can check `Compacted`.
#[async_trait]
pub trait Compact: Store {
    /// Drops history up to and including `through`; returns the revision history is now
    /// compacted through.
    async fn compact(&self, through: u64) -> Result<u64, StoreError>;
}

/// Runs each named check function on a fresh store from `make`, in order.
macro_rules! checks {
    ($make:ident; $($name:ident),+ $(,)?) => {
        $( check(stringify!($name), $name($make().await)).await; )+
    };
}

/// How long a check waits for a watch event before it fails.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// Runs every check that needs nothing beyond the `Store` trait. Panics naming the first
/// check that fails.
pub async fn run<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    checks!(make;
        get_missing,
        get_present,
        compares,
        revisions_increase,
        create_and_mod_revisions,
        txn_shares_one_revision,
        txn_all_or_nothing,
        txn_names_first_conflict,
        noop_txns_keep_revision,
        invalid_keys,
        list_by_prefix,
        watch_replays_from_zero,
        watch_replays_from_middle,
        watch_replay_then_live,
        watch_filters_prefix,
        watch_after_future_revision,
        concurrent_creates,
        concurrent_creates_of_one_key,
        concurrent_counter,
        watch_sees_concurrent_writes,
    );
}

/// Runs the checks that need [`Compact`].
pub async fn run_compaction<S, F, Fut>(make: F)
where
    S: Compact,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    checks!(make; watch_compacted);
}

/// Runs one check, turning its panic into one that names it.
async fn check(name: &str, body: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(body).catch_unwind().await {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!("conformance check `{name}` failed: {message}");
    }
}

async fn get_missing(store: impl Store) {
    let found = store.get("/missing").await.expect("get of a missing key");
    assert_eq!(found, None, "a key never written must read as None");
}

async fn get_present(store: impl Store) {
    let revision = put(&store, "/a", b"one", Expect::Any).await;
    let found = store.get("/a").await.expect("get");
    let want = KeyValue {
        key: "/a".into(),
        value: b"one".to_vec(),
        create_revision: revision,
        mod_revision: revision,
    };
    assert_eq!(
        found,
        Some(want),
        "a new key has create = mod = its put's revision"
    );
}

/// What a compare case expects, resolved against the key's state when the case runs.
#[derive(Debug, Clone, Copy)]
enum Want {
    Any,
    Absent,
    /// `Revision` of the key's current `mod_revision`.
    Current,
    /// `Revision` of a revision the key does not have.
    Stale,
}

/// One compare case: an op on a key that exists or not, and whether it must succeed.
struct CompareCase {
    delete: bool,
    exists: bool,
    want: Want,
    ok: bool,
}

const fn case(delete: bool, exists: bool, want: Want, ok: bool) -> CompareCase {
    CompareCase {
        delete,
        exists,
        want,
        ok,
    }
}

const COMPARE_CASES: &[CompareCase] = &[
    case(false, false, Want::Any, true),
    case(false, false, Want::Absent, true),
    case(false, false, Want::Stale, false),
    case(false, true, Want::Any, true),
    case(false, true, Want::Absent, false),
    case(false, true, Want::Current, true),
    case(false, true, Want::Stale, false),
    case(true, false, Want::Any, true),
    case(true, false, Want::Absent, true),
    case(true, false, Want::Stale, false),
    case(true, true, Want::Any, true),
    case(true, true, Want::Absent, false),
    case(true, true, Want::Current, true),
    case(true, true, Want::Stale, false),
];

/// Put and delete under every kind of compare, on a present and an absent key.
async fn compares(store: impl Store) {
    for (i, case) in COMPARE_CASES.iter().enumerate() {
        let key = format!("/compare/{i}");
        if case.exists {
            put(&store, &key, b"old", Expect::Any).await;
        }
        check_compare(&store, &key, case).await;
    }
}

async fn check_compare(store: &impl Store, key: &str, case: &CompareCase) {
    let before = store.get(key).await.expect("get");
    let found = before.as_ref().map(|kv| kv.mod_revision);
    let expect = match case.want {
        Want::Any => Expect::Any,
        Want::Absent => Expect::Absent,
        Want::Current => Expect::Revision(found.unwrap_or(0)),
        Want::Stale => Expect::Revision(found.unwrap_or(0) + 1_000_000),
    };
    let what = format!(
        "{} of {} key with {expect:?}",
        if case.delete { "delete" } else { "put" },
        if case.exists { "a present" } else { "an absent" }
    );
    let start = store.revision().await.expect("revision");
    let result = if case.delete {
        store.delete(key, expect).await
    } else {
        store.put(key, b"new".to_vec(), expect).await
    };
    let after = store.get(key).await.expect("get");
    match (result, case.ok) {
        (Ok(revision), true) => {
            let now = store.revision().await.expect("revision");
            check_applied(&what, case, revision, (start, now), after);
        }
        (
            Err(StoreError::Conflict {
                key: k,
                expected,
                found: f,
            }),
            false,
        ) => {
            assert_eq!(
                (k.as_str(), expected, f),
                (key, expect, found),
                "{what}: conflict fields"
            );
            assert_eq!(after, before, "{what}: a conflict must not write");
        }
        (result, _) => panic!("{what}: got {result:?}, want success = {}", case.ok),
    }
}

/// Checks a compare case that succeeded: the value, and whether it took a new revision (only a
/// delete of an absent key does not).
fn check_applied(
    what: &str,
    case: &CompareCase,
    revision: u64,
    (start, now): (u64, u64),
    after: Option<KeyValue>,
) {
    if case.delete {
        assert_eq!(after, None, "{what}: the key must be gone");
    } else {
        let stored = after.as_ref().map(|kv| (kv.value.as_slice(), kv.mod_revision));
        assert_eq!(
            stored,
            Some((&b"new"[..], revision)),
            "{what}: value and mod_revision"
        );
    }
    if case.delete && !case.exists {
        assert_eq!(
            revision, start,
            "{what}: changes nothing, so returns the current revision"
        );
    } else {
        assert!(revision > start, "{what}: takes a new revision");
    }
    assert_eq!(now, revision, "{what}: store revision after the write");
}

async fn revisions_increase(store: impl Store) {
    let mut last = store.revision().await.expect("revision");
    for i in 0..10 {
        let revision = put(&store, &format!("/r/{}", i % 3), b"x", Expect::Any).await;
        assert!(
            revision > last,
            "write {i}: revision {revision} must exceed {last}"
        );
        last = revision;
    }
    assert_eq!(
        store.revision().await.expect("revision"),
        last,
        "revision() = last commit"
    );
}

async fn create_and_mod_revisions(store: impl Store) {
    let created = put(&store, "/k", b"1", Expect::Absent).await;
    let updated = put(&store, "/k", b"2", Expect::Revision(created)).await;
    let kv = store.get("/k").await.expect("get").expect("/k exists");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (created, updated),
        "after update"
    );
    store
        .delete("/k", Expect::Revision(updated))
        .await
        .expect("delete");
    let recreated = put(&store, "/k", b"3", Expect::Absent).await;
    let kv = store.get("/k").await.expect("get").expect("/k exists");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated),
        "recreated"
    );
}

async fn txn_shares_one_revision(store: impl Store) {
    put(&store, "/t/gone", b"x", Expect::Any).await;
    let ops = vec![
        put_op("/t/a", b"a", Expect::Absent),
        put_op("/t/b", b"b", Expect::Any),
        Op::Delete {
            key: "/t/gone".into(),
            expect: Expect::Any,
        },
    ];
    let revision = store.txn(ops).await.expect("txn");
    let (kvs, listed) = store.list("/t/").await.expect("list");
    let got: Vec<_> = kvs.iter().map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    assert_eq!(
        got,
        [("/t/a", revision), ("/t/b", revision)],
        "every op at the txn's revision"
    );
    assert_eq!(listed, revision, "list reflects the txn");
}

async fn txn_all_or_nothing(store: impl Store) {
    let existing = put(&store, "/t/a", b"old", Expect::Any).await;
    let ops = vec![
        put_op("/t/b", b"b", Expect::Any),
        put_op("/t/a", b"new", Expect::Absent),
        put_op("/t/c", b"c", Expect::Any),
    ];
    match store.txn(ops).await {
        Err(StoreError::Conflict { key, found, .. }) => {
            assert_eq!((key.as_str(), found), ("/t/a", Some(existing)), "conflict fields");
        }
        other => panic!("a failing compare on the second op must conflict, got {other:?}"),
    }
    let (kvs, revision) = store.list("/t/").await.expect("list");
    let keys: Vec<_> = kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    assert_eq!(
        keys,
        [("/t/a", &b"old"[..])],
        "nothing of a failed txn may be written"
    );
    assert_eq!(revision, existing, "a failed txn takes no revision");
}

async fn txn_names_first_conflict(store: impl Store) {
    put(&store, "/t/x", b"x", Expect::Any).await;
    let ops = vec![
        put_op("/t/ok", b"1", Expect::Any),
        put_op("/t/y", b"1", Expect::Revision(77_777)),
        put_op("/t/x", b"1", Expect::Absent),
    ];
    match store.txn(ops).await {
        Err(StoreError::Conflict { key, found: None, .. }) => assert_eq!(key, "/t/y"),
        other => panic!("want a conflict on /t/y (first failing op), got {other:?}"),
    }
}

/// Transactions that change nothing return the current revision and take none.
async fn noop_txns_keep_revision(store: impl Store) {
    let current = put(&store, "/n/present", b"x", Expect::Any).await;
    let cases: Vec<(&str, Vec<Op>)> = vec![
        ("empty txn", vec![]),
        (
            "delete absent, Any",
            vec![Op::Delete {
                key: "/n/absent".into(),
                expect: Expect::Any,
            }],
        ),
        (
            "delete absent, Absent",
            vec![Op::Delete {
                key: "/n/absent".into(),
                expect: Expect::Absent,
            }],
        ),
    ];
    for (name, ops) in cases {
        let revision = store.txn(ops).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(revision, current, "{name}: returns the current revision");
        let now = store.revision().await.expect("revision");
        assert_eq!(now, current, "{name}: takes no revision");
    }
}

async fn invalid_keys(store: impl Store) {
    let cases: Vec<(&str, Vec<Op>)> = vec![
        ("empty key", vec![put_op("", b"x", Expect::Any)]),
        (
            "empty key after a good one",
            vec![put_op("/i/a", b"x", Expect::Any), put_op("", b"x", Expect::Any)],
        ),
        (
            "empty key delete",
            vec![Op::Delete {
                key: String::new(),
                expect: Expect::Any,
            }],
        ),
        (
            "key twice",
            vec![
                put_op("/i/a", b"x", Expect::Any),
                Op::Delete {
                    key: "/i/a".into(),
                    expect: Expect::Any,
                },
            ],
        ),
    ];
    for (name, ops) in cases {
        let result = store.txn(ops).await;
        assert!(
            matches!(result, Err(StoreError::InvalidKey { .. })),
            "{name}: got {result:?}"
        );
    }
    assert_eq!(
        store.get("/i/a").await.expect("get"),
        None,
        "rejected txns write nothing"
    );
    let get = store.get("").await;
    assert!(
        matches!(get, Err(StoreError::InvalidKey { .. })),
        "get of \"\": got {get:?}"
    );
}

async fn list_by_prefix(store: impl Store) {
    let keys = [
        "/jobs/b",
        "/jobsx",
        "/jobs/a/x",
        "/job",
        "/jobs/a",
        "/jobs",
        "/nodes/1",
    ];
    for key in keys {
        put(&store, key, key.as_bytes(), Expect::Absent).await;
    }
    let cases: &[(&str, &[&str])] = &[
        ("/jobs/", &["/jobs/a", "/jobs/a/x", "/jobs/b"]),
        ("/jobs/a", &["/jobs/a", "/jobs/a/x"]),
        ("/jobs", &["/jobs", "/jobs/a", "/jobs/a/x", "/jobs/b", "/jobsx"]),
        ("/nodes/", &["/nodes/1"]),
        ("/none/", &[]),
        (
            "",
            &[
                "/job",
                "/jobs",
                "/jobs/a",
                "/jobs/a/x",
                "/jobs/b",
                "/jobsx",
                "/nodes/1",
            ],
        ),
    ];
    let current = store.revision().await.expect("revision");
    for (prefix, want) in cases {
        let (kvs, revision) = store.list(prefix).await.expect("list");
        let got: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(&got, want, "list({prefix:?}): keys in order, no other prefix");
        assert!(
            kvs.iter().all(|kv| kv.value == kv.key.as_bytes()),
            "list({prefix:?}): values"
        );
        assert_eq!(revision, current, "list({prefix:?}) returns the store revision");
    }
}

async fn watch_replays_from_zero(store: impl Store) {
    let want = write_script(&store).await;
    let mut watch = store.watch("", 0).await.expect("watch");
    let got = next_events(&mut watch, want.len()).await;
    assert_eq!(got, want, "watch from 0 replays every change in order");
}

async fn watch_replays_from_middle(store: impl Store) {
    let all = write_script(&store).await;
    let middle = all[1].revision;
    let want: Vec<_> = all.into_iter().filter(|e| e.revision > middle).collect();
    let mut watch = store.watch("", middle).await.expect("watch");
    let got = next_events(&mut watch, want.len()).await;
    assert_eq!(got, want, "watch from {middle} replays only later changes");
}

async fn watch_replay_then_live(store: impl Store) {
    let mut want = write_script(&store).await;
    let mut watch = store.watch("", 0).await.expect("watch");
    for i in 0..5 {
        let key = format!("/live/{i}");
        let revision = put(&store, &key, b"v", Expect::Absent).await;
        want.push(put_event(revision, &key, b"v"));
    }
    let got = next_events(&mut watch, want.len()).await;
    assert_eq!(got, want, "replayed then live events, no gap, no duplicate");
}

async fn watch_filters_prefix(store: impl Store) {
    let start = store.revision().await.expect("revision");
    let mut watch = store.watch("/jobs/", start).await.expect("watch");
    // Each write outside the prefix comes before one inside it: the next event must be the
    // one inside, which proves the one outside was skipped without waiting on a clock.
    for (outside, inside) in [
        ("/jobsx", "/jobs/a"),
        ("/job", "/jobs/b"),
        ("/nodes/1", "/jobs/a"),
    ] {
        put(&store, outside, b"no", Expect::Any).await;
        let revision = put(&store, inside, b"yes", Expect::Any).await;
        let got = next_events(&mut watch, 1).await;
        assert_eq!(
            got,
            [put_event(revision, inside, b"yes")],
            "after writing {outside}"
        );
    }
}

async fn watch_after_future_revision(store: impl Store) {
    let current = store.revision().await.expect("revision");
    let mut watch = store
        .watch("", current + 2)
        .await
        .expect("watch ahead of the store");
    let mut last = 0;
    for i in 0..3 {
        last = put(&store, &format!("/f/{i}"), b"v", Expect::Any).await;
    }
    let got = next_events(&mut watch, 1).await;
    assert_eq!(got[0].revision, last, "only changes after {} arrive", current + 2);
}

async fn watch_compacted(store: impl Compact) {
    let revisions = write_script(&store).await;
    let (first, through) = (revisions[0].revision, revisions[2].revision);
    store.compact(through).await.expect("compact");
    match store.watch("", first).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("watch from a compacted revision: want Compacted, got {e}"),
        Ok(mut watch) => {
            let item = next_item(&mut watch).await;
            assert!(matches!(item, Err(StoreError::Compacted { .. })), "got {item:?}");
        }
    }
    let want: Vec<_> = revisions.into_iter().filter(|e| e.revision > through).collect();
    let mut watch = store
        .watch("", through)
        .await
        .expect("watch from the compaction point");
    assert_eq!(
        next_events(&mut watch, want.len()).await,
        want,
        "history after {through}"
    );
}

async fn concurrent_creates(store: impl Store) {
    const WRITERS: usize = 200;
    let store = Arc::new(store);
    let tasks = (0..WRITERS).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.put(&format!("/c/{i:03}"), vec![1], Expect::Absent).await })
    });
    let mut revisions = HashSet::new();
    for (i, task) in futures::future::join_all(tasks).await.into_iter().enumerate() {
        let revision = task.expect("task").unwrap_or_else(|e| panic!("create {i}: {e}"));
        assert!(
            revisions.insert(revision),
            "create {i}: revision {revision} given twice"
        );
    }
    let (kvs, _) = store.list("/c/").await.expect("list");
    assert_eq!(kvs.len(), WRITERS, "every concurrent create is stored");
}

async fn concurrent_creates_of_one_key(store: impl Store) {
    const WRITERS: usize = 20;
    let store = Arc::new(store);
    let tasks = (0..WRITERS).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.put("/leader", vec![i as u8], Expect::Absent).await })
    });
    let results = futures::future::join_all(tasks).await;
    let mut winners = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result.expect("task") {
            Ok(revision) => winners.push((i, revision)),
            Err(StoreError::Conflict { found: Some(_), .. }) => {}
            Err(e) => panic!("create {i}: want success or a conflict, got {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one create of /leader wins: {winners:?}"
    );
    let kv = store.get("/leader").await.expect("get").expect("/leader exists");
    assert_eq!(
        (kv.value, kv.mod_revision),
        (vec![winners[0].0 as u8], winners[0].1),
        "the winner's value"
    );
}

async fn concurrent_counter(store: impl Store) {
    const INCREMENTS: u64 = 50;
    let store = Arc::new(store);
    put(&*store, "/counter", b"0", Expect::Absent).await;
    let tasks = (0..INCREMENTS).map(|_| tokio::spawn(increment(store.clone(), "/counter")));
    for task in futures::future::join_all(tasks).await {
        task.expect("increment task");
    }
    let kv = store
        .get("/counter")
        .await
        .expect("get")
        .expect("/counter exists");
    assert_eq!(
        parse_counter(&kv),
        INCREMENTS,
        "every compare-and-set increment counted once"
    );
}

async fn watch_sees_concurrent_writes(store: impl Store) {
    const WRITERS: usize = 100;
    let store = Arc::new(store);
    let start = store.revision().await.expect("revision");
    let mut watch = store.watch("/w/", start).await.expect("watch");
    let tasks = (0..WRITERS).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.put(&format!("/w/{i}"), vec![], Expect::Absent).await })
    });
    futures::future::join_all(tasks).await;
    let events = next_events(&mut watch, WRITERS).await;
    let in_order = events.windows(2).all(|w| w[0].revision < w[1].revision);
    assert!(in_order, "live events arrive in revision order");
    let keys: HashSet<_> = events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), WRITERS, "every write seen once");
}

/// A read-modify-write loop, retried on conflict, as a reconciler would write.
async fn increment(store: Arc<impl Store>, key: &'static str) {
    loop {
        let kv = store.get(key).await.expect("get").expect("counter exists");
        let next = (parse_counter(&kv) + 1).to_string().into_bytes();
        match store.put(key, next, Expect::Revision(kv.mod_revision)).await {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => panic!("increment: {e}"),
        }
    }
}

fn parse_counter(kv: &KeyValue) -> u64 {
    let text = std::str::from_utf8(&kv.value).expect("counter is text");
    text.parse().expect("counter is a number")
}

/// Writes a fixed mix of puts, deletes and a multi-op txn; returns the events it must cause.
async fn write_script(store: &impl Store) -> Vec<Event> {
    let a1 = put(store, "/s/a", b"1", Expect::Absent).await;
    let b1 = put(store, "/s/b", b"1", Expect::Absent).await;
    let a2 = put(store, "/s/a", b"2", Expect::Revision(a1)).await;
    let d = store.delete("/s/b", Expect::Any).await.expect("delete");
    let ops = vec![
        put_op("/s/c", b"c", Expect::Absent),
        put_op("/s/d", b"d", Expect::Any),
    ];
    let t = store.txn(ops).await.expect("txn");
    vec![
        put_event(a1, "/s/a", b"1"),
        put_event(b1, "/s/b", b"1"),
        put_event(a2, "/s/a", b"2"),
        Event {
            revision: d,
            kind: EventKind::Delete,
            key: "/s/b".into(),
            value: vec![],
        },
        put_event(t, "/s/c", b"c"),
        put_event(t, "/s/d", b"d"),
    ]
}

async fn put(store: &impl Store, key: &str, value: &[u8], expect: Expect) -> u64 {
    let result = store.put(key, value.to_vec(), expect).await;
    result.unwrap_or_else(|e| panic!("put {key} with {expect:?}: {e}"))
}

fn put_op(key: &str, value: &[u8], expect: Expect) -> Op {
    Op::Put {
        key: key.into(),
        value: value.to_vec(),
        expect,
    }
}

fn put_event(revision: u64, key: &str, value: &[u8]) -> Event {
    Event {
        revision,
        kind: EventKind::Put,
        key: key.into(),
        value: value.to_vec(),
    }
}

/// The next `n` events, failing on an error or when one takes longer than the deadline.
async fn next_events(watch: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match next_item(watch).await {
            Ok(event) => events.push(event),
            Err(e) => panic!("watch failed after {} of {n} events: {e}", events.len()),
        }
    }
    events
}

async fn next_item(watch: &mut WatchStream) -> Result<Event, StoreError> {
    match tokio::time::timeout(EVENT_DEADLINE, watch.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("watch stream ended without an error"),
        Err(_) => panic!("no watch event within {EVENT_DEADLINE:?}"),
    }
}
