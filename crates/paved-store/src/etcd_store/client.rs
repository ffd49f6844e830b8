//! The connection to an etcd cluster: one lazily connected gRPC channel per endpoint, calls
//! sent to one endpoint at a time and moved to the next when it cannot be reached, and the
//! mapping of etcd's failures to `StoreError` messages that say what to do.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::debug;

use super::EtcdOptions;
use super::pb::kv_client::KvClient;
use crate::StoreError;

/// Cheap to clone; every clone shares the channels and the endpoint in use.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the endpoint calls go to; moves on when it cannot be reached.
    current: AtomicUsize,
    options: EtcdOptions,
}

/// Whether a failed call may be sent again, to this or another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// The request never reached etcd (no connection, or refused before it was proposed).
    Safe,
    /// It may have reached etcd: only a call that changes nothing may be sent again.
    IfIdempotent,
    /// Sending it again cannot help (a bad request, a compacted revision, no space).
    Never,
}

/// Whether a call changes the store, so whether it may be sent again after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

/// The gRPC metadata that makes a member without a raft leader refuse a call at once
/// (`etcdserver: no leader`) rather than hold it until it times out, so calls move on to a
/// member that can serve them. etcd's own client sets it the same way.
const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");

impl Client {
    /// Channels to every endpoint, not yet connected. Fails only on an endpoint that is not a URL.
    pub(crate) fn new(endpoints: &[String], options: EtcdOptions) -> Result<Client, StoreError> {
        if endpoints.is_empty() {
            return Err(open_error(
                endpoints,
                "no endpoints given; name at least one etcd member".into(),
            ));
        }
        let channels = endpoints
            .iter()
            .map(|url| channel(url, &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| open_error(endpoints, reason))?;
        let inner = Inner {
            endpoints: endpoints.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            options,
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn options(&self) -> &EtcdOptions {
        &self.inner.options
    }

    pub(crate) fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Sends a call made by `call` from a channel, to the current endpoint and, while the
    /// failure allows it (see [`Resend`]) and `retry_for` has not passed, to the next ones.
    pub(crate) async fn call<T, F, Fut>(&self, kind: Kind, call: F) -> Result<T, StoreError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_within(kind, self.inner.options.retry_for, call).await
    }

    /// [`Client::call`], trying other endpoints for at most `budget`.
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        kind: Kind,
        budget: Duration,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let (index, channel) = self.pick();
            let result = tokio::time::timeout(self.inner.options.request_timeout, call(channel)).await;
            let status = match result {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    self.inner.options.request_timeout
                )),
            };
            let resend = classify(&status);
            if resend != Resend::Never {
                // The next call goes elsewhere: this member is dead, slow or leaderless.
                self.failed(index);
            }
            let again = match (resend, kind) {
                (Resend::Safe, _) | (Resend::IfIdempotent, Kind::Read) => true,
                (Resend::IfIdempotent, Kind::Write) => return Err(self.unknown_outcome(&status)),
                (Resend::Never, _) => false,
            };
            if !again || started.elapsed() >= budget {
                return Err(self.error(&status));
            }
            debug!(endpoint = %self.inner.endpoints[index], error = %status.message(), "etcd call failed; trying the next endpoint");
            attempt += 1;
            tokio::time::sleep(backoff(attempt, self.inner.endpoints.len())).await;
        }
    }

    /// The endpoint calls go to now and its channel.
    pub(crate) fn pick(&self) -> (usize, Channel) {
        let index = self.inner.current.load(Ordering::Relaxed) % self.inner.channels.len();
        (index, self.inner.channels[index].clone())
    }

    /// Moves calls off endpoint `index`, unless another caller already did.
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.inner.channels.len();
        let _ = self
            .inner
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The `StoreError` for a failed call, saying what to do about it.
    pub(crate) fn error(&self, status: &Status) -> StoreError {
        error_for(&self.inner.endpoints.join(","), status)
    }

    fn unknown_outcome(&self, status: &Status) -> StoreError {
        StoreError::Backend(format!(
            "etcd at {} did not confirm the write ({}); it may or may not have been applied: read before retrying",
            self.inner.endpoints.join(","),
            describe(status)
        ))
    }
}

