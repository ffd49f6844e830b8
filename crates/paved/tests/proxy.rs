//! The edge router inside `paved up`: real HTTP servers run as tasks, routes and faults go
//! through the API, and requests go through the proxy.

#[path = "common/support.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use paved_api::v1 as pb;
use support::{InProcess, wait_for};
use tonic::transport::Channel;

/// A service of `instances` HTTP servers that answer every GET with their job's name.
fn web(name: &str, instances: u32) -> String {
    format!(
        "name = \"{name}\"\nkind = \"service\"\ninstances = {instances}\n\
         command = [\"/bin/sh\", \"-c\", \"mkdir -p www && echo {name} > www/index.html && \
         exec python3 -m http.server $PORT --bind 127.0.0.1 -d www\"]\n\
         [resources]\ncpu = 0.2\nmemory = \"64MiB\"\n[[ports]]\nname = \"http\"\n"
    )
}

impl InProcess {
    fn proxy_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.platform.proxy.expect("the edge router runs")
        )
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(&self.platform.token)
            .json(&body)
            .send()
            .await
            .expect("a response")
    }

    async fn add_route(&self, name: &str, to: &[(&str, u32)]) {
        let backends: Vec<_> = to
            .iter()
            .map(|(job, weight)| serde_json::json!({"job": job, "weight": weight}))
            .collect();
        let route = serde_json::json!({"name": name, "path_prefix": "/", "backends": backends, "retries": 3});
        let response = self.api(reqwest::Method::POST, "/v1/routes", route).await;
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    /// `n` GETs through the proxy: how many answers each body (or status) got.
    async fn tally(&self, client: &reqwest::Client, n: usize) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            let key = match client.get(self.proxy_url("/")).send().await {
                Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default().trim().to_owned(),
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            };
            *seen.entry(key).or_default() += 1;
        }
        seen
    }

    async fn wait_serving(&self, jobs: &[&str]) {
        let client = reqwest::Client::new();
        wait_for("the proxy to reach every job", || async {
            let seen = self.tally(&client, 20).await;
            jobs.iter().all(|job| seen.contains_key(*job))
        })
        .await;
    }
}

#[tokio::test]
async fn traffic_splits_by_weight_and_faults_hit_their_share_until_halted() {
    let p = InProcess::start().await;
    p.submit(web("blue", 2)).await;
    p.submit(web("green", 1)).await;
    p.add_route("web", &[("blue", 80), ("green", 20)]).await;
    p.wait_serving(&["blue", "green"]).await;

    let client = reqwest::Client::new();
    let seen = p.tally(&client, 500).await;
    let green = seen.get("green").copied().unwrap_or(0) as f64 / 500.0;
    assert_eq!(
        seen.get("blue").copied().unwrap_or(0) + seen.get("green").copied().unwrap_or(0),
        500,
        "{seen:?}"
    );
    assert!(
        (0.14..=0.26).contains(&green),
        "green's share {green} of {seen:?}, expected 0.2"
    );

    let fault = serde_json::json!({"route": "web", "abort_status": 503, "percent": 50.0, "for_ms": 600_000});
    let response = p.api(reqwest::Method::POST, "/v1/faults", fault).await;
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    wait_for("the fault to reach the proxy", || async {
        p.tally(&client, 20).await.contains_key("503")
    })
    .await;
    let seen = p.tally(&client, 400).await;
    let aborted = seen.get("503").copied().unwrap_or(0) as f64 / 400.0;
    assert!(
        (0.42..=0.58).contains(&aborted),
        "aborted share {aborted} of {seen:?}, expected 0.5"
    );

    let response = p
        .api(reqwest::Method::POST, "/v1/faults/halt", serde_json::json!({}))
        .await;
    let halted: pb::HaltFaultsResponse = response.json().await.unwrap();
    assert_eq!(halted.removed, 1);
    wait_for("the halt to reach the proxy", || async {
        !p.tally(&client, 20).await.contains_key("503")
    })
    .await;
    let seen = p.tally(&client, 200).await;
    assert!(!seen.contains_key("503"), "{seen:?}");
    p.stop().await;
}

