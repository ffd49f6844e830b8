//! `paved top`: live cpu, memory and process counts of running tasks, from their agents.

use std::time::Duration;

use paved_api::v1::{ListTasksRequest, Task};
use paved_types::units::format_memory;

use super::Ctx;
use crate::client::Answer as _;
use crate::output::{self, Table};

/// How often the live view refreshes; agents sample every two seconds.
const REFRESH: Duration = Duration::from_secs(2);
/// Clears the terminal and homes the cursor, so each refresh redraws in place.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub async fn top(ctx: &Ctx, job: Option<&str>, once: bool) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let live = !once && !ctx.json() && output::stdout_is_terminal();
    loop {
        let request = ListTasksRequest {
            job: job.unwrap_or_default().to_owned(),
            states: vec!["running".to_owned()],
        };
        let mut tasks = client.tasks().list_tasks(request).await.answer(&client)?.tasks;
        tasks.sort_by(|a, b| cpu(b).total_cmp(&cpu(a)).then_with(|| a.id.cmp(&b.id)));
        if ctx.json() {
            return output::print_json(&tasks);
        }
        let view = table(&tasks).render();
        if !live {
            return Ok(output::print(&view)?);
        }
        output::print(&format!(
            "{CLEAR}{} running tasks, every {}s (Ctrl-C to quit)\n\n{view}",
            tasks.len(),
            REFRESH.as_secs()
        ))?;
        tokio::time::sleep(REFRESH).await;
    }
}

fn cpu(task: &Task) -> f64 {
    task.stats.as_ref().map_or(0.0, |s| s.cpu_cores)
}

fn table(tasks: &[Task]) -> Table {
    let mut table = Table::new(&["TASK", "JOB", "NODE", "CPU", "MEMORY", "PEAK", "PIDS"]);
    for task in tasks {
        let (cpu, memory, peak, pids) = match &task.stats {
            Some(s) => (
                format!("{:.1}%", s.cpu_cores * 100.0),
                format_memory(s.memory_bytes),
                format_memory(s.memory_peak_bytes),
                s.pids.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        table.row(vec![
            task.id.clone(),
            task.job_name.clone(),
            task.node.clone(),
            cpu,
            memory,
            peak,
            pids,
        ]);
    }
    table
}
