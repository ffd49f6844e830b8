//! What the edge router routes by: a [`Snapshot`] of routes, faults and the serving endpoints of
//! every routed job, built from a [`Mirror`] of the store and rebuilt after each change that can
//! alter it. `paved up` feeds its proxy in-process; `Routing.WatchEdge` streams the same
//! snapshots to standalone `paved proxy` processes.
//!
//! Endpoints are the running tasks of each routed job, one per port, at their node's address
//! (loopback while every task runs on the machine of `paved up`). A task whose job has a health
//! check serves once it is healthy, one without a check once it runs; a task asked to stop is
//! draining: no new requests while the agent waits before signalling it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use paved_api::v1 as pb;
use paved_types::edge::{Endpoint, Snapshot};
use paved_types::{DEFAULT_TENANT, Desired, Health, Job, Route, Task, TaskState};

use crate::error::ApiError;
use crate::mirror::{Changes, Mirror};
use crate::repo::RepoError;
use crate::routing::{FaultRecord, RouteRecord, fault_message, fault_of_message, route_message, route_of};

/// Changes closer together than this become one snapshot.
const SETTLE: Duration = Duration::from_millis(20);

/// The snapshot as `mirror` shows the store.
pub fn snapshot(mirror: &Mirror) -> Snapshot {
    let routes: Vec<Route> = mirror.routes().map(|r| r.value.route.clone()).collect();
    let faults = mirror.faults().map(|f| f.value.fault.clone()).collect();
    let routed = routed_jobs(&routes);
    let addresses: HashMap<&str, IpAddr> = mirror
        .nodes()
        .filter_map(|n| Some((n.value.name.as_str(), n.value.address.parse().ok()?)))
        .collect();
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    // Backends name jobs without a tenant, and only admins make routes: they reach the jobs of
    // the default tenant, never a tenant's job that happens to share a name.
    for job in mirror.jobs().map(|j| &j.value) {
        if job.tenant != DEFAULT_TENANT || !routed.contains(job.spec.name.as_str()) {
            continue;
        }
        let serving = mirror
            .tasks_of(&job.id)
            .filter(|t| serves(job, &t.value))
            .flat_map(|t| {
                let host = addresses
                    .get(t.value.node.as_str())
                    .copied()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                task_endpoints(job, &t.value, host)
            });
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

/// Publishes `mirror`'s snapshot, then a new one after every change that alters it, until
/// `publish` returns false (nobody listens) or the store's watch breaks.
pub async fn follow(mut mirror: Mirror, mut publish: impl FnMut(Snapshot) -> bool) -> Result<(), RepoError> {
    let mut current = snapshot(&mirror);
    if !publish(current.clone()) {
        return Ok(());
    }
    loop {
        let changes = mirror.next_change().await?;
        if !affects(&mirror, &changes, &current) {
            continue;
        }
        // A burst of writes (a scale to 50) becomes one snapshot.
        tokio::time::sleep(SETTLE).await;
        mirror.catch_up()?;
        let next = snapshot(&mirror);
        if next == current {
            continue;
        }
        current = next;
        if !publish(current.clone()) {
            return Ok(());
        }
    }
}

/// Whether `changes` can alter the snapshot: routes, faults and nodes (an address may change)
/// always; a job or its tasks only when a route sends to it (unrouted jobs never). A node's
/// heartbeat rebuilds a snapshot equal to the last, which is not published.
fn affects(mirror: &Mirror, changes: &Changes, current: &Snapshot) -> bool {
    if changes.routes || changes.faults || changes.nodes {
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
fn task_endpoints(job: &Job, task: &Task, host: IpAddr) -> Vec<Endpoint> {
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

/// The snapshot as the API sends it.
pub fn snapshot_message(s: &Snapshot) -> pb::EdgeSnapshot {
    let mut jobs: Vec<pb::JobEndpoints> = s
        .endpoints
        .iter()
        .map(|(job, endpoints)| pb::JobEndpoints {
            job: job.clone(),
            endpoints: endpoints
                .iter()
                .map(|e| pb::Endpoint {
                    task: e.task.clone(),
                    address: e.addr.to_string(),
                    port_name: e.port_name.clone(),
                    draining: e.draining,
                })
                .collect(),
        })
        .collect();
    jobs.sort_by(|a, b| a.job.cmp(&b.job));
    pb::EdgeSnapshot {
        routes: s
            .routes
            .iter()
            .map(|route| {
                route_message(&RouteRecord {
                    route: route.clone(),
                    owner: String::new(),
                    updated_at_ms: 0,
                })
            })
            .collect(),
        faults: s
            .faults
            .iter()
            .map(|fault| {
                fault_message(&FaultRecord {
                    fault: fault.clone(),
                    created_at_ms: 0,
                })
            })
            .collect(),
        jobs,
    }
}

/// A snapshot received from the API, checked: a server that sends an unusable one is refused
/// whole, so a proxy keeps routing by the last good one.
pub fn snapshot_of(m: &pb::EdgeSnapshot) -> Result<Snapshot, ApiError> {
    let routes = m.routes.iter().map(route_of).collect::<Result<Vec<_>, _>>()?;
    let faults = m
        .faults
        .iter()
        .map(fault_of_message)
        .collect::<Result<Vec<_>, _>>()?;
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for job in &m.jobs {
        let list = endpoints.entry(job.job.clone()).or_default();
        for e in &job.endpoints {
            let addr = e.address.parse().map_err(|_| {
                ApiError::invalid(
                    "jobs.endpoints.address",
                    format!("{:?} is not an ip:port address", e.address),
                )
            })?;
            list.push(Endpoint {
                task: e.task.clone(),
                addr,
                port_name: e.port_name.clone(),
                draining: e.draining,
            });
        }
    }
    Ok(Snapshot {
        routes,
        endpoints,
        faults,
    })
}
