//! Property test: random transactions applied to a `RedbStore` and to a `BTreeMap` model give
//! the same answers, the same contents, and the same watch history.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use paved_store::{Event, EventKind, Expect, KeyValue, Op, RedbStore, Store, StoreError};
use proptest::prelude::*;

/// Few keys, some prefixes of others, so compares and lists collide often.
const KEYS: &[&str] = &["a", "ab", "b", "b/c", "b/d", "c"];
const PREFIXES: &[&str] = &["", "a", "b/", "b", "z"];

/// How an op's compare is chosen; `Current` reads the model so it usually succeeds.
#[derive(Debug, Clone, Copy)]
enum ExpectChoice {
    Any,
    Absent,
    Current,
    Revision(u64),
}

#[derive(Debug, Clone)]
struct OpChoice {
    key: usize,
    /// `None` deletes.
    value: Option<u8>,
    expect: ExpectChoice,
}

/// The model: what the store must hold after the same transactions.
#[derive(Default)]
struct Model {
    kvs: BTreeMap<String, KeyValue>,
    revision: u64,
    events: Vec<Event>,
}

fn expect_choice() -> impl Strategy<Value = ExpectChoice> {
    prop_oneof![
        2 => Just(ExpectChoice::Any),
        2 => Just(ExpectChoice::Absent),
        4 => Just(ExpectChoice::Current),
        1 => (0u64..12).prop_map(ExpectChoice::Revision),
    ]
}

fn op_choice() -> impl Strategy<Value = OpChoice> {
    let value = prop::option::weighted(0.7, any::<u8>());
    (0..KEYS.len(), value, expect_choice()).prop_map(|(key, value, expect)| OpChoice { key, value, expect })
}

fn txns() -> impl Strategy<Value = Vec<Vec<OpChoice>>> {
    prop::collection::vec(prop::collection::vec(op_choice(), 0..4), 1..30)
}

impl Model {
    fn resolve(&self, choices: &[OpChoice]) -> Vec<Op> {
        let mut seen = HashSet::new();
        let unique = choices.iter().filter(|c| seen.insert(c.key));
        unique.map(|c| self.op(c)).collect()
    }

    fn op(&self, choice: &OpChoice) -> Op {
        let key = KEYS[choice.key].to_owned();
        let expect = match choice.expect {
            ExpectChoice::Any => Expect::Any,
            ExpectChoice::Absent => Expect::Absent,
            ExpectChoice::Current => Expect::Revision(self.kvs.get(&key).map_or(1, |kv| kv.mod_revision)),
            ExpectChoice::Revision(r) => Expect::Revision(r),
        };
        match choice.value {
            Some(v) => Op::Put {
                key,
                value: vec![v],
                expect,
            },
            None => Op::Delete { key, expect },
        }
    }

    /// Applies `ops` as the store must; returns what the store must answer.
    fn txn(&mut self, ops: &[Op]) -> Result<u64, (String, Option<u64>)> {
        for op in ops {
            let found = self.kvs.get(op.key()).map(|kv| kv.mod_revision);
            if !op.expect().matches(found) {
                return Err((op.key().to_owned(), found));
            }
        }
        let changes = ops
            .iter()
            .any(|op| matches!(op, Op::Put { .. }) || self.kvs.contains_key(op.key()));
        if changes {
            self.revision += 1;
            ops.iter().for_each(|op| self.write(op));
        }
        Ok(self.revision)
    }

    fn write(&mut self, op: &Op) {
        let revision = self.revision;
        let (kind, key, value) = match op {
            Op::Put { key, value, .. } => {
                let create_revision = self.kvs.get(key).map_or(revision, |kv| kv.create_revision);
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                };
                self.kvs.insert(key.clone(), kv);
                (EventKind::Put, key, value.clone())
            }
            Op::Delete { key, .. } => match self.kvs.remove(key) {
                Some(_) => (EventKind::Delete, key, vec![]),
                None => return,
            },
        };
        self.events.push(Event {
            revision,
            kind,
            key: key.clone(),
            value,
        });
    }

    fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.kvs
            .values()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn check_against_model(txns: Vec<Vec<OpChoice>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("store.redb")).expect("open");
    let mut model = Model::default();
    for (i, choices) in txns.iter().enumerate() {
        let ops = model.resolve(choices);
        let want = model.txn(&ops);
        let got = store.txn(ops.clone()).await.map_err(|e| match e {
            StoreError::Conflict { key, found, .. } => (key, found),
            other => panic!("txn {i} {ops:?}: unexpected error {other}"),
        });
        assert_eq!(got, want, "txn {i}: {ops:?}");
        check_lists(&store, &model, i).await;
    }
    check_history(&store, &model).await;
}

async fn check_lists(store: &RedbStore, model: &Model, i: usize) {
    for prefix in PREFIXES {
        let (kvs, revision) = store.list(prefix).await.expect("list");
        assert_eq!(kvs, model.list(prefix), "after txn {i}: list({prefix:?})");
        assert_eq!(revision, model.revision, "after txn {i}: list revision");
    }
}

async fn check_history(store: &RedbStore, model: &Model) {
    let mut watch = store.watch("", 0).await.expect("watch");
    for (i, want) in model.events.iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(20), watch.next()).await;
        let got = next.expect("event in time").expect("stream open").expect("event");
        assert_eq!(&got, want, "history event {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn store_matches_the_model(txns in txns()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(check_against_model(txns));
    }
}
