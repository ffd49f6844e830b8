//! `ProxyBody`: the one body type the proxy sends both ways. A streamed body passes frames
//! (data and trailers) through as they come, never buffering; a small request body kept for
//! retries is replayed from memory; the proxy's own answers are short texts. When an upstream
//! response body ends, its HTTP/1.1 connection goes back to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use paved_telemetry::Gauge;

use crate::endpoint::EndpointState;
use crate::h1;
use crate::upstream::Checkin;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as the proxy forwards it.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Empty,
    /// Bytes in memory, sent once.
    Full(Option<Bytes>),
    /// Streamed from the other side; the guard ends the request's in-flight accounting when
    /// the body ends or is dropped.
    Stream(Incoming, Option<InFlight>),
    /// An upstream response streamed by the own HTTP/1.1 codec, with its guard.
    Own(h1::ResponseBody, Option<InFlight>),
}

/// Holds a request in flight on an endpoint and a route's gauge until dropped, and the
/// upstream connection its response comes on, which [`InFlight::ended`] gives back.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoint: Arc<EndpointState>,
    gauge: Gauge,
    checkin: Option<Checkin>,
}

impl InFlight {
    pub(crate) fn start(endpoint: Arc<EndpointState>, gauge: Gauge) -> Self {
        endpoint.start_request();
        gauge.inc();
        InFlight {
            endpoint,
            gauge,
            checkin: None,
        }
    }

    /// The connection the response arrives on, released when the response ends.
    pub(crate) fn set_connection(&mut self, checkin: Option<Checkin>) {
        self.checkin = checkin;
    }

    /// The response was read to its end: its connection may serve another request.
    pub(crate) fn ended(mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.release();
        }
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
            ProxyBody::Stream(..) | ProxyBody::Own(..) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(body, guard) => poll_guarded(body, guard, cx),
            ProxyBody::Own(body, guard) => poll_guarded(body, guard, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(body, _) => body.is_end_stream(),
            ProxyBody::Own(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(body, _) => body.size_hint(),
            ProxyBody::Own(body, _) => body.size_hint(),
        }
    }
}

/// Polls a streamed body, ending its guard with the body.
fn poll_guarded<B>(
    body: &mut B,
    guard: &mut Option<InFlight>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let polled = Pin::new(&mut *body).poll_frame(cx);
    // hyper stops polling once a body says it has ended, so look after each frame.
    let ended = match &polled {
        Poll::Ready(None) => true,
        Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
        Poll::Ready(Some(Err(_))) => {
            guard.take();
            false
        }
        Poll::Pending => false,
    };
    if ended && let Some(guard) = guard.take() {
        guard.ended();
    }
    polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
}
