//! Integration tests: the control plane and an agent in-process, driven through the generated
//! gRPC client and the JSON API, running real processes.

#[path = "common/support.rs"]
mod support;

use std::time::Duration;

use paved_api::v1 as pb;
use support::{InProcess, batch, service, wait_for};

#[tokio::test]
async fn calls_without_a_valid_token_are_refused_and_learn_nothing() {
    let p = InProcess::start().await;
    let mut jobs = p.jobs();
    jobs.create_job(pb::CreateJobRequest {
        manifest: service("secret-job", 0, "sleep 100"),
        source: String::new(),
    })
    .await
    .unwrap();

    let anonymous = p.jobs_with_token(None);
    let wrong = p.jobs_with_token(Some("pvd_not_the_right_token_at_all"));
    for mut client in [anonymous, wrong] {
        let err = client
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(!err.message().contains("secret-job"));
    }

    let http = reqwest::Client::new();
    let resp = http.get(p.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!resp.text().await.unwrap().contains("secret-job"));
    let resp = http
        .get(p.url("/v1/jobs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(p.url("/v1/jobs"))
        .bearer_auth(&p.platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("secret-job"));
    // Health checks stay open to load balancers.
    let resp = http.get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    p.stop().await;
}

#[tokio::test]
async fn batch_job_runs_to_completion_and_keeps_its_logs() {
    let p = InProcess::start().await;
    let mut jobs = p.jobs();
    let cmd = "echo hello from $PAVED_TASK_INDEX; echo oops >&2";
    let job = jobs
        .create_job(pb::CreateJobRequest {
            manifest: batch("hello", 2, cmd),
            source: "hello.toml".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (job.kind.as_str(), job.state.as_str(), job.instances),
        ("batch", "pending", 2)
    );

    let done = p.wait_job("hello", |j| j.state == "complete").await;
    assert_eq!(done.task_counts.get("exited"), Some(&2), "{done:?}");
    let tasks = p.tasks("hello").await;
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert_eq!(
            (t.state.as_str(), t.exit_code, t.restarts),
            ("exited", Some(0), 0),
            "{t:?}"
        );
        assert!(t.pid.is_none());
        let out = p.logs(&t.id, "stdout").await;
        assert_eq!(out, format!("hello from {}\n", t.index));
        assert_eq!(p.logs(&t.id, "stderr").await, "oops\n");
    }
    // By job name and index too.
    assert!(p.logs("hello/1", "stdout").await.contains("hello from 1"));
    p.stop().await;
}

#[tokio::test]
async fn service_scales_replaces_killed_tasks_and_dies_with_its_job() {
    let p = InProcess::start().await;
    let mut jobs = p.jobs();
    jobs.create_job(pb::CreateJobRequest {
        manifest: service("web", 2, "exec sleep 1000"),
        source: String::new(),
    })
    .await
    .unwrap();
    p.wait_job("web", |j| j.state == "running").await;
    assert_eq!(p.running("web").await.len(), 2);

    jobs.scale_job(pb::ScaleJobRequest {
        job: "web".into(),
        instances: 3,
    })
    .await
    .unwrap();
    wait_for("3 running", || async { p.running("web").await.len() == 3 }).await;
    jobs.scale_job(pb::ScaleJobRequest {
        job: "web".into(),
        instances: 1,
    })
    .await
    .unwrap();
    wait_for("1 running, 2 killed", || async {
        let tasks = p.tasks("web").await;
        tasks.iter().filter(|t| t.state == "running").count() == 1
            && tasks.iter().filter(|t| t.state == "killed").count() == 2
    })
    .await;

    let victim = p.running("web").await.remove(0);
    let mut tasks = p.tasks_client();
    tasks
        .kill_task(pb::KillTaskRequest {
            task: victim.id.clone(),
        })
        .await
        .unwrap();
    wait_for("a replacement", || async {
        p.running("web").await.iter().any(|t| t.id != victim.id)
    })
    .await;
    assert!(
        !support::alive(victim.pid.unwrap()),
        "killed task's process is gone"
    );

    let pids: Vec<u32> = p.running("web").await.iter().filter_map(|t| t.pid).collect();
    let job = jobs
        .kill_job(pb::KillJobRequest { job: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state, "killed");
    wait_for("every task killed", || async {
        p.tasks("web").await.iter().all(|t| t.state == "killed")
    })
    .await;
    for pid in pids {
        assert!(
            !support::alive(pid),
            "pid {pid} still runs after its job was killed"
        );
    }
    p.stop().await;
}

#[tokio::test]
async fn restart_policy_retries_then_fails_for_good() {
    let p = InProcess::start().await;
    let manifest = batch("flaky", 1, "exit 3") + "[restart]\nattempts = 2\ndelay = \"10ms\"\n";
    p.submit(manifest).await;
    let job = p.wait_job("flaky", |j| j.state == "failed").await;
    assert!(job.reason.contains("exited with code 3"), "{}", job.reason);
    let task = p.tasks("flaky").await.remove(0);
    assert_eq!(
        (task.state.as_str(), task.restarts, task.exit_code),
        ("failed", 2, Some(3)),
        "{task:?}"
    );
    assert!(task.reason.contains("no restarts left"), "{}", task.reason);
    p.stop().await;
}

#[tokio::test]
async fn a_task_killed_from_outside_is_restarted_and_counted() {
    let p = InProcess::start().await;
    let manifest = service("victim", 1, "exec sleep 1000") + "[restart]\ndelay = \"10ms\"\n";
    p.submit(manifest).await;
    p.wait_job("victim", |j| j.state == "running").await;
    let before = p.running("victim").await.remove(0);
    support::kill9(before.pid.unwrap());
    wait_for("restarted", || async {
        p.running("victim")
            .await
            .first()
            .is_some_and(|t| t.restarts == 1 && t.pid != before.pid)
    })
    .await;
    let after = p.running("victim").await.remove(0);
    assert_eq!(after.id, before.id, "a restart keeps the task");
    assert_eq!(after.signal, Some(9));
    p.stop().await;
}

#[tokio::test]
async fn ports_are_assigned_and_passed_in_the_environment() {
    let p = InProcess::start().await;
    let manifest = service(
        "ported",
        1,
        "echo port=$PORT http=$PORT_HTTP admin=$PORT_ADMIN; exec sleep 1000",
    ) + "[[ports]]\nname = \"http\"\n[[ports]]\nname = \"admin\"\n";
    p.submit(manifest).await;
    p.wait_job("ported", |j| j.state == "running").await;
    let task = p.running("ported").await.remove(0);
    let (http, admin) = (task.ports["http"], task.ports["admin"]);
    assert_ne!(http, admin);
    let want = format!("port={http} http={http} admin={admin}\n");
    wait_for("the task's output", || async {
        p.logs(&task.id, "stdout").await == want
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn a_bad_manifest_is_refused_with_positions_and_changes_nothing() {
    let p = InProcess::start().await;
    let mut jobs = p.jobs();
    jobs.create_job(pb::CreateJobRequest {
        manifest: service("keep", 0, "true"),
        source: String::new(),
    })
    .await
    .unwrap();
    let bad = "name = \"Bad Name\"\nkind = \"servce\"\ncommand = []\nbogus = 1\n";
    let err = jobs
        .create_job(pb::CreateJobRequest {
            manifest: bad.into(),
            source: "bad.toml".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for expected in [
        "bad.toml:1:",
        "bad.toml:2:",
        "bad.toml:3:",
        "bad.toml:4:",
        "kind",
        "bogus",
    ] {
        assert!(
            err.message().contains(expected),
            "{expected} missing from {}",
            err.message()
        );
    }
    let listed = jobs
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        listed.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["keep"]
    );

    // A duplicate name is refused too, leaving the first job as it was.
    let err = jobs
        .create_job(pb::CreateJobRequest {
            manifest: service("keep", 3, "true"),
            source: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let kept = jobs
        .get_job(pb::GetJobRequest { job: "keep".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.instances, 0);

    // The JSON API refuses the same way, with a stable code.
    let http = reqwest::Client::new();
    let body = serde_json::json!({"manifest": bad, "source": "bad.toml"});
    let resp = http
        .post(p.url("/v1/jobs"))
        .bearer_auth(&p.platform.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "invalid_manifest");
    let resp = http
        .post(p.url("/v1/jobs"))
        .bearer_auth(&p.platform.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(p.url("/v1/jobs/keep/scale"))
        .bearer_auth(&p.platform.token)
        .json(&serde_json::json!({"instances": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .get(p.url("/v1/jobs/nope"))
        .bearer_auth(&p.platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    p.stop().await;
}

#[tokio::test]
async fn the_json_api_serves_the_same_model_as_grpc() {
    let p = InProcess::start().await;
    p.submit(service("twin", 1, "exec sleep 1000")).await;
    p.wait_job("twin", |j| j.state == "running").await;
    let grpc = p
        .jobs()
        .get_job(pb::GetJobRequest { job: "twin".into() })
        .await
        .unwrap()
        .into_inner();
    let http = reqwest::Client::new();
    let json: pb::Job = p.get_json("/v1/jobs/twin").await;
    assert_eq!(json, grpc);
    let tasks: pb::ListTasksResponse = http
        .get(p.url("/v1/tasks?job=twin"))
        .bearer_auth(&p.platform.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tasks.tasks.len(), 1);
    assert_eq!(tasks.tasks[0].job_id, grpc.id);
    let status: pb::Status = http
        .get(p.url("/v1/status"))
        .bearer_auth(&p.platform.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status.store.starts_with("redb:"), "{status:?}");
    assert_eq!(status.jobs_by_state.get("running"), Some(&1));
    p.stop().await;
}

#[tokio::test]
async fn logs_follow_a_running_task() {
    let p = InProcess::start().await;
    let cmd = "i=0; while [ $i -lt 3 ]; do echo line$i; i=$((i+1)); sleep 0.3; done";
    p.submit(batch("ticker", 1, cmd)).await;
    wait_for("the task to start", || async {
        !p.tasks("ticker").await.is_empty()
    })
    .await;
    let mut stream = p
        .tasks_client()
        .stream_logs(pb::StreamLogsRequest {
            task: "ticker".into(),
            stream: "stdout".into(),
            follow: true,
            tail_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let collect = async {
        while let Some(chunk) = stream.message().await.unwrap() {
            seen.extend(chunk.data);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("a followed log ends once its task has ended");
    assert_eq!(String::from_utf8_lossy(&seen), "line0\nline1\nline2\n");
    p.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let p = InProcess::start().await;
    let channel = p.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "paved.v1.Jobs".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        resp.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let names = support::reflected_services(&p).await;
    for service in [
        "paved.v1.Jobs",
        "paved.v1.Tasks",
        "paved.v1.Nodes",
        "paved.v1.System",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.0.contains(&service.to_owned()),
            "v1 reflection lacks {service}: {names:?}"
        );
        assert!(
            names.1.contains(&service.to_owned()),
            "v1alpha reflection lacks {service}: {names:?}"
        );
    }
    p.stop().await;
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_every_change() {
    let p = InProcess::start().await;
    let mut jobs = p.jobs();
    let manifest = service("watched", 1, "exec sleep 1000");
    jobs.create_job(pb::CreateJobRequest {
        manifest,
        source: String::new(),
    })
    .await
    .unwrap();
    let mut events = jobs
        .watch_jobs(pb::WatchJobsRequest {
            job: "watched".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.kind, "snapshot");
    assert_eq!(first.job.unwrap().name, "watched");

    jobs.scale_job(pb::ScaleJobRequest {
        job: "watched".into(),
        instances: 2,
    })
    .await
    .unwrap();
    let saw_two_running = async {
        while let Some(e) = events.message().await.unwrap() {
            assert_eq!(e.kind, "updated");
            if e.tasks.iter().filter(|t| t.state == "running").count() == 2 {
                return e;
            }
        }
        panic!("watch ended");
    };
    let event = tokio::time::timeout(Duration::from_secs(20), saw_two_running)
        .await
        .expect("an update with 2 running tasks");
    assert_eq!(event.job.unwrap().instances, 2);

    let err = jobs
        .watch_jobs(pb::WatchJobsRequest { job: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    p.stop().await;
}

#[tokio::test]
async fn a_crash_looping_service_leaves_a_bounded_history() {
    let p = InProcess::start().await;
    let manifest = service("crashy", 1, "exit 1") + "[restart]\nattempts = 0\ndelay = \"10ms\"\n";
    p.submit(manifest).await;
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    wait_for("16 replacements", || async {
        let ids: Vec<String> = p.tasks("crashy").await.into_iter().map(|t| t.id).collect();
        let mut seen = seen.lock().unwrap();
        seen.extend(ids);
        seen.len() >= 16
    })
    .await;
    // Ten superseded tasks are kept, plus the newest in the slot and one being replaced.
    let kept = p.tasks("crashy").await.len();
    assert!(kept <= 12, "{kept} tasks kept");
    let dirs = p.platform.data.join("agent/tasks");
    wait_for("forgotten tasks' files deleted", || async {
        std::fs::read_dir(&dirs).unwrap().count() <= 13
    })
    .await;
    p.stop().await;
}

/// The first task of `job`, once it has one that satisfies `done`.
async fn wait_task(p: &InProcess, job: &str, what: &str, done: impl Fn(&pb::Task) -> bool) -> pb::Task {
    wait_for(what, || async { p.tasks(job).await.first().is_some_and(&done) }).await;
    p.tasks(job).await.remove(0)
}

#[tokio::test]
async fn an_http_health_check_finds_a_server_healthy() {
    let p = InProcess::start().await;
    let sh = "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let manifest =
        service("served", 1, sh) + "[[ports]]\nname = \"http\"\n[health]\nhttp = \"/\"\ninterval = \"1s\"\n";
    p.submit(manifest).await;
    let task = wait_task(&p, "served", "a healthy task", |t| t.health == "healthy").await;
    assert_eq!((task.state.as_str(), task.restarts), ("running", 0), "{task:?}");
    assert_eq!(task.health_detail, "");
    let job = p
        .jobs()
        .get_job(pb::GetJobRequest { job: "served".into() })
        .await
        .unwrap()
        .into_inner();
    let health = job
        .spec
        .and_then(|s| s.health)
        .expect("the check in the job's spec");
    assert_eq!((health.check.as_str(), health.path.as_str()), ("http", "/"));
    p.stop().await;
}

/// A service whose check keeps failing is stopped and restarted under its restart policy until
/// its attempts run out; the reasons say why.
#[tokio::test]
async fn an_unhealthy_service_is_restarted_until_its_attempts_run_out() {
    let p = InProcess::start().await;
    // Nothing listens on the port: the first check, at once, fails.
    let closed = service("deaf", 1, "exec sleep 1000")
        + "[restart]\nattempts = 2\ndelay = \"10ms\"\n[[ports]]\nname = \"http\"\n\
           [health]\ntcp = true\ninterval = \"1s\"\ngrace = \"0s\"\nthreshold = 1\n";
    // The server answers 404; the grace period covers its start-up.
    let sh = "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let missing = service("lost", 1, sh)
        + "[restart]\nattempts = 1\ndelay = \"10ms\"\n[[ports]]\nname = \"http\"\n\
           [health]\nhttp = \"/missing\"\ninterval = \"1s\"\ngrace = \"2s\"\nthreshold = 2\n";
    for manifest in [closed, missing] {
        let request = pb::CreateJobRequest {
            manifest,
            source: String::new(),
        };
        p.jobs().create_job(request).await.unwrap();
    }
    let deaf = wait_task(&p, "deaf", "a failed task", |t| t.state == "failed").await;
    let port = deaf.ports["http"];
    let refused = format!("connect 127.0.0.1:{port}: connection refused");
    assert_eq!(deaf.restarts, 2, "{deaf:?}");
    assert_eq!(
        deaf.reason,
        format!("unhealthy: {refused} (1 consecutive failure); no restarts left (2 of 2 used)")
    );
    assert_eq!(
        (deaf.health.as_str(), deaf.health_detail.as_str()),
        ("unhealthy", refused.as_str())
    );
    assert_eq!(deaf.signal, Some(15), "stopped with SIGTERM: {deaf:?}");

    let lost = wait_task(&p, "lost", "a failed task", |t| t.state == "failed").await;
    assert_eq!(lost.restarts, 1, "{lost:?}");
    let want = "unhealthy: GET /missing: status 404 (2 consecutive failures); no restarts left";
    assert!(lost.reason.starts_with(want), "{}", lost.reason);
    p.stop().await;
}

/// An exec check runs in the task's directory; a batch task's health is reported and changes
/// both ways, but never restarts the task.
#[tokio::test]
async fn an_exec_check_follows_the_task_both_ways_without_restarting_a_batch_task() {
    let p = InProcess::start().await;
    let manifest = batch("checked", 1, "exec sleep 1000")
        + "[health]\nexec = [\"/bin/sh\", \"-c\", \"test -f ok\"]\ninterval = \"1s\"\ngrace = \"0s\"\nthreshold = 1\n";
    p.submit(manifest).await;
    let sick = wait_task(&p, "checked", "unhealthy", |t| t.health == "unhealthy").await;
    assert_eq!(sick.health_detail, "exec /bin/sh -c test -f ok: exit code 1");
    let ok = p.platform.data.join("agent/tasks").join(&sick.id).join("work/ok");
    std::fs::write(&ok, "").unwrap();
    let well = wait_task(&p, "checked", "healthy", |t| t.health == "healthy").await;
    assert_eq!(well.health_detail, "");
    std::fs::remove_file(&ok).unwrap();
    let again = wait_task(&p, "checked", "unhealthy again", |t| t.health == "unhealthy").await;
    assert_eq!(
        (again.id.as_str(), again.state.as_str(), again.restarts, again.pid),
        (sick.id.as_str(), "running", 0, sick.pid),
        "{again:?}"
    );
    p.stop().await;
}

/// A `NodeStore` client speaking for `node`.
fn node_store(
    token: &str,
    channel: tonic::transport::Channel,
    node: &str,
) -> paved_api::v1::node_store_client::NodeStoreClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let node: tonic::metadata::MetadataValue<_> = node.parse().unwrap();
    paved_api::v1::node_store_client::NodeStoreClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            req.metadata_mut().insert("x-paved-node", node.clone());
            Ok(req)
        },
    )
}

#[tokio::test]
async fn a_node_sees_and_writes_only_its_own_records() {
    let p = InProcess::start().await;
    p.submit(support::service("mine", 1, "exec sleep 1000")).await;
    wait_for("the task to run", || async { p.running("mine").await.len() == 1 }).await;
    let task = p.running("mine").await.remove(0);
    let key = format!("/tasks/{}/{}", task.job_id, task.id);

    // The node that runs it sees the task and its job.
    let mut own = node_store(&p.platform.token, p.channel().await, &task.node);
    let listed = own
        .list(pb::NodeStoreListRequest {
            prefix: "/tasks/".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.kvs.len(), 1);
    let job_index = format!("/job-ids/{}", task.job_id);
    let found = own
        .get(pb::NodeStoreGetRequest {
            key: job_index.clone(),
        })
        .await
        .unwrap();
    assert!(
        found.into_inner().kv.is_some(),
        "a node reads the jobs of its tasks"
    );

    // Another node sees none of it, and may not write it.
    let mut other = node_store(&p.platform.token, p.channel().await, "other-node");
    let listed = other
        .list(pb::NodeStoreListRequest {
            prefix: "/tasks/".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.kvs.is_empty(), "{:?}", listed.kvs);
    let its_node = format!("/nodes/{}", task.node);
    for key in [key.as_str(), job_index.as_str(), "/tokens/", its_node.as_str()] {
        let found = other
            .get(pb::NodeStoreGetRequest { key: key.into() })
            .await
            .unwrap();
        assert!(found.into_inner().kv.is_none(), "{key} reads as missing");
    }
    let stolen = serde_json::json!({"id": task.id, "node": "other-node"}).to_string();
    let write = |key: &str, value: Vec<u8>| pb::NodeStoreTxnRequest {
        ops: vec![pb::StoreOp {
            key: key.into(),
            kind: "put".into(),
            value,
            expect: "any".into(),
            expect_revision: 0,
        }],
    };
    let refused = other.txn(write(&key, stolen.into_bytes())).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let refused = other
        .txn(write("/jobs/default/evil", b"{}".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let refused = other
        .list(pb::NodeStoreListRequest {
            prefix: "/tokens/".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // A node with no name is refused outright.
    let mut nameless = node_store(&p.platform.token, p.channel().await, "Not A Name");
    let refused = nameless
        .list(pb::NodeStoreListRequest {
            prefix: "/tasks/".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // Usage it reports for a task not on it counts for nothing; its own node's report does.
    let report = |memory_bytes| pb::AgentMessage {
        stats: Some(pb::TaskStatsReport {
            tasks: vec![pb::ReportedTaskStats {
                task_id: task.id.clone(),
                stats: Some(pb::TaskStats {
                    memory_bytes,
                    pids: 1,
                    ..Default::default()
                }),
            }],
        }),
        log: None,
    };
    let (spoof, spoofed) = tokio::sync::mpsc::channel(1);
    spoof.send(report(999)).await.unwrap();
    let _spoofing = other
        .session(tokio_stream::wrappers::ReceiverStream::new(spoofed))
        .await
        .unwrap();
    let (honest, reported) = tokio::sync::mpsc::channel(1);
    honest.send(report(111)).await.unwrap();
    let _reporting = own
        .session(tokio_stream::wrappers::ReceiverStream::new(reported))
        .await
        .unwrap();
    wait_for("the node's own report to show", || async {
        let shown = p.running("mine").await.remove(0).stats;
        shown.is_some_and(|s| s.memory_bytes == 111)
    })
    .await;
    let text = support::scrape(&p.url(""), &p.platform.token).await;
    assert!(
        !text.contains("node=\"other-node\""),
        "a spoofed report became series:\n{text}"
    );
    // The task is untouched.
    assert_eq!(p.running("mine").await.len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn a_job_no_node_satisfies_stays_pending_and_says_why() {
    let p = InProcess::start().await;
    let manifest = format!(
        "{}[placement]\nconstraints = [\"region = mars\"]\n",
        service("lander", 2, "exec sleep 1000")
    );
    p.submit(manifest).await;
    let want = "2 tasks not placed: 0 of 1 nodes fit: 1 constraint region = mars not met";
    let job = p.wait_job("lander", |j| j.reason == want).await;
    assert_eq!(job.state, "pending");
    let placement = job.spec.unwrap().placement.unwrap();
    assert_eq!(
        (placement.tier.as_str(), placement.constraints),
        ("flex", vec!["region = mars".to_owned()])
    );
    // It stays so: passes after it place nothing and keep the reason.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(p.tasks("lander").await.is_empty());
    let shown: pb::Job = p.get_json("/v1/jobs/lander").await;
    assert_eq!((shown.state.as_str(), shown.reason.as_str()), ("pending", want));

    // A job it does not constrain runs beside it.
    p.submit(service("free", 1, "exec sleep 1000")).await;
    p.wait_job("free", |j| j.state == "running").await;
    p.stop().await;
}

#[tokio::test]
async fn jobs_over_their_tenants_quota_are_refused_and_nothing_changes() {
    let p = InProcess::start().await;
    let http = reqwest::Client::new();
    let quota = serde_json::json!({
        "capacity_groups": [{"tier": "flex", "cpu": 0.5, "tasks": 3}]
    });
    let resp = http
        .put(p.url("/v1/tenants/default"))
        .bearer_auth(&p.platform.token)
        .json(&quota)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tenant: pb::Tenant = resp.json().await.unwrap();
    assert_eq!(
        (tenant.trusted, tenant.capacity_groups.len()),
        (false, 1),
        "{tenant:?}"
    );

    p.submit(service("web", 2, "exec sleep 1000")).await;
    let mut jobs = p.jobs();
    let refused = jobs
        .create_job(pb::CreateJobRequest {
            manifest: service("more", 4, "exec sleep 1000"),
            source: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "tenant `default` tier flex: cpu quota 0.5 cores, in use 0.2 cores, job asks 0.4 cores more; \
         tasks quota 3, in use 2, job asks 4 more; raise the quota with `paved tenants quota` or lower \
         instances or cpu"
    );
    let listed = jobs
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        listed.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["web"]
    );

    // Scaling over the quota is refused the same way, over JSON too; within it is fine.
    let scale = |instances: u32| {
        http.post(p.url("/v1/jobs/web/scale"))
            .bearer_auth(&p.platform.token)
            .json(&serde_json::json!({ "instances": instances }))
            .send()
    };
    let resp = scale(4).await.unwrap();
    assert_eq!(resp.status(), 412);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "failed_precondition");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tasks quota 3, in use 2, job asks 2 more"),
        "{message}"
    );
    let web = jobs
        .get_job(pb::GetJobRequest { job: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(web.instances, 2);
    assert_eq!(scale(3).await.unwrap().status(), 200);

    // Critical has no group: unlimited. Removing flex's group makes flex unlimited again.
    let critical = format!(
        "{}[placement]\ntier = \"critical\"\n",
        service("vip", 4, "exec sleep 1000")
    );
    p.submit(critical).await;
    let clear = serde_json::json!({ "remove_capacity_groups": ["flex"] });
    let resp = http
        .put(p.url("/v1/tenants/default"))
        .bearer_auth(&p.platform.token)
        .json(&clear)
        .send()
        .await
        .unwrap();
    let tenant: pb::Tenant = resp.json().await.unwrap();
    assert!(tenant.capacity_groups.is_empty(), "{tenant:?}");
    p.submit(service("more", 4, "exec sleep 1000")).await;
    p.stop().await;
}
