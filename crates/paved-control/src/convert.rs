//! From domain records to the API's messages. One direction only: clients send requests, not
//! records, so nothing converts back.

use std::collections::HashMap;
use std::time::Duration;

use paved_api::v1 as pb;
use paved_types::{HealthCheck, HealthSpec, Job, JobSpec, ManifestProblem, Node, Task, TaskState};

/// A job as the API shows it, with how many of its tasks are in each state.
pub fn job(job: &Job, task_states: impl IntoIterator<Item = TaskState>) -> pb::Job {
    let mut counts: HashMap<TaskState, u32> = HashMap::new();
    for state in task_states {
        *counts.entry(state).or_default() += 1;
    }
    let task_counts = counts
        .into_iter()
        .map(|(state, count)| (state.as_str().to_owned(), count))
        .collect();
    pb::Job {
        id: job.id.clone(),
        name: job.spec.name.clone(),
        tenant: job.tenant.clone(),
        kind: job.spec.kind.as_str().to_owned(),
        state: job.state.as_str().to_owned(),
        reason: job.reason.clone(),
        instances: job.spec.instances,
        spec: Some(spec(&job.spec)),
        task_counts,
        created_at_ms: job.created_at_ms,
        updated_at_ms: job.updated_at_ms,
    }
}

pub fn spec(spec: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: spec.name.clone(),
        kind: spec.kind.as_str().to_owned(),
        instances: spec.instances,
        command: spec.command.clone(),
        env: spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        resources: Some(pb::Resources {
            cpu: spec.resources.cpu,
            memory_bytes: spec.resources.memory_bytes,
            pids: spec.resources.pids,
        }),
        restart: Some(pb::RestartSpec {
            policy: spec.restart.policy.as_str().to_owned(),
            attempts: spec.restart.attempts,
            delay_ms: millis(spec.restart.delay),
        }),
        ports: spec
            .ports
            .iter()
            .map(|p| pb::PortSpec { name: p.name.clone() })
            .collect(),
        network: spec.network.as_str().to_owned(),
        driver: spec.driver.as_str().to_owned(),
        health: spec.health.as_ref().map(health),
        image: spec.image.clone().unwrap_or_default(),
        routes: spec
            .routes
            .iter()
            .map(|route| {
                crate::routing::route_message(&crate::routing::RouteRecord {
                    route: route.clone(),
                    owner: crate::routing::job_owner(&spec.name),
                    updated_at_ms: 0,
                })
            })
            .collect(),
        placement: Some(pb::PlacementSpec {
            tier: spec.placement.tier.as_str().to_owned(),
            constraints: spec
                .placement
                .constraints
                .iter()
                .map(ToString::to_string)
                .collect(),
            distinct_hosts: spec.placement.distinct_hosts,
        }),
    }
}

pub fn health(h: &HealthSpec) -> pb::HealthSpec {
    let mut out = pb::HealthSpec {
        check: h.check.kind().to_owned(),
        port: h.port.clone().unwrap_or_default(),
        interval_ms: millis(h.interval),
        timeout_ms: millis(h.timeout),
        grace_ms: millis(h.grace),
        threshold: h.threshold,
        ..pb::HealthSpec::default()
    };
    match &h.check {
        HealthCheck::Http { path } => out.path.clone_from(path),
        HealthCheck::Tcp => {}
        HealthCheck::Grpc { service } => out.service.clone_from(service),
        HealthCheck::Exec { command } => out.command.clone_from(command),
    }
    out
}

pub fn task(task: &Task) -> pb::Task {
    pb::Task {
        id: task.id.clone(),
        job_id: task.job_id.clone(),
        job_name: task.job_name.clone(),
        tenant: task.tenant.clone(),
        index: task.index,
        node: task.node.clone(),
        state: task.state.as_str().to_owned(),
        desired: task.desired.as_str().to_owned(),
        reason: task.reason.clone(),
        restarts: task.restarts,
        exit_code: task.exit_code,
        signal: task.signal,
        pid: task.pid,
        ports: task
            .ports
            .iter()
            .map(|(k, v)| (k.clone(), u32::from(*v)))
            .collect(),
        created_at_ms: task.created_at_ms,
        started_at_ms: task.started_at_ms,
        finished_at_ms: task.finished_at_ms,
        health: task.health.as_str().to_owned(),
        health_detail: task.health_detail.clone(),
        // Live telemetry, not stored state: the API adds it from the task's agent.
        stats: None,
    }
}

pub fn node(node: &Node, tasks: u32) -> pb::Node {
    pb::Node {
        name: node.name.clone(),
        region: node.region.clone(),
        zone: node.zone.clone(),
        labels: node.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cpu: node.cpu,
        memory_bytes: node.memory_bytes,
        state: node.state.clone(),
        agent_version: node.agent_version.clone(),
        heartbeat_at_ms: node.heartbeat_at_ms,
        tasks,
        runtime: node.runtime.clone(),
        eligible: node.eligible,
        drain_deadline_ms: node.drain_deadline_ms.unwrap_or(0),
        address: node.address.clone(),
    }
}

pub fn problem(p: &ManifestProblem) -> pb::ManifestProblem {
    pb::ManifestProblem {
        file: p.file.clone(),
        line: p.line,
        column: p.column,
        field: p.field.clone(),
        message: p.message.clone(),
    }
}

pub fn tenant(tenant: &crate::repo::TenantRecord) -> pb::Tenant {
    pb::Tenant {
        name: tenant.name.clone(),
        trusted: tenant.trusted,
        updated_at_ms: tenant.updated_at_ms,
        capacity_groups: tenant
            .capacity
            .iter()
            .map(|(tier, quota)| pb::CapacityGroup {
                tier: tier.as_str().to_owned(),
                cpu: quota.cpu_millis.map(|m| m as f64 / 1000.0),
                memory_bytes: quota.memory_bytes,
                tasks: quota.tasks,
            })
            .collect(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
