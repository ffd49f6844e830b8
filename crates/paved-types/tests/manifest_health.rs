//! Manifest parsing of `[health]`, `network`, `driver` and `[resources] pids`, data-driven like
//! `manifest.rs`: TOML in, the fields it sets or every problem out, rendered as the user sees them.

use paved_types::units::format_duration;
use paved_types::{JobSpec, parse_manifest};

/// The keys every job needs, plus one port. Four lines: a case's own lines start at line 5.
const BASE: &str = "name = \"web\"\nkind = \"service\"\ncommand = [\"./server\"]\nports = [{ name = \"http\" }, { name = \"admin\" }]\n";
/// The same without ports.
const NO_PORTS: &str = "name = \"web\"\nkind = \"service\"\ncommand = [\"./server\"]\n\n";

fn check(input: &str, expect: &str) {
    let got = match parse_manifest("t.toml", input) {
        Ok(spec) => render(&spec),
        Err(e) => e.to_string(),
    };
    assert_eq!(got, expect.trim(), "\ninput:\n{input}\n");
}

fn check_base(input: &str, expect: &str) {
    check(&format!("{BASE}{input}"), expect);
}

fn render(s: &JobSpec) -> String {
    let health = match &s.health {
        None => "none".to_owned(),
        Some(h) => format!(
            "{:?} port={} every {} timeout {} grace {} after {}",
            h.check,
            h.port.as_deref().unwrap_or("-"),
            format_duration(h.interval),
            format_duration(h.timeout),
            format_duration(h.grace),
            h.threshold
        ),
    };
    format!(
        "ok pids={} network={} driver={} health={health}",
        s.resources.pids,
        s.network.as_str(),
        s.driver.as_str(),
    )
}

// ---- valid ----

#[test]
fn defaults() {
    check_base("", "ok pids=1024 network=host driver=sandbox health=none");
}

#[test]
fn every_field_set() {
    check_base(
        "network = \"host\"\ndriver = \"process\"\n[resources]\npids = 256\n[health]\nhttp = \"/healthz?full=1\"\nport = \"admin\"\ninterval = \"30s\"\ntimeout = \"30s\"\ngrace = \"0s\"\nthreshold = 100",
        r#"ok pids=256 network=host driver=process health=Http { path: "/healthz?full=1" } port=admin every 30s timeout 30s grace 0s after 100"#,
    );
}

