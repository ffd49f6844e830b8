//! Route matching, data-driven, and endpoint state kept across snapshots.

use std::time::Duration;

use paved_types::Backend;

use super::*;

fn route(name: &str, hosts: &[&str], prefix: &str) -> Route {
    Route {
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path_prefix: prefix.into(),
        backends: vec![Backend {
            job: "job".into(),
            port: String::new(),
            weight: 1,
        }],
        sticky: None,
        timeout: Duration::from_secs(1),
        retries: 0,
    }
}

fn endpoint(task: &str, port: u16, port_name: &str, draining: bool) -> Endpoint {
    Endpoint {
        task: task.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        port_name: port_name.into(),
        draining,
    }
}

#[test]
fn matching() {
    let snapshot = Snapshot {
        routes: vec![
            route("any-root", &[], "/"),
            route("any-api", &[], "/api"),
            route("exact", &["api.example.com"], "/"),
            route("exact-v2", &["api.example.com"], "/v2/"),
            route("wild", &["*.example.com"], "/"),
            route("deep-wild", &["*.eu.example.com"], "/x"),
            route("only-admin", &["admin.example.com"], "/admin"),
            route("Bad Name", &[], "/bad"),
        ],
        ..Snapshot::default()
    };
    let table = Table::compile(&snapshot, None, &Registry::new());
    let check = |host: Option<&str>, path: &str, want: Option<&str>| {
        let got = table.find(host, path).map(|r| r.name.as_str());
        assert_eq!(got, want, "{host:?} {path}");
    };
    check(Some("api.example.com"), "/v2/users", Some("exact-v2"));
    check(Some("API.Example.COM"), "/v2/users", Some("exact-v2"));
    check(Some("api.example.com"), "/v2", Some("exact"));
    check(Some("api.example.com"), "/", Some("exact"));
    check(Some("www.example.com"), "/", Some("wild"));
    check(Some("a.b.example.com"), "/", Some("wild"));
    check(Some("a.eu.example.com"), "/x/1", Some("deep-wild"));
    check(Some("a.eu.example.com"), "/y", Some("wild"));
    check(Some("example.com"), "/api/v1", Some("any-api"));
    check(Some("example.com"), "/apis", Some("any-root"));
    check(Some("other"), "/api", Some("any-api"));
    check(None, "/", Some("any-root"));
    check(Some("admin.example.com"), "/admin/x", Some("only-admin"));
    // The exact host has no route for this path: the wildcard's applies.
    check(Some("admin.example.com"), "/public", Some("wild"));
    check(Some("x"), "/bad", Some("any-root"));

    let narrow = Snapshot {
        routes: vec![route("a", &["a.com"], "/a")],
        ..Snapshot::default()
    };
    let table = Table::compile(&narrow, None, &Registry::new());
    assert!(table.find(Some("a.com"), "/b").is_none());
    assert!(table.find(Some("b.com"), "/a").is_none());
    assert!(table.find(None, "/a").is_none());
}

#[test]
fn endpoints_by_port_without_draining_and_kept_across_snapshots() {
    let mut r = route("web", &[], "/");
    r.backends = vec![
        Backend {
            job: "job".into(),
            port: String::new(),
            weight: 1,
        },
        Backend {
            job: "job".into(),
            port: "admin".into(),
            weight: 1,
        },
    ];
    let mut snapshot = Snapshot {
        routes: vec![r],
        endpoints: [(
            "job".to_owned(),
            vec![
                endpoint("t1", 1001, "http", false),
                endpoint("t1", 1002, "admin", false),
                endpoint("t2", 2001, "http", false),
                endpoint("t2", 2002, "admin", false),
                endpoint("t3", 3001, "http", true),
            ],
        )]
        .into(),
        faults: vec![],
    };
    let registry = Registry::new();
    let first = Table::compile(&snapshot, None, &registry);
    let route = first.find(None, "/").unwrap();
    let ports = |b: &BackendEntry| b.endpoints.iter().map(|e| e.addr.port()).collect::<Vec<_>>();
    assert_eq!(ports(&route.backends[0]), [1001, 2001]);
    assert_eq!(ports(&route.backends[1]), [1002, 2002]);
    route.backends[0].endpoints[0].observe_latency(Duration::from_millis(3));

    snapshot
        .endpoints
        .get_mut("job")
        .unwrap()
        .retain(|e| e.task != "t2");
    let second = Table::compile(&snapshot, Some(&first), &registry);
    let kept = &second.find(None, "/").unwrap().backends[0].endpoints;
    assert_eq!(kept.len(), 1);
    assert!(Arc::ptr_eq(&kept[0], &route.backends[0].endpoints[0]));
    assert_eq!(kept[0].cost(), Some(3e6));
}

#[test]
fn weighted_backend_choice() {
    let mut r = route("web", &[], "/");
    r.backends = vec![
        Backend {
            job: "a".into(),
            port: String::new(),
            weight: 1,
        },
        Backend {
            job: "b".into(),
            port: String::new(),
            weight: 0,
        },
        Backend {
            job: "c".into(),
            port: String::new(),
            weight: 3,
        },
    ];
    let snapshot = Snapshot {
        routes: vec![r],
        ..Snapshot::default()
    };
    let table = Table::compile(&snapshot, None, &Registry::new());
    let entry = table.find(None, "/").unwrap();
    let jobs: Vec<&str> = (0..8)
        .map(|roll| entry.backend(None, || roll).job.as_str())
        .collect();
    assert_eq!(jobs, ["a", "c", "c", "c", "a", "c", "c", "c"]);
}
