//! The store's schema: where jobs, tasks, nodes and tokens live, how they are encoded, and the
//! read-modify-write loop every writer uses. All typed access to the store goes through here.
//!
//! ```text
//! /jobs/<tenant>/<name>        Job (JSON)
//! /job-ids/<id>                "<tenant>/<name>": find a job by id
//! /tasks/<job-id>/<task-id>    Task (JSON); task ids start with their job's id
//! /nodes/<name>                Node (JSON)
//! /tokens/<sha256 of token>    TokenRecord (JSON)
//! /token-names/<name>          hex sha256 of the token of that name: revoke by name
//! /tenants/<name>              TenantRecord (JSON): what an admin set for a tenant
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use paved_store::{Expect, KeyValue, Op, Store, StoreError};
use paved_types::{Job, Node, Task, TaskState, Tier};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub const JOBS: &str = "/jobs/";
pub const TASKS: &str = "/tasks/";
pub const NODES: &str = "/nodes/";
pub const TOKENS: &str = "/tokens/";
pub const TOKEN_NAMES: &str = "/token-names/";
pub const TENANTS: &str = "/tenants/";

/// What an admin has set for a tenant. A tenant without a record has the defaults: untrusted,
/// no capacity group in any tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TenantRecord {
    pub name: String,
    /// May run `driver = "process"` jobs, unsandboxed on the host.
    pub trusted: bool,
    pub updated_at_ms: u64,
    /// The tenant's capacity group per tier. **A tier without a group is unlimited** for the
    /// tenant: quotas are opt-in, so a fresh install admits everything.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<Tier, Quota>,
}

/// The most a tenant's admitted jobs of one tier may ask for in all (instances × resources).
/// `None`: that dimension is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
}

impl TenantRecord {
    /// A tenant as it is before an admin sets anything.
    pub fn new(name: &str) -> Self {
        TenantRecord {
            name: name.to_owned(),
            trusted: false,
            updated_at_ms: 0,
            capacity: BTreeMap::new(),
        }
    }
}

/// A record with the store revision it was read at, for compare-and-set.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not decode: written by an incompatible version, or damaged.
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Rejected(String),
}

/// Typed access to the store.
#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn Store>,
}

/// What a read-modify-write closure decided.
pub enum Change {
    /// Write the modified record.
    Write,
    /// Leave the record as it is.
    Keep,
}

/// How many times a read-modify-write retries on conflict before giving up. Conflicts mean a
/// concurrent writer won; a few retries always suffice unless something writes in a hot loop.
const MAX_RETRIES: usize = 64;

impl Repo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Repo { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn job_by_name(&self, tenant: &str, name: &str) -> Result<Option<Versioned<Job>>, RepoError> {
        self.get(&job_key(tenant, name)).await
    }

    pub async fn job_by_id(&self, id: &str) -> Result<Option<Versioned<Job>>, RepoError> {
        let Some(kv) = self.store.get(&job_id_key(id)).await? else {
            return Ok(None);
        };
        let path = String::from_utf8_lossy(&kv.value).into_owned();
        // A name reused by a later job points elsewhere now: the id must match too.
        let job: Option<Versioned<Job>> = self.get(&format!("{JOBS}{path}")).await?;
        Ok(job.filter(|j| j.value.id == id))
    }

    pub async fn jobs(&self) -> Result<Vec<Versioned<Job>>, RepoError> {
        self.list(JOBS).await
    }

    pub async fn tasks_of(&self, job_id: &str) -> Result<Vec<Versioned<Task>>, RepoError> {
        self.list(&tasks_of_key(job_id)).await
    }

    /// The states of a job's tasks: what a job's summary shows, read without building whole
    /// tasks (their strings and maps are skipped, not allocated).
    pub async fn task_states_of(&self, job_id: &str) -> Result<Vec<TaskState>, RepoError> {
        #[derive(Deserialize)]
        struct StateOnly {
            state: TaskState,
        }
        let found: Vec<Versioned<StateOnly>> = self.list(&tasks_of_key(job_id)).await?;
        Ok(found.into_iter().map(|t| t.value.state).collect())
    }

    pub async fn tasks(&self) -> Result<Vec<Versioned<Task>>, RepoError> {
        self.list(TASKS).await
    }

    pub async fn task(&self, id: &str) -> Result<Option<Versioned<Task>>, RepoError> {
        match task_key(id) {
            Some(key) => self.get(&key).await,
            None => Ok(None),
        }
    }

