//! Manifest parsing of `[[routes]]`, data-driven like `manifest.rs`: TOML in, the routes it
//! declares or every problem out, rendered as the user sees them.

use paved_types::units::format_duration;
use paved_types::{JobSpec, parse_manifest};

/// The keys every job needs, plus two ports. Four lines: a case's own lines start at line 5.
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

/// One line per route: name, hosts, path, backend, stickiness, timeout, retries.
fn render(s: &JobSpec) -> String {
    if s.routes.is_empty() {
        return "no routes".to_owned();
    }
    let lines: Vec<String> = s
        .routes
        .iter()
        .map(|r| {
            let b = &r.backends[0];
            let sticky = r.sticky.as_ref().map_or("-".to_owned(), ToString::to_string);
            format!(
                "{} hosts={:?} path={} -> {}:{}={} sticky={sticky} timeout={} retries={}",
                r.name,
                r.hosts,
                r.path_prefix,
                b.job,
                b.port,
                b.weight,
                format_duration(r.timeout),
                r.retries
            )
        })
        .collect();
    lines.join("\n")
}

// ---- valid ----

#[test]
fn no_routes_by_default() {
    check_base("", "no routes");
}

#[test]
fn defaults_route_every_host_and_path_to_the_first_port() {
    check_base(
        "[[routes]]",
        r#"web hosts=[] path=/ -> web:http=100 sticky=- timeout=15s retries=2"#,
    );
}

#[test]
fn every_field_set() {
    check_base(
        "[[routes]]\nname = \"api\"\nhost = \"api.example.com\"\npath = \"/v1\"\nport = \"admin\"\nsticky = \"cookie:session\"\ntimeout = \"2s\"\nretries = 0",
        r#"api hosts=["api.example.com"] path=/v1 -> web:admin=100 sticky=cookie:session timeout=2s retries=0"#,
    );
}

#[test]
fn later_routes_are_named_after_the_job_and_their_place() {
    check_base(
        "[[routes]]\npath = \"/a\"\n[[routes]]\nhosts = [\"b.example.com\", \"*.b.example.com\"]",
        "web hosts=[] path=/a -> web:http=100 sticky=- timeout=15s retries=2\n\
         web-2 hosts=[\"b.example.com\", \"*.b.example.com\"] path=/ -> web:http=100 sticky=- timeout=15s retries=2",
    );
}

// ---- invalid: each problem names its line, column and field ----

#[test]
fn a_route_needs_a_port() {
    check(
        &format!("{NO_PORTS}[[routes]]\npath = \"/\""),
        "t.toml:5:1: routes: a route sends traffic to one of the job's ports, and this job declares none; add [[ports]] with name = \"http\"",
    );
}

#[test]
fn an_unknown_port_lists_the_declared_ones() {
    check_base(
        "[[routes]]\nport = \"grpc\"",
        r#"t.toml:6:8: routes[0].port: "grpc" is not one of the job's ports; use one of ["http", "admin"]"#,
    );
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "path = \"api\"",
            r#"t.toml:6:8: routes[0].path: route web: path_prefix "api" does not start with '/'; write a path starting with '/', such as "/api", without '?', '#', spaces or control characters, at most 1024 bytes"#,
        ),
        (
            "host = \"API.example.com\"",
            r#"t.toml:6:8: routes[0].host: route web: host "API.example.com" has the uppercase letter 'A'; write a lowercase DNS name such as "api.example.com", or "*.example.com" for its subdomains, without a port"#,
        ),
        (
            "name = \"Web\"",
            r#"t.toml:6:8: routes[0].name: route name "Web" has 'W' at character 1; a name is 1 to 63 lowercase letters (a-z), digits and '-', starting with a letter and not ending in '-'"#,
        ),
        (
            "sticky = \"session\"",
            r#"t.toml:6:10: routes[0].sticky: "session" is not a stickiness; write header:NAME or cookie:NAME, e.g. cookie:session"#,
        ),
        (
            "retries = 11",
            "t.toml:6:11: routes[0].retries: 11 is more than the maximum of 10; use a whole number from 0 to 10",
        ),
        (
            "timeout = \"2h\"",
            r#"t.toml:6:11: routes[0].timeout: route web: timeout 7200s is out of range; use 1ms to 1h, e.g. "15s""#,
        ),
        (
            "paths = \"/\"",
            r#"t.toml:6:1: routes[0].paths: unknown key "paths"; did you mean "path"?"#,
        ),
    ];
    for (input, expect) in cases {
        check_base(&format!("[[routes]]\n{input}"), expect);
    }
}

#[test]
fn host_and_hosts_together_are_refused() {
    check_base(
        "[[routes]]\nhost = \"a.example.com\"\nhosts = [\"b.example.com\"]",
        r#"t.toml:7:9: routes[0].hosts: give host = "…" or hosts = ["…", …], not both"#,
    );
}

#[test]
fn names_are_unique_within_the_job() {
    check_base(
        "[[routes]]\nname = \"api\"\n[[routes]]\nname = \"api\"\npath = \"/x\"",
        r#"t.toml:7:1: routes[1].name: route name "api" is used twice in this job; give each [[routes]] its own name"#,
    );
}
