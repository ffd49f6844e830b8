//! One request through the proxy: route, backend, faults, endpoint, upstream attempts with
//! retries under the route's timeout, passive health, metrics.
//!
//! Retries: a failed attempt is sent again, to another endpoint when there is one, when the
//! route allows more attempts, the global budget has a retry, and either the request never
//! left the proxy (the connect failed: it comes back whole, whatever its method and body) or
//! the method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), its body can be replayed
//! (empty, or small and buffered) and the attempt ended in a reset or a 502/503/504. Only for
//! the latter is a copy of the request kept while an attempt is under way.
//!
//! The route's timeout bounds the time to response headers, retries included; bodies then
//! stream for as long as they take (a gRPC stream may last hours).
//!
//! Upgrades: an HTTP/1.1 request asking to switch protocols (`Connection: upgrade`, as a
//! WebSocket handshake does) goes upstream with its `Upgrade` header, is never retried, and
//! on `101 Switching Protocols` the client's and the upstream's connections are joined byte for
//! byte until either closes. Faults apply before the upstream is asked.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use paved_telemetry::Registry;

use crate::balance::{self, hash_str};
use crate::body::{InFlight, ProxyBody};
use crate::budget::RetryBudget;
use crate::config::ProxyConfig;
use crate::endpoint::{EndpointState, FailureOutcome};
use crate::env::{Clock, Dice};
use crate::headers::{self, Forwarding};
use crate::metrics::ErrorKind;
use crate::table::{BackendEntry, RouteEntry, StickyKey, Table};
use crate::timer::Timer;
use crate::upstream::{self, Answer, OwnBody, UpstreamError, Upstreams};

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) table: ArcSwap<Table>,
    /// The snapshot `table` was compiled from, so that several listeners following one channel
    /// compile each snapshot once.
    pub(crate) compiled: std::sync::Mutex<Arc<crate::Snapshot>>,
    pub(crate) budget: RetryBudget,
    pub(crate) config: ProxyConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dice: Dice,
    pub(crate) registry: Registry,
}

/// One client connection: what every connection shares, its forwarding headers, and the
/// upstream pool of the listener that accepted it (each listener has its own, so that a
/// thread-per-core proxy never hands an upstream connection between threads). Requests clone
/// this, not `Shared`, so that two threads never write the same reference count.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) forwarding: Forwarding,
    pub(crate) upstreams: Arc<Upstreams>,
}

/// The request as it will be sent upstream, kept to build each attempt.
struct Outgoing {
    method: Method,
    path: PathAndQuery,
    /// Empty once moved into an attempt that could not be retried.
    headers: HeaderMap,
    /// `None` once moved into an attempt that could not be retried.
    body: Option<ProxyBody>,
    h2: bool,
    idempotent: bool,
    /// The client's side of an HTTP/1.1 upgrade (WebSocket) the upstream may accept.
    upgrade: Option<OnUpgrade>,
}

/// Serves one request that came through hyper's server (HTTP/2, and HTTP/1.1 connections the
/// own codec handed over); every failure becomes a response.
pub(crate) async fn handle(
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let upgrade = headers::upgrade_protocol(&req).map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
    let req = req.map(|body| ProxyBody::Stream(body, None));
    Ok(serve(&conn, req, upgrade, &mut Timer::default()).await)
}

/// Serves one request, its body streamed (hyper's) or in memory (the own codec's); `upgrade`:
/// the protocol it asks to switch to and where its connection will come. Every failure becomes
/// a response. `timer` bounds the time to response headers; a connection serving its
/// requests one after another reuses one.
pub(crate) async fn serve(
    conn: &Conn,
    req: Request<ProxyBody>,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    timer: &mut Timer,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let shared = &*conn.shared;
    let route = {
        let table = shared.table.load();
        let found = table.find(headers::request_host(&req), req.uri().path());
        match found {
            Some(route) => route.clone(),
            None => {
                table.unrouted.answered(404, started.elapsed());
                return no_route(&req);
            }
        }
    };
    shared.budget.deposit();
    let sticky = sticky_hash(&route, req.headers());
    let backend = route.backend(sticky, || shared.dice.u64());
    let picked = Picked {
        route: &route,
        backend,
        sticky,
        started,
    };
    let response = proxy(shared, conn, picked, req, upgrade, timer).await;
    backend
        .metrics
        .answered(response.status().as_u16(), started.elapsed());
    response
}

