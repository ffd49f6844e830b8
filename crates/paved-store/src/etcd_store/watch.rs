//! A watch that outlives the etcd member it talks to: one task per watch owns an etcd Watch
//! stream, forwards its events, and when the stream breaks (the member died, lost its leader,
//! the connection dropped) opens a new one on the next endpoint from the first revision not
//! yet delivered, so no event is lost or repeated.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tracing::debug;

use super::client::{self, Client, Resend};
use super::pb::watch_client::WatchClient;
use super::pb::{EventType, PbEvent, WatchCreateRequest, WatchRequest, WatchResponse, watch_request};
use crate::{Event, EventKind, StoreError, WatchStream};

/// How many events wait for a slow consumer before the task stops reading from etcd.
const BUFFER: usize = 1024;

/// What a watch covers: the key range, and how many leading bytes of each key to drop (the
/// store's namespace) before handing the event out.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub key: Vec<u8>,
    pub end: Vec<u8>,
    pub strip: usize,
}

/// Watches `range` for changes with a revision greater than `after`.
pub(crate) fn spawn(client: Client, range: Range, after: u64) -> WatchStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(client, range, after.saturating_add(1), tx));
    Box::pin(ReceiverStream::new(rx))
}

type Sender = mpsc::Sender<Result<Event, StoreError>>;

/// How one etcd Watch stream ended.
enum End {
    /// The consumer dropped the watch.
    Dropped,
    /// Nothing to retry: the error goes to the consumer and the watch ends.
    Fatal(StoreError),
    /// The stream broke; a new one, elsewhere, can go on.
    Broken(Status),
}

async fn run(client: Client, range: Range, mut next: u64, tx: Sender) {
    let mut healthy = Instant::now();
    let mut attempt = 0u32;
    loop {
        let (index, channel) = client.pick();
        let mut established = false;
        let status = match stream(channel, &range, &mut next, &mut established, &tx).await {
            End::Dropped => return,
            End::Fatal(error) => {
                let _ = tx.send(Err(error)).await;
                return;
            }
            End::Broken(status) => status,
        };
        // Give up only after `retry_for` without a working stream, not `retry_for` after the
        // last event: a quiet watch may break twice an hour apart.
        if established {
            healthy = Instant::now();
            attempt = 0;
        }
        if healthy.elapsed() >= client.options().retry_for {
            let _ = tx.send(Err(client.error(&status))).await;
            return;
        }
        debug!(endpoint = %client.endpoints()[index], from = next, error = %status.message(), "etcd watch broke; resuming on the next endpoint");
        client.failed(index);
        attempt += 1;
        tokio::time::sleep(client::backoff(attempt, client.endpoints().len())).await;
    }
}

/// Runs one etcd Watch from revision `next`, advancing `next` past every revision delivered;
/// `established` once etcd confirmed the watch.
async fn stream(
    channel: tonic::transport::Channel,
    range: &Range,
    next: &mut u64,
    established: &mut bool,
    tx: &Sender,
) -> End {
    let create = WatchCreateRequest {
        key: range.key.clone(),
        range_end: range.end.clone(),
        // One revision early, the events of which `deliver` drops: etcd accepts a watch from
        // its compaction revision C though a deletion at C is gone from its history, and
        // fails one from before C; starting at `next - 1` makes it fail whenever revision
        // `next` may be incomplete, so a watch never silently misses a deletion.
        start_revision: i64::try_from(next.saturating_sub(1).max(1)).unwrap_or(i64::MAX),
        ..WatchCreateRequest::default()
    };
    let (requests, requests_rx) = mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    };
    if requests.send(create).await.is_err() {
        return End::Broken(Status::internal("watch request channel closed"));
    }
    // The request side stays open (`requests` lives until we return): etcd ends a watch
    // stream whose client has closed its side.
    let mut client = WatchClient::new(channel).max_decoding_message_size(client::MAX_MESSAGE);
    let mut responses = match client
        .watch(client::request(ReceiverStream::new(requests_rx)))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return broken_or_fatal(status),
    };
    loop {
        let message = tokio::select! {
            message = responses.message() => message,
            () = tx.closed() => return End::Dropped,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return End::Broken(Status::unavailable("etcd closed the watch stream")),
            Err(status) => return broken_or_fatal(status),
        };
        *established |= response.created;
        if let Some(end) = deliver(response, range.strip, next, tx).await {
            return end;
        }
    }
}

/// Sends a response's events on; etcd never splits one revision over two responses (we ask
/// for no fragments), so after a response every revision up to its last event is delivered.
async fn deliver(response: WatchResponse, strip: usize, next: &mut u64, tx: &Sender) -> Option<End> {
    if response.compact_revision > 0 {
        // etcd keeps only part of revision C = compact_revision (not its deletions).
        return Some(End::Fatal(StoreError::Compacted {
            requested: *next,
            oldest: response.compact_revision as u64 + 1,
        }));
    }
    if response.canceled {
        let reason = response.cancel_reason;
        if reason.contains("no leader") {
            return Some(End::Broken(Status::unavailable(reason)));
        }
        return Some(End::Fatal(StoreError::Backend(format!(
            "etcd cancelled the watch: {reason}"
        ))));
    }
    let from = *next;
    for event in response.events {
        let event = match convert(event, strip) {
            Ok(event) => event,
            Err(error) => return Some(End::Fatal(error)),
        };
        let revision = event.revision;
        if revision < from {
            continue;
        }
        if tx.send(Ok(event)).await.is_err() {
            return Some(End::Dropped);
        }
        *next = (*next).max(revision + 1);
    }
    None
}

fn broken_or_fatal(status: Status) -> End {
    match client::classify(&status) {
        Resend::Never if status.code() != Code::Unknown => End::Fatal(StoreError::Backend(format!(
            "etcd refused the watch: {}",
            status.message()
        ))),
        _ => End::Broken(status),
    }
}

/// A store event from an etcd one, its key without the first `strip` bytes.
pub(crate) fn convert(event: PbEvent, strip: usize) -> Result<Event, StoreError> {
    let kv = event.kv.unwrap_or_default();
    let kind = match EventType::try_from(event.r#type) {
        Ok(EventType::Put) => EventKind::Put,
        Ok(EventType::Delete) => EventKind::Delete,
        Err(_) => {
            return Err(StoreError::Backend(format!(
                "etcd sent an unknown event type {}",
                event.r#type
            )));
        }
    };
    let key = super::store_key(&kv.key, strip)?;
    let value = if kind == EventKind::Put {
        kv.value
    } else {
        Vec::new()
    };
    Ok(Event {
        revision: kv.mod_revision.max(0) as u64,
        kind,
        key,
        value,
    })
}
