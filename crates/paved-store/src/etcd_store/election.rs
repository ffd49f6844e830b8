//! Leader election on etcd, for the replicas of the HA control plane: one leader at a time,
//! and a new one within about a lease's time to live after it resigns or dies.
//!
//! A candidate grants itself a lease, keeps it alive in a background task, and becomes leader
//! by a Txn `create_revision(key) == 0 → put(key, candidate, lease)`; otherwise it watches the
//! key until it is deleted (resign, or the leader's lease expired) and tries again. Election
//! keys live at `<prefix>.elections/<name>`, outside the store's keys.
//!
//! **Fencing caveat.** Leadership is a lease, and a lease is a promise about time. [`Leadership::lost`]
//! resolves when the leader can no longer show the lease is alive: a keepalive answered with
//! "gone", the key deleted or taken, or no renewal confirmed for three quarters of the TTL —
//! before etcd can expire the lease and let another candidate win. That covers crashes,
//! partitions and dead etcd members. It cannot cover a leader that stops running (GC pause,
//! SIGSTOP, a suspended VM) for longer than the TTL and then carries on from where it was
//! before it looks at `lost()`: for a moment two replicas act as leader. Writes through the
//! Store are compare-and-set, so such a stale leader's writes against keys the new leader has
//! changed conflict; a write that must never come from a former leader needs a fence, a
//! compare on the election key's create revision ([`Leadership::revision`]) in the same Txn,
//! which the Store API does not offer yet.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, watch as signal};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::client::{self, Client, Kind, request};
use super::pb::lease_client::LeaseClient;
use super::pb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, compare, request_op, response_op,
};
use super::txn::header_revision;
use super::watch;
use crate::{EventKind, StoreError};

/// An election: its key on one etcd cluster.
#[derive(Clone)]
pub struct Election {
    client: Client,
    key: Vec<u8>,
    name: String,
}

