//! Tests of `plan`: a job and its tasks in, the plan out.

use std::time::Duration;

use paved_types::{
    Desired, Job, JobKind, JobSpec, JobState, Resources, RestartPolicy, RestartSpec, Task, TaskState,
};

use super::{Plan, plan};

fn job(kind: JobKind, instances: u32, state: JobState) -> Job {
    Job {
        id: "j".into(),
        tenant: "default".into(),
        spec: JobSpec {
            name: "web".into(),
            kind,
            instances,
            command: vec!["true".into()],
            env: Default::default(),
            resources: Resources {
                cpu: 0.1,
                memory_bytes: 1 << 26,
                pids: 1024,
            },
            restart: RestartSpec {
                policy: RestartPolicy::Always,
                attempts: 3,
                delay: Duration::from_secs(1),
            },
            ports: vec![],
            network: Default::default(),
            driver: Default::default(),
            health: None,
            image: None,
            routes: vec![],
            placement: Default::default(),
            update: Default::default(),
        },
        state,
        reason: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// `check` compares the state of `plan.job`, which is set whenever state or reason change;
/// jobs here start with an empty reason, so most plans carry one.
///
/// A task in `slot` with state and desired given as "running", "running/stop", "failed@500"
/// (finished at 500 ms).
fn task(id: &str, slot: u32, state: &str) -> Task {
    let (state, finished) = state
        .split_once('@')
        .map_or((state, None), |(s, at)| (s, at.parse().ok()));
    let (state, desired) = state
        .split_once('/')
        .map_or((state, Desired::Run), |(s, _)| (s, Desired::Stop));
    Task {
        id: id.into(),
        job_id: "j".into(),
        job_name: "web".into(),
        tenant: "default".into(),
        index: slot,
        node: "n".into(),
        state: TaskState::parse(state).unwrap(),
        desired,
        reason: "why".into(),
        restarts: 0,
        exit_code: None,
        signal: None,
        pid: None,
        ports: Default::default(),
        created_at_ms: u64::from(slot),
        started_at_ms: None,
        finished_at_ms: finished,
        health: Default::default(),
        health_detail: String::new(),
    }
}

fn check(job: Job, tasks: &[Task], now: u64, create: &[u32], stop: &[&str], state: Option<JobState>) {
    let got = plan(&job, tasks, now);
    let want = Plan {
        create: create.to_vec(),
        stop: stop.iter().map(|s| s.to_string()).collect(),
        job: None,
        forget: vec![],
    };
    assert_eq!(
        (got.create, got.stop),
        (want.create, want.stop),
        "tasks: {tasks:?}"
    );
    assert_eq!(got.job.map(|j| j.0), state, "job state");
}

#[test]
fn service_fills_empty_slots() {
    check(
        job(JobKind::Service, 3, JobState::Pending),
        &[task("a", 1, "running")],
        0,
        &[0, 2],
        &[],
        Some(JobState::Pending),
    );
}

#[test]
fn service_runs_when_all_slots_run() {
    let tasks = [task("a", 0, "running"), task("b", 1, "running")];
    check(
        job(JobKind::Service, 2, JobState::Pending),
        &tasks,
        0,
        &[],
        &[],
        Some(JobState::Running),
    );
}

#[test]
fn service_scale_down_stops_high_slots() {
    let tasks = [
        task("a", 0, "running"),
        task("b", 1, "running"),
        task("c", 2, "starting"),
    ];
    check(
        job(JobKind::Service, 1, JobState::Running),
        &tasks,
        0,
        &[],
        &["b", "c"],
        Some(JobState::Running),
    );
}

#[test]
fn killed_and_lost_tasks_are_replaced() {
    let tasks = [task("a", 0, "killed"), task("b", 1, "lost")];
    check(
        job(JobKind::Service, 2, JobState::Running),
        &tasks,
        0,
        &[0, 1],
        &[],
        Some(JobState::Pending),
    );
}

#[test]
fn a_stopping_task_is_replaced_only_once_gone() {
    check(
        job(JobKind::Service, 1, JobState::Running),
        &[task("a", 0, "running/stop")],
        0,
        &[],
        &[],
        Some(JobState::Pending),
    );
}

#[test]
fn failed_service_task_is_replaced_after_the_restart_delay() {
    let tasks = [task("a", 0, "failed@1000")];
    check(
        job(JobKind::Service, 1, JobState::Running),
        &tasks,
        1500,
        &[],
        &[],
        Some(JobState::Pending),
    );
    check(
        job(JobKind::Service, 1, JobState::Running),
        &tasks,
        2000,
        &[0],
        &[],
        Some(JobState::Pending),
    );
}

#[test]
fn exited_service_task_under_on_failure_is_not_replaced() {
    check(
        job(JobKind::Service, 1, JobState::Running),
        &[task("a", 0, "exited")],
        0,
        &[],
        &[],
        Some(JobState::Pending),
    );
}

#[test]
fn duplicates_in_a_slot_are_stopped() {
    let tasks = [task("a", 0, "running"), task("b", 0, "running")];
    check(
        job(JobKind::Service, 1, JobState::Running),
        &tasks,
        0,
        &[],
        &["b"],
        Some(JobState::Running),
    );
}

#[test]
fn batch_completes_when_every_slot_exits_zero() {
    let tasks = [task("a", 0, "exited"), task("b", 1, "exited")];
    check(
        job(JobKind::Batch, 2, JobState::Running),
        &tasks,
        0,
        &[],
        &[],
        Some(JobState::Complete),
    );
}

#[test]
fn batch_runs_while_some_slots_run() {
    let tasks = [task("a", 0, "exited"), task("b", 1, "running")];
    check(
        job(JobKind::Batch, 2, JobState::Pending),
        &tasks,
        0,
        &[],
        &[],
        Some(JobState::Running),
    );
}

#[test]
fn batch_fails_fast_and_stops_the_rest() {
    let tasks = [
        task("a", 0, "failed"),
        task("b", 1, "running"),
        task("c", 2, "pending"),
    ];
    check(
        job(JobKind::Batch, 3, JobState::Running),
        &tasks,
        0,
        &[],
        &["b", "c"],
        Some(JobState::Failed),
    );
}

#[test]
fn killed_job_stops_every_live_task() {
    let tasks = [
        task("a", 0, "running"),
        task("b", 1, "exited"),
        task("c", 2, "running/stop"),
    ];
    check(
        job(JobKind::Service, 3, JobState::Killed),
        &tasks,
        0,
        &[],
        &["a"],
        None,
    );
}

#[test]
fn zero_instances_is_a_running_empty_service() {
    check(
        job(JobKind::Service, 0, JobState::Pending),
        &[],
        0,
        &[],
        &[],
        Some(JobState::Running),
    );
}

#[test]
fn superseded_ended_tasks_beyond_the_newest_ten_are_forgotten() {
    // Slot 0 crash-looped through 14 tasks; the 15th runs. Slot 1's only task ended: it decides
    // that slot (a batch slot done), so it is never forgotten.
    let mut tasks: Vec<Task> = (0..14)
        .map(|i| {
            let mut t = task(&format!("old{i:02}"), 0, &format!("failed@{i}"));
            t.created_at_ms = i;
            t
        })
        .collect();
    let mut live = task("live", 0, "running");
    live.created_at_ms = 100;
    tasks.push(live);
    tasks.push(task("done", 1, "exited"));
    let got = plan(&job(JobKind::Service, 2, JobState::Running), &tasks, 0);
    assert_eq!(got.forget, ["old03", "old02", "old01", "old00"]);

    let scaled_down = [task("a", 0, "running"), task("gone", 5, "killed")];
    assert!(
        plan(&job(JobKind::Service, 1, JobState::Running), &scaled_down, 0)
            .forget
            .is_empty(),
        "within the ten kept"
    );
}

/// A job of 10,000 instances, all running: `plan` groups tasks by slot once (it used to scan
/// every task per slot, 10^8 steps per pass). Prints the time; timings never decide pass/fail.
#[test]
fn a_job_of_many_instances_plans_in_linear_time() {
    let tasks: Vec<Task> = (0..10_000)
        .map(|slot| task(&format!("t{slot}"), slot, "running"))
        .collect();
    let started = std::time::Instant::now();
    let got = plan(&job(JobKind::Service, 10_000, JobState::Running), &tasks, 0);
    eprintln!("plan of 10,000 running tasks: {:?}", started.elapsed());
    assert!(got.create.is_empty() && got.stop.is_empty());
}
