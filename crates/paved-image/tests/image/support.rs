//! Test fixtures: the Debian tools the tests drive, a real `docker-registry` on loopback, and a
//! busybox image built with umoci, pushed with skopeo.
//!
//! The tests need root (mknod for whiteouts, `trusted.*` xattrs, overlay mounts, chroot) and
//! these packages: docker-registry umoci skopeo busybox-static apache2-utils. Missing packages are
//! installed with apt-get; anything else missing fails loudly, naming what to do.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The Debian packages these tests need, and a binary each one provides.
pub const PACKAGES: &[(&str, &str)] = &[
    ("docker-registry", "/usr/bin/docker-registry"),
    ("umoci", "/usr/bin/umoci"),
    ("skopeo", "/usr/bin/skopeo"),
    ("busybox-static", "/bin/busybox"),
    ("apache2-utils", "/usr/bin/htpasswd"),
];

/// The repository and tag the fixture image is pushed to.
pub const REPO: &str = "test/busybox";
pub const TAG: &str = "t";

/// Installs what is missing, once per test run.
pub fn ensure_tools() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    assert!(
        root,
        "paved-image tests need root (mknod, trusted.* xattrs, mount, chroot); \
         run them as root or in the CI container"
    );
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, bin)| !Path::new(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        eprintln!("installing test packages: {missing:?}");
        let install = || {
            run(Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing))
        };
        if !install().status.success() {
            run(Command::new("apt-get").arg("update"));
            let out = install();
            assert!(
                out.status.success(),
                "apt-get install {missing:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    *done = true;
}

/// A `docker-registry` child process on 127.0.0.1 with its own storage; killed on drop.
pub struct Registry {
    pub addr: String,
    /// Where the registry keeps blobs, for tests that tamper with them.
    pub storage: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry; with `credentials`, it demands them (htpasswd, bcrypt).
    pub fn start(credentials: Option<(&str, &str)>) -> Registry {
        ensure_tools();
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = dir.path().join("storage");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, password)) = credentials {
            let htpasswd = dir.path().join("htpasswd");
            let out = run(Command::new("htpasswd").args(["-Bbn", user, password]));
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
            config += &format!(
                "auth:\n  htpasswd:\n    realm: paved-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry {
            addr,
            storage,
            child: Some(child),
            dir,
        };
        registry.wait_ready();
        registry
    }

    /// Kills the registry now, e.g. to prove a pull needs no network.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pushes the fixture image as `REPO:TAG` with skopeo.
    pub fn push_fixture(&self, credentials: Option<(&str, &str)>) {
        let fixture = fixture();
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        if let Some((user, password)) = credentials {
            cmd.arg(format!("--dest-creds={user}:{password}"));
        }
        cmd.arg(format!("oci:{}:{TAG}", fixture.layout.display()));
        cmd.arg(format!("docker://{}/{REPO}:{TAG}", self.addr));
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file where the registry keeps blob `digest`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    pub fn reference(&self) -> String {
        format!("{}/{REPO}:{TAG}", self.addr)
    }

    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{REPO}@{digest}", self.addr)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
                panic!(
                    "docker-registry did not come up on {} ({exited:?}): {log}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The image every test uses, built once per run:
/// - layer 1: /bin/busybox (static) with /bin/sh -> busybox, /etc/doomed, /etc/kept and its
///   hardlink /etc/kept2, /etc/owned (1234:5678, 0640), /bin/suid (04755), /opaque/old{1,2}
/// - layer 2 (umoci's diff): deletes /etc/doomed (a `.wh.doomed` whiteout), adds /etc/added
/// - layer 3 (hand-made tar): makes /opaque opaque and adds /opaque/new
/// - config: entrypoint /bin/sh, cmd [-c, echo hi], env GREETING=hello, user 1000:1000, /work
pub struct Fixture {
    pub layout: PathBuf,
    /// The manifest digest, and the layer digests bottom first, as the layout records them.
    pub manifest_digest: String,
    pub layer_digests: Vec<String>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        ensure_tools();
        // Under target/, rebuilt each run: a static is never dropped, so a TempDir would leak.
        remove_stale_fixtures();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("paved-image-fixture-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("fixture dir");
        build_fixture(&dir)
    })
}

/// Fixtures of test runs whose process is gone; a running one's is left alone.
fn remove_stale_fixtures() {
    let Ok(entries) = fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("paved-image-fixture-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn build_fixture(dir: &Path) -> Fixture {
    let layout = dir.join("layout");
    let image = format!("{}:{TAG}", layout.display());
    umoci(&["init", "--layout", &layout.display().to_string()]);
    umoci(&["new", "--image", &image]);

    let b1 = dir.join("b1");
    umoci(&["unpack", "--image", &image, &b1.display().to_string()]);
    let root = b1.join("rootfs");
    for d in ["bin", "etc", "opaque"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink");
    for (path, text) in [
        ("etc/doomed", "doomed\n"),
        ("etc/kept", "kept\n"),
        ("etc/owned", "owned\n"),
        ("bin/suid", "suid\n"),
        ("opaque/old1", "1\n"),
        ("opaque/old2", "2\n"),
    ] {
        fs::write(root.join(path), text).expect("write");
    }
    fs::hard_link(root.join("etc/kept"), root.join("etc/kept2")).expect("hardlink");
    std::os::unix::fs::chown(root.join("etc/owned"), Some(1234), Some(5678)).expect("chown");
    chmod(&root.join("etc/owned"), 0o640);
    chmod(&root.join("bin/suid"), 0o4755);
    umoci(&["repack", "--image", &image, &b1.display().to_string()]);

    let b2 = dir.join("b2");
    umoci(&["unpack", "--image", &image, &b2.display().to_string()]);
    fs::remove_file(b2.join("rootfs/etc/doomed")).expect("rm doomed");
    fs::write(b2.join("rootfs/etc/added"), "added\n").expect("write");
    umoci(&["repack", "--image", &image, &b2.display().to_string()]);

    let layer3 = dir.join("layer3.tar");
    write_tar(
        &layer3,
        &[
            ("opaque/", None),
            ("opaque/.wh..wh..opq", Some("")),
            ("opaque/new", Some("new\n")),
        ],
    );
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &image,
        &layer3.display().to_string(),
    ]);

    umoci(&[
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo hi",
        "--config.env",
        "GREETING=hello",
        "--config.user",
        "1000:1000",
        "--config.workingdir",
        "/work",
    ]);
    umoci(&["gc", "--layout", &layout.display().to_string()]);

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json")).expect("json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout_blob(&layout, &manifest_digest)).expect("manifest"))
            .expect("json");
    let layer_digests = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    Fixture {
        layout,
        manifest_digest,
        layer_digests,
    }
}

pub fn layout_blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// A tar of directories (`None`) and files (`Some(text)`), written with the tar crate because no
/// tool makes opaque-dir markers on request.
fn write_tar(path: &Path, entries: &[(&str, Option<&str>)]) {
    let mut builder = tar::Builder::new(fs::File::create(path).expect("create tar"));
    for (name, content) in entries {
        let mut header = tar::Header::new_gnu();
        let data = content.unwrap_or("").as_bytes();
        header.set_entry_type(if content.is_some() {
            tar::EntryType::Regular
        } else {
            tar::EntryType::Directory
        });
        header.set_mode(if content.is_some() { 0o644 } else { 0o755 });
        header.set_size(data.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder.append_data(&mut header, name, data).expect("append");
    }
    builder.into_inner().expect("finish tar").flush().expect("flush");
}

fn umoci(args: &[&str]) {
    let out = run(Command::new("umoci").args(args));
    assert!(
        out.status.success(),
        "umoci {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
