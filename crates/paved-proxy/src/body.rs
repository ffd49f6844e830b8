//! `ProxyBody`: the one body type the proxy sends both ways. A streamed body passes frames
//! (data and trailers) through as they come, never buffering; a small request body kept for
//! retries is replayed from memory; the proxy's own answers are short texts.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use paved_telemetry::Gauge;

use crate::endpoint::EndpointState;

/// A request or response body as the proxy forwards it.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Empty,
    /// Bytes in memory, sent once.
    Full(Option<Bytes>),
    /// Streamed from the other side; the guard ends the request's in-flight accounting when
    /// the body ends or is dropped.
    Stream(Incoming, Option<InFlight>),
}

/// Holds a request in flight on an endpoint and a route's gauge until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoint: Arc<EndpointState>,
    gauge: Gauge,
}

impl InFlight {
    pub(crate) fn start(endpoint: Arc<EndpointState>, gauge: Gauge) -> Self {
        endpoint.start_request();
        gauge.inc();
        InFlight { endpoint, gauge }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.end_request();
        self.gauge.dec();
    }
}

impl ProxyBody {
    /// A copy that can be sent again, for bodies held in memory; `None` for a stream.
    pub(crate) fn replay(&self) -> Option<ProxyBody> {
        match self {
            ProxyBody::Empty => Some(ProxyBody::Empty),
            ProxyBody::Full(b) => Some(ProxyBody::Full(b.clone())),
            ProxyBody::Stream(..) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(body, guard) => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None | Some(Err(_))) = polled {
                    guard.take();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(body, _) => body.size_hint(),
        }
    }
}
