//! Route and fault validation, data-driven, plus property tests for the parsers.

use proptest::prelude::*;

use super::*;

fn route() -> Route {
    Route {
        name: "web".into(),
        hosts: vec!["api.example.com".into(), "*.example.org".into()],
        path_prefix: "/api".into(),
        backends: vec![
            Backend {
                job: "web-v001".into(),
                port: String::new(),
                weight: 90,
            },
            Backend {
                job: "web-v002".into(),
                port: "http".into(),
                weight: 10,
            },
        ],
        sticky: Some(Sticky::Cookie("session".into())),
        timeout: Duration::from_secs(15),
        retries: 2,
    }
}

fn fault() -> Fault {
    Fault {
        id: "f-1".into(),
        route: "web".into(),
        action: FaultAction::Abort(503),
        percent: 5.0,
        header: Some(("x-chaos".into(), "on".into())),
        expires_at_ms: 1_000,
    }
}

/// `edit` applied to a valid route gives `expected`: "" for valid, else a fragment of the error.
fn check_route(edit: impl FnOnce(&mut Route), expected: &str) {
    let mut r = route();
    edit(&mut r);
    match (r.validate(), expected) {
        (Ok(()), "") => {}
        (Ok(()), want) => panic!("{r:?} validated, wanted an error containing {want:?}"),
        (Err(e), want) => assert!(
            !want.is_empty() && e.to_string().contains(want),
            "{r:?}: got {e}, wanted {want:?}"
        ),
    }
}

fn check_fault(edit: impl FnOnce(&mut Fault), expected: &str) {
    let mut f = fault();
    edit(&mut f);
    match (f.validate(), expected) {
        (Ok(()), "") => {}
        (Ok(()), want) => panic!("{f:?} validated, wanted an error containing {want:?}"),
        (Err(e), want) => assert!(
            !want.is_empty() && e.to_string().contains(want),
            "{f:?}: got {e}, wanted {want:?}"
        ),
    }
}

#[test]
fn route_rules() {
    check_route(|_| {}, "");
    check_route(
        |r| r.name = "Web".into(),
        "route name \"Web\" has 'W' at character 1",
    );
    check_route(|r| r.name = "9web".into(), "starts with '9'");
    check_route(|r| r.name = "web-".into(), "ends with '-'");
    check_route(|r| r.name = String::new(), "is empty");
    check_route(|r| r.hosts = vec![], "");
    check_route(
        |r| r.hosts = vec!["API.example.com".into()],
        "uppercase letter 'A'",
    );
    check_route(|r| r.hosts = vec!["a.example.com:80".into()], "has a port");
    check_route(|r| r.hosts = vec!["a..com".into()], "empty label");
    check_route(|r| r.hosts = vec!["-a.com".into()], "starts or ends with '-'");
    check_route(|r| r.hosts = vec!["a_b.com".into()], "has '_'");
    check_route(|r| r.hosts = vec!["*.".into()], "is empty");
    check_route(|r| r.hosts = vec!["a.*.com".into()], "has '*'");
    check_route(|r| r.hosts = vec!["localhost".into(), "127.0.0.1".into()], "");
    check_route(|r| r.hosts = vec!["a.com".into(), "a.com".into()], "listed twice");
    check_route(
        |r| r.hosts = vec!["h.com".into(); MAX_HOSTS + 1],
        "use at most 32",
    );
    check_route(|r| r.path_prefix = "api".into(), "does not start with '/'");
    check_route(|r| r.path_prefix = "/a b".into(), "has ' '");
    check_route(|r| r.path_prefix = "/a?x".into(), "has '?'");
    check_route(|r| r.path_prefix = "/".into(), "");
    check_route(
        |r| r.path_prefix = format!("/{}", "a".repeat(MAX_PATH_LEN)),
        "bytes long",
    );
    check_route(|r| r.backends.clear(), "backends is empty");
    check_route(
        |r| {
            r.backends = (0..=MAX_BACKENDS)
                .map(|i| Backend {
                    job: format!("j{i}"),
                    port: String::new(),
                    weight: 1,
                })
                .collect()
        },
        "use at most 16",
    );
    check_route(|r| r.backends[1].job = "Web".into(), "backends[1].job \"Web\"");
    check_route(
        |r| r.backends[1].port = "HTTP".into(),
        "backends[1].port \"HTTP\"",
    );
    check_route(
        |r| r.backends[1].weight = MAX_WEIGHT + 1,
        "backends[1].weight 10001",
    );
    check_route(|r| r.backends[1].weight = 0, "");
    check_route(
        |r| r.backends.iter_mut().for_each(|b| b.weight = 0),
        "every backend has weight 0",
    );
    check_route(|r| r.backends[1] = r.backends[0].clone(), "listed twice");
    check_route(
        |r| r.sticky = Some(Sticky::Header("x user".into())),
        "sticky header name \"x user\" has ' '",
    );
    check_route(
        |r| r.sticky = Some(Sticky::Cookie(String::new())),
        "sticky cookie name \"\" is empty",
    );
    check_route(|r| r.timeout = Duration::ZERO, "timeout 0ns is out of range");
    check_route(|r| r.timeout = Duration::from_secs(7200), "is out of range");
    check_route(|r| r.retries = 11, "retries 11 is above 10");
}

