//! `cargo xtask bench failover`: two `paved server`s (release build) on a real three-member
//! etcd; the one leading the control loops is killed (SIGKILL), and the bench times how long
//! until the other holds the `control` election. Three rounds, a fresh server replacing the
//! killed one each time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paved_store::testing::EtcdCluster;

use crate::bench::Server;

const ROUNDS: usize = 3;
const PREFIX: &str = "/bench-failover";
const DEADLINE: Duration = Duration::from_secs(60);

pub fn failover(root: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let etcd = EtcdCluster::start(3)
            .await
            .context("cannot start etcd (run `cargo xtask test` once to install etcd-server)")?;
        let url = etcd.url(PREFIX);
        let store = etcd.store(PREFIX).await?;
        let mut servers = vec![Server::start_etcd(root, &url)?, Server::start_etcd(root, &url)?];
        let mut times = Vec::new();
        for round in 1..=ROUNDS {
            let leader = wait_leader(&store, &servers, None).await?;
            let killed = servers.remove(leader);
            let old = killed.url.clone();
            let clock = Instant::now();
            drop(killed.kill9());
            wait_leader(&store, &servers, Some(&old)).await?;
            let took = clock.elapsed();
            println!(
                "round {round}: leader killed, another led {:.2} s later",
                took.as_secs_f64()
            );
            times.push(took.as_secs_f64());
            servers.push(Server::start_etcd(root, &url)?);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "cluster failover s={:.2} (worst of {ROUNDS}; best {:.2})",
            times[times.len() - 1],
            times[0]
        );
        anyhow::Ok(())
    })
}

/// Waits until one of `servers` (not `not`) leads; returns its index.
async fn wait_leader(
    store: &paved_store::EtcdStore,
    servers: &[Server],
    not: Option<&str>,
) -> anyhow::Result<usize> {
    let clock = Instant::now();
    while clock.elapsed() < DEADLINE {
        if let Some(leader) = store.current_leader("control").await? {
            let found = servers.iter().position(|s| {
                let addr = s.url.trim_start_matches("http://");
                leader.ends_with(addr) && Some(s.url.as_str()) != not
            });
            if let Some(index) = found {
                return Ok(index);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("no server led the control loops within {DEADLINE:?}")
}
