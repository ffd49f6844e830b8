//! The API handlers: one implementation of each gRPC service. The JSON API (`http.rs`) calls
//! these same methods, so both speak one model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use paved_api::v1::{
    self as pb, jobs_server::Jobs, nodes_server::Nodes, system_server::System, tasks_server::Tasks,
};
use paved_types::manifest::MAX_INSTANCES;
use paved_types::{Driver, Job, JobKind, JobSpec, JobState, Task, TaskState, Tier, parse_manifest};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Tokens;
use crate::caller::Caller;
use crate::convert;
use crate::env::{Clock, Ids};
use crate::error::ApiError;
use crate::hub::{AgentHub, RemoteTasks, no_session};
use crate::metrics::Telemetry;
use crate::reconcile::stop_task;
use crate::repo::{Change, Quota, Repo, RepoError, Versioned, job_id_key};
use crate::schedule::admit;
use paved_store::StoreError;

/// What only the agent that runs a task knows: its logs and its live resource usage.
#[async_trait]
pub trait TaskSource: Send + Sync + 'static {
    async fn open(
        &self,
        task: &Task,
        stderr: bool,
        tail_bytes: u64,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, String>>, ApiError>;

    /// The task's latest sample, if it runs on a backend that measures it.
    fn stats(&self, task: &Task) -> Option<pb::TaskStats>;
}

/// Facts about this server for `GetStatus`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub listen: String,
    pub data_dir: PathBuf,
    pub started_at_ms: u64,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Repo,
    clock: Arc<dyn Clock>,
    ids: Ids,
    /// The agent in this process, if one runs here.
    logs: Option<Arc<dyn TaskSource>>,
    /// Agents elsewhere, through their sessions with this server.
    remote: RemoteTasks,
    info: ServerInfo,
    /// Pokes the reconciler after a write, so tasks follow a change at once.
    wake: Arc<Notify>,
    telemetry: Telemetry,
    /// The token table `require_token` checks: created and revoked tokens change it at once.
    tokens: Arc<Tokens>,
}

/// Largest manifest accepted, in bytes.
const MAX_MANIFEST: usize = 1 << 20;

type ApiResult<T> = Result<Response<T>, Status>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;
pub type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

