//! `EtcdStore`: the [`Store`] on an etcd cluster, for a highly available control plane; and
//! [`Election`], the leader election the control plane's replicas run on the same cluster.
//!
//! etcd's model is the Store's model, so the mapping is direct: the store's revision is
//! etcd's revision, a transaction is one etcd Txn, a watch is an etcd Watch. Every key lives
//! under `<prefix>/` (a store key `/jobs/a` is the etcd key `/paved//jobs/a`), so several
//! paved clusters, or test cases, share one etcd without seeing each other's keys.
//!
//! Differences from `RedbStore` a caller can observe, all allowed by the `Store` contract:
//! etcd's revision is one counter for the whole etcd cluster, so it does not start at 0 for a
//! new prefix and other prefixes' writes advance it (revisions stay increasing, but leave
//! gaps); a write whose connection breaks before etcd confirms it fails with
//! `StoreError::Backend` and may or may not have been applied; and history lasts until
//! somebody compacts etcd (`--auto-compaction-retention`, or [`Compact`]).
//!
//! etcd's own limits apply: a transaction of more than `--max-txn-ops` ops (128 by default)
//! or a request over `--max-request-bytes` (1.5 MiB) fails with `StoreError::Backend` naming
//! the flag to raise.

mod client;
mod election;
pub(crate) mod pb;
mod txn;
mod url;
mod watch;

use std::time::Duration;

use async_trait::async_trait;

use self::client::{Client, Kind, request};
use self::pb::{CompactionRequest, PbKeyValue, RangeRequest};
use crate::conformance::Compact;
use crate::{KeyValue, Op, Store, StoreError, WatchStream, validate_key, validate_txn};

pub use election::{Election, Leadership};
pub use url::{DEFAULT_PREFIX, EtcdTarget, EtcdUrlError};

/// A [`Store`] whose keys live under one prefix of an etcd cluster. Cheap to clone: clones
/// share the connections.
///
/// Calls go to one member at a time; when it cannot be reached, or has no raft leader, they
/// move to the next. Reads are linearizable (etcd's default) and are retried on another member
/// after any transport failure. A write is sent again only when it surely never reached etcd;
/// when the connection breaks after it was sent, it fails with `StoreError::Backend` saying it
/// may or may not have been applied, so read before retrying.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    target: EtcdTarget,
    /// `<prefix>/`: the etcd key of store key `k` is `namespace + k`.
    namespace: String,
}

/// Timeouts of an [`EtcdStore`]'s calls. The defaults suit a control plane on a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// How long a TCP connection to a member may take. Default 2 s.
    pub connect_timeout: Duration,
    /// How long one call may wait for its answer. Default 10 s.
    pub request_timeout: Duration,
    /// How long a call, or a watch, keeps trying other members before it fails: long enough to
    /// ride out a leader election. Default 15 s.
    pub retry_for: Duration,
    /// The HTTP/2 keepalive interval and timeout, which notice a dead member on an idle
    /// connection (a watch waiting for events). Default 5 s.
    pub keepalive: Duration,
    /// How many keys one range request of a `list` returns; larger lists take several, all
    /// read at the revision of the first. Default 1000.
    pub page_size: u32,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(15),
            keepalive: Duration::from_secs(5),
            page_size: 1000,
        }
    }
}

impl EtcdStore {
    /// Connects to the etcd members at `endpoints` (`http://host:port`) and checks that the
    /// cluster answers. Keys live under `prefix` (`/paved`; a trailing `/` is ignored).
    /// Fails with `StoreError::Open` naming the endpoints when no member answers in time.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// Connects to the store an `etcd://h1:2379,h2:2379[/prefix]` URL names (the CLI's form,
    /// see [`EtcdTarget::parse`]).
    pub async fn connect_url(url: &str, options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let target = EtcdTarget::parse(url).map_err(|e| StoreError::Open {
            path: url.to_owned(),
            reason: e.to_string(),
        })?;
        EtcdStore::connect_with(&target.endpoints, &target.prefix, options).await
    }