/// Being the leader of an election, until [`Leadership::lost`] resolves.
///
/// Dropping it stops the lease's keepalive without revoking the lease, as a crash would: the
/// others take over once the lease expires. [`Leadership::resign`] hands over at once.
pub struct Leadership {
    client: Client,
    name: String,
    candidate: String,
    lease: i64,
    revision: u64,
    lost: signal::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Election {
    /// The election `name` (non-empty, no `/`) among the replicas of the store at `prefix`.
    pub(crate) fn new(client: Client, prefix: &str, name: &str) -> Result<Election, StoreError> {
        if name.is_empty() || name.contains('/') {
            return Err(StoreError::InvalidKey {
                key: name.to_owned(),
                reason: "an election name must be non-empty and hold no '/'",
            });
        }
        Ok(Election {
            client,
            key: format!("{prefix}.elections/{name}").into_bytes(),
            name: name.to_owned(),
        })
    }

    /// Waits until `candidate` leads this election, holding a lease of `ttl` (whole seconds,
    /// at least 1; etcd may raise it to its minimum). The lease is kept alive from the start,
    /// so a candidate that waits long still wins with a live lease. Fails when etcd is
    /// unreachable for `EtcdOptions::retry_for`, or the lease is lost while waiting.
    pub async fn campaign(&self, candidate: &str, ttl: Duration) -> Result<Leadership, StoreError> {
        let granted = Instant::now();
        let (lease, ttl) = self.grant(ttl).await?;
        let (lost_tx, lost) = signal::channel(false);
        let keeper = Keeper {
            client: self.client.clone(),
            key: self.key.clone(),
            candidate: candidate.to_owned(),
            lease,
            ttl,
            confirmed: granted,
            lost: lost_tx,
        };
        let (leading, leading_rx) = mpsc::channel(1);
        let keeper = tokio::spawn(keeper.run(leading_rx));
        let leadership = |revision| Leadership {
            client: self.client.clone(),
            name: self.name.clone(),
            candidate: candidate.to_owned(),
            lease,
            revision,
            lost: lost.clone(),
            keeper,
        };
        match self.win(candidate, lease, lost.clone()).await {
            Ok(revision) => {
                let _ = leading.send(revision).await;
                info!(election = %self.name, candidate, revision, "leader elected");
                Ok(leadership(revision))
            }
            Err(error) => {
                // Give the lease back so nothing of this attempt lingers.
                let _ = revoke(&self.client, lease).await;
                drop(leadership(0));
                Err(error)
            }
        }
    }

    /// The candidate id of the current leader, if any.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let range = RangeRequest {
            key: self.key.clone(),
            ..RangeRequest::default()
        };
        let response = self
            .client
            .call(Kind::Read, |channel| {
                let range = range.clone();
                async move { client::kv(channel).range(request(range)).await }
            })
            .await?;
        Ok(response
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), StoreError> {
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let grant = LeaseGrantRequest {
            ttl: seconds.max(1) as i64,
            id: 0,
        };
        let response = self
            .client
            .call(Kind::Write, |channel| async move {
                LeaseClient::new(channel).lease_grant(request(grant)).await
            })
            .await?;
        if !response.error.is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd refused a lease: {}",
                response.error
            )));
        }
        Ok((response.id, Duration::from_secs(response.ttl.max(1) as u64)))
    }

    /// Becomes leader, waiting for each leader before to go; returns the key's create revision.
    async fn win(
        &self,
        candidate: &str,
        lease: i64,
        mut lost: signal::Receiver<bool>,
    ) -> Result<u64, StoreError> {
        loop {
            let (won, kv) = self.try_win(candidate, lease).await?;
            if let Some(revision) = won {
                return Ok(revision);
            }
            let after = kv.map_or(0, |kv| kv.mod_revision.max(0) as u64);
            debug!(election = %self.name, candidate, "another candidate leads; waiting for it to go");
            tokio::select! {
                result = self.deleted(after) => result?,
                _ = lost.wait_for(|lost| *lost) => {
                    return Err(StoreError::Backend(format!(
                        "lost the lease while campaigning in election {}; etcd unreachable?", self.name
                    )));
                }
            }
        }
    }

    /// One attempt: the create revision if the key is now ours, else what holds it.
    async fn try_win(
        &self,
        candidate: &str,
        lease: i64,
    ) -> Result<(Option<u64>, Option<super::pb::PbKeyValue>), StoreError> {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: self.key.clone(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: self.key.clone(),
                    value: candidate.as_bytes().to_vec(),
                    lease,
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: self.key.clone(),
                    ..RangeRequest::default()
                })),
            }],
        };
        // Sent again after an ambiguous failure, unlike other writes: if the first attempt
        // did apply, the second finds the key held by our own lease and we lead all the same.
        let response = self
            .client
            .call(Kind::Read, |channel| {
                let txn = txn.clone();
                async move { client::kv(channel).txn(request(txn)).await }
            })
            .await?;
        if response.succeeded {
            return Ok((Some(header_revision(response.header.as_ref())), None));
        }
        let kv = response.responses.into_iter().find_map(|r| match r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        });
        match kv {
            Some(kv) if kv.lease == lease => Ok((Some(kv.create_revision.max(0) as u64), None)),
            kv => Ok((None, kv)),
        }
    }

    /// Returns once the key is deleted after revision `after`.
    async fn deleted(&self, after: u64) -> Result<(), StoreError> {
        let range = watch::Range {
            key: self.key.clone(),
            end: Vec::new(),
            strip: 0,
        };
        let mut events = watch::spawn(self.client.clone(), range, after);
        while let Some(event) = events.next().await {
            if event?.kind == EventKind::Delete {
                return Ok(());
            }
        }
        Err(StoreError::Closed)
    }
}

