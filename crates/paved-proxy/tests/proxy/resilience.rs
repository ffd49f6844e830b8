//! Resilience: retries hide dead endpoints, passive health ejects and re-admits, draining
//! endpoints get no new requests, a job killed or scaled down under load fails no request,
//! timeouts answer 504, and a graceful stop finishes what is in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use paved_proxy::Snapshot;

use crate::support::*;

const CONNECT_ERRORS: &str = r#"paved_proxy_upstream_errors_total{job="web",kind="connect",route="web"}"#;
const EJECTIONS: &str = r#"paved_proxy_ejections_total{job="web",route="web"}"#;

fn with_endpoints(snapshot: &mut Snapshot, job: &str, endpoints: Vec<paved_proxy::Endpoint>) {
    snapshot.endpoints.insert(job.to_owned(), endpoints);
}

#[tokio::test]
async fn retries_hide_a_dead_endpoint() {
    let up = Upstream::start("web-1").await;
    let mut s = snapshot(vec![route("web", &[("web", 1)])], &[], vec![]);
    with_endpoints(
        &mut s,
        "web",
        vec![dead_endpoint("web-dead").await, up.endpoint()],
    );
    let proxy = Harness::start(s).await;
    let client = client();
    for i in 0..200 {
        assert_eq!(
            task_of(&client, &proxy.url("/")).await,
            Ok("web-1".to_owned()),
            "request {i}"
        );
    }
    assert!(proxy.metric(CONNECT_ERRORS) >= 1.0);
    assert!(proxy.metric(r#"paved_proxy_retries_total{job="web",route="web"}"#) >= 1.0);
}

#[tokio::test]
async fn failing_endpoints_are_ejected_then_readmitted_after_backoff() {
    let up = Upstream::start("web-1").await;
    let mut s = snapshot(vec![route("web", &[("web", 1)])], &[], vec![]);
    with_endpoints(
        &mut s,
        "web",
        vec![dead_endpoint("web-dead").await, up.endpoint()],
    );
    let proxy = Harness::start(s).await;
    let client = client();
    for _ in 0..50 {
        task_of(&client, &proxy.url("/")).await.unwrap();
    }
    assert_eq!(proxy.metric(EJECTIONS), 1.0);
    let errors = proxy.metric(CONNECT_ERRORS);
    assert_eq!(errors, 5.0, "consecutive failures before the ejection");
    for _ in 0..100 {
        task_of(&client, &proxy.url("/")).await.unwrap();
    }
    assert_eq!(
        proxy.metric(CONNECT_ERRORS),
        errors,
        "an ejected endpoint got requests"
    );

    // The base backoff (10s) passes: the endpoint is tried again, fails again, and is ejected
    // for twice as long.
    proxy.clock.advance_ms(10_000);
    for _ in 0..50 {
        task_of(&client, &proxy.url("/")).await.unwrap();
    }
    assert_eq!(proxy.metric(CONNECT_ERRORS), 10.0);
    assert_eq!(proxy.metric(EJECTIONS), 2.0);
    proxy.clock.advance_ms(10_000);
    for _ in 0..50 {
        task_of(&client, &proxy.url("/")).await.unwrap();
    }
    assert_eq!(
        proxy.metric(CONNECT_ERRORS),
        10.0,
        "the second ejection lasts 20s"
    );
}

#[tokio::test]
async fn five_hundreds_eject_but_never_the_last_endpoint() {
    let (ok, sick) = (
        Upstream::start("web-1").await,
        Upstream::failing("web-2", 500).await,
    );
    let proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &[&ok, &sick])],
        vec![],
    ))
    .await;
    let client = client();
    // The healthy endpoint answers slowly, so the balancer keeps preferring the failing one
    // (peak-EWMA sees only latency) until passive health ejects it.
    for _ in 0..100 {
        get(&client, &proxy.url("/slow")).await;
    }
    assert_eq!(proxy.metric(EJECTIONS), 1.0);
    assert_eq!(
        sick.hits(),
        5,
        "the sick endpoint got requests after its ejection"
    );

    let alone = Upstream::failing("solo-1", 503).await;
    let mut only = route("solo", &[("solo", 1)]);
    only.path_prefix = "/solo".into();
    proxy.publish(snapshot(vec![only], &[("solo", &[&alone])], vec![]));
    eventually("the solo route applies", async || {
        get(&client, &proxy.url("/solo")).await.0 == 503
    })
    .await;
    for _ in 0..30 {
        assert_eq!(get(&client, &proxy.url("/solo")).await.0, 503);
    }
    assert_eq!(
        proxy.metric(r#"paved_proxy_ejections_total{job="solo",route="solo"}"#),
        0.0
    );
}