#[tokio::test]
async fn scaling_down_and_killing_a_task_under_load_fail_no_request() {
    let p = InProcess::start().await;
    p.submit(web("steady", 3)).await;
    p.add_route("steady", &[("steady", 100)]).await;
    p.wait_serving(&["steady"]).await;

    // Requests keep flowing, one after another, while the job shrinks and a task dies.
    let url = p.proxy_url("/");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut outcomes: HashMap<String, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline {
            let key = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => "ok".to_owned(),
                Ok(r) => format!(
                    "{} {}",
                    r.status().as_u16(),
                    r.text().await.unwrap_or_default().trim()
                ),
                Err(e) => format!("error: {e}"),
            };
            *outcomes.entry(key).or_default() += 1;
        }
        outcomes
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scale = pb::ScaleJobRequest {
        job: "steady".into(),
        instances: 2,
    };
    p.jobs().scale_job(scale).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = p.running("steady").await.into_iter().find_map(|t| t.pid);
    let Some(victim) = victim else {
        panic!("no running task with a pid: {:#?}", p.tasks("steady").await);
    };
    support::kill9(victim);
    let outcomes = load.await.unwrap();
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    assert!(ok > 50, "too few requests to tell: {outcomes:?}");
    assert_eq!(outcomes.len(), 1, "every request succeeds: {outcomes:?}");
    p.stop().await;
}

#[tokio::test]
async fn routes_are_validated_and_listed() {
    let p = InProcess::start().await;
    let bad = serde_json::json!({"name": "Bad Name", "backends": [{"job": "web", "weight": 1}]});
    let response = p.api(reqwest::Method::POST, "/v1/routes", bad).await;
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("route name"), "{body}");
    p.add_route("shop", &[("shop-v1", 90), ("shop-v2", 10)]).await;
    let again = serde_json::json!({"name": "shop", "backends": [{"job": "x", "weight": 1}]});
    assert_eq!(
        p.api(reqwest::Method::POST, "/v1/routes", again).await.status(),
        409
    );
    let listed: pb::ListRoutesResponse = p.get_json("/v1/routes").await;
    assert_eq!(listed.routes.len(), 1);
    let weights: Vec<u32> = listed.routes[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [90, 10]);
    // A route to a job with no running task answers 503, naming the job, once the proxy has it.
    wait_for("the route to reach the proxy", || async {
        reqwest::get(p.proxy_url("/"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let body = reqwest::get(p.proxy_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("shop-v"), "{body}");
    p.stop().await;
}

#[tokio::test]
async fn a_job_declares_its_route_which_goes_with_the_job() {
    let p = InProcess::start().await;
    // Another route is named "taken": a job may not take its name. (Both routes below match
    // every path; equal prefixes go to the first name, "owned".)
    p.add_route("taken", &[("someone", 100)]).await;
    let clash = format!("{}[[routes]]\nname = \"taken\"\n", web("clash", 1));
    let request = pb::CreateJobRequest {
        manifest: clash,
        source: "clash.toml".into(),
    };
    let refused = p.jobs().create_job(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("route \"taken\" already exists"),
        "{}",
        refused.message()
    );
    assert!(
        p.jobs()
            .get_job(pb::GetJobRequest { job: "clash".into() })
            .await
            .is_err(),
        "a refused job leaves nothing behind"
    );

    let job = p
        .submit(format!("{}[[routes]]\npath = \"/\"\n", web("owned", 2)))
        .await;
    let declared = job.spec.as_ref().map(|s| s.routes.len());
    assert_eq!(declared, Some(1), "the job shows the route it declares");
    let listed: pb::ListRoutesResponse = p.get_json("/v1/routes").await;
    let route = listed.routes.iter().find(|r| r.name == "owned");
    let route = route.unwrap_or_else(|| panic!("route listed: {listed:?}"));
    assert_eq!(route.owner, "job:owned");
    assert_eq!(route.backends[0].job, "owned");
    p.wait_serving(&["owned"]).await;

    // Killed, the job takes its route with it; the other route stays.
    p.jobs()
        .kill_job(pb::KillJobRequest { job: "owned".into() })
        .await
        .unwrap();
    wait_for("the job's route to go", || async {
        let listed: pb::ListRoutesResponse = p.get_json("/v1/routes").await;
        listed.routes.iter().all(|r| r.name != "owned")
    })
    .await;
    let listed: pb::ListRoutesResponse = p.get_json("/v1/routes").await;
    let names: Vec<&str> = listed.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["taken"]);

    // The name is free again for a new job of that name.
    p.submit(format!("{}[[routes]]\npath = \"/\"\n", web("owned", 1)))
        .await;
    p.wait_serving(&["owned"]).await;
    p.stop().await;
}

#[tokio::test]
async fn the_edge_router_terminates_tls_from_certificate_files() {
    let certs = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = paved_proxy::TlsConfig {
        cert_chain: cert,
        private_key: key,
    };
    let p = InProcess::start_configured(tempfile::tempdir().unwrap(), |o| o.proxy_tls = Some(tls)).await;
    p.submit(format!("{}[[routes]]\n", web("secure", 1))).await;

    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let port = p.platform.proxy.unwrap().port();
    let url = format!("https://localhost:{port}/");
    wait_for("the job to answer over TLS", || async {
        match client.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default().trim() == "secure",
            Err(_) => false,
        }
    })
    .await;
    // Plain HTTP to a TLS listener gets no answer.
    let plain = reqwest::get(format!("http://localhost:{port}/")).await;
    assert!(plain.is_err(), "{plain:?}");
    p.stop().await;
}

/// `paved proxy` as its own process, following the server's routes over the API.
struct StandaloneProxy {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl StandaloneProxy {
    fn start(p: &InProcess) -> StandaloneProxy {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paved"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--server"])
            .arg(p.url(""))
            .args(["--token", &p.platform.token])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start paved proxy");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        // "paved proxy routing http://127.0.0.1:PORT by the routes of ..."
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://")?.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        StandaloneProxy { child, addr }
    }
}

