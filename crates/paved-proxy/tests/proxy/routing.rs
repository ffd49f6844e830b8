//! Routing: a full round trip, host and path matching, weighted splits, stickiness, live route
//! changes on a kept-alive connection, and the metrics a request leaves.

use std::collections::HashMap;

use http::Request;
use hyper_util::rt::TokioIo;
use paved_types::Sticky;

use crate::support::*;

#[tokio::test]
async fn round_trip_keeps_the_request_and_adds_forwarding_headers() {
    let (_up, proxy) = web_proxy().await;
    let client = client();
    let req = Request::put(proxy.url("/items/7?color=blue&n=2"))
        .header("x-custom", "yes")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .body(full("hello body"))
        .unwrap();
    let (status, headers, body) = send(&client, req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-task"], "web-1");
    assert!(
        !headers.contains_key("keep-alive"),
        "hop-by-hop response header passed: {headers:?}"
    );
    let echo = echo(&body);
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["uri"], "/items/7?color=blue&n=2");
    assert_eq!(echo["body"], "hello body");
    let h = &echo["headers"];
    assert_eq!(h["x-custom"], "yes");
    assert_eq!(h["host"], proxy.addr.to_string());
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["via"], "1.1 paved");
    assert!(h.get("x-hop").is_none(), "{h}");
    let traceparent = h["traceparent"].as_str().unwrap();
    assert_eq!(traceparent.len(), 55, "{traceparent}");

    // A valid traceparent passes unchanged.
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get(proxy.url("/"))
        .header("traceparent", given)
        .body(full(""))
        .unwrap();
    let (_, _, body) = send(&client, req).await;
    assert_eq!(crate::support::echo(&body)["headers"]["traceparent"], given);
}

#[tokio::test]
async fn routes_by_host_and_longest_path_prefix() {
    let (api, www, admin) = (
        Upstream::start("api-1").await,
        Upstream::start("www-1").await,
        Upstream::start("admin-1").await,
    );
    let mut api_route = route("api", &[("api", 1)]);
    api_route.hosts = vec!["api.example.com".into()];
    let mut www_route = route("www", &[("www", 1)]);
    www_route.hosts = vec!["*.example.com".into()];
    let mut admin_route = route("admin", &[("admin", 1)]);
    admin_route.hosts = vec!["*.example.com".into()];
    admin_route.path_prefix = "/admin".into();
    let mut empty = route("empty", &[("nobody", 1)]);
    empty.path_prefix = "/empty".into();
    let routes = vec![api_route, www_route, admin_route, empty];
    let proxy = Harness::start(snapshot(
        routes,
        &[("api", &[&api]), ("www", &[&www]), ("admin", &[&admin])],
        vec![],
    ))
    .await;
    let client = client();
    let check = async |host: &str, path: &str, want: Result<&str, u16>| {
        let req = Request::get(proxy.url(path))
            .header("host", host)
            .body(full(""))
            .unwrap();
        let (status, headers, body) = send(&client, req).await;
        let got = match headers.get("x-task") {
            Some(t) => Ok(t.to_str().unwrap().to_owned()),
            None => Err(status.as_u16()),
        };
        assert_eq!(got, want.map(str::to_owned), "{host} {path}: {body}");
        body
    };
    check("api.example.com", "/admin", Ok("api-1")).await;
    check("API.Example.com:8080", "/x", Ok("api-1")).await;
    check("shop.example.com", "/admin/users", Ok("admin-1")).await;
    check("shop.example.com", "/administrator", Ok("www-1")).await;
    let body = check("example.org", "/x", Err(404)).await;
    assert_eq!(body, "no route for host example.org path /x\n");
    let body = check("example.org", "/empty/1", Err(503)).await;
    assert_eq!(body, "no endpoint of job nobody is available (route empty)\n");
}

