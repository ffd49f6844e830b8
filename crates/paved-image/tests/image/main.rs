//! End-to-end tests of paved-image: a real `docker-registry` on loopback, a real busybox image
//! built with umoci and pushed with skopeo, real overlayfs mounts. See `support` for what they
//! need from the host (root, five Debian packages).

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use paved_image::{Image, ImageError, ImageStore, RegistryAuth};
use support::{Registry, fixture, layout_blob, run};
use tempfile::TempDir;

const ANON: RegistryAuth = RegistryAuth::Anonymous;

#[tokio::test]
async fn pull_by_tag_and_by_digest_give_the_same_image() {
    let registry = Registry::start(None);
    registry.push_fixture(None);
    let (root, store) = new_store();

    let by_tag = store
        .pull(&registry.reference(), &ANON)
        .await
        .expect("pull by tag");
    assert_eq!(by_tag.digest, fixture().manifest_digest);
    let expected: Vec<PathBuf> = fixture()
        .layer_digests
        .iter()
        .map(|d| root.path().join("layers/sha256").join(&d[7..]))
        .collect();
    assert_eq!(by_tag.layers, expected, "layers bottom first, one dir per digest");

    let by_digest = store
        .pull(&registry.pinned(&by_tag.digest), &ANON)
        .await
        .expect("pull by digest");
    assert_eq!(by_digest, by_tag);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_the_cache() {
    let registry = Registry::start(None);
    registry.push_fixture(None);
    let (root, store) = new_store();
    let other = ImageStore::open(root.path()).expect("second handle");
    let reference = registry.reference();
    let (a, b) = tokio::join!(store.pull(&reference, &ANON), other.pull(&reference, &ANON));
    assert_eq!(a.expect("first pull"), b.expect("second pull"));
    assert_eq!(
        names(&root.path().join("tmp")),
        Vec::<String>::new(),
        "the loser's staging is gone"
    );
}

#[tokio::test]
async fn config_fields_come_from_the_image() {
    let (_root, _store, image) = imported().await;
    let c = &image.config;
    assert_eq!(c.entrypoint, ["/bin/sh"]);
    assert_eq!(c.cmd, ["-c", "echo hi"]);
    assert!(c.env.contains(&"GREETING=hello".to_string()), "{:?}", c.env);
    assert_eq!(c.user, "1000:1000");
    assert_eq!(c.working_dir, "/work");
}

#[tokio::test]
async fn layers_are_unpacked_in_overlay_format() {
    let (_root, _store, image) = imported().await;
    let [base, second, third] = image.layers.as_slice() else {
        panic!("3 layers: {:?}", image.layers)
    };

    assert_eq!(
        fs::read_link(base.join("bin/sh")).expect("symlink"),
        Path::new("busybox")
    );
    assert_eq!(meta(&base.join("bin/busybox")).mode() & 0o7777, 0o755);
    assert_eq!(
        meta(&base.join("bin/suid")).mode() & 0o7777,
        0o4755,
        "setuid survives chown"
    );
    let owned = meta(&base.join("etc/owned"));
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(
        meta(&base.join("etc/kept")).ino(),
        meta(&base.join("etc/kept2")).ino(),
        "hardlink kept"
    );

    let whiteout = meta(&second.join("etc/doomed"));
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    assert!(!second.join("etc/.wh.doomed").exists());
    assert_eq!(
        fs::read_to_string(second.join("etc/added")).expect("added"),
        "added\n"
    );

    assert_eq!(opaque_xattr(&third.join("opaque")), Some(b"y".to_vec()));
    assert_eq!(
        names(&third.join("opaque")),
        ["new"],
        "the marker itself is not unpacked"
    );
}

#[tokio::test]
async fn flatten_applies_whiteouts_and_opaque_dirs() {
    let (root, _store, image) = imported().await;
    let dest = root.path().join("flat");
    image.flatten_into(&dest).expect("flatten");

    assert!(!dest.join("etc/doomed").exists(), "whiteout deletes");
    assert_eq!(names(&dest.join("etc")), ["added", "kept", "kept2", "owned"]);
    assert_eq!(
        names(&dest.join("opaque")),
        ["new"],
        "opaque dir hides old1, old2"
    );
    assert_eq!(opaque_xattr(&dest.join("opaque")), None);
    assert_eq!(
        meta(&dest.join("etc/kept")).ino(),
        meta(&dest.join("etc/kept2")).ino()
    );
    let owned = meta(&dest.join("etc/owned"));
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(meta(&dest.join("bin/suid")).mode() & 0o7777, 0o4755);
    assert_eq!(chroot_sh(&dest, "echo hi"), "hi\n");

    let again = image.flatten_into(&dest).expect_err("dest not empty");
    assert!(matches!(again, ImageError::DestNotEmpty { .. }), "{again}");
}

#[tokio::test]
async fn overlay_mount_of_the_layers_runs_busybox() {
    let (root, _store, image) = imported().await;
    let dirs = ["upper", "work", "merged"].map(|d| root.path().join(d));
    for d in &dirs {
        fs::create_dir(d).expect("mkdir");
    }
    let [upper, work, merged] = &dirs;
    let lower: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    let out = run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(merged));
    assert!(
        out.status.success(),
        "mount -t overlay failed (is the overlay module available?): {out:?}"
    );
    let _unmount = Unmount(merged.clone());

    assert_eq!(chroot_sh(merged, "echo hi"), "hi\n");
    let listing = chroot_sh(
        merged,
        "/bin/busybox ls /opaque /etc; test -e /etc/doomed && echo doomed; true",
    );
    assert_eq!(listing, "/etc:\nadded\nkept\nkept2\nowned\n\n/opaque:\nnew\n");
    assert_eq!(
        chroot_sh(merged, "echo task > /etc/kept; /bin/busybox cat /etc/kept2"),
        "kept\n"
    );
    assert_eq!(
        fs::read_to_string(upper.join("etc/kept")).expect("copied up"),
        "task\n"
    );
    assert_eq!(
        fs::read_to_string(image.layers[0].join("etc/kept")).expect("layer"),
        "kept\n",
        "layers untouched"
    );
}

