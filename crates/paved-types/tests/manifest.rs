//! Manifest parsing, data-driven: each case is TOML in and either the job it describes or every
//! problem, rendered as the user sees them.

use paved_types::units::{format_duration, format_memory};
use paved_types::{JobSpec, ManifestProblem, parse_manifest};

/// The keys every job needs, so a case can show only what it is about. Three lines: a case's
/// own lines start at line 4.
const BASE: &str = "name = \"web\"\nkind = \"service\"\ncommand = [\"./server\"]\n";

/// Parses `input` as "t.toml" and compares the outcome, rendered, with `expect`.
fn check(input: &str, expect: &str) {
    let got = match parse_manifest("t.toml", input) {
        Ok(spec) => render(&spec),
        Err(e) => e.to_string(),
    };
    assert_eq!(got, expect.trim(), "\ninput:\n{input}\n");
}

/// Like `check`, with `BASE` in front of `input`.
fn check_base(input: &str, expect: &str) {
    check(&format!("{BASE}{input}"), expect);
}

fn render(s: &JobSpec) -> String {
    let ports: Vec<&str> = s.ports.iter().map(|p| p.name.as_str()).collect();
    format!(
        "ok {} {} x{} {:?} env={:?} cpu={} mem={} restart={}/{}/{} ports={:?}",
        s.name,
        s.kind.as_str(),
        s.instances,
        s.command,
        s.env,
        s.resources.cpu,
        format_memory(s.resources.memory_bytes),
        s.restart.policy.as_str(),
        s.restart.attempts,
        format_duration(s.restart.delay),
        ports,
    )
}

// ---- valid manifests ----

#[test]
fn minimal_service_gets_defaults() {
    check(
        BASE,
        r#"ok web service x1 ["./server"] env={} cpu=0.1 mem=64MiB restart=always/5/1s ports=[]"#,
    );
}

#[test]
fn minimal_batch_defaults_to_on_failure() {
    check(
        "name = \"job\"\nkind = \"batch\"\ncommand = [\"true\"]",
        r#"ok job batch x1 ["true"] env={} cpu=0.1 mem=64MiB restart=on-failure/5/1s ports=[]"#,
    );
}

#[test]
fn full_manifest() {
    check(
        r#"
name = "web-2"
kind = "service"
instances = 3
command = ["/bin/sh", "-c", "exec ./server --port $PORT"]
env = { RUST_LOG = "info", _X1 = "" }

[resources]
cpu = 0.5
memory = "128MiB"

[restart]
policy = "never"
attempts = 0
delay = "1m30s"

[[ports]]
name = "http"

[[ports]]
name = "admin-2"
"#,
        r#"ok web-2 service x3 ["/bin/sh", "-c", "exec ./server --port $PORT"] env={"RUST_LOG": "info", "_X1": ""} cpu=0.5 mem=128MiB restart=never/0/1m30s ports=["http", "admin-2"]"#,
    );
}

#[test]
fn zero_instances_for_a_service() {
    check_base(
        "instances = 0",
        r#"ok web service x0 ["./server"] env={} cpu=0.1 mem=64MiB restart=always/5/1s ports=[]"#,
    );
}

#[test]
fn limits_are_inclusive() {
    check_base(
        "instances = 10000\n[resources]\ncpu = 1024\nmemory = \"4MiB\"\n[restart]\nattempts = 1000\ndelay = \"10m\"",
        r#"ok web service x10000 ["./server"] env={} cpu=1024 mem=4MiB restart=always/1000/10m ports=[]"#,
    );
    check_base(
        "[restart]\ndelay = \"10ms\"",
        r#"ok web service x1 ["./server"] env={} cpu=0.1 mem=64MiB restart=always/5/10ms ports=[]"#,
    );
}