    pub async fn nodes(&self) -> Result<Vec<Versioned<Node>>, RepoError> {
        self.list(NODES).await
    }

    /// Reads the task, lets `f` change it, and writes it back with compare-and-set, retrying
    /// on conflict. Returns the task as stored afterwards, or `None` if it does not exist.
    pub async fn update_task<F>(&self, id: &str, mut f: F) -> Result<Option<Task>, RepoError>
    where
        F: FnMut(&mut Task) -> Result<Change, RepoError> + Send,
    {
        let Some(key) = task_key(id) else {
            return Ok(None);
        };
        self.update(&key, |task: &mut Task| f(task)).await
    }

    pub async fn update_job<F>(&self, job: &Job, mut f: F) -> Result<Option<Job>, RepoError>
    where
        F: FnMut(&mut Job) -> Result<Change, RepoError> + Send,
    {
        self.update(&job_key(&job.tenant, &job.spec.name), |j: &mut Job| f(j))
            .await
    }

    /// Creates the job and its id index atomically, with `also` (the routes it declares);
    /// fails with `Conflict` if the name is taken by anything but `replacing` (an ended job of
    /// the same name, whose id index goes with it).
    pub async fn create_job(
        &self,
        job: &Job,
        replacing: Option<&Versioned<Job>>,
        also: Vec<Op>,
    ) -> Result<u64, RepoError> {
        let expect = replacing.map_or(Expect::Absent, |old| Expect::Revision(old.revision));
        let mut ops = vec![
            put_op(job_key(&job.tenant, &job.spec.name), job, expect)?,
            Op::Put {
                key: job_id_key(&job.id),
                value: format!("{}/{}", job.tenant, job.spec.name).into_bytes(),
                expect: Expect::Absent,
            },
        ];
        if let Some(old) = replacing {
            ops.push(Op::Delete {
                key: job_id_key(&old.value.id),
                expect: Expect::Any,
            });
        }
        ops.extend(also);
        Ok(self.store.txn(ops).await?)
    }

    pub async fn put_task(&self, task: &Task, expect: Expect) -> Result<u64, RepoError> {
        let key =
            task_key(&task.id).ok_or_else(|| RepoError::Rejected(format!("bad task id {}", task.id)))?;
        Ok(self.store.txn(vec![put_op(key, task, expect)?]).await?)
    }

