//! The proxy as `cargo xtask bench proxy` runs it: one route sending everything to one
//! upstream, default settings (retries, traceparent, forwarding headers and metrics on), one
//! thread per core. `bench_proxy LISTEN UPSTREAM [--multi-thread]`, e.g.
//! `bench_proxy 127.0.0.1:8080 127.0.0.1:8081`; `--multi-thread` serves from one multi-threaded
//! tokio runtime instead, for comparison. Runs until killed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use paved_proxy::{Endpoint, Proxy, ProxyConfig, Snapshot, SystemClock};
use paved_telemetry::Registry;
use paved_types::{Backend, Route};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, multi) = match args.as_slice() {
        [l, u] => (l, u, false),
        [l, u, flag] if flag == "--multi-thread" => (l, u, true),
        _ => return Err("usage: bench_proxy LISTEN UPSTREAM [--multi-thread]".into()),
    };
    let (listen, upstream): (SocketAddr, SocketAddr) = (listen.parse()?, upstream.parse()?);
    let route = Route {
        name: "bench".into(),
        hosts: vec![],
        path_prefix: "/".into(),
        backends: vec![Backend {
            job: "upstream".into(),
            port: String::new(),
            weight: 1,
        }],
        sticky: None,
        timeout: Duration::from_secs(15),
        retries: 2,
    };
    let endpoint = Endpoint {
        task: "upstream-1".into(),
        addr: upstream,
        port_name: "http".into(),
        draining: false,
    };
    let snapshot = Snapshot {
        routes: vec![route],
        endpoints: [("upstream".to_owned(), vec![endpoint])].into(),
        faults: vec![],
    };
    let (_keep, snapshots) = tokio::sync::watch::channel(Arc::new(snapshot));
    let proxy = Proxy::new(
        ProxyConfig::default(),
        snapshots,
        Registry::new(),
        Arc::new(SystemClock),
    )?;
    if multi {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("ready");
        proxy.serve(listener, std::future::pending()).await?;
    } else {
        let bound = proxy.bind_per_core(listen, 0).await?;
        println!("ready");
        bound.serve(std::future::pending()).await?;
    }
    Ok(())
}
