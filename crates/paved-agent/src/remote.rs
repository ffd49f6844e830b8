//! `RemoteStore`: the [`Store`] an agent on another machine uses, backed by the server's
//! `NodeStore` service. It sees what the server lets its node see (its tasks, their jobs, its
//! node record), so the agent's code is the same against a remote server as in `paved up`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use paved_api::v1::{self as pb, node_store_client::NodeStoreClient};
use paved_store::{Event, EventKind, Expect, KeyValue, Op, Store, StoreError, WatchStream, validate_txn};
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the token and the node's name to every call.
#[derive(Clone)]
pub struct NodeAuth {
    bearer: MetadataValue<Ascii>,
    node: MetadataValue<Ascii>,
}

impl Interceptor for NodeAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.bearer.clone());
        req.metadata_mut()
            .insert(paved_control::nodestore::NODE_HEADER, self.node.clone());
        Ok(req)
    }
}

pub(crate) type Client = NodeStoreClient<InterceptedService<Channel, NodeAuth>>;

/// A [`Store`] reached through the `NodeStore` service of one of several servers: a call that
/// cannot reach one server goes to the next.
#[derive(Clone)]
pub struct RemoteStore {
    servers: Arc<Vec<(String, Client)>>,
    /// The server calls go to first.
    current: Arc<AtomicUsize>,
}

impl RemoteStore {
    /// Speaks for `node`, with `token`, to the servers behind `channels` (URL and channel).
    pub fn new(channels: Vec<(String, Channel)>, token: &str, node: &str) -> Result<RemoteStore, StoreError> {
        let invalid = |what: &str| StoreError::Backend(format!("the {what} cannot go in a request header"));
        let auth = NodeAuth {
            bearer: format!("Bearer {token}").parse().map_err(|_| invalid("token"))?,
            node: node.parse().map_err(|_| invalid("node name"))?,
        };
        if channels.is_empty() {
            return Err(StoreError::Backend("no server to talk to; give --server".into()));
        }
        let servers = channels
            .into_iter()
            .map(|(url, channel)| (url, NodeStoreClient::with_interceptor(channel, auth.clone())))
            .collect();
        Ok(RemoteStore {
            servers: Arc::new(servers),
            current: Arc::default(),
        })
    }

    /// Every server, by URL, with its client.
    pub(crate) fn servers(&self) -> &[(String, Client)] {
        &self.servers
    }

    /// Makes `call` on the current server, then on each other one while servers are
    /// unreachable. A write retried this way may have applied on the server that went away:
    /// compare-and-set makes the retry fail as a conflict then, and the caller reads again.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.servers.len() {
            let index = (first + step) % self.servers.len();
            let (url, client) = &self.servers[index];
            match call(client.clone()).await {
                Ok(answer) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer.into_inner());
                }
                Err(status)
                    if matches!(status.code(), Code::Unavailable | Code::Cancelled | Code::Unknown) =>
                {
                    tracing::debug!(server = %url, error = %status.message(), "server unreachable; trying the next");
                    last = Some(format!("server {url}: {}", status.message()));
                }
                Err(status) => {
                    return Err(StoreError::Backend(format!("server {url}: {}", status.message())));
                }
            }
        }
        Err(StoreError::Backend(last.unwrap_or_default()))
    }
}

fn kv_of(m: pb::StoreKeyValue) -> KeyValue {
    KeyValue {
        key: m.key,
        value: m.value,
        create_revision: m.create_revision,
        mod_revision: m.mod_revision,
    }
}

fn op_message(op: Op) -> pb::StoreOp {
    let (expect, expect_revision) = match op.expect() {
        Expect::Any => ("any", 0),
        Expect::Absent => ("absent", 0),
        Expect::Revision(r) => ("revision", r),
    };
    let (kind, key, value) = match op {
        Op::Put { key, value, .. } => ("put", key, value),
        Op::Delete { key, .. } => ("delete", key, Vec::new()),
    };
    pb::StoreOp {
        key,
        kind: kind.to_owned(),
        value,
        expect: expect.to_owned(),
        expect_revision,
    }
}

#[async_trait]
impl Store for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        paved_store::validate_key(key)?;
        let request = pb::NodeStoreGetRequest { key: key.to_owned() };
        let answer = self.call(|mut c| {
            let request = request.clone();
            async move { c.get(request).await }
        });
        Ok(answer.await?.kv.map(kv_of))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let request = pb::NodeStoreListRequest {
            prefix: prefix.to_owned(),
        };
        let answer = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.list(request).await }
            })
            .await?;
        Ok((answer.kvs.into_iter().map(kv_of).collect(), answer.revision))
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        validate_txn(&ops)?;
        let expected: Vec<(String, Expect)> = ops.iter().map(|o| (o.key().to_owned(), o.expect())).collect();
        let request = pb::NodeStoreTxnRequest {
            ops: ops.into_iter().map(op_message).collect(),
        };
        let answer = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await?;
        if answer.conflict_key.is_empty() {
            return Ok(answer.revision);
        }
        let expected = expected
            .iter()
            .find(|(k, _)| *k == answer.conflict_key)
            .map_or(Expect::Any, |(_, e)| *e);
        Err(StoreError::Conflict {
            key: answer.conflict_key,
            expected,
            found: (answer.conflict_found > 0).then_some(answer.conflict_found),
        })
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, StoreError> {
        let request = pb::NodeStoreWatchRequest {
            prefix: prefix.to_owned(),
            after,
        };
        let stream = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.watch(request).await }
            })
            .await?;
        let events = stream.map(move |item| {
            let m = item.map_err(|s| StoreError::Backend(format!("watch: {}", s.message())))?;
            let kind = match m.kind.as_str() {
                "put" => EventKind::Put,
                _ => EventKind::Delete,
            };
            Ok(Event {
                revision: m.revision,
                kind,
                key: m.key,
                value: m.value,
            })
        });
        // The stream ends only with an error: a server that closes it has gone away.
        let ended = futures::stream::once(async {
            Err(StoreError::Backend("the server closed the watch".to_owned()))
        });
        Ok(Box::pin(events.chain(ended)))
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let answer = self
            .call(|mut c| async move { c.revision(pb::NodeStoreRevisionRequest {}).await })
            .await?;
        Ok(answer.revision)
    }

    fn describe(&self) -> String {
        let urls: Vec<&str> = self.servers.iter().map(|(url, _)| url.as_str()).collect();
        format!("node store at {}", urls.join(","))
    }
}