    /// Writes several records in one atomic commit.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<u64, RepoError> {
        Ok(self.store.txn(ops).await?)
    }

    /// Marks a node `ready` or `down`, keeping the rest of its record.
    pub async fn update_node_state(
        &self,
        name: &str,
        state: &str,
        now_ms: u64,
    ) -> Result<Option<Node>, RepoError> {
        self.update(&format!("{NODES}{name}"), |n: &mut Node| {
            state.clone_into(&mut n.state);
            n.heartbeat_at_ms = now_ms;
            Ok(Change::Write)
        })
        .await
    }

    /// Sets a node's `state` and nothing else (its heartbeat is the agent's to write).
    pub async fn update_node_state_only(&self, name: &str, state: &str) -> Result<Option<Node>, RepoError> {
        self.update(&format!("{NODES}{name}"), |n: &mut Node| {
            if n.state == state {
                return Ok(Change::Keep);
            }
            state.clone_into(&mut n.state);
            Ok(Change::Write)
        })
        .await
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, RepoError> {
        Ok(self.list(TENANTS).await?.into_iter().map(|t| t.value).collect())
    }

    pub async fn tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, RepoError> {
        let record: Option<Versioned<TenantRecord>> = self.get(&format!("{TENANTS}{tenant}")).await?;
        Ok(record.map(|r| r.value))
    }

    /// Whether an admin has marked `tenant` trusted.
    pub async fn tenant_trusted(&self, tenant: &str) -> Result<bool, RepoError> {
        Ok(self.tenant(tenant).await?.is_some_and(|r| r.trusted))
    }

    /// Changes a tenant's record with compare-and-set (creating it with the defaults first), so
    /// setting one field never loses another set concurrently. Returns the record as stored.
    pub async fn update_tenant<F>(&self, name: &str, mut f: F) -> Result<TenantRecord, RepoError>
    where
        F: FnMut(&mut TenantRecord) + Send,
    {
        let key = format!("{TENANTS}{name}");
        for _ in 0..MAX_RETRIES {
            let current: Option<Versioned<TenantRecord>> = self.get(&key).await?;
            let (mut record, expect) = match current {
                Some(v) => (v.value, Expect::Revision(v.revision)),
                None => (TenantRecord::new(name), Expect::Absent),
            };
            f(&mut record);
            match self.store.txn(vec![put_op(key.clone(), &record, expect)?]).await {
                Ok(_) => return Ok(record),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Rejected(format!(
            "{key} is changing too fast to update; retry"
        )))
    }

    /// The jobs of one tenant.
    pub async fn jobs_of(&self, tenant: &str) -> Result<Vec<Versioned<Job>>, RepoError> {
        self.list(&format!("{JOBS}{tenant}/")).await
    }

    /// Lets `f` change a node's record (compare-and-set, retried); `None` when there is none.
    pub async fn update_node<F>(&self, name: &str, mut f: F) -> Result<Option<Node>, RepoError>
    where
        F: FnMut(&mut Node) + Send,
    {
        self.update(&format!("{NODES}{name}"), |n: &mut Node| {
            f(n);
            Ok(Change::Write)
        })
        .await
    }

    /// Writes what an agent reports of its node, keeping what the control plane decided about
    /// it: whether it is eligible, and a drain in progress.
    pub async fn heartbeat_node(&self, node: &Node) -> Result<u64, RepoError> {
        let key = format!("{NODES}{}", node.name);
        for _ in 0..MAX_RETRIES {
            let mut next = node.clone();
            let expect = match self.get::<Node>(&key).await? {
                Some(stored) => {
                    next.eligible = stored.value.eligible;
                    next.drain_deadline_ms = stored.value.drain_deadline_ms;
                    Expect::Revision(stored.revision)
                }
                None => Expect::Absent,
            };
            match self.store.txn(vec![put_op(key.clone(), &next, expect)?]).await {
                Ok(revision) => return Ok(revision),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Rejected(format!(
            "{key} is changing too fast to update; retry"
        )))
    }

    pub async fn put_node(&self, node: &Node) -> Result<u64, RepoError> {
        let op = put_op(format!("{NODES}{}", node.name), node, Expect::Any)?;
        Ok(self.store.txn(vec![op]).await?)
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>, RepoError> {
        self.store.get(key).await?.map(decode).transpose()
    }

    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<Versioned<T>>, RepoError> {
        let (kvs, _) = self.store.list(prefix).await?;
        kvs.into_iter().map(decode).collect()
    }

    async fn update<T, F>(&self, key: &str, mut f: F) -> Result<Option<T>, RepoError>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(&mut T) -> Result<Change, RepoError> + Send,
    {
        for _ in 0..MAX_RETRIES {
            let Some(Versioned { mut value, revision }) = self.get::<T>(key).await? else {
                return Ok(None);
            };
            if let Change::Keep = f(&mut value)? {
                return Ok(Some(value));
            }
            let op = put_op(key.to_owned(), &value, Expect::Revision(revision))?;
            match self.store.txn(vec![op]).await {
                Ok(_) => return Ok(Some(value)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Rejected(format!(
            "{key} is changing too fast to update; retry"
        )))
    }
}

/// The prefix under which a job's tasks are stored.
pub(crate) fn tasks_of_key(job_id: &str) -> String {
    format!("{TASKS}{job_id}/")
}

pub fn job_key(tenant: &str, name: &str) -> String {
    format!("{JOBS}{tenant}/{name}")
}

pub fn job_id_key(id: &str) -> String {
    format!("/job-ids/{id}")
}

/// A task's key, derived from its id (`<job-id>-<suffix>`); `None` for ids of another shape.
pub fn task_key(id: &str) -> Option<String> {
    let (job_id, suffix) = id.split_once('-')?;
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (valid(job_id) && valid(suffix)).then(|| format!("{TASKS}{job_id}/{id}"))
}

/// A put of `value` encoded as the store holds it.
pub fn put_op<T: Serialize>(key: String, value: &T, expect: Expect) -> Result<Op, RepoError> {
    let value = serde_json::to_vec(value).map_err(|e| RepoError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Op::Put { key, value, expect })
}

pub fn decode<T: DeserializeOwned>(kv: KeyValue) -> Result<Versioned<T>, RepoError> {
    let value = serde_json::from_slice(&kv.value).map_err(|e| RepoError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        revision: kv.mod_revision,
    })
}