#[test]
fn memory_forms() {
    let cases = [
        ("\"1GiB\"", "1GiB"),
        ("\"524288Ki\"", "512MiB"),
        ("\"100MB\"", "95.4MiB"),
        ("\"1.5gib\"", "1.5GiB"),
        ("\"256m\"", "256MiB"),
        ("8388608", "8MiB"),
        ("0x800000", "8MiB"),
    ];
    for (memory, want) in cases {
        let want = format!(
            r#"ok web service x1 ["./server"] env={{}} cpu=0.1 mem={want} restart=always/5/1s ports=[]"#
        );
        check_base(&format!("[resources]\nmemory = {memory}"), &want);
    }
}

#[test]
fn cpu_as_integer_and_inline_tables() {
    check_base(
        "resources = { cpu = 2 }\nrestart = { policy = \"on-failure\" }\nports = [{ name = \"http\" }]",
        r#"ok web service x1 ["./server"] env={} cpu=2 mem=64MiB restart=on-failure/5/1s ports=["http"]"#,
    );
}

#[test]
fn env_as_a_table_section_and_empty_ports() {
    check_base(
        "ports = []\n[env]\nPATH = \"/usr/bin\"\nPORTABLE = \"yes\"",
        r#"ok web service x1 ["./server"] env={"PATH": "/usr/bin", "PORTABLE": "yes"} cpu=0.1 mem=64MiB restart=always/5/1s ports=[]"#,
    );
}

#[test]
fn batch_explicit_policy_wins_over_kind_default() {
    check(
        "name = \"b\"\nkind = \"batch\"\ncommand = [\"x\"]\nrestart.policy = \"always\"",
        r#"ok b batch x1 ["x"] env={} cpu=0.1 mem=64MiB restart=always/5/1s ports=[]"#,
    );
}

// ---- missing and unknown keys ----

#[test]
fn empty_document_lists_every_required_key() {
    check(
        "",
        r#"
t.toml:1:1: name: missing required key "name"; add it, e.g. name = "web"
t.toml:1:1: kind: missing required key "kind"; add it, e.g. kind = "service"
t.toml:1:1: command: missing required key "command"; add it, e.g. command = ["/bin/sh", "-c", "exec ./server --port $PORT"]"#,
    );
}

#[test]
fn unknown_key_near_miss() {
    check_base(
        "instance = 2",
        r#"t.toml:4:1: instance: unknown key "instance"; did you mean "instances"?"#,
    );
    check_base(
        "[resources]\nmemroy = \"1GiB\"",
        r#"t.toml:5:1: resources.memroy: unknown key "memroy"; did you mean "memory"?"#,
    );
    check_base(
        "Kind = \"batch\"",
        r#"t.toml:4:1: Kind: unknown key "Kind"; did you mean "kind"?"#,
    );
}

#[test]
fn unknown_key_synonym() {
    check_base(
        "replicas = 3",
        r#"t.toml:4:1: replicas: unknown key "replicas"; did you mean "instances"?"#,
    );
}

#[test]
fn unknown_key_without_a_guess_lists_valid_keys() {
    check_base(
        "[restart]\nfoo = 1",
        r#"t.toml:5:1: restart.foo: unknown key "foo"; valid keys in [restart] are "policy", "attempts", "delay""#,
    );
}

#[test]
fn key_in_the_wrong_table() {
    check_base(
        "memory = \"1GiB\"",
        r#"t.toml:4:1: memory: unknown key "memory"; "memory" belongs in [resources], not the top level; move it under that header"#,
    );
    // The classic TOML slip: a top-level key written after a table header.
    check(
        "kind = \"service\"\ncommand = [\"x\"]\n[resources]\ncpu = 1\nname = \"web\"",
        r#"
t.toml:1:1: name: missing required key "name"; add it, e.g. name = "web"
t.toml:5:1: resources.name: unknown key "name"; "name" belongs in the top level, not [resources]; move it above the first [table] header, since keys below a header belong to that table"#,
    );
}

#[test]
fn unknown_key_in_a_port() {
    check_base(
        "[[ports]]\nname = \"http\"\nnumber = 8080",
        r#"t.toml:6:1: ports[0].number: unknown key "number"; valid keys in [[ports]] are "name""#,
    );
}

