//! `cargo xtask bench proxy`: requests/s and latency of paved's proxy against nginx configured
//! as an equivalent keep-alive reverse proxy, in one run, with wrk and the same upstream.
//!
//! The upstream is nginx answering `200 ok` (2 bytes) from memory, one worker. Three targets
//! are measured with the same wrk settings: the upstream directly (the floor), paved (the
//! `bench_proxy` example of paved-proxy: one route, one endpoint, default settings: retries,
//! traceparent, forwarding headers and metrics all on), and nginx proxying with a keep-alive
//! upstream pool and the same forwarding headers. Both proxies get as many workers as cores.
//! Each round runs the targets in a rotating order after a warm-up; figures are the mean of
//! the rounds.
//!
//! Two phases per round. Saturated (`-t2 -c64`): requests/s and percentiles under load, where
//! a p50 is mostly queueing (p50 ≈ connections / throughput), so it says little about the hop
//! itself. One connection (`-t1 -c1`): each request waits for the one before, nothing queues,
//! and the p50 over the direct target's is what the proxy adds to a request ("added p50").
//! The last line is the summary CI and people read.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::TempDir;

const THREADS: u32 = 2;
const CONNECTIONS: u32 = 64;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);
const ROUNDS: usize = 2;
/// The one-connection phase: long enough for a steady p50 (tens of thousands of requests).
const LATENCY_MEASURE: Duration = Duration::from_secs(5);

pub fn proxy(root: &Path) -> anyhow::Result<()> {
    crate::install_missing(&[("wrk", "wrk"), ("nginx", "nginx")])?;
    crate::run(crate::cargo().current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "paved-proxy",
        "--example",
        "bench_proxy",
    ]))?;
    let example = target_dir(root).join("release/examples/bench_proxy");
    let dir = TempDir::new()?;
    let (upstream_port, nginx_port, paved_port) = (free_port()?, free_port()?, free_port()?);
    let _upstream = Nginx::start(&dir.0.join("upstream"), &upstream_conf(upstream_port))?;
    let _nginx = Nginx::start(&dir.0.join("proxy"), &proxy_conf(nginx_port, upstream_port))?;
    let _paved = Process::spawn(
        Command::new(&example)
            .args([
                format!("127.0.0.1:{paved_port}"),
                format!("127.0.0.1:{upstream_port}"),
            ])
            .env("RUST_LOG", "warn"),
    )?;
    for port in [upstream_port, nginx_port, paved_port] {
        wait_for_port(port)?;
    }
    println!(
        "proxy: wrk -t{THREADS} -c{CONNECTIONS} -d{}s --latency, then -t1 -c1, {ROUNDS} rounds, upstream nginx `return 200 ok` ({})",
        MEASURE.as_secs(),
        nginx_version()
    );
    let targets = [
        ("direct", upstream_port),
        ("paved", paved_port),
        ("nginx", nginx_port),
    ];
    let mut results: Vec<Vec<Wrk>> = vec![Vec::new(); targets.len()];
    let mut single: Vec<Vec<Wrk>> = vec![Vec::new(); targets.len()];
    for round in 0..ROUNDS {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let url = format!("http://127.0.0.1:{}/", targets[i].1);
            wrk(&url, &SATURATED.warmup())?;
            results[i].push(wrk(&url, &SATURATED)?);
        }
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let url = format!("http://127.0.0.1:{}/", targets[i].1);
            single[i].push(wrk(&url, &ONE_CONNECTION)?);
        }
    }
    let means: Vec<Wrk> = results.iter().map(|r| Wrk::mean(r)).collect();
    let single: Vec<Wrk> = single.iter().map(|r| Wrk::mean(r)).collect();
    println!(
        "{:<8} {:>12} {:>10} {:>10} {:>10}",
        "target", "requests/s", "p50", "p90", "p99"
    );
    for ((name, _), m) in targets.iter().zip(&means) {
        println!(
            "{name:<8} {:>12.0} {:>10} {:>10} {:>10}",
            m.rps,
            micros(m.p50),
            micros(m.p90),
            micros(m.p99)
        );
    }
    println!(
        "one connection (wrk -t1 -c1 -d{}s --latency): {}",
        LATENCY_MEASURE.as_secs(),
        targets
            .iter()
            .zip(&single)
            .map(|((name, _), m)| format!("{name} p50={} p99={}", micros(m.p50), micros(m.p99)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (direct, paved, nginx) = (&single[0], &single[1], &single[2]);
    println!(
        "added p50 (1 connection) paved={} nginx={}",
        micros(paved.p50 - direct.p50),
        micros(nginx.p50 - direct.p50)
    );
    let (paved, nginx) = (&means[1], &means[2]);
    println!(
        "proxy rps paved={:.0} nginx={:.0} ratio={:.2} p99 paved={} nginx={}",
        paved.rps,
        nginx.rps,
        paved.rps / nginx.rps,
        micros(paved.p99),
        micros(nginx.p99)
    );
    Ok(())
}

/// What one wrk run measured; latencies in microseconds.
#[derive(Debug, Clone, Default)]
struct Wrk {
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Wrk {
    fn mean(runs: &[Wrk]) -> Wrk {
        let n = runs.len().max(1) as f64;
        let sum = |f: fn(&Wrk) -> f64| runs.iter().map(f).sum::<f64>() / n;
        Wrk {
            rps: sum(|w| w.rps),
            p50: sum(|w| w.p50),
            p90: sum(|w| w.p90),
            p99: sum(|w| w.p99),
        }
    }
}

/// How wrk loads a target: threads, connections, seconds.
struct Load {
    threads: u32,
    connections: u32,
    duration: Duration,
}

/// Throughput and latency under load.
const SATURATED: Load = Load {
    threads: THREADS,
    connections: CONNECTIONS,
    duration: MEASURE,
};

/// Latency of the hop alone: one request at a time.
const ONE_CONNECTION: Load = Load {
    threads: 1,
    connections: 1,
    duration: LATENCY_MEASURE,
};

impl Load {
    fn warmup(&self) -> Load {
        Load {
            duration: WARMUP,
            ..*self
        }
    }
}

fn wrk(url: &str, load: &Load) -> anyhow::Result<Wrk> {
    let output = Command::new("wrk")
        .args([
            format!("-t{}", load.threads),
            format!("-c{}", load.connections),
            format!("-d{}s", load.duration.as_secs()),
            "--latency".to_owned(),
            url.to_owned(),
        ])
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk {url} failed: {}\n{text}", output.status);
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's report for {url}:\n{text}"))
}

fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        bail!("the target answered errors ({})", line.trim());
    }
    let value = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} line"))
    };
    Ok(Wrk {
        rps: value("Requests/sec:")?.parse()?,
        p50: duration_us(value("50%")?)?,
        p90: duration_us(value("90%")?)?,
        p99: duration_us(value("99%")?)?,
    })
}

