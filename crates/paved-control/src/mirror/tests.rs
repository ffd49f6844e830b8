//! The mirror against a real redb store: it starts from what is stored, follows every write,
//! and reports which jobs each change touched.

use std::sync::Arc;

use paved_store::{Expect, RedbStore};
use paved_types::{Desired, Job, JobState, Task, TaskState, parse_manifest};

use super::Mirror;
use crate::repo::{Repo, job_key, put_op};

pub(crate) fn repo(dir: &tempfile::TempDir) -> Repo {
    let store = RedbStore::open(&dir.path().join("store.redb")).expect("open store");
    Repo::new(Arc::new(store))
}

fn job(id: &str, name: &str) -> Job {
    let manifest = format!("name = \"{name}\"\nkind = \"service\"\ninstances = 1\ncommand = [\"true\"]\n");
    Job {
        id: id.into(),
        tenant: "default".into(),
        spec: parse_manifest("test.toml", &manifest).expect("valid manifest"),
        state: JobState::Pending,
        reason: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

pub(crate) fn task(job_id: &str, suffix: &str) -> Task {
    Task {
        id: format!("{job_id}-{suffix}"),
        job_id: job_id.into(),
        job_name: "web".into(),
        tenant: "default".into(),
        index: 0,
        node: "n".into(),
        state: TaskState::Pending,
        desired: Desired::Run,
        reason: String::new(),
        restarts: 0,
        exit_code: None,
        signal: None,
        pid: None,
        ports: Default::default(),
        created_at_ms: 0,
        started_at_ms: None,
        finished_at_ms: None,
        health: Default::default(),
        health_detail: String::new(),
    }
}

async fn put_job(repo: &Repo, job: &Job) -> u64 {
    repo.create_job(job, None, vec![]).await.expect("create job")
}

#[tokio::test]
async fn starts_from_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(&dir);
    put_job(&repo, &job("aa", "web")).await;
    repo.put_task(&task("aa", "01"), Expect::Absent).await.unwrap();

    let mirror = Mirror::start(&repo).await.expect("start");
    assert_eq!(mirror.jobs().count(), 1);
    assert_eq!(mirror.tasks_of("aa").count(), 1);
    assert_eq!(mirror.job("aa").map(|j| j.value.spec.name.as_str()), Some("web"));
}

#[tokio::test]
async fn follows_writes_and_names_the_jobs_they_touch() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(&dir);
    let mut mirror = Mirror::start(&repo).await.expect("start");

    put_job(&repo, &job("aa", "web")).await;
    let written = repo.put_task(&task("bb", "01"), Expect::Absent).await.unwrap();
    let changes = mirror.catch_up_to(written).await.expect("catch up");
    assert_eq!(mirror.revision(), written);
    let mut touched: Vec<_> = changes.jobs.into_iter().collect();
    touched.sort();
    assert_eq!(
        touched,
        ["aa", "bb"],
        "a job write and a task write each touch their job"
    );
    assert!(!changes.nodes && !changes.routes && !changes.faults);

    // An orphan task (no job "bb") still shows, so a loop can clean it up.
    assert!(mirror.job_ids().contains("bb"));
    assert!(mirror.job("bb").is_none());
}

#[tokio::test]
async fn deletes_and_reused_names_drop_the_old_job() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(&dir);
    let first = job("aa", "web");
    put_job(&repo, &first).await;
    let mut mirror = Mirror::start(&repo).await.expect("start");

    // A new job under the same name replaces the old one's record.
    let stored = repo.job_by_name("default", "web").await.unwrap().unwrap();
    let written = repo
        .create_job(&job("cc", "web"), Some(&stored), vec![])
        .await
        .unwrap();
    let changes = mirror.catch_up_to(written).await.unwrap();
    assert!(changes.jobs.contains("cc"));
    assert!(mirror.job("aa").is_none(), "the replaced job is gone");
    assert!(mirror.job("cc").is_some());

    let written = repo
        .store()
        .delete(&job_key("default", "web"), Expect::Any)
        .await
        .unwrap();
    let changes = mirror.catch_up_to(written).await.unwrap();
    assert!(changes.jobs.contains("cc"), "a delete names the job it removed");
    assert_eq!(mirror.jobs().count(), 0);
}

#[tokio::test]
async fn an_unreadable_record_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(&dir);
    let mut mirror = Mirror::start(&repo).await.expect("start");
    repo.store()
        .put("/jobs/default/bad", b"not json".to_vec(), Expect::Any)
        .await
        .unwrap();
    let op = put_op(job_key("default", "ok"), &job("dd", "ok"), Expect::Any).unwrap();
    let written = repo.commit(vec![op]).await.unwrap();
    mirror
        .catch_up_to(written)
        .await
        .expect("a bad record does not break the mirror");
    assert_eq!(mirror.jobs().count(), 1);
}
