//! `paved tasks`, and the task table that `paved job` shows too.

use paved_api::v1::{ListTasksRequest, Task};

use super::Ctx;
use crate::client::Answer as _;
use crate::output::{self, Table, age, now_ms, or_dash};

pub async fn list(ctx: &Ctx, job: Option<&str>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let request = ListTasksRequest {
        job: job.unwrap_or_default().to_owned(),
        states: Vec::new(),
    };
    let tasks = client.tasks().list_tasks(request).await.answer(&client)?.tasks;
    if ctx.json() {
        return output::print_json(&tasks);
    }
    if tasks.is_empty() {
        eprintln!("no tasks");
        return Ok(());
    }
    Ok(output::print(&table(&tasks, now_ms()).render())?)
}

pub fn table(tasks: &[Task], now: u64) -> Table {
    let mut table = Table::new(&[
        "ID", "JOB", "INDEX", "NODE", "STATE", "HEALTH", "RESTARTS", "EXIT", "PID", "PORTS", "AGE", "REASON",
    ]);
    for task in tasks {
        let job = if task.job_name.is_empty() {
            &task.job_id
        } else {
            &task.job_name
        };
        table.row(vec![
            task.id.clone(),
            job.clone(),
            task.index.to_string(),
            or_dash(&task.node),
            task.state.clone(),
            health(task),
            task.restarts.to_string(),
            exit(task),
            task.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            output::pairs(&task.ports),
            age(now, task.created_at_ms),
            or_dash(&task.reason),
        ]);
    }
    table
}

/// "healthy" or "unhealthy", or "-" while no check has decided (or the job has none).
pub fn health(task: &Task) -> String {
    match task.health.as_str() {
        "" | "unknown" => "-".to_owned(),
        health => health.to_owned(),
    }
}

/// How the task last ended: "0", "2", "sig 9", or "-" while it has not.
pub fn exit(task: &Task) -> String {
    match (task.exit_code, task.signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("sig {signal}"),
        (None, None) => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn tasks_table() {
        let running = Task {
            id: "t-1".into(),
            job_id: "j-web".into(),
            job_name: "web".into(),
            node: "local".into(),
            state: "running".into(),
            pid: Some(4242),
            ports: HashMap::from([("http".into(), 31000)]),
            created_at_ms: 1_000,
            health: "healthy".into(),
            ..Task::default()
        };
        let failed = Task {
            id: "t-2".into(),
            job_id: "j-batch".into(),
            index: 1,
            state: "failed".into(),
            restarts: 3,
            exit_code: Some(2),
            reason: "exit code 2".into(),
            created_at_ms: 1_000,
            health: "unknown".into(),
            ..Task::default()
        };
        let want = "\
ID    JOB       INDEX   NODE    STATE     HEALTH    RESTARTS   EXIT   PID    PORTS        AGE   REASON
t-1   web       0       local   running   healthy   0          -      4242   http=31000   3m    -
t-2   j-batch   1       -       failed    -         3          2      -      -            3m    exit code 2
";
        assert_eq!(table(&[running, failed], 181_000).render(), want);
    }

    #[test]
    fn exits() {
        let task = |exit_code, signal| Task {
            exit_code,
            signal,
            ..Task::default()
        };
        assert_eq!(exit(&task(Some(0), None)), "0");
        assert_eq!(exit(&task(None, Some(9))), "sig 9");
        assert_eq!(exit(&task(None, None)), "-");
    }
}