/// wrk's "421.00us", "1.23ms", "2.00s" in microseconds.
fn duration_us(s: &str) -> anyhow::Result<f64> {
    let (number, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("{s:?} is not a wrk duration")
    };
    Ok(number.parse::<f64>()? * scale)
}

fn micros(us: f64) -> String {
    if us.abs() >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

fn upstream_conf(port: u16) -> String {
    format!(
        "worker_processes 1;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           keepalive_requests 1000000;\n\
           server {{\n\
             listen 127.0.0.1:{port} reuseport;\n\
             location / {{ return 200 \"ok\"; }}\n\
           }}\n\
         }}\n"
    )
}

/// nginx as a keep-alive reverse proxy doing what paved does per request: forwarding headers
/// and HTTP/1.1 with pooled upstream connections.
fn proxy_conf(port: u16, upstream: u16) -> String {
    format!(
        "worker_processes auto;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           keepalive_requests 1000000;\n\
           upstream backend {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 1000000; }}\n\
           server {{\n\
             listen 127.0.0.1:{port} reuseport;\n\
             location / {{\n\
               proxy_pass http://backend;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
               proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Forwarded-Proto $scheme;\n\
             }}\n\
           }}\n\
         }}\n"
    )
}

/// An nginx master in the foreground with its own prefix directory; stopped (workers too) on
/// drop.
struct Nginx {
    _master: Process,
}

impl Nginx {
    fn start(prefix: &Path, conf: &str) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(prefix.join("logs"))?;
        let conf_path = prefix.join("nginx.conf");
        let conf = format!(
            "daemon off;\npid {}/nginx.pid;\nerror_log {}/logs/error.log warn;\n{conf}",
            prefix.display(),
            prefix.display()
        );
        // Temporary paths under the prefix, so nginx needs nothing from /var/lib/nginx.
        let conf = conf.replacen(
            "http {\n",
            &format!(
                "http {{\n client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; \
                 fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n",
                p = prefix.display()
            ),
            1,
        );
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p").arg(prefix).arg("-c").arg(&conf_path);
        Ok(Nginx {
            _master: Process::spawn(&mut cmd)?,
        })
    }
}

/// A child process stopped with SIGTERM (so nginx's master takes its workers along), then
/// killed if it lingers.
struct Process(Child);

impl Process {
    fn spawn(cmd: &mut Command) -> anyhow::Result<Process> {
        let child = cmd
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Process(child))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 10s; see the output above");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_else(|_| "nginx".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let report = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  \
            Latency Distribution\n     50%  421.00us\n     75%  600.00us\n     90%    1.23ms\n     \
            99%    2.00s\n  1000 requests in 10.00s, 1.00MB read\nRequests/sec:  12345.67\n";
        let w = parse_wrk(report).unwrap();
        assert_eq!((w.rps, w.p50, w.p90, w.p99), (12345.67, 421.0, 1230.0, 2e6));
        let errors = format!("{report}  Non-2xx or 3xx responses: 7\n");
        assert!(parse_wrk(&errors).is_err());
    }
}
