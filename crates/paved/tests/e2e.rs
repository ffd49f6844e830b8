//! End-to-end tests: the `paved` binary as a user runs it — `paved up` as its own process, the
//! CLI against it, `kill -9` and restart on the same data.

#[path = "common/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PAVED: &str = env!("CARGO_BIN_EXE_paved");

/// A `paved up` process on a free port.
struct Up {
    child: Child,
    data: PathBuf,
    server: String,
}

impl Up {
    fn start(data: &Path) -> Up {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Up::start_on(data, port)
    }

    fn start_on(data: &Path, port: u16) -> Up {
        let child = Command::new(PAVED)
            .args([
                "up",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--proxy",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let up = Up {
            child,
            data: data.to_owned(),
            server: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while up.cli(&["status"]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "paved up did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    /// Runs the CLI against this server; the token comes from the data dir, as for a user.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(PAVED)
            .args(args)
            .env("PAVED_SERVER", &self.server)
            .env("PAVED_DATA", &self.data)
            .env_remove("PAVED_TOKEN")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "paved {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn tasks(&self, job: &str) -> Vec<Value> {
        self.json(&["tasks", "--job", job]).as_array().unwrap().clone()
    }

    fn running_pids(&self, job: &str) -> Vec<u64> {
        let mut pids: Vec<u64> = self
            .tasks(job)
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| t["pid"].as_u64())
            .collect();
        pids.sort();
        pids
    }

    fn wait(&self, what: &str, check: impl Fn(&Up) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Ctrl-C, as a user stops it; returns its exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Up {
    /// A failed test must not leave its server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn a_user_runs_a_batch_and_a_service_then_scales_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let countdown = examples().join("countdown.toml");
    let web = examples().join("hello-web.toml");

    up.ok(&["run", countdown.to_str().unwrap(), "--wait"]);
    let job = up.json(&["job", "countdown"]);
    assert_eq!(job["state"], "complete", "{job}");
    assert!(up.ok(&["logs", "countdown"]).contains("liftoff"));

    up.ok(&["run", web.to_str().unwrap(), "--wait"]);
    let tasks = up.tasks("hello-web");
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert_eq!(t["state"], "running", "{t}");
        for key in [
            "id",
            "job_id",
            "node",
            "reason",
            "restarts",
            "exit_code",
            "pid",
            "ports",
        ] {
            assert!(t.get(key).is_some(), "task JSON lacks {key}: {t}");
        }
        let port = t["ports"]["http"].as_u64().unwrap();
        wait_http(u16::try_from(port).unwrap());
    }
    let jobs = up.json(&["jobs"]);
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"countdown") && names.contains(&"hello-web"),
        "{jobs}"
    );
    for key in ["id", "name", "kind", "state", "instances"] {
        assert!(jobs[0].get(key).is_some(), "job JSON lacks {key}");
    }

    // `paved top` shows every running task with its live usage once the agent has sampled it.
    up.wait("stats in paved top", |u| {
        let top = u.json(&["top", "--once"]);
        let rows = top.as_array().unwrap();
        rows.len() == 2
            && rows
                .iter()
                .all(|t| t["stats"]["memory_bytes"].as_u64().unwrap_or(0) > 0)
    });
    let table = up.ok(&["top", "--once"]);
    assert!(table.starts_with("TASK") && table.contains("MEMORY"), "{table}");
    assert!(
        up.ok(&["tenants", "trust", "default"])
            .contains("tenant default is trusted")
    );
    let tenants = up.json(&["tenants"]);
    assert_eq!(
        (tenants[0]["name"].as_str(), tenants[0]["trusted"].as_bool()),
        (Some("default"), Some(true))
    );

    up.ok(&["scale", "hello-web", "3"]);
    up.wait("3 running", |u| u.running_pids("hello-web").len() == 3);
    let pids = up.running_pids("hello-web");
    up.ok(&["kill", "hello-web"]);
    up.wait("all killed", |u| {
        u.tasks("hello-web").iter().all(|t| t["state"] == "killed")
    });
    for pid in pids {
        assert!(!support::alive(pid as u32), "pid {pid} survived its job");
    }

    let status = up.interrupt();
    assert!(status.success(), "Ctrl-C ends paved up cleanly: {status}");
}

#[test]
fn kill_9_loses_no_acknowledged_job_and_tasks_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let manifest = dir.path().join("sleepy.toml");
    std::fs::write(
        &manifest,
        "name = \"sleepy\"\nkind = \"service\"\ninstances = 2\ncommand = [\"sleep\", \"1000\"]\n",
    )
    .unwrap();
    up.ok(&["run", manifest.to_str().unwrap(), "--wait"]);
    let pids = up.running_pids("sleepy");
    assert_eq!(pids.len(), 2);

