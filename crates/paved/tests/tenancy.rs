//! Tenancy and tokens through the whole platform: tenant tokens see only their own jobs, tasks,
//! logs and metrics; agent tokens only the agent protocol; tokens created and revoked through
//! the API (or by another server sharing the store) take effect at once; and the `paved token`
//! commands, run as a user runs them.

#[path = "common/support.rs"]
mod support;

use std::time::Duration;

use paved_api::v1 as pb;
use paved_control::Role;
use paved_control::auth::{TokenRecord, token_key};
use paved_control::repo::put_op;
use paved_store::{Expect, Op};
use support::{As, InProcess, service, wait_for};
use tonic::Code;

/// Asserts that a call failed with `code`; returns the message.
fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    what: &str,
) -> String {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    status.message().to_owned()
}

async fn series(who: &As, query: &str) -> Vec<pb::Series> {
    let req = pb::MetricsQueryRequest {
        query: query.into(),
        since_ms: 60_000,
        ..Default::default()
    };
    who.metrics().query(req).await.expect(query).into_inner().series
}

fn tenants_of(series: &[pb::Series]) -> Vec<String> {
    let mut tenants: Vec<String> = series
        .iter()
        .map(|s| s.labels.get("tenant").cloned().unwrap_or_default())
        .collect();
    tenants.sort();
    tenants.dedup();
    tenants
}

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_others_jobs_tasks_logs_or_metrics() {
    let p = InProcess::start().await;
    // Made through the API, used at once.
    let a = p.as_token(&p.create_token("tenant", "team-a", "a-ci").await);
    let b = p.as_token(&p.create_token("tenant", "team-b", "b-ci").await);

    let job = a
        .submit(service("web", 1, "echo secret-of-a; exec sleep 1000"))
        .await;
    assert_eq!(job.tenant, "team-a");
    let task = loop_until_running(&a, "web").await;
    assert_eq!(task.tenant, "team-a");
    wait_for("a to read its own task's log", || async {
        logs(&a, &task.id)
            .await
            .is_ok_and(|text| text.contains("secret-of-a"))
    })
    .await;

    // B learns nothing of A's job, by name, by id, or by tenant/name.
    let listed = b.jobs().list_jobs(pb::ListJobsRequest::default()).await.unwrap();
    assert!(listed.into_inner().jobs.is_empty());
    for name in ["web", job.id.as_str(), "team-a/web"] {
        let get = b.jobs().get_job(pb::GetJobRequest { job: name.into() }).await;
        // Word for word what a job that never existed gets.
        let message = refused(get, Code::NotFound, name);
        let never = format!("job {name:?} not found; `paved jobs` lists jobs");
        assert_eq!(message, never);
        let kill = b.jobs().kill_job(pb::KillJobRequest { job: name.into() }).await;
        refused(kill, Code::NotFound, name);
        let scale = pb::ScaleJobRequest {
            job: name.into(),
            instances: 3,
        };
        refused(b.jobs().scale_job(scale).await, Code::NotFound, name);
        let tasks = pb::ListTasksRequest {
            job: name.into(),
            states: vec![],
        };
        refused(b.tasks().list_tasks(tasks).await, Code::NotFound, name);
        let watch = pb::WatchJobsRequest { job: name.into() };
        refused(b.jobs().watch_jobs(watch).await, Code::NotFound, name);
    }
    let all_tasks = b
        .tasks()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap();
    assert!(all_tasks.into_inner().tasks.is_empty());
    for name in [task.id.as_str(), "web", "web/0", "team-a/web/0"] {
        let get = b.tasks().get_task(pb::GetTaskRequest { task: name.into() }).await;
        refused(get, Code::NotFound, name);
        let kill = b
            .tasks()
            .kill_task(pb::KillTaskRequest { task: name.into() })
            .await;
        refused(kill, Code::NotFound, name);
        let log = logs(&b, name).await;
        assert_eq!(log.map_err(|s| s.code()), Err(Code::NotFound), "{name}");
    }
    let http = reqwest::Client::new();
    for path in [
        format!("/v1/jobs/{}", job.id),
        format!("/v1/tasks/{}/logs", task.id),
    ] {
        let resp = http.get(p.url(&path)).bearer_auth(&b.token).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(!resp.text().await.unwrap().contains("secret-of-a"));
    }
    let status = b
        .system()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.jobs_by_state.is_empty(), "{status:?}");

    // Names are per tenant: B has a "web" of its own, and A's is untouched by all of the above.
    let b_job = b.submit(service("web", 1, "exec sleep 1000")).await;
    assert_ne!(b_job.id, job.id);
    let a_web = a
        .jobs()
        .get_job(pb::GetJobRequest { job: "web".into() })
        .await
        .unwrap();
    let a_web = a_web.into_inner();
    assert_eq!(
        (a_web.id.as_str(), a_web.instances, a_web.state.as_str()),
        (job.id.as_str(), 1, "running")
    );
    // The admin sees both, and names another tenant's job as tenant/name.
    let admin = p.as_admin();
    let all = admin
        .jobs()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap();
    assert_eq!(all.into_inner().jobs.len(), 2);
    let by_path = admin
        .jobs()
        .get_job(pb::GetJobRequest {
            job: "team-a/web".into(),
        })
        .await;
    assert_eq!(by_path.unwrap().into_inner().id, job.id);

    // Metrics: each tenant's queries are confined to its own series, whatever they ask for.
    loop_until_running(&b, "web").await;
    wait_for("both tenants' memory series", || async {
        tenants_of(&series(&admin, "paved_task_memory_bytes").await) == ["team-a", "team-b"]
    })
    .await;
    assert_eq!(
        tenants_of(&series(&b, "paved_task_memory_bytes").await),
        ["team-b"]
    );
    assert!(
        series(&b, r#"paved_task_memory_bytes{tenant="team-a"}"#)
            .await
            .is_empty()
    );
    let sum_a = series(&a, "sum by (tenant) (paved_task_memory_bytes)").await;
    assert_eq!(tenants_of(&sum_a), ["team-a"]);
    // The platform's own metrics carry no tenant: a tenant sees none of them.
    assert!(series(&b, "paved_api_requests_total").await.is_empty());
    assert!(!series(&admin, "paved_api_requests_total").await.is_empty());
    let scrape = http
        .get(p.url("/metrics"))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 403);
    let scrape = http
        .get(p.url("/metrics"))
        .bearer_auth(&p.platform.token)
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    p.stop().await;
}