#[tokio::test]
async fn tampered_registry_blob_is_refused_and_nothing_is_cached() {
    let registry = Registry::start(None);
    registry.push_fixture(None);
    let layer = &fixture().layer_digests[0];
    let blob = registry.blob_path(layer);
    let mut bytes = fs::read(&blob).expect("registry blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, bytes).expect("tamper");
    let (root, store) = new_store();

    let err = store
        .pull(&registry.reference(), &ANON)
        .await
        .expect_err("tampered layer");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(layer.as_str()), "names the blob: {err}");
    assert!(!root.path().join("layers/sha256").join(&layer[7..]).exists());
    assert_eq!(
        names(&root.path().join("tmp")),
        Vec::<String>::new(),
        "staging cleaned up"
    );
}

#[tokio::test]
async fn tampered_layout_blob_is_refused() {
    let copy = TempDir::new().expect("temp dir");
    let out = run(Command::new("cp")
        .arg("-a")
        .arg(&fixture().layout)
        .arg(copy.path()));
    assert!(out.status.success(), "cp: {out:?}");
    let layout = copy.path().join("layout");
    let layer = &fixture().layer_digests[1];
    fs::write(layout_blob(&layout, layer), b"not the layer").expect("tamper");
    let (root, store) = new_store();

    let err = store
        .import_layout(&layout, None)
        .await
        .expect_err("tampered layer");
    let ImageError::DigestMismatch { blob, expected, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (blob.as_str(), expected.as_str()),
        (format!("layer {layer}").as_str(), layer.as_str()),
    );
    assert!(!root.path().join("layers/sha256").join(&layer[7..]).exists());
    assert!(
        root.path()
            .join("layers/sha256")
            .join(&fixture().layer_digests[0][7..])
            .exists()
    );
}