impl Drop for StandaloneProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_standalone_proxy_follows_routes_faults_and_tasks_live() {
    let p = InProcess::start().await;
    let edge = StandaloneProxy::start(&p);
    let url = format!("http://{}/", edge.addr);
    let client = reqwest::Client::new();
    let get = |header: Option<&str>| {
        let mut request = client.get(&url);
        if let Some(value) = header {
            request = request.header("x-chaos", value);
        }
        async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default().trim().to_owned(),
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            }
        }
    };
    // Nothing routed yet: the proxy answers 404 for an unknown route.
    assert_eq!(get(None).await, "404");

    p.submit(format!("{}[[routes]]\n", web("far", 1))).await;
    wait_for("the standalone proxy to reach the job", || async {
        get(None).await == "far"
    })
    .await;

    let fault = serde_json::json!({"route": "far", "abort_status": 418, "percent": 100.0,
        "header_name": "x-chaos", "header_value": "1", "for_ms": 600_000});
    let response = p.api(reqwest::Method::POST, "/v1/faults", fault).await;
    assert!(response.status().is_success());
    wait_for("the fault to reach the standalone proxy", || async {
        get(Some("1")).await == "418"
    })
    .await;
    assert_eq!(
        get(None).await,
        "far",
        "requests without the header are untouched"
    );

    p.jobs()
        .kill_job(pb::KillJobRequest { job: "far".into() })
        .await
        .unwrap();
    wait_for("the killed job's route to leave the proxy", || async {
        get(None).await == "404"
    })
    .await;
    drop(edge);
    p.stop().await;
}

/// A job whose task is a real gRPC server: the `paved` binary itself as `paved server` on the
/// task's port, with its data in the task's directory. It runs with the process driver (its
/// tenant trusted) because the sandbox shows a task only the host's system directories, not
/// the build's binary.
fn grpc_server(name: &str) -> String {
    let paved = env!("CARGO_BIN_EXE_paved");
    format!(
        "name = \"{name}\"\nkind = \"service\"\ninstances = 1\ndriver = \"process\"\n\
         command = [\"/bin/sh\", \"-c\", \"exec {paved} server --listen 127.0.0.1:$PORT --data data\"]\n\
         [resources]\ncpu = 0.5\nmemory = \"256MiB\"\n[[ports]]\nname = \"grpc\"\n[[routes]]\n"
    )
}

#[tokio::test]
async fn a_grpc_health_check_goes_through_the_proxy_to_a_task() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let p = InProcess::start().await;
    let trust = serde_json::json!({"trusted": true});
    let response = p.api(reqwest::Method::PUT, "/v1/tenants/default", trust).await;
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    p.submit(grpc_server("health")).await;

    // h2c with prior knowledge to the proxy's address; the route sends it to the task.
    let proxy = p.platform.proxy.expect("the edge router runs");
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    // Until the task listens, the proxy answers 502/503, which tonic reports as errors.
    wait_for("the task's health service to answer through the proxy", || {
        let mut health = health.clone();
        async move { health.check(check("")).await.is_ok() }
    })
    .await;

    for service in ["", "paved.v1.Jobs"] {
        let answer = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "service {service:?}");
    }
    // A gRPC error status (in a trailers-only response) comes back as the server sent it.
    let unknown = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    // A server stream: its first message arrives while the stream stays open.
    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status(), ServingStatus::Serving);
    drop(watch);
    p.stop().await;
}