#[tokio::test]
async fn agent_tokens_are_refused_outside_the_agent_protocol_and_tenants_outside_their_own() {
    let p = InProcess::start().await;
    let agent = p.as_token(&p.create_token("agent", "", "node-1").await);
    let message = refused(
        agent.jobs().list_jobs(pb::ListJobsRequest::default()).await,
        Code::PermissionDenied,
        "an agent listing jobs",
    );
    assert!(
        message.contains("agent token") && message.contains("node-1"),
        "{message}"
    );
    refused(
        agent.tokens().list_tokens(pb::ListTokensRequest {}).await,
        Code::PermissionDenied,
        "an agent listing tokens",
    );
    let submit = pb::CreateJobRequest {
        manifest: service("x", 0, "sleep 1"),
        source: String::new(),
    };
    refused(
        agent.jobs().create_job(submit).await,
        Code::PermissionDenied,
        "an agent creating a job",
    );
    let resp = reqwest::Client::new()
        .get(p.url("/v1/jobs"))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "permission_denied", "{body}");

    // A tenant reads what is shared, changes none of it, and administers nothing.
    let tenant = p.as_token(&p.create_token("tenant", "shop", "shop-ci").await);
    tenant
        .routing()
        .list_routes(pb::ListRoutesRequest {})
        .await
        .unwrap();
    tenant
        .routing()
        .list_faults(pb::ListFaultsRequest {})
        .await
        .unwrap();
    let route = pb::Route {
        name: "shop".into(),
        backends: vec![pb::Backend {
            job: "web".into(),
            port: String::new(),
            weight: 100,
        }],
        ..Default::default()
    };
    let put = pb::PutRouteRequest {
        route: Some(route),
        replace: true,
    };
    refused(
        tenant.routing().put_route(put).await,
        Code::PermissionDenied,
        "a tenant routing",
    );
    refused(
        tenant.routing().halt_faults(pb::HaltFaultsRequest {}).await,
        Code::PermissionDenied,
        "a tenant halting faults",
    );
    let routed = "name = \"web\"\nkind = \"service\"\ninstances = 0\ncommand = [\"sleep\", \"1\"]\n\
                  ports = [{ name = \"http\" }]\n[[routes]]\nhost = \"shop.example.com\"\n";
    let submit = pb::CreateJobRequest {
        manifest: routed.into(),
        source: "web.toml".into(),
    };
    let message = refused(
        tenant.jobs().create_job(submit).await,
        Code::PermissionDenied,
        "a tenant declaring routes",
    );
    assert!(message.contains("[[routes]]"), "{message}");
    let trust = pb::SetTenantRequest {
        name: "shop".into(),
        trusted: Some(true),
        ..Default::default()
    };
    refused(
        tenant.system().set_tenant(trust).await,
        Code::PermissionDenied,
        "a tenant trusting itself",
    );
    let create = pb::CreateTokenRequest {
        role: "admin".into(),
        ..Default::default()
    };
    let message = refused(
        tenant.tokens().create_token(create).await,
        Code::PermissionDenied,
        "a tenant making an admin token",
    );
    assert!(
        message.contains("role tenant") && message.contains("role admin"),
        "{message}"
    );
    p.stop().await;
}