impl Api {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: Repo,
        clock: Arc<dyn Clock>,
        ids: Ids,
        logs: Option<Arc<dyn TaskSource>>,
        info: ServerInfo,
        wake: Arc<Notify>,
        telemetry: Telemetry,
        tokens: Arc<Tokens>,
    ) -> Self {
        Api {
            inner: Arc::new(Inner {
                remote: RemoteTasks(AgentHub::new(repo.clone())),
                repo,
                clock,
                ids,
                logs,
                info,
                wake,
                telemetry,
                tokens,
            }),
        }
    }

    /// A fresh id for a fault.
    pub(crate) fn new_fault_id(&self) -> String {
        format!("f-{}", self.inner.ids.job_id())
    }

    /// The sessions of agents on other machines.
    pub fn agents(&self) -> &Arc<AgentHub> {
        &self.inner.remote.0
    }

    /// Who can read `task`'s logs and stats: its node's session with this server, or else the
    /// agent in this process.
    fn source_for(&self, task: &Task) -> Option<&dyn TaskSource> {
        if self.inner.remote.0.connected(&task.node) {
            Some(&self.inner.remote)
        } else {
            self.inner.logs.as_deref()
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    pub fn repo(&self) -> &Repo {
        &self.inner.repo
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    pub(crate) fn ids(&self) -> &Ids {
        &self.inner.ids
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Finds a job the caller may see by id, by name (in the caller's home tenant), or by
    /// `tenant/name`. A job of another tenant is not found, exactly as one that does not exist.
    pub async fn resolve_job(&self, caller: &Caller, job: &str) -> Result<Versioned<Job>, ApiError> {
        let repo = &self.inner.repo;
        if job.is_empty() {
            return Err(ApiError::invalid("job", "empty; give a job id or name"));
        }
        let (tenant, name) = job.split_once('/').unwrap_or((caller.home_tenant(), job));
        let found = match repo.job_by_id(job).await? {
            Some(found) => Some(found),
            None if caller.sees(tenant) => repo.job_by_name(tenant, name).await?,
            None => None,
        };
        found
            .filter(|j| caller.sees(&j.value.tenant))
            .ok_or(ApiError::NotFound {
                what: "job",
                name: job.to_owned(),
                hint: "`paved jobs` lists jobs",
            })
    }

    /// Finds a task the caller may see by id, by `job/index`, or by job name (its live task
    /// with the lowest index, else its newest).
    pub async fn resolve_task(&self, caller: &Caller, task: &str) -> Result<Task, ApiError> {
        let not_found = || ApiError::NotFound {
            what: "task",
            name: task.to_owned(),
            hint: "`paved tasks` lists tasks; name one by id, job name or job/index",
        };
        if let Some(found) = self.inner.repo.task(task).await? {
            return Some(found.value)
                .filter(|t| caller.sees(&t.tenant))
                .ok_or_else(not_found);
        }
        let (job, index) = match task.rsplit_once('/') {
            Some((job, index)) => (job, Some(index.parse::<u32>().map_err(|_| not_found())?)),
            None => (task, None),
        };
        let job = self.resolve_job(caller, job).await.map_err(|_| not_found())?;
        let mut tasks: Vec<Task> = self
            .inner
            .repo
            .tasks_of(&job.value.id)
            .await?
            .into_iter()
            .map(|t| t.value)
            .collect();
        tasks.retain(|t| index.is_none_or(|i| t.index == i));
        tasks.sort_by_key(|t| {
            (
                t.state.is_terminal(),
                if t.state.is_terminal() { 0 } else { t.index },
                u64::MAX - t.created_at_ms,
            )
        });
        tasks.into_iter().next().ok_or_else(not_found)
    }

    async fn job_message(&self, job: &Job) -> Result<pb::Job, ApiError> {
        let states = self.inner.repo.task_states_of(&job.id).await?;
        Ok(convert::job(job, states))
    }

    async fn create(&self, caller: &Caller, req: pb::CreateJobRequest) -> Result<pb::Job, ApiError> {
        let spec = parse_request_manifest(&req.source, &req.manifest)?;
        let repo = &self.inner.repo;
        let tenant = caller.home_tenant();
        if spec.driver == Driver::Process && !repo.tenant_trusted(tenant).await? {
            return Err(ApiError::PermissionDenied(format!(
                "driver = \"process\" runs tasks unsandboxed on the host and is allowed only for trusted \
                 tenants; tenant {tenant:?} is not trusted. Remove `driver` to run sandboxed, or have \
                 an admin run `paved tenants trust {tenant}`"
            )));
        }
        if !spec.routes.is_empty() && !caller.is_admin() {
            return Err(ApiError::PermissionDenied(format!(
                "[[routes]] make routes, which the edge router shares between tenants, and only an admin \
                 may make them; remove [[routes]] from {} and ask an admin to route to the job",
                if req.source.is_empty() {
                    "the manifest"
                } else {
                    req.source.as_str()
                }
            )));
        }
        let existing = repo.job_by_name(tenant, &spec.name).await?;
        if let Some(old) = existing.as_ref().filter(|old| !old.value.state.is_terminal()) {
            return Err(ApiError::AlreadyExists(format!(
                "job {:?} already exists ({}); kill it first (`paved kill {}`) or choose another name",
                spec.name,
                old.value.state.as_str(),
                spec.name
            )));
        }
        self.admit(tenant, &spec, spec.instances).await?;
        let now = self.now();
        let mut job = Job {
            id: self.inner.ids.job_id(),
            tenant: tenant.to_owned(),
            spec,
            state: JobState::Pending,
            reason: "waiting for tasks to be placed".to_owned(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let replacing = existing.as_ref();
        let routes = crate::routing::job_route_ops(repo, &job, now).await?;
        // Ids are random; the rare collision with an existing id just draws another.
        let mut attempts = 0;
        loop {
            match repo.create_job(&job, replacing, routes.clone()).await {
                Ok(_) => break,
                Err(RepoError::Store(StoreError::Conflict { key, .. }))
                    if key == job_id_key(&job.id) && attempts < 8 =>
                {
                    attempts += 1;
                    job.id = self.inner.ids.job_id();
                }
                Err(RepoError::Store(StoreError::Conflict { key, .. })) => {
                    let name = &job.spec.name;
                    let what = match key.strip_prefix(crate::routing::ROUTES) {
                        Some(route) => format!("route {route:?}"),
                        None => format!("job {name:?}"),
                    };
                    return Err(ApiError::AlreadyExists(format!(
                        "{what} was created or changed concurrently; retry"
                    )));
                }
                Err(other) => return Err(other.into()),
            }
        }
        tracing::info!(job = %job.spec.name, id = %job.id, tenant = %job.tenant, kind = job.spec.kind.as_str(), "job created");
        self.inner.wake.notify_one();
        Ok(convert::job(&job, []))
    }

    async fn scale(&self, caller: &Caller, req: pb::ScaleJobRequest) -> Result<pb::Job, ApiError> {
        if req.instances > MAX_INSTANCES {
            return Err(ApiError::invalid(
                "instances",
                format!("{} is too many; at most {MAX_INSTANCES}", req.instances),
            ));
        }
        let found = self.resolve_job(caller, &req.job).await?;
        let current = &found.value;
        let live_service = !current.state.is_terminal() && current.spec.kind == JobKind::Service;
        if live_service && req.instances > current.spec.instances {
            let more = req.instances - current.spec.instances;
            self.admit(&current.tenant, &current.spec, more).await?;
        }
        let mut refused = None;
        let updated = self
            .inner
            .repo
            .update_job(&found.value, |j| {
                if j.id != found.value.id || j.state.is_terminal() {
                    refused = Some(format!(
                        "job {} is {}; only a live job can be scaled",
                        j.spec.name,
                        j.state.as_str()
                    ));
                    return Ok(Change::Keep);
                }
                if j.spec.kind == JobKind::Batch {
                    refused = Some(format!(
                        "job {} is a batch job; batch jobs run a fixed number of tasks",
                        j.spec.name
                    ));
                    return Ok(Change::Keep);
                }
                j.spec.instances = req.instances;
                Ok(Change::Write)
            })
            .await?;
        if let Some(msg) = refused {
            return Err(ApiError::FailedPrecondition(msg));
        }
        let job = updated.ok_or_else(|| ApiError::FailedPrecondition("job vanished; retry".into()))?;
        self.inner.wake.notify_one();
        self.job_message(&job).await
    }

    async fn kill(&self, caller: &Caller, req: pb::KillJobRequest) -> Result<pb::Job, ApiError> {
        let found = self.resolve_job(caller, &req.job).await?;
        let now = self.now();
        let job = self
            .inner
            .repo
            .update_job(&found.value, |j| {
                if j.state.is_terminal() {
                    return Ok(Change::Keep);
                }
                j.state = JobState::Killed;
                j.reason = "killed by a user".to_owned();
                j.updated_at_ms = now;
                Ok(Change::Write)
            })
            .await?
            .unwrap_or(found.value);
        for task in self.inner.repo.tasks_of(&job.id).await? {
            stop_task(&self.inner.repo, &task.value.id, "job killed", now).await?;
        }
        tracing::info!(job = %job.spec.name, "job killed");
        self.inner.wake.notify_one();
        self.job_message(&job).await
    }

    async fn list_jobs(
        &self,
        caller: &Caller,
        req: pb::ListJobsRequest,
    ) -> Result<pb::ListJobsResponse, ApiError> {
        for s in &req.states {
            if !["pending", "running", "complete", "failed", "killed"].contains(&s.as_str()) {
                return Err(ApiError::invalid(
                    "states",
                    format!("{s:?} is not a job state; use pending, running, complete, failed or killed"),
                ));
            }
        }
        let mut by_job: HashMap<String, Vec<TaskState>> = HashMap::new();
        for t in self.inner.repo.tasks().await? {
            if caller.sees(&t.value.tenant) {
                by_job.entry(t.value.job_id).or_default().push(t.value.state);
            }
        }
        let mut jobs: Vec<pb::Job> = self
            .inner
            .repo
            .jobs()
            .await?
            .into_iter()
            .filter(|j| caller.sees(&j.value.tenant))
            .filter(|j| req.states.is_empty() || req.states.iter().any(|s| s == j.value.state.as_str()))
            .map(|j| {
                let states = by_job.get(&j.value.id).map_or(&[][..], Vec::as_slice);
                convert::job(&j.value, states.iter().copied())
            })
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at_ms));
        Ok(pb::ListJobsResponse { jobs })
    }

    async fn list_tasks(
        &self,
        caller: &Caller,
        req: pb::ListTasksRequest,
    ) -> Result<pb::ListTasksResponse, ApiError> {
        let states: Vec<TaskState> = req
            .states
            .iter()
            .map(|s| TaskState::parse(s).ok_or_else(|| ApiError::invalid("states", format!("{s:?} is not a task state; use one of pending, starting, running, restarting, exited, failed, killed, lost"))))
            .collect::<Result<_, _>>()?;
        let tasks = if req.job.is_empty() {
            self.inner.repo.tasks().await?
        } else {
            let job = self.resolve_job(caller, &req.job).await?;
            self.inner.repo.tasks_of(&job.value.id).await?
        };
        let mut tasks: Vec<Task> = tasks
            .into_iter()
            .map(|t| t.value)
            .filter(|t| caller.sees(&t.tenant))
            .filter(|t| states.is_empty() || states.contains(&t.state))
            .collect();
        tasks.sort_by(|a, b| {
            (&a.job_name, a.index, a.created_at_ms).cmp(&(&b.job_name, b.index, b.created_at_ms))
        });
        Ok(pb::ListTasksResponse {
            tasks: tasks.iter().map(|t| self.task_with_stats(t)).collect(),
        })
    }

    /// The task as the API shows it, with its live stats when its agent has them.
    fn task_with_stats(&self, task: &Task) -> pb::Task {
        let mut shown = convert::task(task);
        if task.state == TaskState::Running {
            shown.stats = self.source_for(task).and_then(|source| source.stats(task));
        }
        shown
    }

    async fn kill_task(&self, caller: &Caller, req: pb::KillTaskRequest) -> Result<pb::Task, ApiError> {
        let task = self.resolve_task(caller, &req.task).await?;
        let stopped = stop_task(&self.inner.repo, &task.id, "killed by a user", self.now()).await?;
        self.inner.wake.notify_one();
        Ok(convert::task(&stopped.unwrap_or(task)))
    }

    /// The server's status; a tenant's counts cover its own jobs and tasks only.
    async fn status(&self, caller: &Caller) -> Result<pb::Status, ApiError> {
        let repo = &self.inner.repo;
        let mut jobs_by_state: HashMap<String, u32> = HashMap::new();
        for j in repo
            .jobs()
            .await?
            .into_iter()
            .filter(|j| caller.sees(&j.value.tenant))
        {
            *jobs_by_state
                .entry(j.value.state.as_str().to_owned())
                .or_default() += 1;
        }
        let mut tasks_by_state: HashMap<String, u32> = HashMap::new();
        for t in repo
            .tasks()
            .await?
            .into_iter()
            .filter(|t| caller.sees(&t.value.tenant))
        {
            *tasks_by_state
                .entry(t.value.state.as_str().to_owned())
                .or_default() += 1;
        }
        let info = &self.inner.info;
        Ok(pb::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.now().saturating_sub(info.started_at_ms),
            store: repo.store().describe(),
            store_revision: repo
                .store()
                .revision()
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?,
            data_dir: info.data_dir.display().to_string(),
            jobs_by_state,
            tasks_by_state,
            nodes: u32::try_from(repo.nodes().await?.len()).unwrap_or(u32::MAX),
            listen: info.listen.clone(),
        })
    }

    /// A snapshot of the watched jobs, then an event after every change to them or their tasks.
    async fn watch(&self, caller: &Caller, req: pb::WatchJobsRequest) -> Result<EventStream, ApiError> {
        let only = if req.job.is_empty() {
            None
        } else {
            Some(self.resolve_job(caller, &req.job).await?.value.id)
        };
        let caller = caller.clone();
        let store = self.inner.repo.store().clone();
        let from = store
            .revision()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let mut changes = store
            .watch("/", from)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(64);
        let api = self.clone();
        tokio::spawn(async move {
            let mut kind = "snapshot";
            loop {
                for job in api.inner.repo.jobs().await.unwrap_or_default() {
                    if only.as_ref().is_some_and(|id| *id != job.value.id) || !caller.sees(&job.value.tenant)
                    {
                        continue;
                    }
                    let tasks: Vec<Task> = api
                        .inner
                        .repo
                        .tasks_of(&job.value.id)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| t.value)
                        .collect();
                    let event = pb::JobEvent {
                        kind: kind.to_owned(),
                        job: Some(convert::job(&job.value, tasks.iter().map(|t| t.state))),
                        tasks: tasks.iter().map(convert::task).collect(),
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                kind = "updated";
                if !next_relevant(&mut changes, only.as_deref()).await {
                    let _ = tx
                        .send(Err(Status::unavailable("watch ended; watch again")))
                        .await;
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn logs(&self, caller: &Caller, req: pb::StreamLogsRequest) -> Result<LogStream, ApiError> {
        let stderr = match req.stream.as_str() {
            "" | "stdout" => false,
            "stderr" => true,
            other => {
                return Err(ApiError::invalid(
                    "stream",
                    format!("{other:?} is not a log stream; use stdout or stderr"),
                ));
            }
        };
        let task = self.resolve_task(caller, &req.task).await?;
        let source = self.source_for(&task).ok_or_else(|| no_session(&task.node))?;
        let mut chunks = source.open(&task, stderr, req.tail_bytes, req.follow).await?;
        let (tx, rx) = mpsc::channel(16);
        let repo = self.inner.repo.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(Duration::from_millis(500));
            let mut ending = false;
            loop {
                tokio::select! {
                    chunk = chunks.next() => match chunk {
                        Some(Ok(data)) => if tx.send(Ok(pb::LogChunk { data: data.to_vec() })).await.is_err() { return },
                        Some(Err(e)) => { let _ = tx.send(Err(Status::unavailable(e))).await; return }
                        None => return,
                    },
                    _ = check.tick(), if req.follow => {
                        // Following a task that has ended: give its last writes one more tick.
                        if ending { return }
                        ending = matches!(repo.task(&task.id).await, Ok(Some(t)) if t.value.state.is_terminal());
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Parses a manifest arriving over the API, with limits on what the network may send.
fn parse_request_manifest(source: &str, manifest: &str) -> Result<paved_types::JobSpec, ApiError> {
    if manifest.len() > MAX_MANIFEST {
        return Err(ApiError::invalid(
            "manifest",
            format!("{} bytes is too large; at most {MAX_MANIFEST}", manifest.len()),
        ));
    }
    let source = if source.is_empty() { "manifest" } else { source };
    Ok(parse_manifest(source, manifest)?)
}

/// Waits for a change to jobs or to the watched job's tasks; false once the watch ends.
async fn next_relevant(changes: &mut paved_store::WatchStream, only: Option<&str>) -> bool {
    while let Some(event) = changes.next().await {
        let Ok(event) = event else { return false };
        let relevant = match only {
            None => event.key.starts_with(crate::repo::JOBS) || event.key.starts_with(crate::repo::TASKS),
            Some(id) => {
                event.key.starts_with(crate::repo::JOBS)
                    || event.key.starts_with(&format!("{}{id}/", crate::repo::TASKS))
            }
        };
        if relevant {
            return true;
        }
    }
    false
}

#[async_trait]
impl Jobs for Api {
    async fn create_job(&self, req: Request<pb::CreateJobRequest>) -> ApiResult<pb::Job> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(self.create(&caller, req.into_inner()).await?))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> ApiResult<pb::Job> {
        let caller = Caller::user(&req)?;
        let job = self.resolve_job(&caller, &req.into_inner().job).await?;
        Ok(Response::new(self.job_message(&job.value).await?))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> ApiResult<pb::ListJobsResponse> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(
            Api::list_jobs(self, &caller, req.into_inner()).await?,
        ))
    }

    async fn scale_job(&self, req: Request<pb::ScaleJobRequest>) -> ApiResult<pb::Job> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(self.scale(&caller, req.into_inner()).await?))
    }

    async fn kill_job(&self, req: Request<pb::KillJobRequest>) -> ApiResult<pb::Job> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(self.kill(&caller, req.into_inner()).await?))
    }

    type WatchJobsStream = EventStream;

    async fn watch_jobs(&self, req: Request<pb::WatchJobsRequest>) -> ApiResult<EventStream> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(self.watch(&caller, req.into_inner()).await?))
    }

    async fn validate_manifest(
        &self,
        req: Request<pb::ValidateManifestRequest>,
    ) -> ApiResult<pb::ValidateManifestResponse> {
        Caller::user(&req)?;
        let req = req.into_inner();
        let response = match parse_request_manifest(&req.source, &req.manifest) {
            Ok(spec) => pb::ValidateManifestResponse {
                valid: true,
                problems: vec![],
                spec: Some(convert::spec(&spec)),
            },
            Err(ApiError::Manifest(e)) => pb::ValidateManifestResponse {
                valid: false,
                problems: e.problems.iter().map(convert::problem).collect(),
                spec: None,
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(response))
    }
}

#[async_trait]
impl Tasks for Api {
    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> ApiResult<pb::ListTasksResponse> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(
            Api::list_tasks(self, &caller, req.into_inner()).await?,
        ))
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> ApiResult<pb::Task> {
        let caller = Caller::user(&req)?;
        let task = self.resolve_task(&caller, &req.into_inner().task).await?;
        Ok(Response::new(self.task_with_stats(&task)))
    }

    async fn kill_task(&self, req: Request<pb::KillTaskRequest>) -> ApiResult<pb::Task> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(
            Api::kill_task(self, &caller, req.into_inner()).await?,
        ))
    }

    type StreamLogsStream = LogStream;

    async fn stream_logs(&self, req: Request<pb::StreamLogsRequest>) -> ApiResult<LogStream> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(self.logs(&caller, req.into_inner()).await?))
    }
}

#[async_trait]
impl Nodes for Api {
    /// Nodes are shared: every tenant may see them (their task counts include every tenant's).
    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> ApiResult<pb::ListNodesResponse> {
        Caller::user(&req)?;
        let repo = &self.inner.repo;
        let tasks = repo.tasks().await.map_err(ApiError::from)?;
        let nodes = repo.nodes().await.map_err(ApiError::from)?;
        let nodes = nodes
            .iter()
            .map(|n| {
                let live = tasks
                    .iter()
                    .filter(|t| t.value.node == n.value.name && !t.value.state.is_terminal())
                    .count();
                convert::node(&n.value, u32::try_from(live).unwrap_or(u32::MAX))
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn drain_node(&self, req: Request<pb::DrainNodeRequest>) -> ApiResult<pb::Node> {
        Caller::admin_only(&req)?;
        let req = req.into_inner();
        let deadline = match req.deadline_ms {
            0 => DEFAULT_DRAIN_DEADLINE_MS,
            ms if ms <= MAX_DRAIN_DEADLINE_MS => ms,
            _ => {
                return Err(ApiError::invalid(
                    "deadline_ms",
                    "is longer than a week; give a shorter --deadline, e.g. 1h",
                )
                .into());
            }
        };
        let now = self.now();
        let node = self
            .inner
            .repo
            .update_node(&req.name, |n| {
                if req.undo {
                    n.eligible = true;
                    n.drain_deadline_ms = None;
                } else {
                    n.eligible = false;
                    n.drain_deadline_ms = Some(now + deadline);
                }
            })
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound {
                what: "node",
                name: req.name.clone(),
                hint: "list nodes with `paved nodes`",
            })?;
        tracing::info!(node = %node.name, undo = req.undo, "node drain");
        self.inner.wake.notify_one();
        Ok(Response::new(convert::node(&node, 0)))
    }
}

/// How long a drain honours disruption budgets when the request does not say.
const DEFAULT_DRAIN_DEADLINE_MS: u64 = 3_600_000;
const MAX_DRAIN_DEADLINE_MS: u64 = 7 * 24 * 3_600_000;

#[async_trait]
impl System for Api {
    async fn get_status(&self, req: Request<pb::GetStatusRequest>) -> ApiResult<pb::Status> {
        let caller = Caller::user(&req)?;
        Ok(Response::new(self.status(&caller).await?))
    }

    /// An admin sees every tenant's record; a tenant only its own.
    async fn list_tenants(&self, req: Request<pb::ListTenantsRequest>) -> ApiResult<pb::ListTenantsResponse> {
        let caller = Caller::user(&req)?;
        let tenants = self.inner.repo.tenants().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants
                .iter()
                .filter(|t| caller.sees(&t.name))
                .map(convert::tenant)
                .collect(),
        }))
    }

    async fn set_tenant(&self, req: Request<pb::SetTenantRequest>) -> ApiResult<pb::Tenant> {
        Caller::admin_only(&req)?;
        Ok(Response::new(Api::set_tenant(self, req.into_inner()).await?))
    }
}

impl Api {
    /// Changes only what the request sets; everything else the tenant has stays.
    async fn set_tenant(&self, req: pb::SetTenantRequest) -> Result<pb::Tenant, ApiError> {
        check_name("name", "tenant name", &req.name)?;
        let groups = req
            .capacity_groups
            .iter()
            .map(quota_of)
            .collect::<Result<Vec<(Tier, Quota)>, ApiError>>()?;
        let removed = req
            .remove_capacity_groups
            .iter()
            .map(|t| tier_named("remove_capacity_groups", t))
            .collect::<Result<Vec<Tier>, ApiError>>()?;
        let now = self.now();
        let record = self
            .inner
            .repo
            .update_tenant(&req.name, |t| {
                if let Some(trusted) = req.trusted {
                    t.trusted = trusted;
                }
                for tier in &removed {
                    t.capacity.remove(tier);
                }
                t.capacity.extend(groups.iter().copied());
                t.updated_at_ms = now;
            })
            .await?;
        Ok(convert::tenant(&record))
    }

    /// Refuses `instances` more tasks of `spec` for `tenant` when they would exceed its
    /// capacity group in the job's tier, naming the quota; a tier without a group is unlimited.
    async fn admit(&self, tenant: &str, spec: &JobSpec, instances: u32) -> Result<(), ApiError> {
        let repo = &self.inner.repo;
        let Some(record) = repo.tenant(tenant).await? else {
            return Ok(());
        };
        if !record.capacity.contains_key(&spec.placement.tier) {
            return Ok(());
        }
        let jobs = repo.jobs_of(tenant).await?;
        let jobs = jobs.iter().map(|j| &j.value);
        admit(Some(&record), tenant, jobs, spec, instances)
            .map_err(|e| ApiError::FailedPrecondition(e.to_string()))
    }
}

/// One capacity group of a request, checked.
fn quota_of(group: &pb::CapacityGroup) -> Result<(Tier, Quota), ApiError> {
    let tier = tier_named("capacity_groups.tier", &group.tier)?;
    let cpu_millis = match group.cpu {
        None => None,
        Some(cores) if cores.is_finite() && (0.0..=1e12).contains(&cores) => {
            Some((cores * 1000.0).round() as u64)
        }
        Some(cores) => {
            return Err(ApiError::invalid(
                "capacity_groups.cpu",
                format!("{cores} is not a number of cores; use 0 or more, e.g. 4 or 0.5"),
            ));
        }
    };
    Ok((
        tier,
        Quota {
            cpu_millis,
            memory_bytes: group.memory_bytes,
            tasks: group.tasks,
        },
    ))
}

fn tier_named(field: &'static str, tier: &str) -> Result<Tier, ApiError> {
    Tier::parse(tier).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{tier:?} is not a tier; use \"critical\" or \"flex\""),
        )
    })
}

/// Tenant and token names follow job names: 1-63 of [a-z0-9-], starting with a letter.
pub(crate) fn check_name(field: &'static str, what: &str, name: &str) -> Result<(), ApiError> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{name:?} is not a {what}; use 1-63 of a-z, 0-9 and '-', starting with a letter"),
        ))
    }
}
