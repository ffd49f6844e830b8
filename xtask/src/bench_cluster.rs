//! `cargo xtask bench cluster`: one `paved server` (release build, embedded store) and
//! `NODES` agents in this process, each speaking the real agent protocol (`NodeStore` over
//! gRPC) with a runtime that only records what it is asked to run. Submits `JOBS` jobs of
//! `TASKS_PER_JOB` tasks and times submit-to-all-running.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use async_trait::async_trait;
use paved_agent::{Agent, AgentConfig, RemoteStore};
use paved_api::v1::{self as pb, jobs_client::JobsClient, tasks_client::TasksClient};
use paved_control::{Clock, Repo, SystemClock};
use paved_runtime::{ExecOutput, ExitStatus, Probe, Runtime, RuntimeError, TaskRecord, TaskSpec};
use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::bench::{Server, TempDir, auth_fn};

pub const NODES: usize = 100;
const JOBS: usize = 10;
const TASKS_PER_JOB: u32 = 1000;
const DEADLINE: Duration = Duration::from_secs(600);

/// A runtime that runs nothing: each start is recorded and "runs" until signalled.
#[derive(Default)]
struct Recording {
    /// Per task id: sends `true` once the task is signalled.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl Recording {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Runtime for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn start(&self, spec: &TaskSpec) -> Result<TaskRecord, RuntimeError> {
        let (tx, _) = watch::channel(false);
        self.lock().insert(spec.task_id.clone(), tx);
        Ok(TaskRecord {
            task_id: spec.task_id.clone(),
            dir: spec.dir.clone(),
            pid: 1,
            shim_pid: 1,
            shim_start_time: 0,
            runtime: "recording".into(),
        })
    }

    async fn wait(&self, record: &TaskRecord) -> Result<ExitStatus, RuntimeError> {
        let stopped = self.lock().get(&record.task_id).map(watch::Sender::subscribe);
        if let Some(mut stopped) = stopped {
            let _ = stopped.wait_for(|s| *s).await;
        }
        Ok(ExitStatus {
            signal: Some(15),
            ..ExitStatus::default()
        })
    }

    async fn signal(&self, record: &TaskRecord, _signal: i32) -> Result<(), RuntimeError> {
        if let Some(tx) = self.lock().get(&record.task_id) {
            let _ = tx.send(true);
        }
        Ok(())
    }

    async fn probe(&self, record: &TaskRecord) -> Probe {
        if self.lock().contains_key(&record.task_id) {
            Probe::Running
        } else {
            Probe::Gone
        }
    }

    async fn cleanup(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        self.lock().remove(&record.task_id);
        Ok(())
    }

    async fn exec(
        &self,
        _record: &TaskRecord,
        _spec: &TaskSpec,
        _command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        Ok(ExecOutput::default())
    }
}

pub fn cluster(root: &Path) -> anyhow::Result<()> {
    let server = Server::start_server(root)?;
    let rt = tokio::runtime::Runtime::new()?;
    let dir = TempDir::new()?;
    rt.block_on(async {
        let channel = Channel::from_shared(server.url.clone())?.connect().await?;
        let mut agents = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let name = format!("node-{i:03}");
            let store = RemoteStore::new(vec![(server.url.clone(), channel.clone())], &server.token, &name)?;
            let config = AgentConfig {
                node: name.clone(),
                zone: format!("zone-{}", i % 3),
                data_dir: dir.0.join(&name),
                cpu: 64.0,
                memory_bytes: 256 << 30,
                heartbeat: Duration::from_secs(2),
                ..AgentConfig::default()
            };
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let agent = Agent::new(
                config,
                Repo::new(Arc::new(store)),
                Arc::new(Recording::default()),
                clock,
                paved_telemetry::Registry::new(),
            );
            agent.start().await?;
            let running = agent.clone();
            tokio::spawn(async move {
                loop {
                    let _ = running.run().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            agents.push(agent);
        }
        println!("{NODES} agents joined");
        let auth: MetadataValue<_> = format!("Bearer {}", server.token).parse()?;
        let jobs = JobsClient::with_interceptor(channel.clone(), auth_fn(auth.clone()));
        let tasks = TasksClient::with_interceptor(channel, auth_fn(auth));
        let clock = Instant::now();
        for j in 0..JOBS {
            let manifest = format!(
                "name = \"load-{j}\"\nkind = \"service\"\ninstances = {TASKS_PER_JOB}\ncommand = [\"sleep\", \"1d\"]\n\
                 [resources]\ncpu = 0.01\nmemory = \"4MiB\"\n"
            );
            let request = pb::CreateJobRequest {
                manifest,
                source: "bench".into(),
            };
            jobs.clone().create_job(request).await?;
        }
        let want = JOBS as u64 * u64::from(TASKS_PER_JOB);
        let (mut placed_at, mut running) = (None, 0);
        while running < want {
            if clock.elapsed() > DEADLINE {
                bail!("only {running} of {want} tasks running after {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (mut placed, mut now_running) = (0, 0);
            for j in 0..JOBS {
                let request = pb::ListTasksRequest {
                    job: format!("load-{j}"),
                    states: vec![],
                };
                for t in tasks.clone().list_tasks(request).await?.into_inner().tasks {
                    placed += 1;
                    now_running += u64::from(t.state == "running");
                }
            }
            if placed >= want && placed_at.is_none() {
                placed_at = Some(clock.elapsed());
            }
            running = now_running;
        }
        let all_running = clock.elapsed();
        let placed = placed_at.unwrap_or(all_running);
        println!(
            "cluster: {want} tasks on {NODES} nodes: all placed {:.2} s, all running {:.2} s after submission",
            placed.as_secs_f64(),
            all_running.as_secs_f64()
        );
        println!(
            "cluster placements/s={:.0}",
            want as f64 / placed.as_secs_f64()
        );
        for agent in &agents {
            agent.shutdown().await;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
