//! `paved jobs`, `paved job`, `paved scale` and `paved kill`.

use std::time::Duration;

use paved_api::v1::{
    GetJobRequest, HealthSpec, Job, JobSpec, KillJobRequest, KillTaskRequest, ListJobsRequest,
    ListTasksRequest, PlacementSpec, ScaleJobRequest, Task,
};
use paved_types::units::{format_duration, format_memory};
use serde::Serialize;
use tonic::Code;

use super::Ctx;
use super::tasks;
use crate::client::{Answer as _, Client};
use crate::output::{self, Table, age, now_ms, or_dash};

/// `paved job ID -o json`: the job's fields, plus its tasks.
#[derive(Serialize)]
struct JobDetail<'a> {
    #[serde(flatten)]
    job: &'a Job,
    tasks: &'a [Task],
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let jobs = client
        .jobs()
        .list_jobs(ListJobsRequest::default())
        .await
        .answer(&client)?
        .jobs;
    if ctx.json() {
        return output::print_json(&jobs);
    }
    if jobs.is_empty() {
        eprintln!("no jobs yet; start one with `paved run FILE`");
        return Ok(());
    }
    Ok(output::print(&table(&jobs, now_ms()).render())?)
}

pub async fn show(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let job = get(&client, name).await?;
    let request = ListTasksRequest {
        job: job.id.clone(),
        states: Vec::new(),
    };
    let tasks = client.tasks().list_tasks(request).await.answer(&client)?.tasks;
    if ctx.json() {
        return output::print_json(&JobDetail {
            job: &job,
            tasks: &tasks,
        });
    }
    let now = now_ms();
    let mut text = output::fields(&detail(&job, now));
    if !tasks.is_empty() {
        text.push('\n');
        text.push_str(&tasks::table(&tasks, now).render());
    }
    Ok(output::print(&text)?)
}

pub async fn scale(ctx: &Ctx, name: &str, instances: u32) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let request = ScaleJobRequest {
        job: name.to_owned(),
        instances,
    };
    let job = client.jobs().scale_job(request).await.answer(&client)?;
    if ctx.json() {
        return output::print_json(&job);
    }
    let line = format!(
        "scaled {} to {} instances ({} running now)\n",
        job.name,
        job.instances,
        running(&job)
    );
    Ok(output::print(&line)?)
}

/// Kills the job named `target`, or else the task it names.
pub async fn kill(ctx: &Ctx, target: &str) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let lookup = client
        .jobs()
        .get_job(GetJobRequest {
            job: target.to_owned(),
        })
        .await;
    match lookup {
        Err(status) if status.code() == Code::NotFound => kill_task(ctx, &client, target).await,
        lookup => {
            let job = lookup.answer(&client)?;
            let request = KillJobRequest { job: job.id };
            let job = client.jobs().kill_job(request).await.answer(&client)?;
            if ctx.json() {
                return output::print_json(&job);
            }
            Ok(output::print(&format!("killed job {} ({})\n", job.name, job.id))?)
        }
    }
}

/// Looks a job up by id or name.
pub async fn get(client: &Client, job: &str) -> anyhow::Result<Job> {
    let request = GetJobRequest { job: job.to_owned() };
    client.jobs().get_job(request).await.answer(client)
}

/// Tasks of `job` in state "running".
pub fn running(job: &Job) -> u32 {
    job.task_counts.get("running").copied().unwrap_or(0)
}

async fn kill_task(ctx: &Ctx, client: &Client, target: &str) -> anyhow::Result<()> {
    let request = KillTaskRequest {
        task: target.to_owned(),
    };
    let task = match client.tasks().kill_task(request).await {
        Err(status) if status.code() == Code::NotFound => {
            anyhow::bail!("no job or task named `{target}`; see `paved jobs` and `paved tasks`")
        }
        reply => reply.answer(client)?,
    };
    if ctx.json() {
        return output::print_json(&task);
    }
    let line = format!("killed task {} ({}/{})\n", task.id, task.job_name, task.index);
    Ok(output::print(&line)?)
}

fn table(jobs: &[Job], now: u64) -> Table {
    let mut table = Table::new(&["ID", "NAME", "KIND", "STATE", "TASKS", "AGE"]);
    for job in jobs {
        table.row(vec![
            job.id.clone(),
            job.name.clone(),
            job.kind.clone(),
            job.state.clone(),
            format!("{}/{}", running(job), job.instances),
            age(now, job.created_at_ms),
        ]);
    }
    table
}

fn detail(job: &Job, now: u64) -> Vec<(&'static str, String)> {
    let mut items = vec![
        ("ID", job.id.clone()),
        ("Name", job.name.clone()),
        ("Tenant", job.tenant.clone()),
        ("Kind", job.kind.clone()),
        ("State", job.state.clone()),
        ("Reason", job.reason.clone()),
        (
            "Instances",
            format!("{} ({} running)", job.instances, running(job)),
        ),
        ("Tasks", output::counts(&job.task_counts)),
    ];
    if let Some(spec) = &job.spec {
        items.extend(spec_fields(spec));
    }
    items.push(("Created", format!("{} ago", age(now, job.created_at_ms))));
    items.push(("Updated", format!("{} ago", age(now, job.updated_at_ms))));
    items
}