#[tokio::test]
async fn revoked_tokens_are_refused_and_tokens_follow_the_store() {
    let p = InProcess::start().await;
    let secret = p.create_token("tenant", "team-a", "short-lived").await;
    let a = p.as_token(&secret);
    a.jobs().list_jobs(pb::ListJobsRequest::default()).await.unwrap();
    let revoke = pb::RevokeTokenRequest {
        name: "short-lived".into(),
    };
    let revoked = p.as_admin().tokens().revoke_token(revoke.clone()).await.unwrap();
    assert_eq!(revoked.into_inner().tenant, "team-a");
    refused(
        a.jobs().list_jobs(pb::ListJobsRequest::default()).await,
        Code::Unauthenticated,
        "a revoked token",
    );
    refused(
        p.as_admin().tokens().revoke_token(revoke).await,
        Code::NotFound,
        "revoking twice",
    );

    // Another server sharing the store creates and revokes a token: this one follows.
    let other = "pvd_made_by_another_server_sharing_the_store";
    let record = TokenRecord {
        role: Role::Tenant,
        tenant: Some("team-c".into()),
        name: "elsewhere".into(),
        created_at_ms: support::now_ms(),
    };
    let repo = p.platform.repo();
    repo.commit(vec![put_op(token_key(other), &record, Expect::Absent).unwrap()])
        .await
        .unwrap();
    let c = p.as_token(other);
    wait_within("a token written by another server to be honoured", || async {
        c.jobs().list_jobs(pb::ListJobsRequest::default()).await.is_ok()
    })
    .await;
    let delete = Op::Delete {
        key: token_key(other),
        expect: Expect::Any,
    };
    repo.commit(vec![delete]).await.unwrap();
    wait_within("a token deleted by another server to be refused", || async {
        let listed = c.jobs().list_jobs(pb::ListJobsRequest::default()).await;
        listed.is_err_and(|s| s.code() == Code::Unauthenticated)
    })
    .await;

    // Names are checked and unique.
    let bad = [
        ("tenant", "", "x", "pass --tenant"),
        ("tenant", "Team A", "x", "not a tenant name"),
        ("agent", "team-a", "x", "drop --tenant"),
        ("root", "", "x", "not a role"),
        ("agent", "", "Node 1", "not a token name"),
        ("admin", "", "admin", "exists"),
    ];
    for (role, tenant, name, want) in bad {
        let req = pb::CreateTokenRequest {
            role: role.into(),
            tenant: tenant.into(),
            name: name.into(),
        };
        let err = p.as_admin().tokens().create_token(req).await.unwrap_err();
        assert!(err.message().contains(want), "{role} {tenant} {name}: {err:?}");
    }
    let listed = p
        .as_admin()
        .tokens()
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap();
    let names: Vec<String> = listed.into_inner().tokens.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["admin"]);
    p.stop().await;
}