#[tokio::test]
async fn a_draining_endpoint_gets_no_new_requests_and_finishes_its_own() {
    let (a, b) = (Upstream::start("web-a").await, Upstream::start("web-b").await);
    let proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &[&b])],
        vec![],
    ))
    .await;
    let client = client();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url("/slow/400"));
        async move { task_of(&client, &url).await }
    });
    eventually("the slow request reaches b", async || b.hits() == 1).await;
    let mut draining = b.endpoint();
    draining.draining = true;
    let mut s = snapshot(vec![route("web", &[("web", 1)])], &[], vec![]);
    with_endpoints(&mut s, "web", vec![a.endpoint(), draining]);
    proxy.publish(s);
    eventually("a takes requests", async || {
        task_of(&client, &proxy.url("/")).await == Ok("web-a".into())
    })
    .await;
    for _ in 0..100 {
        assert_eq!(task_of(&client, &proxy.url("/")).await, Ok("web-a".to_owned()));
    }
    assert_eq!(b.hits(), 1);
    assert_eq!(
        slow.await.unwrap(),
        Ok("web-b".to_owned()),
        "the in-flight request finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_and_a_scale_down_under_load_fail_no_request() {
    let ups = [
        Upstream::start("web-1").await,
        Upstream::start("web-2").await,
        Upstream::start("web-3").await,
    ];
    let all: Vec<&Upstream> = ups.iter().collect();
    let proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &all)],
        vec![],
    ))
    .await;
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client(), proxy.url("/slow/5"));
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    match task_of(&client, &url).await {
                        Ok(_) => ok.fetch_add(1, SeqCst),
                        Err(status) => {
                            eprintln!("failed: {status}");
                            failed.fetch_add(1, SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A task dies without warning: passive health and retries must hide it.
    ups[2].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Scale down as the platform does it: drain, let in-flight requests finish, stop, remove.
    let mut drained = ups[1].endpoint();
    drained.draining = true;
    let mut s = snapshot(vec![route("web", &[("web", 1)])], &[], vec![]);
    with_endpoints(&mut s, "web", vec![ups[0].endpoint(), drained, ups[2].endpoint()]);
    proxy.publish(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ups[1].kill();
    proxy.publish(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &[&ups[0]])],
        vec![],
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failed.load(SeqCst), 0, "of {} requests", ok.load(SeqCst));
    assert!(ok.load(SeqCst) > 200, "only {} requests", ok.load(SeqCst));
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504() {
    let up = Upstream::start("web-1").await;
    let mut r = route("web", &[("web", 1)]);
    r.timeout = Duration::from_millis(200);
    let proxy = Harness::start(snapshot(vec![r], &[("web", &[&up])], vec![])).await;
    let started = Instant::now();
    let (status, _, body) = get(&client(), &proxy.url("/slow/3000")).await;
    assert_eq!(status, 504);
    assert_eq!(body, "job web did not answer within 200ms (route web)\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        proxy.metric(r#"paved_proxy_upstream_errors_total{job="web",kind="timeout",route="web"}"#),
        1.0
    );
}

#[tokio::test]
async fn a_graceful_stop_finishes_in_flight_requests() {
    let up = Upstream::start("web-1").await;
    let mut proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &[&up])],
        vec![],
    ))
    .await;
    let slow = tokio::spawn({
        let (client, url) = (client(), proxy.url("/slow/400"));
        async move { task_of(&client, &url).await }
    });
    eventually("the slow request is upstream", async || up.hits() == 1).await;
    proxy.stop();
    assert_eq!(slow.await.unwrap(), Ok("web-1".to_owned()));
    let served = proxy.served.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting"
    );
}