#[test]
fn fault_rules() {
    check_fault(|_| {}, "");
    check_fault(|f| f.id = String::new(), "fault id \"\" is empty");
    check_fault(|f| f.id = "a b".into(), "has ' '");
    check_fault(|f| f.route = "Web".into(), "route \"Web\"");
    check_fault(|f| f.percent = 0.0, "percent 0 is out of range");
    check_fault(|f| f.percent = 100.5, "out of range");
    check_fault(|f| f.percent = f64::NAN, "percent NaN");
    check_fault(|f| f.percent = 100.0, "");
    check_fault(|f| f.percent = 0.01, "");
    check_fault(|f| f.action = FaultAction::Abort(200), "abort status 200");
    check_fault(|f| f.action = FaultAction::Abort(599), "");
    check_fault(|f| f.action = FaultAction::Abort(600), "abort status 600");
    check_fault(|f| f.action = FaultAction::Delay(Duration::ZERO), "delay 0ns");
    check_fault(
        |f| f.action = FaultAction::Delay(Duration::from_secs(301)),
        "out of range",
    );
    check_fault(|f| f.action = FaultAction::Delay(Duration::from_millis(200)), "");
    check_fault(
        |f| f.header = Some(("x:y".into(), "1".into())),
        "header name \"x:y\" has ':'",
    );
    check_fault(
        |f| f.header = Some(("x".into(), "a\nb".into())),
        "control character",
    );
    check_fault(|f| f.header = None, "");
    check_fault(|f| f.expires_at_ms = 0, "expires_at_ms is 0");
}

#[test]
fn expiry_is_exclusive_of_the_deadline() {
    let f = fault();
    assert!(!f.expired(999));
    assert!(f.expired(1_000));
}

#[test]
fn backend_and_sticky_syntax() {
    type Parsed<'a> = Option<(&'a str, &'a str, u32)>;
    let cases: &[(&str, Parsed)] = &[
        ("web=90", Some(("web", "", 90))),
        ("web:grpc=10", Some(("web", "grpc", 10))),
        ("web=0", Some(("web", "", 0))),
        ("web", None),
        ("=5", None),
        ("web=-1", None),
        ("web=x", None),
    ];
    for (input, want) in cases {
        let got = input.parse::<Backend>().ok();
        let want = want.map(|(job, port, weight)| Backend {
            job: job.into(),
            port: port.into(),
            weight,
        });
        assert_eq!(got, want, "{input}");
        if let Some(b) = got {
            assert_eq!(b.to_string(), *input);
        }
    }
    assert_eq!(
        "header:x-user".parse::<Sticky>(),
        Ok(Sticky::Header("x-user".into()))
    );
    assert_eq!("cookie:sid".parse::<Sticky>(), Ok(Sticky::Cookie("sid".into())));
    assert!("cookie:".parse::<Sticky>().is_err());
    assert!("ip".parse::<Sticky>().is_err());
}

#[test]
fn json_round_trip_and_defaults() {
    let r = route();
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"timeout\":15000"), "{json}");
    assert!(
        json.contains(r#""sticky":{"by":"cookie","name":"session"}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), r);

    let minimal: Route = serde_json::from_str(r#"{"name":"a","backends":[{"job":"j","weight":1}]}"#).unwrap();
    assert_eq!(minimal.path_prefix, "/");
    assert_eq!(
        (minimal.timeout, minimal.retries),
        (DEFAULT_TIMEOUT, DEFAULT_RETRIES)
    );
    assert_eq!(minimal.validate(), Ok(()));
    let unknown = serde_json::from_str::<Route>(r#"{"name":"a","backends":[],"weights":1}"#);
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `weights`")
    );

    let f = Fault {
        action: FaultAction::Delay(Duration::from_millis(200)),
        ..fault()
    };
    let json = serde_json::to_string(&f).unwrap();
    assert!(json.contains(r#""action":{"delay":200}"#), "{json}");
    assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), f);
    let abort = serde_json::to_string(&fault()).unwrap();
    assert!(abort.contains(r#""action":{"abort":503}"#), "{abort}");
}

proptest! {
    /// Whatever `--to` is given, parsing never panics, and what parses prints back the same.
    #[test]
    fn backend_parse_round_trips(s in "[a-z:=0-9-]{0,20}") {
        if let Ok(b) = s.parse::<Backend>() {
            let again: Backend = b.to_string().parse().unwrap();
            prop_assert_eq!(again, b);
        }
    }

    /// Generated valid routes validate; any weight vector with a positive sum is accepted.
    #[test]
    fn valid_routes_validate(
        name in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4),
        wildcard in any::<bool>(),
        path in "(/[a-zA-Z0-9._~-]{0,8}){1,4}",
        weights in proptest::collection::vec(0u32..=MAX_WEIGHT, 1..MAX_BACKENDS),
    ) {
        let host = format!("{}{}", if wildcard { "*." } else { "" }, labels.join("."));
        let backends: Vec<Backend> = weights.iter().enumerate()
            .map(|(i, &weight)| Backend { job: format!("job{i}"), port: String::new(), weight })
            .collect();
        let r = Route { name, hosts: vec![host], path_prefix: path, backends, ..route() };
        let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        prop_assert_eq!(r.validate().is_ok(), sum > 0, "{:?}", r.validate());
    }

    /// Validation never panics on arbitrary text anywhere.
    #[test]
    fn validation_is_total(name in ".{0,70}", host in ".{0,70}", path in ".{0,70}", header in ".{0,70}") {
        let r = Route { name: name.clone(), hosts: vec![host], path_prefix: path, ..route() };
        let _ = r.validate();
        let f = Fault { id: name, header: Some((header.clone(), header)), ..fault() };
        let _ = f.validate();
    }
}