#[tokio::test]
async fn token_commands_work_end_to_end() {
    let p = InProcess::start().await;
    let server = format!("http://{}", p.platform.listen);
    let admin = p.platform.token.clone();
    let cli = |token: String, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let server = server.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_paved"))
                .args(args)
                .args(["--server", &server])
                .env("PAVED_TOKEN", token)
                .env_remove("PAVED_DATA")
                .env_remove("RUST_LOG")
                .output()
                .await
                .expect("the paved binary runs");
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            (
                out.status.code().unwrap_or(-1),
                text(out.stdout),
                text(out.stderr),
            )
        }
    };
    let create = [
        "token", "create", "--role", "tenant", "--tenant", "shop", "--name", "shop-ci",
    ];
    let (code, out, err) = cli(admin.clone(), &create).await;
    assert_eq!(code, 0, "{out}{err}");
    let secret = out.trim().to_owned();
    assert!(secret.starts_with("pvd_") && !secret.contains(' '), "{out}");
    assert!(err.contains("shop-ci") && err.contains("only time"), "{err}");

    let (code, out, err) = cli(admin.clone(), &["tokens"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("shop-ci"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("tenant") && row.contains("shop"), "{row}");
    assert!(!out.contains(&secret) && !out.contains(&admin), "{out}");
    let (code, out, _) = cli(admin.clone(), &["tokens", "-o", "json"]).await;
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t["name"] == "shop-ci" && t["tenant"] == "shop"),
        "{out}"
    );
    let (code, out, _) = cli(
        admin.clone(),
        &["token", "create", "--role", "agent", "-o", "json"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["token"]["role"], "agent", "{out}");
    assert!(
        created["secret"].as_str().is_some_and(|s| s.starts_with("pvd_")),
        "{out}"
    );

    // The tenant's token works for its jobs, not for tokens.
    let (code, _, err) = cli(secret.clone(), &["jobs"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(secret.clone(), &["tokens"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not allowed"), "{err}");
    // Bad input is refused with exit code 2: by clap, and by the server.
    let (code, _, err) = cli(admin.clone(), &["token", "create", "--role", "tenant"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(
        admin.clone(),
        &["token", "create", "--role", "agent", "--tenant", "shop"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("drop --tenant"), "{err}");

    let (code, out, err) = cli(admin.clone(), &["token", "revoke", "shop-ci"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked token shop-ci"), "{out}");
    let (code, _, err) = cli(secret.clone(), &["jobs"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("refused the token"), "{err}");
    let (code, _, err) = cli(admin.clone(), &["token", "revoke", "shop-ci"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    p.stop().await;
}

/// Polls `check` every 20 ms for up to 2 s: what "within a second or so" allows.
async fn wait_within<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job's first task once it runs, as `who` sees it.
async fn loop_until_running(who: &As, job: &str) -> pb::Task {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let req = pb::ListTasksRequest {
            job: job.into(),
            states: vec!["running".into()],
        };
        let tasks = who.tasks().list_tasks(req).await.unwrap().into_inner().tasks;
        if let Some(task) = tasks.into_iter().next() {
            return task;
        }
        assert!(std::time::Instant::now() < deadline, "{job} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole stdout log of a task so far, or the status that refused it.
async fn logs(who: &As, task: &str) -> Result<String, tonic::Status> {
    let req = pb::StreamLogsRequest {
        task: task.into(),
        stream: "stdout".into(),
        follow: false,
        tail_bytes: 0,
    };
    let mut stream = who.tasks().stream_logs(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend(chunk.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