#[test]
fn port_without_a_name_is_reported_at_its_header() {
    check_base(
        "[[ports]]\nname = \"a\"\n\n  [[ports]]\n",
        r#"t.toml:7:3: ports[1].name: missing required key "name"; add it, e.g. name = "http""#,
    );
}

// ---- name and kind ----

#[test]
fn invalid_names() {
    let cases = [
        (
            "\"\"",
            r#""" is empty; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. "web""#,
        ),
        (
            "\"My_App\"",
            r#""My_App" has 'M' at character 1; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. "my-app""#,
        ),
        (
            "\"1web\"",
            r#""1web" starts with '1'; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. "web""#,
        ),
        (
            "\"web-\"",
            r#""web-" ends with '-'; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. "web""#,
        ),
        (
            "\"wéb\"",
            r#""wéb" has 'é' at character 2; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. "w-b""#,
        ),
    ];
    for (name, message) in cases {
        let input = format!("kind = \"batch\"\ncommand = [\"x\"]\nname = {name}");
        check(&input, &format!("t.toml:3:8: name: {message}"));
    }
}

#[test]
fn name_too_long() {
    let long = "a".repeat(64);
    check(
        &format!("kind = \"batch\"\ncommand = [\"x\"]\nname = \"{long}\""),
        &format!(
            "t.toml:3:8: name: \"{}…\" is 64 characters long; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. \"{}\"",
            "a".repeat(40),
            "a".repeat(63)
        ),
    );
    let ok = "a".repeat(63);
    let input = format!("kind = \"batch\"\ncommand = [\"x\"]\nname = \"{ok}\"");
    assert!(parse_manifest("t.toml", &input).is_ok());
}

#[test]
fn kind_typo() {
    check(
        "name = \"web\"\nkind = \"servce\"\ncommand = [\"x\"]",
        r#"t.toml:2:8: kind: "servce" is not a job kind; use "service" or "batch""#,
    );
}

#[test]
fn wrong_types_name_the_expected_type() {
    check(
        "name = 5\nkind = true\ncommand = \"./server --port 80\"",
        r#"
t.toml:1:8: name: expected a string, found integer 5; quote it: "5"
t.toml:2:8: kind: expected a string, found boolean true; quote it: "true"
t.toml:3:11: command: expected an array of strings, found string "./server --port 80"; to run it through a shell: ["/bin/sh", "-c", "./server --port 80"]"#,
    );
    check_base(
        "env = [\"A=1\"]\nresources = 2\nrestart = \"always\"\nports = { name = \"http\" }",
        r#"
t.toml:4:7: env: expected a table, found an array; e.g. env = { RUST_LOG = "info" }
t.toml:5:13: resources: expected a table, found integer 2; e.g. [resources] with cpu = 0.5 and memory = "128MiB"
t.toml:6:11: restart: expected a table, found string "always"; e.g. [restart] with policy = "on-failure"
t.toml:7:9: ports: expected an array of tables, found a table; declare each port in its own [[ports]] section (two brackets) with name = "http""#,
    );
}

#[test]
fn datetime_is_not_a_name() {
    check(
        "name = 1979-05-27\nkind = \"batch\"\ncommand = [\"x\"]",
        r#"t.toml:1:8: name: expected a string, found datetime 1979-05-27; e.g. name = "web""#,
    );
}

// ---- instances ----

#[test]
fn zero_instances_for_a_batch_job() {
    check(
        "name = \"b\"\nkind = \"batch\"\ncommand = [\"x\"]\ninstances = 0",
        r#"t.toml:4:13: instances: a batch job runs at least 1 instance; use 1 to 10000 (0 is for scaling a service down)"#,
    );
}

