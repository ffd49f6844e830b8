//! The connection to a paved server: one channel, the bearer token on every call, and gRPC
//! errors turned into messages that say what to do.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use paved_api::v1::{
    jobs_client::JobsClient, metrics_client::MetricsClient, nodes_client::NodesClient,
    routing_client::RoutingClient, system_client::SystemClient, tasks_client::TasksClient,
    tokens_client::TokensClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use crate::cli::{self, TOKEN_FILE};
use crate::error::bad_input;

/// How long to wait for the TCP (and HTTP/2) handshake before saying the server is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connected client; the service clients it hands out share its one channel.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    auth: Auth,
    server: String,
}

/// Where the token comes from: `--token`/`PAVED_TOKEN`, else the admin token file.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Given(String),
    File(PathBuf),
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Auth {
    header: MetadataValue<Ascii>,
}

type Svc = InterceptedService<Channel, Auth>;

/// `.answer(&client)` on an RPC result: the message, or an error that explains itself.
pub trait Answer<T> {
    fn answer(self, client: &Client) -> anyhow::Result<T>;
}

impl Client {
    /// Connects to `server`, then reads the token. Connecting first means a machine with no
    /// `paved up` running hears that, rather than that its token file is missing.
    pub async fn connect(server: &str, token: &TokenSource) -> anyhow::Result<Client> {
        let endpoint = endpoint(server)?;
        let channel = endpoint.connect().await.map_err(|e| unreachable(server, &e))?;
        let auth = Auth::new(&token.read()?)?;
        tracing::debug!(server, "connected");
        Ok(Client {
            channel,
            auth,
            server: server.to_owned(),
        })
    }

