//! The built `paved` binary, run as a user would, for everything that needs no server.

use std::path::Path;
use std::process::{Command, Output};

const GOOD: &str = r#"
name = "web"
kind = "service"
instances = 2
command = ["python3", "-m", "http.server"]
"#;

const BAD: &str = r#"name = "web"
kind = "servise"
instances = 2
command = []
"#;

/// Runs `paved args…` with no PAVED_* settings from the environment and an empty data dir.
fn paved(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_paved"))
        .args(args)
        .env_remove("PAVED_SERVER")
        .env_remove("PAVED_TOKEN")
        .env("PAVED_DATA", data)
        .env_remove("RUST_LOG")
        .output()
        .expect("the paved binary runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

/// A server URL nothing listens on. Port 1 (tcpmux) is privileged and never used, so unlike
/// a freed ephemeral port no concurrent test can take it between our check and our connect.
const CLOSED: &str = "http://127.0.0.1:1";

#[test]
fn validate_accepts_a_good_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    std::fs::write(&file, GOOD).unwrap();
    let (code, out, err) = paved(dir.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("web.toml: valid (service web, 2 instances)"),
        "{out}"
    );
}

#[test]
fn validate_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, BAD).unwrap();
    let (code, out, err) = paved(dir.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("bad.toml:2:8: kind:"), "{all}");
    assert!(all.contains("bad.toml:4:11: command:"), "{all}");
    assert!(all.contains("2 problems"), "{all}");
}

#[test]
fn validate_json_reports_problems_as_the_api_does() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, BAD).unwrap();
    let (code, out, _) = paved(dir.path(), &["validate", "-o", "json", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["line"], 2);
    assert_eq!(v["problems"][0]["field"], "kind");
}

#[test]
fn run_checks_locally_before_touching_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, BAD).unwrap();
    let (code, _, err) = paved(dir.path(), &["run", file.to_str().unwrap(), "--server", CLOSED]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing was submitted"), "{err}");
}

#[test]
fn an_unreadable_manifest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = paved(dir.path(), &["validate", "no-such.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read manifest no-such.toml"), "{err}");
}

#[test]
fn a_closed_port_says_paved_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = paved(dir.path(), &["jobs", "--server", CLOSED]);
    assert_eq!(code, 1, "{err}");
    let want = format!("cannot reach paved at {CLOSED}; is `paved up` running?");
    assert!(err.contains(&want), "{err}");
}

#[test]
fn a_garbage_server_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["garbage", "localhost:7070", "ftp://x:1"] {
        let (code, _, err) = paved(dir.path(), &["jobs", "--token", "x", "--server", url]);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains(&format!("invalid server URL `{url}`")), "{err}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) = paved(dir.path(), &["scale", "web", "many"]);
    assert_eq!(code, 2);
    let (code, _, _) = paved(dir.path(), &["no-such-command"]);
    assert_eq!(code, 2);
}

#[test]
fn completions_print_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = paved(dir.path(), &["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("_paved"), "{out}");
}
