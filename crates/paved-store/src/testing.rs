//! A real etcd cluster for tests: members run as child processes of the test on free loopback
//! ports, in a temporary directory, and die with the [`EtcdCluster`] value. Enabled by the
//! `testing` feature; other crates' tests (the HA control plane's) use it too.
//!
//! Needs the `etcd` binary (Debian package `etcd-server`), which `cargo xtask test` installs.
//! Without it, [`EtcdCluster::start`] fails saying so: tests that need etcd fail loudly rather
//! than skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd_store::pb::StatusRequest;
use crate::etcd_store::pb::maintenance_client::MaintenanceClient;
use crate::{EtcdOptions, EtcdStore, StoreError};

/// A running etcd cluster. Dropping it kills every member (by pid: only the processes it
/// started) and deletes their data.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    binary: PathBuf,
    /// `m0=http://127.0.0.1:p0,m1=...`, the same for every member.
    initial_cluster: String,
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "etcd not found on PATH (nor at $PAVED_ETCD); run `cargo xtask test`, which installs it (Debian package etcd-server), or `apt-get install etcd-server`"
    )]
    NoEtcd,
    #[error("cannot start etcd member {member}: {source}")]
    Spawn { member: usize, source: std::io::Error },
    #[error("cannot set up the cluster's directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("etcd member {member} exited ({status}): {log}")]
    MemberExited {
        member: usize,
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    #[error("etcd cluster not healthy within {waited:?}: {last}; see the member logs in {dir}")]
    Unhealthy {
        waited: Duration,
        last: String,
        dir: String,
    },
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

/// Starts of a whole cluster before a member that keeps exiting at start is an error.
const START_ATTEMPTS: u32 = 3;
/// How long a cluster may take to elect its first leader, under a loaded CI machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

impl EtcdCluster {
    /// Starts `size` members (3 for a cluster that survives one failure) and waits until every
    /// member answers with a leader elected.
    ///
    /// Ports are picked free, but another process may bind one before etcd does (tests start
    /// clusters side by side); a member that exits at start is taken as that, and the whole
    /// cluster starts again on other ports, up to `START_ATTEMPTS` times.
    pub async fn start(size: usize) -> Result<EtcdCluster, ClusterError> {
        let mut attempt = 1;
        loop {
            match EtcdCluster::start_once(size).await {
                Err(ClusterError::MemberExited { member, status, log }) if attempt < START_ATTEMPTS => {
                    eprintln!("etcd member {member} exited at start ({status}); trying other ports: {log}");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(size: usize) -> Result<EtcdCluster, ClusterError> {
        let binary = find_etcd().ok_or(ClusterError::NoEtcd)?;
        let dir = tempfile::Builder::new().prefix("paved-etcd-").tempdir()?;
        // Every listener stays open until all ports are picked, so no two members share one.
        let mut held = Vec::with_capacity(2 * size);
        let mut port = || -> std::io::Result<u16> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            held.push(listener);
            Ok(port)
        };
        let members: Vec<Member> = (0..size)
            .map(|i| -> Result<Member, ClusterError> {
                Ok(Member {
                    name: format!("m{i}"),
                    client_port: port()?,
                    peer_port: port()?,
                    process: None,
                })
            })
            .collect::<Result<_, _>>()?;
        drop(held);
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            binary,
            initial_cluster,
        };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        cluster.wait_healthy((0..size).collect()).await?;
        Ok(cluster)
    }

    /// Every member's client URL, `http://127.0.0.1:port`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `index`'s client URL.
    pub fn endpoint(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[index].client_port)
    }

    /// The `etcd://…` URL of a store under `prefix` on this cluster.
    pub fn url(&self, prefix: &str) -> String {
        let hosts: Vec<_> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}{prefix}", hosts.join(","))
    }

    /// A store under `prefix` on every member, with timeouts short enough for tests.
    pub async fn store(&self, prefix: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(&self.endpoints(), prefix, test_options()).await
    }

    /// Kills member `index` with SIGKILL and reaps it. Its data stays for [`EtcdCluster::restart`].
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again on its data and waits until it answers.
    pub async fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        self.kill(index);
        self.spawn(index)?;
        self.wait_healthy(vec![index]).await
    }

    /// Whether member `index` runs (was not killed).
    pub fn is_running(&self, index: usize) -> bool {
        self.members[index].process.is_some()
    }

    /// The index of the member that is raft leader now, as the running members see it.
    pub async fn leader(&self) -> Option<usize> {
        for index in (0..self.members.len()).filter(|i| self.is_running(*i)) {
            let Ok(status) = status(&self.endpoint(index)).await else {
                continue;
            };
            let Some(header) = status.header else { continue };
            if status.leader == header.member_id {
                return Some(index);
            }
        }
        None
    }

    /// Where member logs and data live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, index: usize) -> Result<(), ClusterError> {
        let member = &self.members[index];
        let data = self.dir.path().join(&member.name);
        let log = File::create(self.dir.path().join(format!("{}.log", member.name)))?;
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token(self.dir.path())])
            // Fast failover for tests: a heartbeat every 50 ms, an election after 500 ms silent.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                member: index,
                source,
            })?;
        self.members[index].process = Some(child);
        Ok(())
    }

    /// Waits until each of `members` answers a status call knowing a leader.
    async fn wait_healthy(&mut self, members: Vec<usize>) -> Result<(), ClusterError> {
        let started = Instant::now();
        let mut last;
        for index in members {
            loop {
                // A member that exited will not answer: no use waiting out the deadline.
                if let Some(status) = self.exited(index) {
                    return Err(ClusterError::MemberExited {
                        member: index,
                        status,
                        log: self.log_tail(index),
                    });
                }
                match status(&self.endpoint(index)).await {
                    Ok(status) if status.leader != 0 => break,
                    Ok(_) => last = format!("member {index} has no leader yet"),
                    Err(error) => last = format!("member {index}: {error}"),
                }
                if started.elapsed() > START_DEADLINE {
                    return Err(ClusterError::Unhealthy {
                        waited: START_DEADLINE,
                        last,
                        dir: self.dir.path().display().to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The last lines member `index` logged, on one line.
    fn log_tail(&self, index: usize) -> String {
        let path = self.dir.path().join(format!("{}.log", self.members[index].name));
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(3).collect();
        tail.reverse();
        tail.join(" | ")
    }

    fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.members[index].process.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// Options for stores on a test cluster: quick to give up on a dead member, patient enough
/// to ride out a leader election.
pub fn test_options() -> EtcdOptions {
    EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        retry_for: Duration::from_secs(15),
        keepalive: Duration::from_secs(1),
        ..EtcdOptions::default()
    }
}

/// One member's status, asked directly (no failover).
async fn status(endpoint: &str) -> Result<crate::etcd_store::pb::StatusResponse, String> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| {
            format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        })?;
    let response = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|s| s.message().to_owned())?;
    Ok(response.into_inner())
}

/// `$PAVED_ETCD`, else `etcd` on PATH.
fn find_etcd() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PAVED_ETCD") {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
}

/// A cluster token unique to this cluster, so members of two test clusters never join up.
fn token(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| "paved-test".into(), |name| name.to_string_lossy().into_owned())
}