/// Where a request goes, and when it came in.
#[derive(Clone, Copy)]
struct Picked<'a> {
    route: &'a RouteEntry,
    backend: &'a BackendEntry,
    sticky: Option<u64>,
    started: Instant,
}

async fn proxy(
    shared: &Shared,
    conn: &Conn,
    picked: Picked<'_>,
    req: Request<ProxyBody>,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    timer: &mut Timer,
) -> Response<ProxyBody> {
    let Picked {
        route,
        backend,
        started,
        ..
    } = picked;
    // The first attempt's send time for its latency sample: the request's arrival, one clock
    // read fewer, unless a fault delay or a body read comes between.
    let mut first_sent = matches!(req.body(), ProxyBody::Empty | ProxyBody::Full(_)).then_some(started);
    if !route.faults.is_empty() {
        let verdict = route
            .faults
            .roll(req.headers(), shared.clock.now_ms(), &shared.dice);
        if !verdict.delay.is_zero() {
            route.metrics.delays.inc();
            Box::pin(tokio::time::sleep(verdict.delay)).await;
            first_sent = None;
        }
        if let Some((status, id)) = verdict.abort {
            route.metrics.aborts.inc();
            return text(status, format!("fault {id} injected on route {}\n", route.name));
        }
    }
    let mut outgoing = match Outgoing::new(req, &conn.forwarding, shared, route, upgrade).await {
        Ok(outgoing) => outgoing,
        Err(response) => return response,
    };
    let mut current: Option<&EndpointState> = None;
    let sending = first_sent.unwrap_or_else(Instant::now);
    let picked = Picked {
        started: sending,
        ..picked
    };
    let answered = {
        let attempts = std::pin::pin!(attempts(
            shared,
            &conn.upstreams,
            picked,
            &mut outgoing,
            &mut current
        ));
        timer.within(deadline(sending, route.timeout), attempts).await
    };
    match answered {
        Some(response) => response,
        None => {
            if let Some(endpoint) = current {
                fail(shared, backend, endpoint, ErrorKind::Timeout);
            }
            let timeout = paved_types::units::format_duration(route.timeout);
            let message = format!(
                "job {} did not answer within {timeout} (route {})\n",
                backend.job, route.name
            );
            text(StatusCode::GATEWAY_TIMEOUT, message)
        }
    }
}

/// `timeout` after `from`, or so far ahead that it never comes.
fn deadline(from: Instant, timeout: std::time::Duration) -> tokio::time::Instant {
    const NEVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    let at = from.checked_add(timeout).unwrap_or_else(|| from + NEVER);
    tokio::time::Instant::from_std(at)
}