#[test]
fn instances_out_of_range() {
    let cases = [
        ("-1", "-1 is negative; use a whole number from 0 to 10000"),
        (
            "10001",
            "10001 is more than the maximum of 10000; use a whole number from 0 to 10000",
        ),
        (
            "99999999999999999999",
            "99999999999999999999 is more than the maximum of 10000; use a whole number from 0 to 10000",
        ),
        (
            "999999999999999999999999999999999999999999",
            "999999999999999999999999999999999999999999 is more than the maximum of 10000; use a whole number from 0 to 10000",
        ),
        (
            "-999999999999999999999999999999999999999999",
            "-999999999999999999999999999999999999999999 is negative; use a whole number from 0 to 10000",
        ),
        (
            "2.0",
            "expected an integer, found float 2.0; use a whole number from 0 to 10000",
        ),
        (
            "1e3",
            "expected an integer, found float 1e3; use a whole number from 0 to 10000",
        ),
        (
            "\"2\"",
            "expected an integer, found string \"2\"; remove the quotes",
        ),
        ("[2]", "expected an integer, found an array; e.g. instances = 2"),
    ];
    for (value, message) in cases {
        check_base(
            &format!("instances = {value}"),
            &format!("t.toml:4:13: instances: {message}"),
        );
    }
}

// ---- command ----

#[test]
fn command_problems() {
    // Without BASE's command: the case's `command` is on line 3.
    let head = "name = \"web\"\nkind = \"service\"\n";
    let cases = [
        (
            "command = []",
            r#"t.toml:3:11: command: is empty; give the program and its arguments, e.g. command = ["/bin/sh", "-c", "exec ./server --port $PORT"]"#,
        ),
        (
            "command = [\"\", \"x\"]",
            r#"t.toml:3:12: command[0]: the program is empty; name an executable, e.g. "/bin/sh" or "./server""#,
        ),
        (
            "command = [\"./server\", \"--port\", 8080]",
            r#"t.toml:3:34: command[2]: expected a string, found integer 8080; quote it: "8080""#,
        ),
        (
            "command = [\"./a\\u0000b\"]",
            r#"t.toml:3:12: command[0]: contains a NUL character at character 4; a process cannot receive NUL in its arguments, so remove it"#,
        ),
        (
            "command = [\"x\", \"\", \"ok\\u0000\"]",
            r#"t.toml:3:21: command[2]: contains a NUL character at character 3; a process cannot receive NUL in its arguments, so remove it"#,
        ),
        (
            "command = [[\"x\"]]",
            r#"t.toml:3:12: command[0]: expected a string, found an array"#,
        ),
        (
            "command = { program = \"x\" }",
            r#"t.toml:3:11: command: expected an array of strings, found a table; e.g. command = ["/bin/sh", "-c", "exec ./server --port $PORT"]"#,
        ),
    ];
    for (input, expect) in cases {
        check(&format!("{head}{input}"), expect);
    }
}

#[test]
fn later_arguments_may_be_empty() {
    check(
        "name = \"web\"\nkind = \"service\"\ncommand = [\"x\", \"\"]",
        r#"ok web service x1 ["x", ""] env={} cpu=0.1 mem=64MiB restart=always/5/1s ports=[]"#,
    );
}

// ---- env ----

#[test]
fn env_problems() {
    let cases = [
        (
            "env = { PORT = \"80\" }",
            "t.toml:4:9: env.PORT: PORT is set by the agent to the job's first port; remove it and read $PORT in the command instead",
        ),
        (
            "env = { PORT_HTTP = \"80\" }",
            "t.toml:4:9: env.PORT_HTTP: PORT_HTTP is reserved: the agent sets PORT_<NAME> for each [[ports]] entry; rename the variable",
        ),
        (
            "env = { \"MY-VAR\" = \"x\" }",
            r#"t.toml:4:9: env.MY-VAR: "MY-VAR" has '-' at character 3; a variable name is letters, digits and '_', not starting with a digit, e.g. "RUST_LOG""#,
        ),
        (
            "env = { 1X = \"x\" }",
            r#"t.toml:4:9: env.1X: "1X" starts with the digit '1'; a variable name is letters, digits and '_', not starting with a digit, e.g. "RUST_LOG""#,
        ),
        (
            "env = { \"\" = \"x\" }",
            r#"t.toml:4:9: env.: "" is empty; a variable name is letters, digits and '_', not starting with a digit, e.g. "RUST_LOG""#,
        ),
        (
            "env = { WORKERS = 4 }",
            r#"t.toml:4:19: env.WORKERS: expected a string, found integer 4; quote it: "4""#,
        ),
        (
            "env = { A = \"x\\u0000\" }",
            "t.toml:4:13: env.A: contains a NUL character; environment values cannot hold NUL, so remove it",
        ),
        (
            "env = { A.B = \"x\" }",
            "t.toml:4:9: env.A: expected a string, found a table",
        ),
    ];
    for (input, expect) in cases {
        check_base(input, expect);
    }
}