#[tokio::test]
async fn splits_by_weight_within_tolerance() {
    let (blue, green) = (Upstream::start("blue-1").await, Upstream::start("green-1").await);
    let r = route("web", &[("blue", 80), ("green", 20)]);
    let proxy = Harness::start(snapshot(
        vec![r],
        &[("blue", &[&blue]), ("green", &[&green])],
        vec![],
    ))
    .await;
    let client = client();
    let n = 2_000;
    for _ in 0..n {
        task_of(&client, &proxy.url("/")).await.unwrap();
    }
    // Binomial(2000, 0.2): sd ≈ 17.9; 5 sd either side.
    let green_share = green.hits();
    assert_eq!(blue.hits() + green_share, n);
    assert!(
        (310..=490).contains(&green_share),
        "green got {green_share} of {n}"
    );
}

#[tokio::test]
async fn sticky_clients_stay_on_one_task() {
    let ups = [
        Upstream::start("a-1").await,
        Upstream::start("a-2").await,
        Upstream::start("a-3").await,
    ];
    let mut by_cookie = route("web", &[("a", 1)]);
    by_cookie.sticky = Some(Sticky::Cookie("sid".into()));
    let mut by_header = route("api", &[("a", 1)]);
    by_header.path_prefix = "/api".into();
    by_header.sticky = Some(Sticky::Header("X-User".into()));
    let refs: Vec<&Upstream> = ups.iter().collect();
    let proxy = Harness::start(snapshot(vec![by_cookie, by_header], &[("a", &refs)], vec![])).await;
    let client = client();
    let mut seen = HashMap::new();
    for user in 0..60 {
        let cookie = format!("theme=dark; sid=user-{user}");
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let req = Request::get(proxy.url("/"))
                .header("cookie", &cookie)
                .body(full(""))
                .unwrap();
            let (_, headers, _) = send(&client, req).await;
            tasks.push(headers["x-task"].to_str().unwrap().to_owned());
        }
        assert!(
            tasks.windows(2).all(|w| w[0] == w[1]),
            "user-{user} moved: {tasks:?}"
        );
        *seen.entry(tasks[0].clone()).or_insert(0) += 1;
        let header_tasks: Vec<String> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                let req = Request::get(proxy.url("/api"))
                    .header("x-user", format!("u{user}"))
                    .body(full(""))
                    .unwrap();
                v.push(send(&client, req).await.1["x-task"].to_str().unwrap().to_owned());
            }
            v
        };
        assert!(header_tasks.windows(2).all(|w| w[0] == w[1]), "{header_tasks:?}");
    }
    assert_eq!(seen.len(), 3, "sticky values spread over every task: {seen:?}");
}

#[tokio::test]
async fn a_route_change_applies_live_on_a_kept_alive_connection() {
    let (old, new) = (Upstream::start("old-1").await, Upstream::start("new-1").await);
    let jobs: &[(&str, &[&Upstream])] = &[("old", &[&old]), ("new", &[&new])];
    let proxy = Harness::start(snapshot(vec![route("web", &[("old", 1)])], jobs, vec![])).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(conn);
    let mut ask = async || {
        let req = Request::get("/").header("host", "x").body(full("")).unwrap();
        let response = sender.send_request(req).await.expect("the connection stays up");
        response.headers()["x-task"].to_str().unwrap().to_owned()
    };
    assert_eq!(ask().await, "old-1");
    proxy.publish(snapshot(
        vec![route("web", &[("old", 0), ("new", 1)])],
        jobs,
        vec![],
    ));
    eventually("the new route applies", async || ask().await == "new-1").await;
    assert_eq!(ask().await, "new-1");
    assert!(!connection.is_finished(), "the client connection was dropped");
}

