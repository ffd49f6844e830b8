//! Fault injection: abort and delay hit their share of requests, only those carrying the
//! header when one is set, and stop at expiry and when removed (halt).

use std::time::{Duration, Instant};

use http::Request;
use paved_types::{Fault, FaultAction};

use crate::support::*;

fn fault(
    id: &str,
    action: FaultAction,
    percent: f64,
    header: Option<(&str, &str)>,
    expires_at_ms: u64,
) -> Fault {
    Fault {
        id: id.into(),
        route: "web".into(),
        action,
        percent,
        header: header.map(|(k, v)| (k.into(), v.into())),
        expires_at_ms,
    }
}

#[tokio::test]
async fn aborts_hit_their_share_and_stop_at_expiry_and_halt() {
    let up = Upstream::start("web-1").await;
    let now = 1_000_000;
    let abort = fault("f1", FaultAction::Abort(503), 30.0, None, now + 60_000);
    let routes = || vec![route("web", &[("web", 1)])];
    let jobs: &[(&str, &[&Upstream])] = &[("web", &[&up])];
    let proxy = Harness::start(snapshot(routes(), jobs, vec![abort.clone()])).await;
    let client = client();
    let n = 1_000;
    let mut aborted = 0;
    for _ in 0..n {
        let (status, _, body) = get(&client, &proxy.url("/")).await;
        if status == 503 {
            assert_eq!(body, "fault f1 injected on route web\n");
            aborted += 1;
        }
    }
    // Binomial(1000, 0.3): sd ≈ 14.5; 5 sd either side.
    assert!((228..=372).contains(&aborted), "{aborted} of {n} aborted");
    assert_eq!(up.hits(), n - aborted, "an aborted request reached the upstream");
    assert_eq!(
        proxy.metric(r#"paved_proxy_injected_faults_total{action="abort",route="web"}"#),
        aborted as f64
    );

    proxy.clock.set(now + 60_000);
    for _ in 0..200 {
        assert_eq!(
            get(&client, &proxy.url("/")).await.0,
            200,
            "an expired fault still hits"
        );
    }

    // Halt: the platform publishes the snapshot without faults.
    proxy.clock.set(now);
    proxy.publish(snapshot(routes(), jobs, vec![abort]));
    eventually("the fault is back", async || {
        get(&client, &proxy.url("/")).await.0 == 503
    })
    .await;
    proxy.publish(snapshot(routes(), jobs, vec![]));
    eventually("the halt applies", async || {
        get(&client, &proxy.url("/")).await.0 == 200
    })
    .await;
    for _ in 0..200 {
        assert_eq!(
            get(&client, &proxy.url("/")).await.0,
            200,
            "a halted fault still hits"
        );
    }
}

#[tokio::test]
async fn delays_hit_only_requests_with_the_header() {
    let up = Upstream::start("web-1").await;
    let delay = fault(
        "slow",
        FaultAction::Delay(Duration::from_millis(150)),
        100.0,
        Some(("X-Chaos", "on")),
        u64::MAX,
    );
    let proxy = Harness::start(snapshot(
        vec![route("web", &[("web", 1)])],
        &[("web", &[&up])],
        vec![delay],
    ))
    .await;
    let client = client();
    let timed = async |chaos: Option<&str>| {
        let mut req = Request::get(proxy.url("/"));
        if let Some(v) = chaos {
            req = req.header("x-chaos", v);
        }
        let started = Instant::now();
        let (status, _, _) = send(&client, req.body(full("")).unwrap()).await;
        assert_eq!(status, 200, "a delayed request is still proxied");
        started.elapsed()
    };
    for _ in 0..5 {
        assert!(timed(Some("on")).await >= Duration::from_millis(150));
        assert!(timed(Some("off")).await < Duration::from_millis(100));
        assert!(timed(None).await < Duration::from_millis(100));
    }
    assert_eq!(
        proxy.metric(r#"paved_proxy_injected_faults_total{action="delay",route="web"}"#),
        5.0
    );
}