#[test]
fn env_key_and_value_both_wrong() {
    check_base(
        "[env]\nPORT = 80",
        r#"
t.toml:5:1: env.PORT: PORT is set by the agent to the job's first port; remove it and read $PORT in the command instead
t.toml:5:8: env.PORT: expected a string, found integer 80; quote it: "80""#,
    );
}

// ---- resources ----

#[test]
fn cpu_problems() {
    let cases = [
        (
            "0",
            "0 is not above 0; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "-0.5",
            "-0.5 is not above 0; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "1024.5",
            "1024.5 is more than the maximum of 1024; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "1e400",
            "1e400 is more than the maximum of 1024; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "nan",
            "nan is not a number; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "inf",
            "inf is more than the maximum of 1024; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "99999999999999999999999999999999999999999999",
            "99999999999999999999999999999999999999999999 is more than the maximum of 1024; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2",
        ),
        (
            "\"0.5\"",
            "expected a number of cores, found string \"0.5\"; e.g. cpu = 0.5",
        ),
    ];
    for (cpu, message) in cases {
        check_base(
            &format!("[resources]\ncpu = {cpu}"),
            &format!("t.toml:5:7: resources.cpu: {message}"),
        );
    }
}

#[test]
fn memory_problems() {
    let forms = "write a number and a unit, e.g. \"128MiB\", \"1.5GiB\", \"512Ki\", \"100MB\", or a plain number of bytes, e.g. \"1048576\"; units (any case): B; K, Ki, KiB, M, Mi, MiB, G.., T.., P.., E.. count in 1024s; KB, MB, GB, TB, PB, EB count in 1000s";
    let cases = [
        ("\"128 mega\"".to_owned(), format!("memory size \"128 mega\" has unknown unit \"mega\"; {forms}")),
        ("\"\"".to_owned(), format!("memory size is empty; {forms}")),
        ("\"-1GiB\"".to_owned(), format!("memory size \"-1GiB\" is negative; {forms}")),
        ("\"lots\"".to_owned(), format!("\"lots\" is not a memory size; {forms}")),
        ("\"1.2.3MiB\"".to_owned(), format!("\"1.2.3MiB\" is not a memory size; {forms}")),
        (
            "\"16EiB\"".to_owned(),
            "memory size \"16EiB\" is too large; the largest is 18446744073709551615 bytes (16EiB - 1)".to_owned(),
        ),
        ("\"1MiB\"".to_owned(), "1MiB is less than the minimum of 4MiB; ask for at least \"4MiB\"".to_owned()),
        (
            "128".to_owned(),
            "128B is less than the minimum of 4MiB; ask for at least \"4MiB\" (a bare integer counts bytes; write \"128MiB\" for mebibytes)".to_owned(),
        ),
        (
            "2097152".to_owned(),
            "2MiB is less than the minimum of 4MiB; ask for at least \"4MiB\"".to_owned(),
        ),
        ("-5".to_owned(), "-5 is negative; use a size with a unit, e.g. \"128MiB\"".to_owned()),
        (
            "99999999999999999999".to_owned(),
            "99999999999999999999 bytes is too large; use a size with a unit, e.g. \"128MiB\"".to_owned(),
        ),
        (
            "1.5".to_owned(),
            "expected a size with a unit or an integer number of bytes, found float 1.5; e.g. memory = \"128MiB\"".to_owned(),
        ),
    ];
    for (memory, message) in cases {
        check_base(
            &format!("[resources]\nmemory = {memory}"),
            &format!("t.toml:5:10: resources.memory: {message}"),
        );
    }
}