#[tokio::test]
async fn basic_auth_pulls_with_the_right_password_only() {
    let creds = ("paved", "s3cret");
    let registry = Registry::start(Some(creds));
    registry.push_fixture(Some(creds));
    let basic = |password: &str| RegistryAuth::Basic {
        username: creds.0.into(),
        password: password.into(),
    };

    let (_root, store) = new_store();
    let image = store
        .pull(&registry.reference(), &basic("s3cret"))
        .await
        .expect("right password");
    assert_eq!(image.digest, fixture().manifest_digest);

    for auth in [basic("wrong"), ANON] {
        let (_root, store) = new_store();
        let err = store
            .pull(&registry.reference(), &auth)
            .await
            .expect_err("refused");
        assert!(matches!(err, ImageError::Unauthorized { .. }), "{auth:?}: {err}");
        assert!(
            err.to_string().contains("check the username and password"),
            "{err}"
        );
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn import_layout_works_without_a_registry() {
    let fx = fixture();
    let (_root, store) = new_store();
    let tagged = store
        .import_layout(&fx.layout, Some("t"))
        .await
        .expect("import by tag");
    assert_eq!(tagged.digest, fx.manifest_digest);
    let only = store
        .import_layout(&fx.layout, None)
        .await
        .expect("import the only one");
    assert_eq!(only, tagged);

    let err = store
        .import_layout(&fx.layout, Some("nope"))
        .await
        .expect_err("no such tag");
    assert!(
        matches!(err, ImageError::Layout { .. }) && err.to_string().contains(r#"["t"]"#),
        "{err}"
    );
}

#[tokio::test]
async fn cached_image_pulls_with_the_registry_stopped() {
    let mut registry = Registry::start(None);
    registry.push_fixture(None);
    let (root, store) = new_store();
    let first = store
        .pull(&registry.reference(), &ANON)
        .await
        .expect("online pull");
    let (pinned, tagged) = (registry.pinned(&first.digest), registry.reference());
    let unknown = registry.pinned(&format!("sha256:{}", "0".repeat(64)));
    registry.stop();

    let store = ImageStore::open(root.path()).expect("reopen"); // Nothing kept in memory.
    assert_eq!(
        store.pull(&pinned, &ANON).await.expect("offline pull by digest"),
        first
    );
    assert_eq!(
        store.pull(&tagged, &ANON).await.expect("tag falls back to cache"),
        first
    );
    let err = store.pull(&unknown, &ANON).await.expect_err("not cached");
    assert!(
        matches!(err, ImageError::Unreachable { .. }) && err.is_retryable(),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_references_are_refused_before_any_network() {
    let (_root, store) = new_store();
    for reference in [
        "",
        "127.0.0.1:1/repo:t!",
        "127.0.0.1:1/repo@sha256:abc",
        "127.0.0.1:1/repo@md5:00",
    ] {
        let err = store.pull(reference, &ANON).await.expect_err(reference);
        assert!(
            matches!(
                err,
                ImageError::InvalidReference { .. } | ImageError::UnsupportedDigest { .. }
            ),
            "{reference}: {err}"
        );
    }
}

fn new_store() -> (TempDir, ImageStore) {
    let root = TempDir::new().expect("temp dir");
    let store = ImageStore::open(root.path()).expect("open store");
    (root, store)
}

/// The fixture imported from its layout into a fresh store: the same image the registry
/// serves, without starting one.
async fn imported() -> (TempDir, ImageStore, Image) {
    let (root, store) = new_store();
    let image = store
        .import_layout(&fixture().layout, Some("t"))
        .await
        .expect("import");
    (root, store, image)
}

fn chroot_sh(root: &Path, script: &str) -> String {
    let out = run(Command::new("chroot").arg(root).args(["/bin/sh", "-c", script]));
    assert!(out.status.success(), "chroot {script:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn opaque_xattr(dir: &Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Unmounts even when an assertion fails, so a failed run leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
