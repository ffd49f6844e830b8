//! `paved run` and `paved validate`: manifests checked locally, then submitted and followed.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use paved_api::v1::{CreateJobRequest, Job, ListTasksRequest, Task, ValidateManifestResponse};
use paved_types::{ManifestError, parse_manifest};

use super::Ctx;
use super::jobs;
use super::tasks;
use crate::client::{Answer as _, Client};
use crate::error::bad_input;
use crate::output;

/// How often `--wait` asks the server how the job is doing.
const POLL: Duration = Duration::from_millis(250);

/// Where a followed job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    /// Service: tasks running. Batch: tasks that exited 0.
    done: u32,
    instances: u32,
    running: u32,
    restarts: u32,
    /// What holds a task back ("no node has 4 cpu free"), from the first pending or
    /// restarting task that says.
    waiting: Option<String>,
    outcome: Option<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A service runs every instance, or a batch job completed.
    Reached,
    /// The job failed or was killed.
    Failed,
}

pub fn validate(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let (source, text) = read_manifest(file)?;
    let checked = parse_manifest(&source, &text);
    if ctx.json() {
        output::print_json(&validation(&checked))?;
    }
    let spec = checked.map_err(|e| problems(&source, &e))?;
    if !ctx.json() {
        let line = format!(
            "{source}: valid ({} {}, {})\n",
            spec.kind.as_str(),
            spec.name,
            plural(spec.instances, "instance")
        );
        output::print(&line)?;
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, file: &Path, wait: bool) -> anyhow::Result<()> {
    let (source, text) = read_manifest(file)?;
    parse_manifest(&source, &text).map_err(|e| problems(&source, &e))?;
    let client = ctx.client().await?;
    let request = CreateJobRequest {
        manifest: text,
        source,
    };
    let job = client.jobs().create_job(request).await.answer(&client)?;
    if ctx.json() && !wait {
        return output::print_json(&job);
    }
    if !ctx.json() {
        let mut line = format!("created {} job {} ({})\n", job.kind, job.name, job.id);
        if !wait {
            let _ = writeln!(line, "follow it with `paved job {}`", job.name);
        }
        output::print(&line)?;
    }
    if wait {
        follow(ctx, &client, job).await
    } else {
        Ok(())
    }
}

/// Polls the job until it reaches its goal or fails, showing progress on a terminal.
async fn follow(ctx: &Ctx, client: &Client, job: Job) -> anyhow::Result<()> {
    let show = !ctx.json() && output::stdout_is_terminal();
    let bar = show.then(|| progress_bar(&job));
    let mut tick = tokio::time::interval(POLL);
    let (job, tasks, progress) = loop {
        tick.tick().await;
        let job = jobs::get(client, &job.id).await?;
        let request = ListTasksRequest {
            job: job.id.clone(),
            states: Vec::new(),
        };
        let tasks = client.tasks().list_tasks(request).await.answer(client)?.tasks;
        let progress = Progress::of(&job, &tasks);
        if let Some(bar) = &bar {
            bar.set_length(u64::from(progress.instances));
            bar.set_position(u64::from(progress.done));
            bar.set_message(progress.line(&job));
        }
        if progress.outcome.is_some() {
            break (job, tasks, progress);
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if ctx.json() {
        output::print_json(&job)?;
    } else {
        output::print(&format!("{}\n", progress.line(&job)))?;
    }
    match progress.outcome {
        Some(Outcome::Failed) => Err(anyhow!(failure(&job, &tasks))),
        _ => Ok(()),
    }
}

impl Progress {
    fn of(job: &Job, tasks: &[Task]) -> Progress {
        let count = |f: &dyn Fn(&Task) -> bool| {
            u32::try_from(tasks.iter().filter(|t| f(t)).count()).unwrap_or(u32::MAX)
        };
        let running = count(&|t| t.state == "running");
        let batch = job.kind == "batch";
        let done = if batch {
            count(&|t| t.state == "exited" && t.exit_code == Some(0))
        } else {
            running
        };
        let restarts = tasks.iter().map(|t| t.restarts).sum();
        let waiting = tasks
            .iter()
            .find(|t| matches!(t.state.as_str(), "pending" | "restarting") && !t.reason.is_empty())
            .map(|t| t.reason.clone());
        let outcome = match job.state.as_str() {
            "failed" | "killed" => Some(Outcome::Failed),
            "complete" => Some(Outcome::Reached),
            "running" if !batch && running >= job.instances => Some(Outcome::Reached),
            _ => None,
        };
        Progress {
            done,
            instances: job.instances,
            running,
            restarts,
            waiting,
            outcome,
        }
    }

    /// "web: 1/2 running", "import: 2/3 complete, 1 running", with restarts and what a waiting
    /// task waits for. (Not the job's reason: it restates these counts.)
    fn line(&self, job: &Job) -> String {
        let mut line = if job.kind == "batch" {
            let mut l = format!("{}: {}/{} complete", job.name, self.done, self.instances);
            if self.running > 0 {
                let _ = write!(l, ", {} running", self.running);
            }
            l
        } else {
            format!("{}: {}/{} running", job.name, self.done, self.instances)
        };
        if self.restarts > 0 {
            let _ = write!(line, ", {}", plural(self.restarts, "restart"));
        }
        match (&self.outcome, &self.waiting) {
            (Some(Outcome::Failed), _) => {
                let _ = write!(line, " ({})", job.state);
            }
            (None, Some(waiting)) => {
                let _ = write!(line, ": {waiting}");
            }
            _ => {}
        }
        line
    }
}

/// Reads a manifest, naming the path when it cannot. The source name in problem positions is
/// the path as given, so editors and terminals can jump to `path:line:col`.
fn read_manifest(file: &Path) -> anyhow::Result<(String, String)> {
    let source = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad_input(format!("cannot read manifest {source}: {e}")))?;
    Ok((source, text))
}

/// Prints every problem to stderr, one per line, and returns the error that ends the command.
fn problems(source: &str, err: &ManifestError) -> anyhow::Error {
    eprintln!("{err}");
    bad_input(format!(
        "{source}: {}; nothing was submitted",
        plural(err.problems.len(), "problem")
    ))
}

/// Why the job failed, and how each of its failed tasks ended.
fn failure(job: &Job, tasks: &[Task]) -> String {
    let reason = if job.reason.is_empty() {
        "no reason given"
    } else {
        &job.reason
    };
    let mut text = format!("job {} {}: {reason}", job.name, job.state);
    let failed = tasks
        .iter()
        .filter(|t| matches!(t.state.as_str(), "failed" | "lost") || t.exit_code.is_some_and(|c| c != 0));
    for task in failed {
        let _ = write!(
            text,
            "\n  task {} ({}/{}): {}, exit {}, {}",
            task.id,
            job.name,
            task.index,
            task.state,
            tasks::exit(task),
            plural(task.restarts, "restart")
        );
        if !task.reason.is_empty() {
            let _ = write!(text, ": {}", task.reason);
        }
    }
    text
}

/// The answer `ValidateManifest` would give, for `paved validate -o json`.
fn validation(checked: &Result<paved_types::JobSpec, ManifestError>) -> ValidateManifestResponse {
    match checked {
        Ok(spec) => ValidateManifestResponse {
            valid: true,
            problems: Vec::new(),
            spec: Some(paved_control::convert::spec(spec)),
        },
        Err(err) => ValidateManifestResponse {
            valid: false,
            problems: err.problems.iter().map(paved_control::convert::problem).collect(),
            spec: None,
        },
    }
}

fn plural(n: impl TryInto<u64>, noun: &str) -> String {
    let n = n.try_into().unwrap_or(u64::MAX);
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn progress_bar(job: &Job) -> ProgressBar {
    let bar = ProgressBar::new(u64::from(job.instances));
    bar.set_message(format!("{}: submitted", job.name));
    if let Ok(style) = ProgressStyle::with_template("{spinner:.cyan} [{bar:20.cyan/blue}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: &str, state: &str, instances: u32) -> Job {
        Job {
            id: "j-1".into(),
            name: "web".into(),
            kind: kind.into(),
            state: state.into(),
            instances,
            ..Job::default()
        }
    }

    fn task(state: &str, exit_code: Option<i32>, restarts: u32) -> Task {
        Task {
            id: "t-1".into(),
            state: state.into(),
            exit_code,
            restarts,
            ..Task::default()
        }
    }

    #[test]
    fn service_progress() {
        let mut j = job("service", "pending", 3);
        j.reason = "1/3 tasks running".into();
        let mut unplaced = task("pending", None, 0);
        unplaced.reason = "no node has 4 cpu free".into();
        let tasks = [task("running", None, 0), task("starting", None, 1), unplaced];
        let p = Progress::of(&j, &tasks);
        assert_eq!(p.outcome, None);
        assert_eq!(p.line(&j), "web: 1/3 running, 1 restart: no node has 4 cpu free");

        let j = job("service", "running", 2);
        let tasks = [task("running", None, 0), task("running", None, 0)];
        let p = Progress::of(&j, &tasks);
        assert_eq!(p.outcome, Some(Outcome::Reached));
        assert_eq!(p.line(&j), "web: 2/2 running");
    }

    #[test]
    fn a_running_service_waits_for_every_instance() {
        let j = job("service", "running", 2);
        let p = Progress::of(&j, &[task("running", None, 0)]);
        assert_eq!(p.outcome, None);
    }

    #[test]
    fn batch_progress() {
        let j = job("batch", "running", 3);
        let tasks = [
            task("exited", Some(0), 0),
            task("running", None, 0),
            task("exited", Some(1), 2),
        ];
        let p = Progress::of(&j, &tasks);
        assert_eq!(p.outcome, None);
        assert_eq!(p.line(&j), "web: 1/3 complete, 1 running, 2 restarts");

        let j = job("batch", "complete", 1);
        let p = Progress::of(&j, &[task("exited", Some(0), 0)]);
        assert_eq!(p.outcome, Some(Outcome::Reached));
        assert_eq!(p.line(&j), "web: 1/1 complete");
    }

    #[test]
    fn failed_jobs_report_their_failed_tasks() {
        let mut j = job("batch", "failed", 2);
        j.reason = "task t-2 failed: exit code 2".into();
        let mut bad = task("failed", Some(2), 3);
        bad.id = "t-2".into();
        bad.index = 1;
        bad.reason = "exit code 2".into();
        let tasks = [task("exited", Some(0), 0), bad];
        let p = Progress::of(&j, &tasks);
        assert_eq!(p.outcome, Some(Outcome::Failed));
        assert_eq!(p.line(&j), "web: 1/2 complete, 3 restarts (failed)");
        let want = "job web failed: task t-2 failed: exit code 2\n  \
                    task t-2 (web/1): failed, exit 2, 3 restarts: exit code 2";
        assert_eq!(failure(&j, &tasks), want);
        let killed = job("service", "killed", 2);
        assert_eq!(Progress::of(&killed, &[]).outcome, Some(Outcome::Failed));
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1u32, "instance"), "1 instance");
        assert_eq!(plural(0u32, "instance"), "0 instances");
        assert_eq!(plural(2usize, "problem"), "2 problems");
    }
}