#[test]
fn health_defaults_for_each_check() {
    let cases = [
        ("http = \"/\"", r#"Http { path: "/" }"#),
        ("tcp = true", "Tcp"),
        ("grpc = \"\"", r#"Grpc { service: "" }"#),
        ("grpc = \"paved.v1.Jobs\"", r#"Grpc { service: "paved.v1.Jobs" }"#),
        (
            "exec = [\"/bin/sh\", \"-c\", \"test -f ok\"]",
            r#"Exec { command: ["/bin/sh", "-c", "test -f ok"] }"#,
        ),
    ];
    for (input, check) in cases {
        check_base(
            &format!("[health]\n{input}"),
            &format!(
                "ok pids=1024 network=host driver=sandbox health={check} port=- every 10s timeout 2s grace 5s after 3"
            ),
        );
    }
}

#[test]
fn default_timeout_fits_a_short_interval() {
    check_base(
        "[health]\ntcp = true\ninterval = \"1s\"",
        "ok pids=1024 network=host driver=sandbox health=Tcp port=- every 1s timeout 1s grace 5s after 3",
    );
}

#[test]
fn limits_are_inclusive() {
    check_base(
        "[resources]\npids = 1\n[health]\ntcp = true\ninterval = \"1s\"\ntimeout = \"10ms\"\nthreshold = 1",
        "ok pids=1 network=host driver=sandbox health=Tcp port=- every 1s timeout 10ms grace 5s after 1",
    );
    check_base(
        "[resources]\npids = 65536",
        "ok pids=65536 network=host driver=sandbox health=none",
    );
}

#[test]
fn exec_check_without_ports_and_network_none() {
    check(
        &format!("{NO_PORTS}network = \"none\"\n[health]\nexec = [\"true\"]"),
        r#"ok pids=1024 network=none driver=sandbox health=Exec { command: ["true"] } port=- every 10s timeout 2s grace 5s after 3"#,
    );
}

// ---- invalid ----

#[test]
fn pids_problems() {
    let cases = [
        (
            "pids = 0",
            "t.toml:6:8: resources.pids: 0 is less than the minimum of 1; use a whole number from 1 to 65536",
        ),
        (
            "pids = 65537",
            "t.toml:6:8: resources.pids: 65537 is more than the maximum of 65536; use a whole number from 1 to 65536",
        ),
        (
            "pids = \"many\"",
            "t.toml:6:8: resources.pids: expected an integer, found string \"many\"; e.g. pids = 256",
        ),
    ];
    for (input, expect) in cases {
        check_base(&format!("[resources]\n{input}"), expect);
    }
}

#[test]
fn network_and_driver_problems() {
    check_base(
        "network = \"bridge\"\ndriver = \"docker\"",
        r#"
t.toml:5:11: network: "bridge" is not a network; use "host" (the node's network) or "none" (loopback only)
t.toml:6:10: driver: "docker" is not a driver; use "sandbox" (isolated, the default) or "process" (a plain process, for trusted jobs)"#,
    );
    check_base(
        "network = false",
        r#"t.toml:5:11: network: expected a string, found boolean false; quote it: "false""#,
    );
}

#[test]
fn network_none_refuses_ports_and_port_checks() {
    check_base(
        "network = \"none\"\n[health]\nhttp = \"/\"",
        r#"
t.toml:4:9: ports: a job with network = "none" gets a network namespace of its own with only loopback, so nothing outside could reach its ports; remove the [[ports]] or set network = "host"
t.toml:7:8: health.http: an http check connects to the task from the node, but network = "none" gives the task a network namespace of its own with only loopback; use an exec check, which runs inside the task's namespaces, or set network = "host""#,
    );
}

#[test]
fn exactly_one_check() {
    check_base(
        "[health]\ninterval = \"5s\"",
        r#"t.toml:5:1: health: no check given; add exactly one of http = "/healthz", tcp = true, grpc = "" (the whole server) or exec = ["/bin/sh", "-c", "test -f ready"]"#,
    );
    check_base(
        "[health]\ntcp = true\nhttp = \"/\"\nexec = [\"true\"]",
        r#"
t.toml:7:8: health.http: a [health] table has exactly one check and this one already has "tcp"; remove one of them
t.toml:8:8: health.exec: a [health] table has exactly one check and this one already has "tcp"; remove one of them"#,
    );
}

#[test]
fn check_problems() {
    let cases = [
        (
            "http = \"healthz\"",
            r#"t.toml:6:8: health.http: "healthz" does not start with '/'; give the path to request, e.g. http = "/healthz""#,
        ),
        (
            "http = \"/health z\"",
            r#"t.toml:6:8: health.http: "/health z" has ' ' at character 8; a request path is printable ASCII without spaces (percent-encode the rest), e.g. http = "/healthz""#,
        ),
        (
            "http = 80",
            r#"t.toml:6:8: health.http: expected a string, found integer 80; quote it: "80""#,
        ),
        (
            "tcp = false",
            "t.toml:6:7: health.tcp: tcp = false asks for no check; write tcp = true to check that the port accepts connections, or remove the [health] table",
        ),
        (
            "tcp = 8080",
            "t.toml:6:7: health.tcp: expected a boolean, found integer 8080; write tcp = true",
        ),
        (
            "grpc = \"my service\"",
            r#"t.toml:6:8: health.grpc: "my service" has ' ' at character 3; a gRPC service name is its full name in letters, digits, '_' and '.', e.g. "paved.v1.Jobs", or "" for the server as a whole"#,
        ),
        (
            "exec = []",
            r#"t.toml:6:8: health.exec: is empty; give the program and its arguments, e.g. exec = ["/bin/sh", "-c", "test -f ready"]"#,
        ),
        (
            "exec = \"test -f ok\"",
            r#"t.toml:6:8: health.exec: expected an array of strings, found string "test -f ok"; to run it through a shell: ["/bin/sh", "-c", "test -f ok"]"#,
        ),
        (
            "exec = [\"\", 1]",
            r#"
t.toml:6:9: health.exec[0]: the program is empty; name an executable, e.g. "/bin/sh" or "./server"
t.toml:6:13: health.exec[1]: expected a string, found integer 1; quote it: "1""#,
        ),
    ];
    for (input, expect) in cases {
        check_base(&format!("[health]\n{input}"), expect);
    }
}

#[test]
fn port_problems() {
    check_base(
        "[health]\ntcp = true\nport = \"metrics\"",
        r#"t.toml:7:8: health.port: "metrics" is not one of the job's ports; name one of its [[ports]]: "http", "admin""#,
    );
    check_base(
        "[health]\nexec = [\"true\"]\nport = \"http\"",
        "t.toml:7:8: health.port: an exec check runs beside the task and connects to no port; remove port",
    );
    check(
        &format!("{NO_PORTS}[health]\ngrpc = \"\""),
        r#"t.toml:6:8: health.grpc: a grpc check connects to one of the job's ports, but the job declares none; add [[ports]] with name = "http" (the task finds its number in $PORT), or use an exec check"#,
    );
    check(
        &format!("{NO_PORTS}[health]\ntcp = true\nport = \"http\""),
        r#"t.toml:7:8: health.port: "http" names no port: the job declares no [[ports]]; add [[ports]] with name = "http""#,
    );
}

#[test]
fn timing_problems() {
    let cases = [
        (
            "interval = \"500ms\"",
            r#"t.toml:7:12: health.interval: "500ms" is less than the minimum of 1s; check at most once every 1s, e.g. interval = "10s""#,
        ),
        (
            "interval = 10",
            r#"t.toml:7:12: health.interval: expected a duration string, found integer 10; a duration is a string with a unit, e.g. interval = "10s" or "500ms""#,
        ),
        (
            "timeout = \"11s\"",
            r#"t.toml:7:11: health.timeout: "11s" is longer than the interval of 10s; a check must end before the next one starts, so shorten the timeout or lengthen health.interval"#,
        ),
        (
            "timeout = \"1ms\"",
            r#"t.toml:7:11: health.timeout: "1ms" is less than the minimum of 10ms; allow a check at least 10ms, e.g. timeout = "2s""#,
        ),
        (
            "grace = \"soon\"",
            r#"t.toml:7:9: health.grace: "soon" is not a duration (expected number at 0); write numbers with units, e.g. "250ms", "1s", "1m30s" or "2h" (ms, s, m, h, d)"#,
        ),
        (
            "threshold = 0",
            "t.toml:7:13: health.threshold: 0 is less than the minimum of 1; use a whole number from 1 to 100",
        ),
        (
            "threshold = 101",
            "t.toml:7:13: health.threshold: 101 is more than the maximum of 100; use a whole number from 1 to 100",
        ),
    ];
    for (input, expect) in cases {
        check_base(&format!("[health]\ntcp = true\n{input}"), expect);
    }
}

#[test]
fn unknown_keys_in_health() {
    check_base(
        "[health]\ntcp = true\nintervall = \"5s\"",
        r#"t.toml:7:1: health.intervall: unknown key "intervall"; did you mean "interval"?"#,
    );
    check_base(
        "http = \"/\"",
        r#"t.toml:5:1: http: unknown key "http"; "http" belongs in [health], not the top level; move it under that header"#,
    );
    check_base(
        "[health]\ntcp = true\npids = 5",
        r#"t.toml:7:1: health.pids: unknown key "pids"; "pids" belongs in [resources], not [health]; move it under that header"#,
    );
}

#[test]
fn every_problem_of_a_table_at_once() {
    check_base(
        "[health]\nhttp = \"x\"\nport = \"nope\"\ninterval = \"1ms\"\nthreshold = 0",
        r#"
t.toml:6:8: health.http: "x" does not start with '/'; give the path to request, e.g. http = "/healthz"
t.toml:8:12: health.interval: "1ms" is less than the minimum of 1s; check at most once every 1s, e.g. interval = "10s"
t.toml:9:13: health.threshold: 0 is less than the minimum of 1; use a whole number from 1 to 100"#,
    );
}