/// The largest answer accepted from etcd: a page of `EtcdOptions::page_size` keys, or a
/// watch response, can be far over tonic's default of 4 MiB (etcd takes values up to its
/// `--max-request-bytes`, 1.5 MiB by default, and sends answers of any size).
pub(crate) const MAX_MESSAGE: usize = 256 << 20;

/// A KV client on `channel` that accepts answers up to [`MAX_MESSAGE`].
pub(crate) fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_MESSAGE)
}

/// A request carrying the metadata every call sends.
pub(crate) fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let (key, value) = REQUIRE_LEADER;
    request
        .metadata_mut()
        .insert(key, tonic::metadata::MetadataValue::from_static(value));
    request
}

/// How a failure bears on sending the call again.
pub(crate) fn classify(status: &Status) -> Resend {
    if never_connected(status) || status.message().contains("no leader") {
        return Resend::Safe;
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
            Resend::IfIdempotent
        }
        _ => Resend::Never,
    }
}

/// Whether the call failed to connect, so its request was never sent.
fn never_connected(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The `StoreError` for a failure of a call to the cluster at `endpoints`.
pub(crate) fn error_for(endpoints: &str, status: &Status) -> StoreError {
    let what = describe(status);
    let message = match status.code() {
        Code::Unavailable if never_connected(status) => {
            format!("cannot reach etcd at {endpoints}: {what}; is etcd running? check --store")
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            format!("etcd at {endpoints} is unavailable: {what}; check that a majority of its members are up")
        }
        Code::ResourceExhausted if what.contains("space") => format!(
            "etcd at {endpoints} is out of space: {what}; compact and defragment it, or raise its --quota-backend-bytes"
        ),
        Code::InvalidArgument if what.contains("too many operations") => format!(
            "etcd at {endpoints} refused the transaction: {what}; raise its --max-txn-ops or write fewer keys at once"
        ),
        Code::InvalidArgument if what.contains("too large") => format!(
            "etcd at {endpoints} refused the request: {what}; raise its --max-request-bytes or write less at once"
        ),
        Code::Unauthenticated | Code::PermissionDenied => format!(
            "etcd at {endpoints} refused access: {what}; paved does not support etcd authentication yet"
        ),
        _ => format!("etcd at {endpoints} failed: {what}"),
    };
    StoreError::Backend(message)
}

fn open_error(endpoints: &[String], reason: String) -> StoreError {
    StoreError::Open {
        path: format!("etcd endpoints [{}]", endpoints.join(",")),
        reason,
    }
}

/// The message of a status and, for transport errors, the innermost cause (say, "Connection
/// refused"), which is what a user can act on.
fn describe(status: &Status) -> String {
    let mut cause = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        cause = Some(error.to_string());
        source = error.source();
    }
    match cause {
        Some(cause) if !status.message().contains(&cause) => format!("{}: {cause}", status.message()),
        _ => status.message().to_owned(),
    }
}

/// A lazily connected channel to `url`, with keepalive pings so a dead peer is noticed even
/// on an idle connection (a watch waiting for events).
fn channel(url: &str, options: &EtcdOptions) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("endpoint {url:?} is not a URL ({e}); write it as http://host:port"))?;
    if !url.starts_with("http://") {
        return Err(format!(
            "endpoint {url:?}: only http:// endpoints are supported (no TLS yet)"
        ));
    }
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keepalive)
        .keep_alive_timeout(options.keepalive)
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// A short pause between attempts, growing once every endpoint was tried: moving to another
/// member should be quick, hammering a cluster that is electing a leader should not.
pub(crate) fn backoff(attempt: u32, endpoints: usize) -> Duration {
    let rounds = attempt / endpoints.max(1) as u32;
    Duration::from_millis(20 * 2u64.pow(rounds.min(4)))
}
