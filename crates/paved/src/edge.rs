//! The edge router inside `paved up`: follows the store (routes, faults, jobs and tasks) and
//! hands the proxy a fresh [`Snapshot`] after every change.
//!
//! Endpoints are the running tasks of each job, one per port, at this node's loopback (every
//! task of `paved up` runs on this machine, on host networking). A task whose job has a health
//! check serves once it is healthy; a task without one once it runs; a task asked to stop is
//! draining: no new requests, while the agent waits before signalling it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use paved_control::mirror::{Changes, Mirror};
use paved_control::repo::RepoError;
use paved_proxy::{Endpoint, Snapshot};
use paved_types::{Desired, Health, Job, Route, Task, TaskState};
use tokio::sync::watch;

/// Changes closer together than this become one snapshot.
const SETTLE: Duration = Duration::from_millis(20);
/// After a broken watch, before listing again.
const RETRY: Duration = Duration::from_millis(500);

/// The snapshot as `mirror` shows the store: endpoints of the jobs some route sends to.
pub fn snapshot(mirror: &Mirror) -> Snapshot {
    let routes: Vec<_> = mirror.routes().map(|r| r.value.route.clone()).collect();
    let faults = mirror.faults().map(|f| f.value.fault.clone()).collect();
    let routed = routed_jobs(&routes);
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for job in mirror.jobs().map(|j| &j.value) {
        if !routed.contains(job.spec.name.as_str()) {
            continue;
        }
        let serving = mirror
            .tasks_of(&job.id)
            .filter(|t| serves(job, &t.value))
            .flat_map(|t| task_endpoints(job, &t.value));
        endpoints
            .entry(job.spec.name.clone())
            .or_default()
            .extend(serving);
    }
    Snapshot {
        routes,
        endpoints,
        faults,
    }
}

/// Keeps `snapshots` current until the process ends, starting from `mirror`.
pub async fn follow(mirror: Mirror, snapshots: watch::Sender<Arc<Snapshot>>) {
    let repo = mirror.repo().clone();
    let mut mirror = Some(mirror);
    loop {
        let started = match mirror.take() {
            Some(mirror) => Ok(mirror),
            None => Mirror::start(&repo).await,
        };
        let outcome = match started {
            Ok(mirror) => follow_once(mirror, &snapshots).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "edge router lost the store's watch; listing again");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn follow_once(mut mirror: Mirror, snapshots: &watch::Sender<Arc<Snapshot>>) -> Result<(), RepoError> {
    snapshots.send_replace(Arc::new(snapshot(&mirror)));
    loop {
        let changes = mirror.next_change().await?;
        if !affects(&mirror, &changes, &snapshots.borrow()) {
            continue;
        }
        // A burst of writes (a scale to 50) becomes one rebuild.
        tokio::time::sleep(SETTLE).await;
        mirror.catch_up()?;
        snapshots.send_replace(Arc::new(snapshot(&mirror)));
    }
}

/// Whether `changes` can change the snapshot: routes and faults always; a job or its tasks
/// only when a route sends to it (node heartbeats and unrouted jobs never).
fn affects(mirror: &Mirror, changes: &Changes, current: &Snapshot) -> bool {
    if changes.routes || changes.faults {
        return true;
    }
    let routed = routed_jobs(&current.routes);
    changes.jobs.iter().any(|id| match mirror.job(id) {
        Some(job) => routed.contains(job.value.spec.name.as_str()),
        // Deleted: it mattered if it had endpoints.
        None => true,
    })
}

/// Names of the jobs some route sends traffic to.
fn routed_jobs(routes: &[Route]) -> HashSet<&str> {
    routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.job.as_str()))
        .collect()
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