    // Writes racing a kill -9: every job the API acknowledged must be there after the restart.
    let server = up.server.clone();
    let data = up.data.clone();
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..200 {
            let path = data.join(format!("burst-{i}.toml"));
            std::fs::write(
                &path,
                format!("name = \"burst-{i}\"\nkind = \"service\"\ninstances = 0\ncommand = [\"true\"]\n"),
            )
            .unwrap();
            let out = Command::new(PAVED)
                .args(["run", path.to_str().unwrap()])
                .env("PAVED_SERVER", &server)
                .env("PAVED_DATA", &data)
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            acked.push(format!("burst-{i}"));
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(1500));
    let port: u16 = up.server.rsplit(':').next().unwrap().parse().unwrap();
    up.kill9();
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty(), "some writes were acknowledged before the kill");

    let up = Up::start_on(dir.path(), port);
    let jobs = up.json(&["jobs"]);
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    for name in &acked {
        assert!(
            names.contains(&name.as_str()),
            "acknowledged job {name} lost after kill -9"
        );
    }
    // The agent re-adopted the running tasks: same processes, no restarts.
    up.wait("sleepy re-adopted", |u| u.running_pids("sleepy").len() == 2);
    assert_eq!(up.running_pids("sleepy"), pids);
    assert!(up.tasks("sleepy").iter().all(|t| t["restarts"] == 0));

    // And the control loops still converge: kill a task's process, it comes back.
    support::kill9(pids[0] as u32);
    up.wait("restart after outside kill", |u| {
        u.tasks("sleepy")
            .iter()
            .any(|t| t["restarts"] == 1 && t["state"] == "running")
    });
    assert!(up.interrupt().success());
}

/// A task that ends while `paved up` is down is cleaned up after the restart: its cgroup does
/// not outlive it.
#[test]
fn a_task_that_ends_while_the_agent_is_down_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let manifest = dir.path().join("nap.toml");
    std::fs::write(
        &manifest,
        "name = \"nap\"\nkind = \"batch\"\ninstances = 1\ncommand = [\"sleep\", \"2\"]\n",
    )
    .unwrap();
    up.ok(&["run", manifest.to_str().unwrap()]);
    up.wait("the nap to run", |u| u.running_pids("nap").len() == 1);
    let task = up.tasks("nap")[0]["id"].as_str().unwrap().to_owned();
    let cgroups = paved_runtime::sandbox::Layout::detect().unwrap().task(&task).dirs;
    assert!(
        cgroups.iter().all(|d| d.path.exists()),
        "the running task has its cgroups"
    );
    let port: u16 = up.server.rsplit(':').next().unwrap().parse().unwrap();
    up.kill9();
    std::thread::sleep(Duration::from_secs(3));

    let up = Up::start_on(dir.path(), port);
    up.wait("the nap to complete", |u| {
        u.json(&["job", "nap"])["state"] == "complete"
    });
    up.wait("its cgroups to go", |_| cgroups.iter().all(|d| !d.path.exists()));
    assert!(up.interrupt().success());
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A data dir that is a file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(PAVED)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--proxy",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A corrupted store file.
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("paved.redb"), vec![0x5a; 8192]).unwrap();
    let out = Command::new(PAVED)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--proxy",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paved.redb"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A port in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(PAVED)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bad manifest submitted to a running server changes nothing.
    let up = Up::start(&dir.path().join("ok"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nkind = \"nope\"\ncommand = [\"true\"]\n").unwrap();
    let out = up.cli(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(up.json(&["jobs"]).as_array().unwrap().len(), 0);
    let out = up.cli(&["scale", "nothing-here", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(up.interrupt().success());
}

#[test]
fn demo_shows_a_service_and_a_batch_job() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(PAVED)
        .args(["up", "--demo", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("Ctrl-C") {
        let line = lines.next().expect("paved up --demo printed its banner").unwrap();
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(seen.contains("hello-web") && seen.contains("countdown"), "{seen}");
    std::thread::spawn(move || lines.for_each(drop)); // keep reading, so its prints never hit a closed pipe
    let up = Up {
        child,
        data: dir.path().to_owned(),
        server: format!("http://127.0.0.1:{port}"),
    };
    up.wait("demo jobs running", |u| u.running_pids("hello-web").len() == 2);
    up.wait("countdown complete", |u| {
        u.json(&["job", "countdown"])["state"] == "complete"
    });
    assert!(up.interrupt().success());
}

/// Waits until an HTTP server answers 200 on the port.
fn wait_http(port: u16) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.0 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "nothing answers HTTP on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
