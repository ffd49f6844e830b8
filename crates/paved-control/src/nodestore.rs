//! The `NodeStore` service: an agent on another machine reads and reports its node's records
//! through it, with the store's own operations, so `paved agent --server` runs the same agent
//! code as `paved up` does in-process (`paved-agent`'s `RemoteStore` is the client).
//!
//! What a node may see: its own tasks, the jobs those tasks belong to, and its own node record.
//! What it may write: the tasks placed on it (never their node, job or slot) and its node
//! record. Everything else reads as missing and is refused on write, so a node learns nothing
//! of other nodes' work.

use std::collections::HashSet;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use paved_api::v1::{self as pb, node_store_server::NodeStore};
use paved_store::{EventKind, Expect, KeyValue, Op, StoreError};
use paved_types::{Job, Node, Task};
use tonic::{Request, Response, Status, Streaming};

use crate::api::Api;
use crate::caller::{Caller, Role};
use crate::error::ApiError;
use crate::repo::{JOBS, NODES, Repo, RepoError, TASKS, tasks_of_key};

/// Metadata naming the node an agent speaks for.
pub const NODE_HEADER: &str = "x-paved-node";

type ApiResult<T> = Result<Response<T>, Status>;
pub type NodeEventStream = Pin<Box<dyn Stream<Item = Result<pb::NodeStoreEvent, Status>> + Send>>;
pub type ServerMessageStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

/// The node a request speaks for, from its metadata; only agent and admin tokens speak for
/// nodes.
fn node_of<T>(req: &Request<T>) -> Result<String, ApiError> {
    Caller::of(req)?.require_role(Role::Agent | Role::Admin)?;
    let name = req
        .metadata()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(ApiError::invalid(
            "x-paved-node",
            format!("{name:?} is not a node name; send 1 to 63 of [a-z0-9-] in the x-paved-node metadata"),
        ));
    }
    Ok(name.to_owned())
}

/// What one node may read of the store.
struct Scope<'a> {
    repo: &'a Repo,
    node: String,
}

impl Scope<'_> {
    fn node_key(&self) -> String {
        format!("{NODES}{}", self.node)
    }

    /// Whether the node may read `kv`.
    async fn may_read(&self, kv: &KeyValue) -> Result<bool, RepoError> {
        if kv.key.starts_with(TASKS) {
            return Ok(task_on(&kv.value, &self.node));
        }
        if kv.key == self.node_key() {
            return Ok(true);
        }
        if let Some(id) = kv.key.strip_prefix("/job-ids/") {
            return self.runs_job(id).await;
        }
        if kv.key.starts_with(JOBS) {
            let Ok(job) = serde_json::from_slice::<Job>(&kv.value) else {
                return Ok(false);
            };
            return self.runs_job(&job.id).await;
        }
        Ok(false)
    }

    /// Whether some task of job `id` is placed on this node.
    async fn runs_job(&self, id: &str) -> Result<bool, RepoError> {
        let (tasks, _) = self.repo.store().list(&tasks_of_key(id)).await?;
        Ok(tasks.iter().any(|kv| task_on(&kv.value, &self.node)))
    }

    /// Checks one write: a change to a task already on this node that keeps its placement, or
    /// this node's own record.
    async fn check_write(&self, op: &Op) -> Result<(), ApiError> {
        let refuse = |why: &str| {
            Err(ApiError::PermissionDenied(format!(
                "node {} may not write {}: {why}",
                self.node,
                op.key()
            )))
        };
        match op {
            Op::Put { key, value, .. } if *key == self.node_key() => {
                match serde_json::from_slice::<Node>(value) {
                    Ok(node) if node.name == self.node => Ok(()),
                    _ => refuse("a node record must name its own node"),
                }
            }
            Op::Put { key, value, .. } if key.starts_with(TASKS) => {
                let Ok(new) = serde_json::from_slice::<Task>(value) else {
                    return refuse("not a task record");
                };
                let Some(stored) = self.repo.get::<Task>(key).await? else {
                    return refuse("agents report on tasks the control plane placed; they create none");
                };
                let stored = stored.value;
                let same_place = stored.node == self.node
                    && new.node == stored.node
                    && new.job_id == stored.job_id
                    && new.index == stored.index
                    && new.id == stored.id;
                if same_place {
                    Ok(())
                } else {
                    refuse("a task's node, job and slot are the control plane's")
                }
            }
            _ => refuse("agents write only their node's tasks and node record"),
        }
    }
}