/// Sends attempts until one answers or retrying is not allowed; `current` is the endpoint of
/// the attempt under way, for the caller to blame on timeout.
/// `picked.started`: when the first attempt may count as sent.
async fn attempts<'a>(
    shared: &Shared,
    upstreams: &Upstreams,
    picked: Picked<'a>,
    outgoing: &mut Outgoing,
    current: &mut Option<&'a EndpointState>,
) -> Response<ProxyBody> {
    let Picked {
        route,
        backend,
        sticky,
        started,
    } = picked;
    let mut tried: Vec<&EndpointState> = Vec::new();
    let mut attempt = 0;
    loop {
        let admitted = |e: &EndpointState| e.is_admitted(|| shared.clock.now_ms());
        let Some(endpoint) = balance::choose(&backend.endpoints, sticky, &shared.dice, admitted, &tried)
        else {
            let message = format!(
                "no endpoint of job {} is available (route {})\n",
                backend.job, route.name
            );
            return text(StatusCode::SERVICE_UNAVAILABLE, message);
        };
        *current = Some(endpoint);
        // An upgraded connection cannot be replayed.
        let may_retry = attempt < route.retries && outgoing.upgrade.is_none();
        let in_flight;
        let sent;
        let result = if let Some(body) = outgoing.in_memory() {
            // The own codec sends from `outgoing` by reference: nothing to copy for a retry.
            in_flight = InFlight::start(endpoint.clone(), backend.metrics.in_flight.clone());
            sent = if attempt == 0 { started } else { Instant::now() };
            let (method, path, headers) = (&outgoing.method, &outgoing.path, &outgoing.headers);
            upstreams
                .send_own(endpoint.addr, method, path, headers, body)
                .await
        } else {
            // A copy is kept only for what may be sent again after it reached an upstream;
            // a request that never left comes back with the error.
            let keep = may_retry && (outgoing.idempotent || outgoing.h2);
            let Some(request) = outgoing.attempt(endpoint, keep) else {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot build the upstream request\n".to_owned(),
                );
            };
            in_flight = InFlight::start(endpoint.clone(), backend.metrics.in_flight.clone());
            sent = if attempt == 0 { started } else { Instant::now() };
            // Boxed: hyper's request future would otherwise make every request's future (the
            // own codec's too) larger, and every move of it longer.
            Box::pin(upstreams.send(endpoint.addr, outgoing.h2, request)).await
        };
        let retry = |retriable: bool, outgoing: &Outgoing| {
            let ok = retriable && may_retry && outgoing.body.is_some() && shared.budget.withdraw();
            if ok {
                backend.metrics.retries.inc();
            }
            ok
        };
        match result {
            Ok(answer) => {
                endpoint.observe_latency(sent.elapsed());
                let status = answer.status();
                if status.is_server_error() {
                    fail(shared, backend, endpoint, ErrorKind::Status);
                } else {
                    endpoint.record_success();
                }
                let retriable = outgoing.idempotent && matches!(status.as_u16(), 502..=504);
                if !retry(retriable, outgoing) {
                    return respond(answer, in_flight, outgoing.upgrade.take());
                }
            }
            Err(UpstreamError {
                kind,
                message,
                unsent,
                never_left,
            }) => {
                fail(shared, backend, endpoint, kind);
                let unsent = unsent.map(|request| outgoing.restore(request)).is_some() || never_left;
                if !retry(
                    unsent || kind == ErrorKind::Connect || outgoing.idempotent,
                    outgoing,
                ) {
                    let message = format!(
                        "upstream {} (task {}) of job {} failed: {message}\n",
                        endpoint.addr, endpoint.task, backend.job
                    );
                    return text(StatusCode::BAD_GATEWAY, message);
                }
            }
        }
        tried.push(endpoint);
        attempt += 1;
    }
}