    pub fn jobs(&self) -> JobsClient<Svc> {
        JobsClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn tasks(&self) -> TasksClient<Svc> {
        TasksClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn nodes(&self) -> NodesClient<Svc> {
        NodesClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn system(&self) -> SystemClient<Svc> {
        SystemClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn routing(&self) -> RoutingClient<Svc> {
        RoutingClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn tokens(&self) -> TokensClient<Svc> {
        TokensClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn metrics(&self) -> MetricsClient<Svc> {
        MetricsClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// A gRPC error as a message for people, with the exit code that fits it.
    pub fn explain(&self, status: Status) -> anyhow::Error {
        explain(&self.server, status)
    }
}

/// Where `paved up` keeps its state unless given `--data`, and so where the CLI looks for the
/// admin token: `PAVED_DATA`, else `<platform data dir>/paved` (e.g. ~/.local/share/paved),
/// else `./paved-data` for a user with no home directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PAVED_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::data_dir().map_or_else(|| PathBuf::from("paved-data"), |d| d.join("paved"))
}

impl TokenSource {
    /// `--token`/`PAVED_TOKEN` if given, else `<data dir>/admin.token`.
    pub fn resolve(given: Option<String>) -> TokenSource {
        match given {
            Some(token) => TokenSource::Given(token),
            None => TokenSource::File(default_data_dir().join(TOKEN_FILE)),
        }
    }

    pub fn read(&self) -> anyhow::Result<String> {
        let token = match self {
            TokenSource::Given(token) => token.trim().to_owned(),
            TokenSource::File(path) => read_token_file(path)?,
        };
        if token.is_empty() {
            return Err(bad_input("the token is empty; pass --token or set PAVED_TOKEN"));
        }
        Ok(token)
    }
}

impl Auth {
    fn new(token: &str) -> anyhow::Result<Auth> {
        let mut header: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| bad_input("the token has characters that cannot go in a header"))?;
        header.set_sensitive(true);
        Ok(Auth { header })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

impl<T> Answer<T> for Result<tonic::Response<T>, Status> {
    fn answer(self, client: &Client) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| client.explain(s))
    }
}

/// Checks `server` is an `http://host[:port]` URL before tonic sees it, since tonic accepts
/// strings like `garbage` and fails later with a vaguer error.
pub fn endpoint(server: &str) -> anyhow::Result<Endpoint> {
    let usage = || {
        bad_input(format!(
            "invalid server URL `{server}`; expected http://HOST:PORT, e.g. {} \
             (set --server or PAVED_SERVER)",
            cli::DEFAULT_SERVER
        ))
    };
    let uri: Uri = server.parse().map_err(|_| usage())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad_input(format!(
                "`{server}`: this build of paved speaks plain http only; use http://"
            )));
        }
        _ => return Err(usage()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(usage());
    }
    Ok(Endpoint::from(uri).connect_timeout(CONNECT_TIMEOUT))
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad_input(format!(
            "no token: looked for {} and it does not exist; pass --token or set PAVED_TOKEN, \
             or set PAVED_DATA to the data directory of `paved up`",
            path.display()
        ))),
        Err(e) => Err(e).with_context(|| format!("cannot read the token from {}", path.display())),
    }
}

/// A failed connect, named after the cause at the bottom of tonic's error chain.
fn unreachable(server: &str, err: &tonic::transport::Error) -> anyhow::Error {
    anyhow!("{}", root_cause(err)).context(format!(
        "cannot reach paved at {server}; is `paved up` running? (set --server or PAVED_SERVER)"
    ))
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn explain(server: &str, status: Status) -> anyhow::Error {
    let message = status.message().to_owned();
    match status.code() {
        Code::Unauthenticated => anyhow!(
            "the server refused the token; pass --token or set PAVED_TOKEN \
             (paved up writes one to <data>/{TOKEN_FILE})"
        ),
        Code::PermissionDenied => anyhow!("the token is not allowed to do this: {message}"),
        Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition => anyhow!(message),
        Code::InvalidArgument | Code::OutOfRange => bad_input(message),
        Code::Unavailable => {
            let cause = status.source().map_or(message, |_| root_cause(&status));
            anyhow!("{cause}").context(format!(
                "cannot reach paved at {server}; is `paved up` running? \
                 (set --server or PAVED_SERVER)"
            ))
        }
        Code::DeadlineExceeded => anyhow!("paved at {server} did not answer in time: {message}"),
        // tonic's words for an HTTP answer without gRPC in it: a web server, a proxy.
        Code::Unimplemented | Code::Unknown if message.contains("grpc-status header missing") => {
            anyhow!("{server} answered, but it is not a paved server: {message}")
        }
        Code::Unimplemented => {
            anyhow!("the server at {server} does not support this call (is it an older paved?): {message}")
        }
        code => anyhow!("the server failed: {message} ({code:?})"),
    }
}

#[cfg(test)]
mod tests {
    use crate::error::{EXIT_BAD_INPUT, EXIT_FAILED, exit_code};

    use super::*;

    #[test]
    fn server_urls() {
        let ok = ["http://127.0.0.1:7070", "http://localhost:1", "http://[::1]:7070"];
        for url in ok {
            assert!(endpoint(url).is_ok(), "{url}");
        }
        let bad = [
            "garbage",
            "127.0.0.1:7070",
            "ftp://h:1",
            "http://",
            "",
            "https://h:1",
        ];
        for url in bad {
            let err = endpoint(url).map(|_| ()).unwrap_err();
            assert_eq!(exit_code(&err), EXIT_BAD_INPUT, "{url}");
            assert!(err.to_string().contains(url), "{url}: {err}");
        }
    }

    #[test]
    fn status_messages() {
        let cases = [
            (Code::Unauthenticated, "the server refused the token", EXIT_FAILED),
            (Code::NotFound, "no job named web", EXIT_FAILED),
            (Code::InvalidArgument, "no job named web", EXIT_BAD_INPUT),
            (Code::Unavailable, "cannot reach paved at http://h:1", EXIT_FAILED),
            (Code::Internal, "no job named web (Internal)", EXIT_FAILED),
        ];
        let not_grpc = "grpc-status header missing, mapped from HTTP status code 404";
        let err = explain("http://h:1", Status::new(Code::Unimplemented, not_grpc));
        assert!(err.to_string().contains("it is not a paved server"), "{err}");
        for (code, want, exit) in cases {
            let err = explain("http://h:1", Status::new(code, "no job named web"));
            assert!(err.to_string().contains(want), "{code:?}: {err}");
            assert_eq!(exit_code(&err), exit, "{code:?}");
        }
    }

    #[test]
    fn auth_header() {
        let mut auth = Auth::new("s3cret").unwrap();
        let req = auth.call(Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert!(Auth::new("bad\ntoken").is_err());
    }

    #[test]
    fn missing_token_file_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let err = TokenSource::File(path.clone()).read().unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, "tok\n").unwrap();
        assert_eq!(TokenSource::File(path).read().unwrap(), "tok");
    }
}
