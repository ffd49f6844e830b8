//! `SandboxRuntime` against the runtime conformance suite, plus the isolation only it promises,
//! with real namespaces and cgroups (the tests run as root, as the agent does).

use std::path::PathBuf;
use std::time::Duration;

use paved_runtime::conformance::Harness;
use paved_runtime::sandbox::TASK_DIR;
use paved_runtime::{ExitStatus, Limits, Network, Runtime, SandboxRuntime, Stream, TaskRecord, TaskSpec};

const SHIM: &str = env!("CARGO_BIN_EXE_paved-shim");
const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> SandboxRuntime {
    SandboxRuntime::new(PathBuf::from(SHIM))
        .expect("the sandbox needs root and the cpu, memory and pids controllers")
}

fn harness() -> (tempfile::TempDir, Harness) {
    let root = tempfile::tempdir().expect("temp dir");
    let harness = Harness {
        new_runtime: Box::new(|| Box::new(runtime())),
        root: root.path().to_path_buf(),
        home: |_| PathBuf::from(TASK_DIR),
    };
    (root, harness)
}

paved_runtime::conformance_tests!(harness);

/// Runs `script` under `sh -c` in a sandbox and returns its status and stdout.
async fn run(
    h: &Harness,
    name: &str,
    script: &str,
    adjust: impl FnOnce(&mut TaskSpec),
) -> (ExitStatus, String) {
    let mut spec = h.spec(name, &["sh", "-c", script]);
    adjust(&mut spec);
    let runtime = runtime();
    let record = runtime.start(&spec).await.expect("start");
    let status = tokio::time::timeout(DEADLINE, runtime.wait(&record))
        .await
        .expect("the task to end")
        .expect("wait");
    let out = std::fs::read_to_string(record.dir.join(Stream::Stdout.file_name())).unwrap_or_default();
    runtime.cleanup(&record).await.expect("cleanup");
    assert_nothing_left(&record);
    (status, out)
}

/// No process, cgroup or mount of the task remains on the host.
fn assert_nothing_left(record: &TaskRecord) {
    let layout = runtime();
    for dir in layout.layout().task(&record.task_id).dirs {
        assert!(!dir.path.exists(), "cgroup {} left behind", dir.path.display());
    }
    assert!(
        !record.dir.join("rootfs").exists(),
        "the root's mount point is left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = record.dir.display().to_string();
    assert!(!mounts.contains(&dir), "a mount of {dir} is visible on the host");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", record.pid)).exists(),
        "the task's init still runs"
    );
}

#[tokio::test]
async fn a_task_sees_only_its_own_processes() {
    let (_guard, h) = harness();
    let (status, out) = run(&h, "pidns", "echo $$; ls /proc | grep -c '^[0-9]'", |_| {}).await;
    assert!(status.success(), "{status:?}");
    // The shell is pid 2 behind the init; the other process is `ls` itself (and grep).
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "{out}");
    let count: u32 = lines[1].parse().expect("a count");
    assert!(count <= 5, "the task sees {count} processes: {out}");
}

#[tokio::test]
async fn a_task_cannot_read_host_secrets_or_other_tasks() {
    let (_guard, h) = harness();
    let other = h.root.join("neighbour");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::write(other.join("secret"), "s3cret").expect("secret");
    let script = format!(
        "id -u; cat /etc/shadow; echo shadow=$?; cat {}/secret 2>/dev/null; echo neighbour=$?; \
         ls /root 2>/dev/null; echo root=$?; touch /usr/x 2>/dev/null; echo usr=$?; \
         touch /task/mine && echo task=ok; hostname",
        other.display()
    );
    let (status, out) = run(&h, "secrets", &script, |_| {}).await;
    assert!(status.success(), "{status:?}");
    let lines: Vec<&str> = out.lines().collect();
    let uid: u32 = lines[0].parse().expect("uid");
    assert!(uid >= 200_000, "runs as uid {uid}");
    assert_eq!(lines[1], "shadow=0", "/etc/shadow reads as empty: {out}");
    assert_ne!(lines[2], "neighbour=0", "{out}");
    assert_ne!(lines[3], "root=0", "{out}");
    assert_ne!(lines[4], "usr=0", "{out}");
    assert_eq!(lines[5], "task=ok", "{out}");
    assert_eq!(lines[6], "secrets", "{out}");
}

