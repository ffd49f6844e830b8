//! The edge router inside `paved up`: follows the store (routes, faults, jobs and tasks) and
//! hands the proxy a fresh [`Snapshot`] after every change.
//!
//! Endpoints are the running tasks of each job, one per port, at this node's loopback (every
//! task of `paved up` runs on this machine, on host networking). A task whose job has a health
//! check serves once it is healthy; a task without one once it runs; a task asked to stop is
//! draining: no new requests, while the agent waits before signalling it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt};
use paved_control::Repo;
use paved_control::repo::{JOBS, RepoError, TASKS};
use paved_control::routing;
use paved_proxy::{Endpoint, Snapshot};
use paved_types::{Desired, Health, Job, Task, TaskState};
use tokio::sync::watch;

/// Changes closer together than this become one snapshot.
const SETTLE: Duration = Duration::from_millis(20);
/// Keys whose changes can change a snapshot; node heartbeats and tokens cannot.
const WATCHED: [&str; 4] = [routing::ROUTES, routing::FAULTS, JOBS, TASKS];
/// After a broken watch, before listing again.
const RETRY: Duration = Duration::from_millis(500);

/// The snapshot as the store holds it now.
pub async fn snapshot(repo: &Repo) -> Result<Snapshot, RepoError> {
    let routes = routing::routes(repo)
        .await?
        .into_iter()
        .map(|r| r.route)
        .collect();
    let faults = routing::faults(repo)
        .await?
        .into_iter()
        .map(|f| f.fault)
        .collect();
    let jobs: HashMap<String, Job> = repo
        .jobs()
        .await?
        .into_iter()
        .map(|j| (j.value.id.clone(), j.value))
        .collect();
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for task in repo.tasks().await? {
        let task = task.value;
        let Some(job) = jobs.get(&task.job_id) else {
            continue;
        };
        if serves(job, &task) {
            endpoints
                .entry(job.spec.name.clone())
                .or_default()
                .extend(task_endpoints(job, &task));
        }
    }
    Ok(Snapshot {
        routes,
        endpoints,
        faults,
    })
}

/// Keeps `snapshots` current until the process ends.
pub async fn follow(repo: Repo, snapshots: watch::Sender<Arc<Snapshot>>) {
    loop {
        if let Err(e) = follow_once(&repo, &snapshots).await {
            tracing::warn!(error = %e, "edge router lost the store's watch; listing again");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn follow_once(repo: &Repo, snapshots: &watch::Sender<Arc<Snapshot>>) -> Result<(), RepoError> {
    let revision = repo.store().revision().await?;
    let mut changes = repo.store().watch("/", revision).await?;
    snapshots.send_replace(Arc::new(snapshot(repo).await?));
    while let Some(event) = changes.next().await {
        if !WATCHED
            .iter()
            .any(|prefix| event.as_ref().map_or(true, |e| e.key.starts_with(prefix)))
        {
            continue;
        }
        event?;
        // A burst of writes (a scale to 50) becomes one rebuild.
        tokio::time::sleep(SETTLE).await;
        while let Some(Some(next)) = changes.next().now_or_never() {
            next?;
        }
        snapshots.send_replace(Arc::new(snapshot(repo).await?));
    }
    Ok(())
}

/// Whether the task takes traffic (or is draining what it has).
fn serves(job: &Job, task: &Task) -> bool {
    if task.state != TaskState::Running {
        return false;
    }
    match job.spec.health {
        Some(_) => task.health == Health::Healthy,
        None => task.health != Health::Unhealthy,
    }
}

/// One endpoint per port, in the job's declared order (a route's default port is the first).
fn task_endpoints(job: &Job, task: &Task) -> Vec<Endpoint> {
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    job.spec
        .ports
        .iter()
        .filter_map(|port| {
            let number = task.ports.get(&port.name)?;
            Some(Endpoint {
                task: task.id.clone(),
                addr: SocketAddr::new(host, *number),
                port_name: port.name.clone(),
                draining: task.desired == Desired::Stop,
            })
        })
        .collect()
}
