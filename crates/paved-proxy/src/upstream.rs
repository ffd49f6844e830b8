//! Connections to upstream tasks: hyper-util's pooled client, one for HTTP/1.1 (keep-alive)
//! and one for HTTP/2 over cleartext (h2c, prior knowledge) used for gRPC.

use std::error::Error as _;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::config::PoolConfig;
use crate::metrics::ErrorKind;

#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    http1: Client<HttpConnector, ProxyBody>,
    h2c: Client<HttpConnector, ProxyBody>,
}

/// A failed upstream attempt.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Upstreams {
    pub(crate) fn new(config: &PoolConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(config.idle_timeout)
                .pool_max_idle_per_host(config.max_idle_per_endpoint)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                // The request's own host header goes upstream, not the endpoint's address.
                .set_host(false);
            b
        };
        Upstreams {
            http1: builder().build(connector.clone()),
            h2c: builder().http2_only(true).build(connector),
        }
    }

    /// Sends `req` (whose URI names the endpoint) over HTTP/1.1, or h2c when `h2`.
    pub(crate) async fn send(
        &self,
        h2: bool,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = if h2 { &self.h2c } else { &self.http1 };
        client.request(req).await.map_err(|e| UpstreamError {
            kind: if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Reset
            },
            message: match e.source() {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        })
    }
}
