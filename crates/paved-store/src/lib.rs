//! The `Store`: a revisioned key-value store with compare-and-set writes and watches, the one
//! place paved keeps state. `redb` is the embedded backend, `etcd` the distributed one (with the
//! leader election of the HA control plane); both pass the same `conformance` suite.
//!
//! The model is etcd's: one global revision counts every committed write; every key remembers
//! the revision that created it and the one that last changed it; a watch replays the writes
//! after a revision, then follows new ones.

pub mod conformance;
mod etcd_store;
mod redb_store;
#[cfg(feature = "testing")]
pub mod testing;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use etcd_store::{
    DEFAULT_PREFIX, Election, EtcdOptions, EtcdStore, EtcdTarget, EtcdUrlError, Leadership,
};
pub use redb_store::{RedbOptions, RedbStore};

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the write that last changed it.
    pub mod_revision: u64,
}

/// What must hold for a write to apply: the compare of compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this `mod_revision` (update what was read).
    Revision(u64),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
}

/// A committed change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    pub key: String,
    /// The new value for a put; empty for a delete.
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A stream of committed changes in revision order. It ends only with an error.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare failed: somebody else wrote first. Read again and retry.
    #[error("conflict on {key}: expected {expected:?}, found revision {found:?}; read it again and retry")]
    Conflict {
        key: String,
        expected: Expect,
        /// `mod_revision` of what is stored, `None` when the key is absent.
        found: Option<u64>,
    },
    /// The watch asked for history the store no longer keeps. List again, then watch from the
    /// revision the list returned.
    #[error(
        "revision {requested} is compacted (oldest kept: {oldest}); list again and watch from its revision"
    )]
    Compacted { requested: u64, oldest: u64 },
    /// A watcher fell too far behind the writers and was dropped; it should list again.
    #[error("watch fell behind the writers; list again and watch from its revision")]
    WatchLagged,
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The data file cannot be opened: in use by another process, corrupted, or not a paved store.
    #[error("cannot open store at {path}: {reason}")]
    Open { path: String, reason: String },
    /// The backend failed (disk full, I/O error, etcd unreachable or without a majority). The
    /// write was not acknowledged: when the failure hit the commit itself (for etcd, the
    /// connection broke after the request was sent), it may or may not have been applied, so
    /// read before retrying. A retry helps once the cause (disk space, hardware, the etcd
    /// members) is fixed; for etcd that is often a leader election later.
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value at `key`, if any. An empty key is `InvalidKey`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, in key order, and the store revision the list reflects
    /// (watch from it to follow what comes after).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), StoreError>;

    /// Applies every op or none: if any `expect` fails, nothing is written and the first failing
    /// compare is returned as `Conflict`. Returns the revision of the commit; all ops of one
    /// transaction share it. Revisions increase from commit to commit but need not be
    /// consecutive (etcd's counter also counts other prefixes' writes). Durable when it
    /// returns: a crash after `Ok` loses nothing.
    ///
    /// Keys must be non-empty and appear at most once per transaction (`InvalidKey`), see
    /// [`validate_txn`]. A transaction that changes nothing (no ops, or only deletes of absent
    /// keys) takes no new revision: it returns the current one and no watcher sees it.
    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError>;

    /// Every change to keys starting with `prefix` with a revision greater than `after`, then
    /// every later change as it commits. `after = 0` replays all kept history; `after` ahead of
    /// the store is fine (the stream waits). When history after `after` is compacted the error
    /// `Compacted` comes either from this call or as the stream's first item, by backend.
    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, StoreError>;

    /// The revision of the latest commit (0 for an empty store), read after every write
    /// acknowledged before the call. A backend whose revision counter is shared with others
    /// (etcd: one counter for every prefix of the etcd cluster) returns the counter's current
    /// value: not 0 for a new store, and possibly ahead of this store's own latest commit, but
    /// never behind it, and a watch from it sees exactly the commits that come after.
    async fn revision(&self) -> Result<u64, StoreError>;

    /// Where the data lives, for status pages: `redb:/path` or `etcd://…`.
    fn describe(&self) -> String;

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.txn(vec![Op::Put { key, value, expect }]).await
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.txn(vec![Op::Delete { key, expect }]).await
    }
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect,
        }
    }
}

impl Expect {
    /// Whether the compare holds when the key's `mod_revision` is `found` (`None`: absent).
    pub fn matches(self, found: Option<u64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => found.is_none(),
            Expect::Revision(revision) => found == Some(revision),
        }
    }
}

/// Rejects an empty key: every backend refuses it the same way.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: String::new(),
            reason: "keys must not be empty",
        });
    }
    Ok(())
}

/// Rejects a transaction with an empty key or a key named twice: the ops of one transaction
/// then never depend on their order (etcd refuses duplicates too).
pub fn validate_txn(ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        validate_key(op.key())?;
        if !seen.insert(op.key()) {
            return Err(StoreError::InvalidKey {
                key: op.key().to_owned(),
                reason: "appears more than once in one transaction; merge the ops",
            });
        }
    }
    Ok(())
}

impl StoreError {
    /// Whether the same call may succeed if made again unchanged (after a re-read for conflicts).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Conflict { .. } | StoreError::WatchLagged)
    }
}
