//! The sandbox through the whole platform: what the API reports about isolated tasks.

#[path = "common/support.rs"]
mod support;

use paved_api::v1 as pb;
use support::{InProcess, wait_for};

#[tokio::test]
async fn running_tasks_report_live_stats() {
    let p = InProcess::start().await;
    let manifest = "name = \"busy\"\nkind = \"service\"\ninstances = 1\n\
                    command = [\"/bin/sh\", \"-c\", \"while true; do :; done\"]\n\
                    [resources]\ncpu = 0.5\nmemory = \"64MiB\"\n";
    p.submit(manifest).await;
    let nodes: pb::ListNodesResponse = p.get_json("/v1/nodes").await;
    let runtime = &nodes.nodes[0].runtime;
    assert!(runtime.starts_with("sandbox, cgroup v"), "{runtime}");
    wait_for("cpu and memory stats of the busy task", || async {
        p.running("busy")
            .await
            .first()
            .and_then(|t| t.stats)
            .is_some_and(|s| s.cpu_cores > 0.1 && s.cpu_cores < 0.9 && s.memory_bytes > 0 && s.pids >= 1)
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_reported_oom_killed() {
    let p = InProcess::start().await;
    let manifest = "name = \"hog\"\nkind = \"batch\"\ninstances = 1\n\
                    command = [\"/bin/sh\", \"-c\", \"x=0123456789abcdef; while true; do x=$x$x; done\"]\n\
                    [resources]\nmemory = \"32MiB\"\n[restart]\npolicy = \"never\"\n";
    p.submit(manifest).await;
    let job = p.wait_job("hog", |j| j.state == "failed").await;
    let tasks = p.tasks("hog").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].state, "failed", "{job:?}");
    assert!(tasks[0].reason.starts_with("oom-killed"), "{:?}", tasks[0].reason);
    p.stop().await;
}

#[tokio::test]
async fn admins_mark_tenants_trusted_over_json() {
    let p = InProcess::start().await;
    let http = reqwest::Client::new();
    let put = |name: &str, body: serde_json::Value| {
        http.put(p.url(&format!("/v1/tenants/{name}")))
            .bearer_auth(&p.platform.token)
            .json(&body)
            .send()
    };
    let resp = put("default", serde_json::json!({"trusted": true}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = put("Bad_Name", serde_json::json!({"trusted": true}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("not a tenant name"));
    let list: pb::ListTenantsResponse = p.get_json("/v1/tenants").await;
    let names: Vec<(&str, bool)> = list
        .tenants
        .iter()
        .map(|t| (t.name.as_str(), t.trusted))
        .collect();
    assert_eq!(names, [("default", true)]);
    p.stop().await;
}

#[tokio::test]
async fn the_process_driver_needs_a_trusted_tenant() {
    let p = InProcess::start().await;
    let manifest = "name = \"plain\"\nkind = \"batch\"\ninstances = 1\ndriver = \"process\"\n\
                    command = [\"/bin/sh\", \"-c\", \"echo $$\"]\n";
    let request = || pb::CreateJobRequest {
        manifest: manifest.into(),
        source: String::new(),
    };
    let refused = p
        .jobs()
        .create_job(request())
        .await
        .expect_err("an untrusted tenant");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("paved tenants trust default"),
        "{}",
        refused.message()
    );
    let http = reqwest::Client::new();
    let resp = http
        .put(p.url("/v1/tenants/default"))
        .bearer_auth(&p.platform.token)
        .json(&serde_json::json!({"trusted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    p.submit(manifest).await;
    p.wait_job("plain", |j| j.state == "complete").await;
    let tasks = p.tasks("plain").await;
    // Unsandboxed: the shell sees its host pid, not 2 as in a sandbox.
    let pid: u32 = p.logs(&tasks[0].id, "stdout").await.trim().parse().unwrap();
    assert!(pid > 2, "pid {pid}");
    p.stop().await;
}

#[path = "../../paved-image/tests/image/support.rs"]
#[allow(dead_code)]
mod image_support;

/// An image from a real registry on loopback runs with its own entrypoint, environment, user and
/// working directory, on a root of its own.
#[tokio::test]
async fn an_image_from_the_registry_runs_with_its_own_config() {
    let registry = image_support::Registry::start(None);
    registry.push_fixture(None);
    let p = InProcess::start().await;
    let reference = registry.reference();
    let own = format!("name = \"own\"\nkind = \"batch\"\ninstances = 1\nimage = \"{reference}\"\n");
    let script = "echo $GREETING; id -u; pwd; test -e /usr/bin/python3 && echo host-visible; echo x > /tmp/f && echo writable";
    let layout = image_support::fixture().layout.display().to_string();
    let offline = format!(
        "name = \"offline\"\nkind = \"batch\"\ninstances = 1\nimage = \"oci:{layout}:{}\"\n",
        image_support::TAG
    );
    let custom = format!(
        "name = \"custom\"\nkind = \"batch\"\ninstances = 1\nimage = \"{reference}\"\n\
         command = [\"/bin/sh\", \"-c\", \"{script}\"]\n"
    );
    for manifest in [own, custom, offline] {
        p.submit(manifest).await;
    }
    for name in ["own", "custom", "offline"] {
        let job = p
            .wait_job(name, |j| j.state == "complete" || j.state == "failed")
            .await;
        assert_eq!(job.state, "complete", "{job:?}");
    }
    let own = p.tasks("own").await;
    assert_eq!(p.logs(&own[0].id, "stdout").await, "hi\n");
    let offline = p.tasks("offline").await;
    assert_eq!(
        p.logs(&offline[0].id, "stdout").await,
        "hi\n",
        "from the OCI layout"
    );
    let custom = p.tasks("custom").await;
    assert_eq!(
        p.logs(&custom[0].id, "stdout").await,
        "hello\n1000\n/work\nwritable\n"
    );
    p.stop().await;
}

/// Killing a job leaves nothing of its sandboxed tasks: no process, cgroup, mount, or root
/// directory (the logs stay, for `paved logs`).
#[tokio::test]
async fn a_killed_job_leaves_nothing_behind() {
    let p = InProcess::start().await;
    let manifest = "name = \"gone\"\nkind = \"service\"\ninstances = 2\n\
                    command = [\"/bin/sh\", \"-c\", \"sleep 1000 & sleep 1000\"]\n";
    p.submit(manifest).await;
    wait_for("two running tasks", || async {
        p.running("gone").await.len() == 2
    })
    .await;
    let tasks = p.running("gone").await;
    p.jobs()
        .kill_job(pb::KillJobRequest { job: "gone".into() })
        .await
        .unwrap();
    p.wait_job("gone", |j| j.state == "killed").await;
    let layout = paved_runtime::sandbox::Layout::detect().unwrap();
    let tasks_dir = p.platform.data.join("agent/tasks");
    wait_for("every trace of the tasks to go", || async {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        tasks.iter().all(|t| {
            let dir = tasks_dir.join(&t.id);
            let cgroups_gone = layout.task(&t.id).dirs.iter().all(|d| !d.path.exists());
            let process_gone = !support::alive(t.pid.unwrap());
            let roots_gone = ["rootfs", "upper", "overlay-work"]
                .iter()
                .all(|d| !dir.join(d).exists());
            cgroups_gone && process_gone && roots_gone && !mounts.contains(&t.id)
        })
    })
    .await;
    assert!(
        tasks_dir.join(&tasks[0].id).join("stdout.log").exists(),
        "the logs are kept"
    );
    p.stop().await;
}

/// A private registry: pulls fail, naming why, until the agent has credentials for it.
#[tokio::test]
async fn a_private_registry_needs_credentials_in_registries_toml() {
    let credentials = ("ci", "s3cret");
    let registry = image_support::Registry::start(Some(credentials));
    registry.push_fixture(Some(credentials));
    let p = InProcess::start().await;
    let reference = registry.reference();
    p.submit(format!(
        "name = \"private\"\nkind = \"batch\"\ninstances = 1\nimage = \"{reference}\"\n"
    ))
    .await;
    wait_for("a pull refused for lack of credentials", || async {
        p.tasks("private")
            .await
            .first()
            .is_some_and(|t| t.reason.contains("cannot pull image"))
    })
    .await;
    let host = reference.split('/').next().unwrap();
    let file = p.platform.data.join("agent").join(paved_agent::REGISTRIES_FILE);
    let text = format!("[[registry]]\nhost = \"{host}\"\nusername = \"ci\"\npassword = \"s3cret\"\n");
    std::fs::write(file, text).unwrap();
    let job = p
        .wait_job("private", |j| j.state == "complete" || j.state == "failed")
        .await;
    assert_eq!(job.state, "complete", "{job:?}");
    p.stop().await;
}