fn spec_fields(spec: &JobSpec) -> Vec<(&'static str, String)> {
    let mut items = vec![("Command", command_line(&spec.command))];
    if let Some(r) = &spec.resources {
        let resources = format!(
            "{} cpu, {}, {} pids",
            r.cpu,
            format_memory(r.memory_bytes),
            r.pids
        );
        items.push(("Resources", resources));
    }
    items.push(("Network", spec.network.clone()));
    items.push(("Driver", spec.driver.clone()));
    if let Some(r) = &spec.restart {
        let delay = format_duration(Duration::from_millis(r.delay_ms));
        let restart = format!("{}, {} attempts, first delay {delay}", r.policy, r.attempts);
        items.push(("Restart", restart));
    }
    let ports: Vec<&str> = spec.ports.iter().map(|p| p.name.as_str()).collect();
    items.push(("Ports", ports.join(", ")));
    if let Some(h) = &spec.health {
        items.push(("Health", health_check(h)));
    }
    if let Some(p) = &spec.placement {
        items.push(("Placement", placement(p)));
    }
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    items.push(("Env", env.join(" ")));
    items
}

/// "flex tier, region = us-east, label:disk = ssd, distinct hosts".
fn placement(p: &PlacementSpec) -> String {
    let tier = if p.tier.is_empty() {
        "flex"
    } else {
        p.tier.as_str()
    };
    let mut parts = vec![format!("{tier} tier")];
    parts.extend(p.constraints.iter().cloned());
    if p.distinct_hosts {
        parts.push("distinct hosts".to_owned());
    }
    parts.join(", ")
}

/// The check in a line: "http GET /healthz on port http, every 10s (timeout 2s, grace 5s),
/// unhealthy after 3 failures".
fn health_check(h: &HealthSpec) -> String {
    let ms = |ms: u64| format_duration(Duration::from_millis(ms));
    let check = match h.check.as_str() {
        "http" => format!("http GET {}", h.path),
        "grpc" if h.service.is_empty() => "grpc (whole server)".to_owned(),
        "grpc" => format!("grpc {}", h.service),
        "exec" => format!("exec {}", command_line(&h.command)),
        other => other.to_owned(),
    };
    let port = match (h.check.as_str(), h.port.as_str()) {
        ("exec", _) => String::new(),
        (_, "") => " on the first port".to_owned(),
        (_, port) => format!(" on port {port}"),
    };
    let plural = if h.threshold == 1 { "" } else { "s" };
    format!(
        "{check}{port}, every {} (timeout {}, grace {}), unhealthy after {} failure{plural}",
        ms(h.interval_ms),
        ms(h.timeout_ms),
        ms(h.grace_ms),
        h.threshold
    )
}

/// The command as a shell would show it: arguments with spaces or quotes are quoted.
fn command_line(command: &[String]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|w| {
            let plain = !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '"');
            if plain { w.clone() } else { format!("{w:?}") }
        })
        .collect();
    or_dash(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn job(name: &str, running: u32, instances: u32) -> Job {
        Job {
            id: format!("j-{name}"),
            name: name.into(),
            kind: "service".into(),
            state: "running".into(),
            instances,
            task_counts: HashMap::from([("running".into(), running)]),
            created_at_ms: 1_000,
            ..Job::default()
        }
    }

    #[test]
    fn jobs_table() {
        let jobs = [job("web", 1, 2), job("api-gateway", 3, 3)];
        let want = "\
ID              NAME          KIND      STATE     TASKS   AGE
j-web           web           service   running   1/2     12s
j-api-gateway   api-gateway   service   running   3/3     12s
";
        assert_eq!(table(&jobs, 13_000).render(), want);
    }

    #[test]
    fn json_detail_flattens_the_job() {
        let j = job("web", 1, 2);
        let value = serde_json::to_value(JobDetail { job: &j, tasks: &[] }).unwrap();
        for key in ["id", "name", "kind", "state", "instances", "tasks"] {
            assert!(value.get(key).is_some(), "no {key} in {value}");
        }
    }

    #[test]
    fn health_checks() {
        let check = |h: HealthSpec, want: &str| assert_eq!(health_check(&h), want);
        let every = HealthSpec {
            interval_ms: 10_000,
            timeout_ms: 2_000,
            grace_ms: 5_000,
            threshold: 3,
            ..HealthSpec::default()
        };
        check(
            HealthSpec {
                check: "http".into(),
                path: "/healthz".into(),
                ..every.clone()
            },
            "http GET /healthz on the first port, every 10s (timeout 2s, grace 5s), unhealthy after 3 failures",
        );
        check(
            HealthSpec {
                check: "grpc".into(),
                port: "admin".into(),
                threshold: 1,
                ..every.clone()
            },
            "grpc (whole server) on port admin, every 10s (timeout 2s, grace 5s), unhealthy after 1 failure",
        );
        check(
            HealthSpec {
                check: "exec".into(),
                command: vec!["sh".into(), "-c".into(), "test -f ok".into()],
                ..every
            },
            r#"exec sh -c "test -f ok", every 10s (timeout 2s, grace 5s), unhealthy after 3 failures"#,
        );
    }

    #[test]
    fn command_lines() {
        let check = |words: &[&str], want: &str| {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            assert_eq!(command_line(&words), want);
        };
        check(&["python3", "-m", "http.server"], "python3 -m http.server");
        check(&["sh", "-c", "echo hi"], r#"sh -c "echo hi""#);
        check(&["echo", ""], r#"echo """#);
        check(&[], "-");
    }
}