/// Whether the task record in `value` is placed on `node`.
///
/// Every watcher sees every task write, so the common answer (another node's task) must be
/// cheap: the record's JSON is searched for `"node":"<node>"` first, and decoded only on a
/// match. The pattern cannot match inside a string value (its quotes would be escaped) and no
/// other field of a task holds a string under the key `node`.
fn task_on(value: &[u8], node: &str) -> bool {
    task_on_matching(value, node, &node_pattern(node))
}

/// What a task record placed on `node` contains: `"node":"<node>"`.
fn node_pattern(node: &str) -> Vec<u8> {
    format!("\"node\":{}", serde_json::Value::from(node)).into_bytes()
}

/// [`task_on`] with the node's pattern made once.
fn task_on_matching(value: &[u8], node: &str, pattern: &[u8]) -> bool {
    value.windows(pattern.len()).any(|w| w == pattern)
        && serde_json::from_slice::<Task>(value).is_ok_and(|t| t.node == node)
}

fn kv_message(kv: KeyValue) -> pb::StoreKeyValue {
    pb::StoreKeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

fn op_of(m: pb::StoreOp) -> Result<Op, ApiError> {
    let expect = match m.expect.as_str() {
        "" | "any" => Expect::Any,
        "absent" => Expect::Absent,
        "revision" => Expect::Revision(m.expect_revision),
        other => {
            return Err(ApiError::invalid(
                "ops.expect",
                format!("{other:?} is not one of \"any\", \"absent\", \"revision\""),
            ));
        }
    };
    match m.kind.as_str() {
        "put" => Ok(Op::Put {
            key: m.key,
            value: m.value,
            expect,
        }),
        "delete" => Ok(Op::Delete { key: m.key, expect }),
        other => Err(ApiError::invalid(
            "ops.kind",
            format!("{other:?} is not \"put\" or \"delete\""),
        )),
    }
}

#[tonic::async_trait]
impl NodeStore for Api {
    type WatchStream = NodeEventStream;
    type SessionStream = ServerMessageStream;

    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> ApiResult<ServerMessageStream> {
        let node = node_of(&req)?;
        let (session, commands) = self.agents().open(&node);
        tokio::spawn(session.serve(req.into_inner()));
        Ok(Response::new(Box::pin(commands.map(Ok))))
    }

    async fn get(&self, req: Request<pb::NodeStoreGetRequest>) -> ApiResult<pb::NodeStoreGetResponse> {
        let scope = Scope {
            repo: self.repo(),
            node: node_of(&req)?,
        };
        let key = req.into_inner().key;
        let found = self.repo().store().get(&key).await.map_err(RepoError::from);
        let mut kv = None;
        if let Some(found) = found.map_err(ApiError::from)?
            && scope.may_read(&found).await.map_err(ApiError::from)?
        {
            kv = Some(kv_message(found));
        }
        Ok(Response::new(pb::NodeStoreGetResponse { kv }))
    }

    async fn list(&self, req: Request<pb::NodeStoreListRequest>) -> ApiResult<pb::NodeStoreListResponse> {
        let scope = Scope {
            repo: self.repo(),
            node: node_of(&req)?,
        };
        let prefix = req.into_inner().prefix;
        if !prefix.starts_with(TASKS) && !scope.node_key().starts_with(&prefix) {
            return Err(ApiError::PermissionDenied(format!(
                "a node lists only its tasks ({TASKS}) and its node record, not {prefix:?}"
            ))
            .into());
        }
        let (kvs, revision) = self
            .repo()
            .store()
            .list(&prefix)
            .await
            .map_err(|e| ApiError::from(RepoError::from(e)))?;
        let mut visible = Vec::new();
        for kv in kvs {
            if scope.may_read(&kv).await.map_err(ApiError::from)? {
                visible.push(kv_message(kv));
            }
        }
        Ok(Response::new(pb::NodeStoreListResponse {
            kvs: visible,
            revision,
        }))
    }

    async fn txn(&self, req: Request<pb::NodeStoreTxnRequest>) -> ApiResult<pb::NodeStoreTxnResponse> {
        let scope = Scope {
            repo: self.repo(),
            node: node_of(&req)?,
        };
        let ops = req
            .into_inner()
            .ops
            .into_iter()
            .map(op_of)
            .collect::<Result<Vec<_>, _>>()?;
        for op in &ops {
            scope.check_write(op).await?;
        }
        let answer = match self.repo().store().txn(ops).await {
            Ok(revision) => pb::NodeStoreTxnResponse {
                revision,
                ..Default::default()
            },
            Err(StoreError::Conflict { key, found, .. }) => pb::NodeStoreTxnResponse {
                revision: 0,
                conflict_key: key,
                conflict_found: found.unwrap_or(0),
            },
            Err(e) => return Err(ApiError::from(RepoError::from(e)).into()),
        };
        Ok(Response::new(answer))
    }

    async fn revision(
        &self,
        req: Request<pb::NodeStoreRevisionRequest>,
    ) -> ApiResult<pb::NodeStoreRevisionResponse> {
        node_of(&req)?;
        let revision = self
            .repo()
            .store()
            .revision()
            .await
            .map_err(|e| ApiError::from(RepoError::from(e)))?;
        Ok(Response::new(pb::NodeStoreRevisionResponse { revision }))
    }

    async fn watch(&self, req: Request<pb::NodeStoreWatchRequest>) -> ApiResult<NodeEventStream> {
        let node = node_of(&req)?;
        let pb::NodeStoreWatchRequest { prefix, after } = req.into_inner();
        if !prefix.starts_with(TASKS) {
            return Err(ApiError::PermissionDenied(format!(
                "a node watches only its tasks ({TASKS}), not {prefix:?}"
            ))
            .into());
        }
        let store = self.repo().store().clone();
        // Deletes carry no record: pass on those of tasks known to be this node's.
        let (existing, _) = store
            .list(&prefix)
            .await
            .map_err(|e| ApiError::from(RepoError::from(e)))?;
        let mut mine: HashSet<String> = existing
            .into_iter()
            .filter(|kv| task_on(&kv.value, &node))
            .map(|kv| kv.key)
            .collect();
        let events = store
            .watch(&prefix, after)
            .await
            .map_err(|e| ApiError::from(RepoError::from(e)))?;
        let pattern = node_pattern(&node);
        let stream = events.filter_map(move |event| {
            let item = match event {
                Err(e) => Some(Err(Status::from(ApiError::from(RepoError::from(e))))),
                Ok(e) => {
                    let kind = match e.kind {
                        EventKind::Put if task_on_matching(&e.value, &node, &pattern) => {
                            mine.insert(e.key.clone());
                            Some("put")
                        }
                        // A task that left this node (never today) reads as deleted here.
                        EventKind::Put | EventKind::Delete => mine.remove(&e.key).then_some("delete"),
                    };
                    kind.map(|kind| {
                        Ok(pb::NodeStoreEvent {
                            revision: e.revision,
                            kind: kind.to_owned(),
                            key: e.key,
                            value: if kind == "put" { e.value } else { Vec::new() },
                        })
                    })
                }
            };
            std::future::ready(item)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