// ---- restart ----

#[test]
fn restart_problems() {
    let cases = [
        (
            "policy = \"on_failure\"",
            "t.toml:5:10: restart.policy: \"on_failure\" is not a restart policy; use \"always\", \"on-failure\" or \"never\"",
        ),
        (
            "attempts = 1001",
            "t.toml:5:12: restart.attempts: 1001 is more than the maximum of 1000; use a whole number from 0 to 1000",
        ),
        (
            "attempts = -3",
            "t.toml:5:12: restart.attempts: -3 is negative; use a whole number from 0 to 1000",
        ),
        (
            "attempts = 2.5",
            "t.toml:5:12: restart.attempts: expected an integer, found float 2.5; use a whole number from 0 to 1000",
        ),
        (
            "delay = 1",
            "t.toml:5:9: restart.delay: expected a duration string, found integer 1; a duration is a string with a unit, e.g. delay = \"1s\" or \"500ms\"",
        ),
        (
            "delay = \"5ms\"",
            "t.toml:5:9: restart.delay: \"5ms\" is outside \"10ms\"..=\"10m\"; use a delay from 10ms to 10m, e.g. \"1s\"",
        ),
        (
            "delay = \"1h\"",
            "t.toml:5:9: restart.delay: \"1h\" is outside \"10ms\"..=\"10m\"; use a delay from 10ms to 10m, e.g. \"1s\"",
        ),
        (
            "delay = \"soon\"",
            "t.toml:5:9: restart.delay: \"soon\" is not a duration (expected number at 0); write numbers with units, e.g. \"250ms\", \"1s\", \"1m30s\" or \"2h\" (ms, s, m, h, d)",
        ),
        (
            "delay = \"-1s\"",
            "t.toml:5:9: restart.delay: duration \"-1s\" is negative; write numbers with units, e.g. \"250ms\", \"1s\", \"1m30s\" or \"2h\" (ms, s, m, h, d)",
        ),
    ];
    for (input, expect) in cases {
        check_base(&format!("[restart]\n{input}"), expect);
    }
}

// ---- ports ----

#[test]
fn port_problems() {
    check_base(
        "[[ports]]\nname = \"http\"\n[[ports]]\nname = \"HTTP\"\n[[ports]]\nname = \"http\"\n[[ports]]\nname = 80",
        r#"
t.toml:7:8: ports[1].name: "HTTP" has 'H' at character 1; a port name is 1 to 63 lowercase letters (a-z), digits and '-', e.g. "http"
t.toml:9:8: ports[2].name: "http" is already the name of ports[0]; port names are unique within a job
t.toml:11:8: ports[3].name: expected a string, found integer 80; quote it: "80""#,
    );
    check_base(
        "ports = [\"http\"]",
        r#"t.toml:4:10: ports[0]: expected a table, found string "http"; e.g. { name = "http" }"#,
    );
}

#[test]
fn at_most_16_ports() {
    let ports: String = (0..17).map(|i| format!("[[ports]]\nname = \"p{i}\"\n")).collect();
    check_base(
        &ports,
        "t.toml:36:1: ports: 17 ports declared; a job may declare at most 16",
    );
    let ports: String = (0..16).map(|i| format!("[[ports]]\nname = \"p{i}\"\n")).collect();
    assert!(parse_manifest("t.toml", &format!("{BASE}{ports}")).is_ok());
}

// ---- many problems at once, positions, syntax ----

