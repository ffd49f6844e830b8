//! The errors the proxy reports to whoever starts it. Errors of single requests never surface
//! here: they become responses (404, 502, 503, 504) and metrics.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Why the proxy could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read TLS {what} {path}: {source}; check the path and its permissions")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS {what} {path} holds no usable PEM {expected}; give a PEM file with {expected}")]
    TlsEmpty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "TLS certificate and key are not usable together: {0}; check that the key belongs to the first certificate"
    )]
    TlsConfig(#[source] rustls::Error),
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}; pick a free port or stop what holds it")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a proxy thread: {0}; the process may be out of threads or memory")]
    Runtime(#[source] std::io::Error),
    #[error("a proxy thread panicked; this is a bug, see the log above")]
    ThreadPanicked,
}