#[tokio::test]
async fn requests_are_counted_timed_and_tagged() {
    let (_up, proxy) = web_proxy().await;
    let client = client();
    for path in ["/", "/a", "/status/404", "/status/500"] {
        get(&client, &proxy.url(path)).await;
    }
    let m = |s: &str| proxy.metric(s);
    assert_eq!(
        m(r#"paved_proxy_requests_total{class="2xx",job="web",route="web"}"#),
        2.0
    );
    assert_eq!(
        m(r#"paved_proxy_requests_total{class="4xx",job="web",route="web"}"#),
        1.0
    );
    assert_eq!(
        m(r#"paved_proxy_requests_total{class="5xx",job="web",route="web"}"#),
        1.0
    );
    assert_eq!(
        m(r#"paved_proxy_upstream_errors_total{job="web",kind="status",route="web"}"#),
        1.0
    );
    assert_eq!(m(r#"paved_proxy_in_flight_requests{job="web",route="web"}"#), 0.0);
    let text = proxy.metrics();
    assert!(text.contains("paved_proxy_request_duration_seconds"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("paved_proxy_request_duration_seconds_count{job=\"web\",route=\"web\"} 4")),
        "{text}"
    );
}

#[tokio::test]
async fn serves_from_one_thread_per_core_and_stops_gracefully() {
    let up = Upstream::start("web-1").await;
    let s = snapshot(vec![route("web", &[("web", 1)])], &[("web", &[&up])], vec![]);
    let (_snapshots, rx) = tokio::sync::watch::channel(std::sync::Arc::new(s));
    let clock: std::sync::Arc<dyn paved_proxy::Clock> = std::sync::Arc::new(paved_proxy::SystemClock);
    let proxy =
        paved_proxy::Proxy::new(paved_proxy::ProxyConfig::default(), rx, Default::default(), clock).unwrap();
    let bound = proxy
        .bind_per_core("127.0.0.1:0".parse().unwrap(), 2)
        .await
        .unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    for _ in 0..10 {
        // A fresh client per round: new connections, hashed over both threads.
        let client = client();
        for _ in 0..5 {
            assert_eq!(
                task_of(&client, &format!("http://{addr}/")).await,
                Ok("web-1".to_owned())
            );
        }
    }
    assert_eq!(up.hits(), 50);
    // Connections held open together: a thread holding more than one above the other hands
    // new ones over, and a handed-over connection serves like any other.
    let mut held = Vec::new();
    for _ in 0..16 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        held.push(sender);
    }
    for sender in &mut held {
        let req = Request::get("/").header("host", "x").body(full("")).unwrap();
        let response = sender.send_request(req).await.expect("a held connection serves");
        assert_eq!(response.headers()["x-task"], "web-1");
    }
    assert_eq!(up.hits(), 66);
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn series_of_removed_routes_and_backends_go() {
    let (web, api, old) = (
        Upstream::start("web-1").await,
        Upstream::start("api-1").await,
        Upstream::start("old-1").await,
    );
    let mut api_route = route("api", &[("api", 1)]);
    api_route.path_prefix = "/api".into();
    let jobs: &[(&str, &[&Upstream])] = &[("web", &[&web]), ("api", &[&api]), ("old", &[&old])];
    let proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1), ("old", 1)]), api_route],
        jobs,
        vec![],
    ))
    .await;
    let client = client();
    for path in ["/", "/", "/", "/", "/api/x"] {
        get(&client, &proxy.url(path)).await;
    }
    let text = proxy.metrics();
    assert!(text.contains(r#"route="api""#), "{text}");
    assert!(text.contains(r#"job="old""#), "{text}");

    // The api route goes, and the web route keeps only its web job.
    proxy.publish(snapshot(vec![route("web", &[("web", 1)])], jobs, vec![]));
    eventually("the removed series go", async || {
        let text = proxy.metrics();
        !text.contains(r#"route="api""#) && !text.contains(r#"job="old""#)
    })
    .await;
    get(&client, &proxy.url("/")).await;
    let text = proxy.metrics();
    assert!(
        text.contains(r#"paved_proxy_requests_total{class="2xx",job="web",route="web"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"paved_proxy_injected_faults_total{action="abort",route="web"}"#),
        "{text}"
    );
    assert!(!text.contains(r#"route="api""#), "{text}");
}