#[test]
fn every_problem_in_one_pass_in_source_order() {
    check(
        r#"name = "Web"
kind = "servce"
instanses = 2
command = []
env = { PORT = "1" }

[resources]
cpu = -1
memory = "lots"

[restart]
policy = "sometimes"
delay = "1x"

[[ports]]
name = "a"
[[ports]]
name = "a"
"#,
        r#"
t.toml:1:8: name: "Web" has 'W' at character 1; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-', e.g. "web"
t.toml:2:8: kind: "servce" is not a job kind; use "service" or "batch"
t.toml:3:1: instanses: unknown key "instanses"; did you mean "instances"?
t.toml:4:11: command: is empty; give the program and its arguments, e.g. command = ["/bin/sh", "-c", "exec ./server --port $PORT"]
t.toml:5:9: env.PORT: PORT is set by the agent to the job's first port; remove it and read $PORT in the command instead
t.toml:8:7: resources.cpu: -1 is not above 0; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2
t.toml:9:10: resources.memory: "lots" is not a memory size; write a number and a unit, e.g. "128MiB", "1.5GiB", "512Ki", "100MB", or a plain number of bytes, e.g. "1048576"; units (any case): B; K, Ki, KiB, M, Mi, MiB, G.., T.., P.., E.. count in 1024s; KB, MB, GB, TB, PB, EB count in 1000s
t.toml:12:10: restart.policy: "sometimes" is not a restart policy; use "always", "on-failure" or "never"
t.toml:13:9: restart.delay: "1x" is not a duration (unknown time unit "x", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write numbers with units, e.g. "250ms", "1s", "1m30s" or "2h" (ms, s, m, h, d)
t.toml:18:8: ports[1].name: "a" is already the name of ports[0]; port names are unique within a job"#,
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // "ü", "ö", "é" are two bytes each; the 5 sits at character 19, byte 22.
    check(
        "name = \"web\"\nkind = \"batch\"\ncommand = [\"üöé\", 5]",
        r#"t.toml:3:19: command[1]: expected a string, found integer 5; quote it: "5""#,
    );
    check_base(
        "env = { \"日本\" = \"x\", PORT = \"1\" }",
        "t.toml:4:9: env.日本: \"日本\" has '日' at character 1; a variable name is letters, digits and '_', not starting with a digit, e.g. \"RUST_LOG\"\nt.toml:4:21: env.PORT: PORT is set by the agent to the job's first port; remove it and read $PORT in the command instead",
    );
}

#[test]
fn byte_order_mark_is_not_a_column() {
    check(
        "\u{feff}name = 5\nkind = \"batch\"\ncommand = [\"x\"]",
        r#"t.toml:1:8: name: expected a string, found integer 5; quote it: "5""#,
    );
}

#[test]
fn syntax_errors_have_positions() {
    let cases = [
        (
            "name = \"web\"\nkind = service\n",
            "t.toml:2:8: invalid TOML: string values must be quoted, expected literal string",
        ),
        (
            "name = \"web\"\nname = \"api\"\n",
            "t.toml:2:1: invalid TOML: duplicate key; each key may appear once per table",
        ),
        // Reported where the array should have closed: the end of line 1.
        (
            "command = [\"x\",\n",
            "t.toml:1:16: invalid TOML: unclosed array, expected `]`",
        ),
        (
            "[resources]\ncpu = 1\n[resources]\n",
            "t.toml:3:2: invalid TOML: duplicate key; each key may appear once per table",
        ),
        (
            "é = \"\u{1F600}\" x",
            "t.toml:1:9: invalid TOML: unexpected key or value, expected newline, `#`",
        ),
    ];
    for (input, expect) in cases {
        check(input, expect);
    }
}

#[test]
fn crlf_line_endings() {
    check(
        "name = \"web\"\r\nkind = \"x\"\r\ncommand = [\"x\"]\r\n",
        r#"t.toml:2:8: kind: "x" is not a job kind; use "service" or "batch""#,
    );
}

#[test]
fn problems_carry_structured_fields() {
    let err = parse_manifest("web.toml", &format!("{BASE}[resources]\nmemory = \"1KiB\"")).unwrap_err();
    let want = ManifestProblem {
        file: "web.toml".into(),
        line: 5,
        column: 10,
        field: "resources.memory".into(),
        message: "1KiB is less than the minimum of 4MiB; ask for at least \"4MiB\"".into(),
    };
    assert_eq!(err.problems, std::slice::from_ref(&want));
    let json = serde_json::to_string(&want).unwrap();
    assert_eq!(serde_json::from_str::<ManifestProblem>(&json).unwrap(), want);
}