    /// [`EtcdStore::connect`] with explicit timeouts.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        options: EtcdOptions,
    ) -> Result<EtcdStore, StoreError> {
        let prefix = prefix.trim_end_matches('/').to_owned();
        let target = EtcdTarget {
            endpoints: endpoints.to_vec(),
            prefix: prefix.clone(),
        };
        let budget = options.connect_timeout;
        let store = EtcdStore {
            client: Client::new(endpoints, options)?,
            namespace: format!("{prefix}/"),
            target,
        };
        store
            .current_revision(budget)
            .await
            .map_err(|error| StoreError::Open {
                path: store.describe(),
                reason: match error {
                    StoreError::Backend(reason) => reason,
                    other => other.to_string(),
                },
            })?;
        Ok(store)
    }

    /// The prefix every key of this store lives under.
    pub fn prefix(&self) -> &str {
        &self.target.prefix
    }

    /// A leader election named `name` on this store's etcd cluster (see [`Election`]).
    pub fn election(&self, name: &str) -> Result<Election, StoreError> {
        Election::new(self.client.clone(), &self.target.prefix, name)
    }

    /// The candidate id of the current leader of election `name`, if any: followers forward
    /// writes to it.
    pub async fn current_leader(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.election(name)?.leader().await
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        txn::full_key(&self.namespace, key)
    }

    async fn range(&self, range: RangeRequest) -> Result<pb::RangeResponse, StoreError> {
        self.client
            .call(Kind::Read, |channel| {
                let range = range.clone();
                async move { client::kv(channel).range(request(range)).await }
            })
            .await
    }

    /// etcd's current revision, trying members for at most `budget`.
    async fn current_revision(&self, budget: Duration) -> Result<u64, StoreError> {
        let range = RangeRequest {
            key: self.namespace.clone().into_bytes(),
            count_only: true,
            ..RangeRequest::default()
        };
        let response = self
            .client
            .call_within(Kind::Read, budget, |channel| {
                let range = range.clone();
                async move { client::kv(channel).range(request(range)).await }
            })
            .await?;
        Ok(txn::header_revision(response.header.as_ref()))
    }

    /// One page of `[start, end)` at `revision` (0: the newest).
    async fn page(&self, start: Vec<u8>, end: &[u8], revision: u64) -> Result<pb::RangeResponse, StoreError> {
        self.range(RangeRequest {
            key: start,
            range_end: end.to_vec(),
            limit: i64::from(self.client.options().page_size.max(1)),
            revision: revision as i64,
            ..RangeRequest::default()
        })
        .await
    }

    /// Every key under `full` (an etcd prefix), page by page, all at one revision.
    async fn list_pages(&self, full: Vec<u8>) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let end = txn::prefix_end(&full);
        let (mut kvs, mut revision, mut start) = (Vec::new(), 0, full);
        loop {
            let page = self.page(start, &end, revision).await?;
            if revision == 0 {
                revision = txn::header_revision(page.header.as_ref());
            }
            let Some(last) = page.kvs.last() else { break };
            start = [last.key.as_slice(), b"\0"].concat();
            for kv in page.kvs {
                kvs.push(self.key_value(kv)?);
            }
            if !page.more {
                break;
            }
        }
        Ok((kvs, revision))
    }

    fn key_value(&self, kv: PbKeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: store_key(&kv.key, self.namespace.len())?,
            value: kv.value,
            create_revision: kv.create_revision.max(0) as u64,
            mod_revision: kv.mod_revision.max(0) as u64,
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        validate_key(key)?;
        let response = self
            .range(RangeRequest {
                key: self.full_key(key),
                ..RangeRequest::default()
            })
            .await?;
        response
            .kvs
            .into_iter()
            .next()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), StoreError> {
        // A page at the first page's revision fails when a compaction passes that revision
        // meanwhile; the list then starts again at the newest revision.
        let mut tries = 0;
        loop {
            match self.list_pages(self.full_key(prefix)).await {
                Err(StoreError::Backend(reason)) if reason.contains("compacted") && tries < 3 => tries += 1,
                result => return result,
            }
        }
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        validate_txn(&ops)?;
        let txn = txn::request(&self.namespace, &ops);
        let response = self
            .client
            .call(Kind::Write, |channel| {
                let txn = txn.clone();
                async move { client::kv(channel).txn(request(txn)).await }
            })
            .await?;
        // etcd itself takes no revision for a txn that changes nothing (no ops, or deletes of
        // absent keys) and answers with the current one, as the Store contract asks.
        txn::outcome(&ops, response)
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, StoreError> {
        let key = self.full_key(prefix);
        let range = watch::Range {
            end: txn::prefix_end(&key),
            key,
            strip: self.namespace.len(),
        };
        Ok(watch::spawn(self.client.clone(), range, after))
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.current_revision(self.client.options().retry_for).await
    }

    fn describe(&self) -> String {
        self.target.to_url()
    }
}

#[async_trait]
impl Compact for EtcdStore {
    /// Compacts the whole etcd cluster (etcd has one history for every prefix) at `through`
    /// (at most the current revision): etcd drops every revision before it and the deletions
    /// at it, so a watch from before `through` fails with `Compacted`.
    async fn compact(&self, through: u64) -> Result<u64, StoreError> {
        let at = through.min(self.revision().await?);
        let compaction = CompactionRequest {
            revision: at as i64,
            physical: true,
        };
        let result = self
            .client
            .call(Kind::Read, |channel| async move {
                client::kv(channel).compact(request(compaction)).await
            })
            .await;
        match result {
            // Already compacted at or past `at`: what was asked for holds.
            Ok(_) => Ok(at),
            Err(StoreError::Backend(reason)) if reason.contains("compacted") => Ok(at),
            Err(error) => Err(error),
        }
    }
}

/// The store key of etcd key `key`: without its first `strip` bytes (the namespace).
fn store_key(key: &[u8], strip: usize) -> Result<String, StoreError> {
    let key = key.get(strip..).unwrap_or_default();
    String::from_utf8(key.to_vec())
        .map_err(|_| StoreError::Backend(format!("etcd holds a key that is not UTF-8: {key:?}")))
}