impl Leadership {
    /// Resolves once leadership is lost (or may be: see the module's fencing caveat). The
    /// leader must then stop acting as one at once.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the keeper ended, which it does only after losing.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Whether leadership is lost; check it before each leader-only action.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.keeper.is_finished()
    }

    /// The election key's create revision: it grows with every new leader, so it can order
    /// leaders and fence a former leader's writes.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The candidate id this leadership was won with.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// Gives leadership up: revokes the lease, which deletes the key, so the next candidate
    /// takes over at once.
    pub async fn resign(self) -> Result<(), StoreError> {
        self.keeper.abort();
        revoke(&self.client, self.lease).await?;
        info!(election = %self.name, candidate = %self.candidate, "leader resigned");
        Ok(())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Revokes `lease`; a lease already gone counts as revoked.
async fn revoke(client: &Client, lease: i64) -> Result<(), StoreError> {
    let result = client
        .call(Kind::Read, |channel| async move {
            LeaseClient::new(channel)
                .lease_revoke(request(LeaseRevokeRequest { id: lease }))
                .await
        })
        .await;
    match result {
        Err(StoreError::Backend(reason)) if reason.contains("lease not found") => Ok(()),
        other => other.map(drop),
    }
}

/// The background half of a candidacy: keeps the lease alive and, once leading, watches the
/// key; flags `lost` when either fails.
struct Keeper {
    client: Client,
    key: Vec<u8>,
    candidate: String,
    lease: i64,
    ttl: Duration,
    /// When the last renewal that etcd confirmed was sent: etcd keeps the lease at least `ttl`
    /// past it.
    confirmed: Instant,
    lost: signal::Sender<bool>,
}

impl Keeper {
    /// Renews the lease every sixth of its TTL until it is lost; once `leading` sends the
    /// key's revision, also watches the key.
    async fn run(mut self, mut leading: mpsc::Receiver<u64>) {
        let mut key_events: Option<crate::WatchStream> = None;
        let mut tick = tokio::time::interval(self.ttl / 6);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            let deadline = self.confirmed + self.ttl * 3 / 4;
            tokio::select! {
                _ = tick.tick() => match self.renew_once(deadline).await {
                    Ok(true) => {}
                    Ok(false) => break "etcd says the lease is gone",
                    Err(error) => debug!(error = %error, "lease keepalive failed; retrying"),
                },
                Some(revision) = leading.recv() => {
                    let range = watch::Range { key: self.key.clone(), end: Vec::new(), strip: 0 };
                    key_events = Some(watch::spawn(self.client.clone(), range, revision));
                }
                event = next_event(&mut key_events) => match event {
                    Some(Ok(event)) if event.kind == EventKind::Put && event.value == self.candidate.as_bytes() => {}
                    Some(Ok(_)) => break "the election key was deleted or taken",
                    Some(Err(_)) | None => break "cannot watch the election key",
                },
                () = tokio::time::sleep_until(deadline.into()) => break "no lease renewal confirmed in time",
            }
        };
        warn!(candidate = %self.candidate, lease = self.lease, reason, "leadership lost");
        let _ = self.lost.send(true);
    }

    /// One keepalive round trip on a fresh stream; whether etcd still has the lease.
    async fn renew_once(&mut self, deadline: Instant) -> Result<bool, StoreError> {
        let sent = Instant::now();
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.send(LeaseKeepAliveRequest { id: self.lease }).await;
        let (index, channel) = self.client.pick();
        let timeout = deadline.saturating_duration_since(sent).min(self.ttl / 4);
        let call = async {
            let mut responses = LeaseClient::new(channel)
                .lease_keep_alive(request(ReceiverStream::new(rx)))
                .await?
                .into_inner();
            responses.message().await
        };
        let answer = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) => return Err(self.moved_on(index, "stream closed")),
            Ok(Err(status)) => return Err(self.moved_on(index, status.message())),
            Err(_) => return Err(self.moved_on(index, "no answer")),
        };
        if answer.ttl <= 0 {
            return Ok(false);
        }
        self.confirmed = sent;
        Ok(true)
    }

    fn moved_on(&self, index: usize, why: &str) -> StoreError {
        self.client.failed(index);
        StoreError::Backend(format!("lease keepalive: {why}"))
    }
}

async fn next_event(events: &mut Option<crate::WatchStream>) -> Option<Result<crate::Event, StoreError>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}