impl Outgoing {
    /// Prepares the request for upstreams: headers rewritten, and a small streamed body of an
    /// idempotent request that may be retried read into memory. An unreadable body answers
    /// 400.
    async fn new(
        req: Request<ProxyBody>,
        conn: &Forwarding,
        shared: &Shared,
        route: &RouteEntry,
        upgrade: Option<(HeaderValue, OnUpgrade)>,
    ) -> Result<Outgoing, Response<ProxyBody>> {
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if parts.version == Version::HTTP_2
            && !headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, host);
        }
        headers::strip_hop_by_hop(&mut headers);
        let upgrade = upgrade.map(|(protocol, on)| {
            headers::ask_upgrade(&mut headers, protocol);
            on
        });
        conn.apply(&mut headers, parts.version);
        headers::ensure_traceparent(&mut headers, &shared.dice);
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
        );
        let limit = shared.config.pool.retry_buffer_bytes as u64;
        let body = match body {
            ProxyBody::Stream(body, _) => Self::read_small(body, route, idempotent && !grpc, limit).await?,
            // Already in memory (the own codec reads bodies whole).
            in_memory => in_memory,
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Outgoing {
            method: parts.method,
            path,
            headers,
            body: Some(body),
            h2: grpc,
            idempotent,
            upgrade,
        })
    }

    /// A streamed body: read into memory when small and the request may be retried.
    async fn read_small(
        body: Incoming,
        route: &RouteEntry,
        replayable: bool,
        limit: u64,
    ) -> Result<ProxyBody, Response<ProxyBody>> {
        if body.is_end_stream() {
            return Ok(ProxyBody::Empty);
        }
        if route.retries == 0 || !replayable || body.size_hint().exact().is_none_or(|n| n > limit) {
            return Ok(ProxyBody::Stream(body, None));
        }
        // Boxed, as is every rare wait on the request path: the request's future stays
        // small, and hyper moves it once per request.
        match Box::pin(tokio::time::timeout(route.timeout, body.collect())).await {
            Ok(Ok(collected)) => Ok(ProxyBody::Full(Some(collected.to_bytes()))),
            _ => Err(text(
                StatusCode::BAD_REQUEST,
                "cannot read the request body\n".to_owned(),
            )),
        }
    }

    /// The body, when the request goes through the own HTTP/1.1 codec: over HTTP/1.1, with
    /// its body in memory, and no upgrade (which hyper's client hands over).
    fn in_memory(&self) -> Option<&[u8]> {
        if self.h2 || self.upgrade.is_some() {
            return None;
        }
        match self.body.as_ref()? {
            ProxyBody::Empty => Some(&[]),
            ProxyBody::Full(Some(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// The request for one attempt at `endpoint`: a copy when `keep` and the body can be
    /// replayed, else the original moved out (`None` if it already was).
    fn attempt(&mut self, endpoint: &EndpointState, keep: bool) -> Option<Request<ProxyBody>> {
        let uri = if self.h2 {
            upstream::h2c_uri(&endpoint.authority, &self.path)?
        } else {
            Uri::from(self.path.clone())
        };
        let replay = if keep {
            self.body.as_ref().and_then(ProxyBody::replay)
        } else {
            None
        };
        let (headers, body) = match replay {
            Some(body) => (self.headers.clone(), body),
            None => (std::mem::take(&mut self.headers), self.body.take()?),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = if self.h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *request.headers_mut() = headers;
        Some(request)
    }

    /// Takes back a request that never left, to send it again.
    fn restore(&mut self, request: Request<ProxyBody>) {
        let (parts, body) = request.into_parts();
        self.headers = parts.headers;
        self.body = Some(body);
    }
}

/// Counts a failed attempt against `endpoint`; ejects it at the threshold unless it is the
/// job's last admitted endpoint.
fn fail(shared: &Shared, backend: &BackendEntry, endpoint: &EndpointState, kind: ErrorKind) {
    backend.metrics.upstream_error(kind);
    let now = shared.clock.now_ms();
    let outcome = endpoint.record_failure(now, &shared.config.ejection, || {
        backend.others_admitted(endpoint, now)
    });
    if outcome == FailureOutcome::Ejected {
        backend.metrics.ejections.inc();
        tracing::debug!(job = %backend.job, task = %endpoint.task, addr = %endpoint.addr, "endpoint ejected");
    }
}

/// The upstream's response, hop-by-hop headers removed, its body streamed through. A
/// `101 Switching Protocols` to an upgrade request joins the two upgraded connections.
fn respond(answer: Answer, mut in_flight: InFlight, upgrade: Option<OnUpgrade>) -> Response<ProxyBody> {
    let mut response = match answer {
        Answer::Hyper(response, checkin) => {
            in_flight.set_connection(checkin);
            response
        }
        Answer::Own(head, body) => {
            let (mut parts, ()) = head.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            let body = match body {
                OwnBody::Whole(bytes) => {
                    in_flight.ended();
                    match bytes.is_empty() {
                        true => ProxyBody::Empty,
                        false => ProxyBody::Full(Some(bytes)),
                    }
                }
                OwnBody::Stream(body) => ProxyBody::Own(body, Some(in_flight)),
            };
            return Response::from_parts(parts, body);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = upgrade
    {
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            headers::ask_upgrade(&mut parts.headers, protocol);
        }
        tokio::spawn(splice(client, upstream, in_flight));
        return Response::from_parts(parts, ProxyBody::Empty);
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if body.is_end_stream() {
        in_flight.ended();
        return Response::from_parts(parts, ProxyBody::Empty);
    }
    Response::from_parts(parts, ProxyBody::Stream(body, Some(in_flight)))
}

/// Copies bytes both ways between an upgraded client and upstream until either side closes;
/// the request stays in flight meanwhile.
async fn splice(client: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    let (client, upstream) = tokio::join!(client, upstream);
    match (client, upstream) {
        (Ok(client), Ok(upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "upgrade failed"),
    }
    drop(in_flight);
}

fn sticky_hash(route: &RouteEntry, headers: &HeaderMap) -> Option<u64> {
    let value = match route.sticky.as_ref()? {
        StickyKey::Header(name) => headers.get(name)?.to_str().ok()?,
        StickyKey::Cookie(name) => headers::cookie(headers, name)?,
    };
    Some(hash_str(value))
}

fn no_route<B>(req: &Request<B>) -> Response<ProxyBody> {
    let host = headers::request_host(req).unwrap_or("(none)");
    let message = format!("no route for host {host} path {}\n", req.uri().path());
    text(StatusCode::NOT_FOUND, message)
}

fn text(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Full(Some(Bytes::from(message))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