#[tokio::test]
async fn a_task_has_no_privileges_and_no_namespaces_to_make() {
    let (_guard, h) = harness();
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                  unshare -U true 2>/dev/null; echo unshare=$?";
    let (status, out) = run(&h, "privileges", script, |_| {}).await;
    assert!(status.success(), "{status:?}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(!out.contains("unshare=0"), "{out}");
}

#[tokio::test]
async fn network_none_has_only_loopback() {
    let (_guard, h) = harness();
    let script = "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '";
    let (status, out) = run(&h, "netns", script, |spec| spec.network = Network::None).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(out.trim(), "lo", "{out}");
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_and_reported() {
    let (_guard, h) = harness();
    // Doubles a shell string until the limit stops it.
    let script = "x=0123456789abcdef; while true; do x=$x$x; done";
    let (status, _) = run(&h, "hog", script, |spec| {
        spec.limits = Limits {
            memory_bytes: 32 << 20,
            ..Limits::default()
        }
    })
    .await;
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(status.signal, Some(9), "{status:?}");
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    let (_guard, h) = harness();
    let mut spec = h.spec("forks", &["sh", "-c", "while true; do sleep 30 & done"]);
    spec.limits = Limits {
        pids: 20,
        ..Limits::default()
    };
    let runtime = runtime();
    let record = runtime.start(&spec).await.expect("start");
    let stderr = record.dir.join(Stream::Stderr.file_name());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .contains("fork")
    {
        assert!(tokio::time::Instant::now() < deadline, "no fork ever failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(stats) = runtime.stats(&record).await {
        assert!(stats.pids <= 20, "{} processes under a limit of 20", stats.pids);
    }
    // The host is not starved of processes.
    assert!(
        std::process::Command::new("true")
            .status()
            .expect("spawn on the host")
            .success()
    );
    runtime.signal(&record, 9).await.expect("kill");
    runtime.wait(&record).await.expect("wait");
    runtime.cleanup(&record).await.expect("cleanup");
    assert_nothing_left(&record);
}

#[tokio::test]
async fn a_cpu_hog_gets_its_quota_and_stats_are_read() {
    let (_guard, h) = harness();
    let mut spec = h.spec("cpu", &["sh", "-c", "while true; do :; done"]);
    spec.limits = Limits {
        cpu_millis: 200,
        ..Limits::default()
    };
    let runtime = runtime();
    let record = runtime.start(&spec).await.expect("start");
    let first = runtime.stats(&record).await.expect("stats");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = runtime.stats(&record).await.expect("stats");
    runtime.signal(&record, 9).await.expect("kill");
    runtime.wait(&record).await.expect("wait");
    runtime.cleanup(&record).await.expect("cleanup");
    let used = (second.cpu_usage_ns - first.cpu_usage_ns) as f64 / 2e9;
    // A fifth of a core, with loose bounds for a noisy machine.
    assert!(used < 0.35, "used {used:.2} cores under a 0.2 quota");
    assert!(used > 0.05, "used only {used:.2} cores: was it running?");
    assert!(second.pids >= 1 && second.memory_bytes > 0, "{second:?}");
    assert_nothing_left(&record);
}

#[tokio::test]
async fn a_task_cannot_signal_another_task() {
    let (_guard, h) = harness();
    let runtime = runtime();
    let victim = runtime
        .start(&h.spec("victim", &["sleep", "100"]))
        .await
        .expect("start");
    // The victim's host pids (its init, its task) mean nothing in another task's namespace.
    let script = format!(
        "kill -9 {pid} 2>/dev/null; echo $?; kill -9 -1 2>/dev/null; echo alive",
        pid = victim.pid
    );
    let (status, out) = run(&h, "attacker", &script, |_| {}).await;
    assert!(status.success() || status.signal == Some(9), "{status:?}");
    assert!(out.starts_with('1'), "the kill reached something: {out}");
    assert!(
        std::path::Path::new(&format!("/proc/{}", victim.pid)).exists(),
        "the victim was killed"
    );
    runtime.signal(&victim, 9).await.expect("kill");
    runtime.wait(&victim).await.expect("wait");
    runtime.cleanup(&victim).await.expect("cleanup");
}

#[path = "../../paved-image/tests/image/support.rs"]
#[allow(dead_code)]
mod image_support;

/// An image's root, both ways: its layers under an overlay with a writable layer of the task's
/// own, and a private copy of the merged layers (for hosts without overlayfs). Either way the
/// image's files are there, its deletions are applied, writes stay the task's, and nothing of
/// the root is left after cleanup.
#[tokio::test]
async fn images_run_on_an_overlay_or_a_private_copy() {
    let fixture = image_support::fixture();
    let cache = tempfile::tempdir().expect("cache");
    let store = paved_image::ImageStore::open(cache.path()).expect("store");
    let image = store
        .import_layout(&fixture.layout, Some(image_support::TAG))
        .await
        .expect("import the fixture");
    for (name, overlay) in [("overlay", true), ("copy", false)] {
        let (_guard, h) = harness();
        let mut spec = h.spec(
            name,
            &["/bin/sh", "-c", "echo hi > /made-here && cat /made-here && pwd"],
        );
        spec.image = Some(paved_runtime::ImageRoot {
            layers: image.layers.clone(),
            working_dir: "/work".into(),
        });
        let runtime = if overlay {
            runtime()
        } else {
            runtime().without_overlayfs()
        };
        // As root inside the image, to write to its root; the agent maps an image's root user
        // to a uid of the task's own, so this is only the runtime's test.
        spec.user = Some((0, 0));
        let record = runtime.start(&spec).await.expect("start");
        let status = runtime.wait(&record).await.expect("wait");
        let out = std::fs::read_to_string(record.dir.join(Stream::Stdout.file_name())).unwrap_or_default();
        let err = std::fs::read_to_string(record.dir.join(Stream::Stderr.file_name())).unwrap_or_default();
        assert!(status.success(), "{name}: {status:?} {err}");
        assert_eq!(out, "hi\n/work\n", "{name}");
        for layer in &image.layers {
            assert!(
                !layer.join("made-here").exists(),
                "{name}: a shared layer was written"
            );
        }
        runtime.cleanup(&record).await.expect("cleanup");
        for dir in ["rootfs", "upper", "overlay-work", "image-root"] {
            assert!(!record.dir.join(dir).exists(), "{name}: {dir} left behind");
        }
    }
}
