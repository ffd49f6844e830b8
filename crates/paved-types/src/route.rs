//! Routes and faults: how the edge proxy maps a host and path to weighted backend jobs, and the
//! request-level faults (FIT) injected on a route for a while. Pure data and validation; the
//! proxy (`paved-proxy`) interprets them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::millis;

/// Most backends one route may split traffic across.
pub const MAX_BACKENDS: usize = 16;
/// Most host names one route may match.
pub const MAX_HOSTS: usize = 32;
/// Largest weight of one backend (weights are relative; 10000 allows 0.01 % steps).
pub const MAX_WEIGHT: u32 = 10_000;
/// Most retries a route may ask for per request.
pub const MAX_RETRIES: u32 = 10;
/// Longest and shortest per-route timeouts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// A route's timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// A route's retries when none are given.
pub const DEFAULT_RETRIES: u32 = 2;
/// Longest path prefix, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest delay a fault may add.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(300);

/// How the proxy maps requests for some hosts and a path prefix to backend jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `[a-z0-9-]`, starting with a letter: the name `paved route set` and metrics use.
    pub name: String,
    /// Host names matched case-insensitively, port ignored: exact (`api.example.com`) or a
    /// wildcard over subdomains (`*.example.com`). Empty: every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Requests whose path is this prefix, or continues it at a `/`, match (`/api` matches
    /// `/api` and `/api/x`, not `/apix`). The longest matching prefix wins.
    #[serde(default = "root_path")]
    pub path_prefix: String,
    /// The jobs that serve the route, with relative weights.
    pub backends: Vec<Backend>,
    /// Keep requests carrying the same header or cookie value on the same backend and task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Longest wait for an upstream's response headers, retries included; then 504.
    #[serde(default = "default_timeout", with = "millis")]
    pub timeout: Duration,
    /// Retries per request, for idempotent requests on connect failures and 502/503/504.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// One job a route sends traffic to, and its share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The job's name.
    pub job: String,
    /// The job's port name; empty: the job's first port.
    #[serde(default)]
    pub port: String,
    /// Relative share of requests; 0 sends none (kept, e.g. to shift traffic back later).
    pub weight: u32,
}

/// What keeps a client on one backend and task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", content = "name", rename_all = "lowercase")]
pub enum Sticky {
    /// The value of this request header (case-insensitive name).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
}

/// A request-level fault on a route, until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Unique among faults; chosen by whoever adds it.
    pub id: String,
    /// The route's name.
    pub route: String,
    pub action: FaultAction,
    /// Share of matching requests hit, above 0 and at most 100.
    pub percent: f64,
    /// Only requests carrying this header with this value match (name case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<(String, String)>,
    /// Wall-clock milliseconds since the Unix epoch after which the fault no longer applies.
    pub expires_at_ms: u64,
}

/// What a fault does to a request it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// Wait this long, then proxy the request as usual. Serialised as milliseconds.
    Delay(#[serde(with = "millis")] Duration),
    /// Answer with this status (400..=599) without proxying.
    Abort(u16),
}

/// Why a route or a fault is invalid. Each message names the field and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route name {name:?} {why}; {NAME_RULE}")]
    Name { name: String, why: String },
    #[error("route {route}: hosts has {count} names; use at most {MAX_HOSTS}")]
    TooManyHosts { route: String, count: usize },
    #[error("route {route}: host {host:?} {why}; {HOST_RULE}")]
    Host {
        route: String,
        host: String,
        why: String,
    },
    #[error("route {route}: host {host:?} is listed twice; list each host once")]
    DuplicateHost { route: String, host: String },
    #[error("route {route}: path_prefix {path:?} {why}; {PATH_RULE}")]
    Path {
        route: String,
        path: String,
        why: String,
    },
    #[error("route {route}: backends is empty; add at least one, e.g. --to web=100")]
    NoBackends { route: String },
    #[error("route {route}: backends has {count} entries; use at most {MAX_BACKENDS}")]
    TooManyBackends { route: String, count: usize },
    #[error("route {route}: backends[{index}].job {job:?} {why}; {NAME_RULE}")]
    BackendJob {
        route: String,
        index: usize,
        job: String,
        why: String,
    },
    #[error("route {route}: backends[{index}].port {port:?} {why}; {PORT_RULE}")]
    BackendPort {
        route: String,
        index: usize,
        port: String,
        why: String,
    },
    #[error("route {route}: job {job:?} port {port:?} is listed twice; merge the entries into one weight")]
    DuplicateBackend {
        route: String,
        job: String,
        port: String,
    },
    #[error(
        "route {route}: backends[{index}].weight {weight} is above {MAX_WEIGHT}; weights are relative, so scale them down"
    )]
    Weight {
        route: String,
        index: usize,
        weight: u32,
    },
    #[error("route {route}: every backend has weight 0; give at least one a weight above 0")]
    ZeroWeights { route: String },
    #[error("route {route}: sticky {kind} name {name:?} {why}; {TOKEN_RULE}")]
    Sticky {
        route: String,
        kind: &'static str,
        name: String,
        why: String,
    },
    #[error("route {route}: timeout {timeout:?} is out of range; use 1ms to 1h, e.g. \"15s\"")]
    Timeout { route: String, timeout: Duration },
    #[error("route {route}: retries {retries} is above {MAX_RETRIES}; use 0 to {MAX_RETRIES}")]
    Retries { route: String, retries: u32 },
    #[error("{0:?} is not a backend; write JOB=WEIGHT or JOB:PORT=WEIGHT, e.g. web=90 or web:grpc=10")]
    BackendSyntax(String),
    #[error("{0:?} is not a stickiness; write header:NAME or cookie:NAME, e.g. cookie:session")]
    StickySyntax(String),
    #[error("fault id {id:?} {why}; use 1 to 64 letters, digits, '-' or '_'")]
    FaultId { id: String, why: String },
    #[error("fault {id}: route {route:?} {why}; {NAME_RULE}")]
    FaultRoute { id: String, route: String, why: String },
    #[error("fault {id}: percent {percent} is out of range; use a number above 0 and at most 100, e.g. 5")]
    FaultPercent { id: String, percent: String },
    #[error("fault {id}: abort status {status} is not an error status; use 400 to 599, e.g. 503")]
    FaultStatus { id: String, status: u16 },
    #[error("fault {id}: delay {delay:?} is out of range; use above 0 and at most 5m, e.g. \"200ms\"")]
    FaultDelay { id: String, delay: Duration },
    #[error("fault {id}: header name {name:?} {why}; {TOKEN_RULE}")]
    FaultHeaderName { id: String, name: String, why: String },
    #[error("fault {id}: header value {value:?} has a control character; use visible ASCII and spaces")]
    FaultHeaderValue { id: String, value: String },
    #[error("fault {id}: expires_at_ms is 0; give the fault a lifetime, e.g. --for 10m")]
    FaultExpiry { id: String },
}

const NAME_RULE: &str = "a name is 1 to 63 lowercase letters (a-z), digits and '-', starting \
                         with a letter and not ending in '-'";
const PORT_RULE: &str = "a port name is 1 to 63 lowercase letters (a-z), digits and '-', or empty \
                         for the job's first port";
const HOST_RULE: &str = "write a lowercase DNS name such as \"api.example.com\", or \
                         \"*.example.com\" for its subdomains, without a port";
const PATH_RULE: &str = "write a path starting with '/', such as \"/api\", without '?', '#', \
                         spaces or control characters, at most 1024 bytes";
const TOKEN_RULE: &str = "a header or cookie name is 1 to 64 letters, digits and !#$%&'*+-.^_`|~";

impl Route {
    /// Checks every rule; the first problem found is returned.
    pub fn validate(&self) -> Result<(), RouteError> {
        let route = || self.name.clone();
        if let Some(why) = name_problem(&self.name) {
            return Err(RouteError::Name {
                name: self.name.clone(),
                why,
            });
        }
        self.validate_hosts()?;
        if let Some(why) = path_problem(&self.path_prefix) {
            let path = self.path_prefix.clone();
            return Err(RouteError::Path {
                route: route(),
                path,
                why,
            });
        }
        self.validate_backends()?;
        if let Some(sticky) = &self.sticky {
            let (kind, name) = match sticky {
                Sticky::Header(n) => ("header", n),
                Sticky::Cookie(n) => ("cookie", n),
            };
            if let Some(why) = token_problem(name) {
                return Err(RouteError::Sticky {
                    route: route(),
                    kind,
                    name: name.clone(),
                    why,
                });
            }
        }
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&self.timeout) {
            return Err(RouteError::Timeout {
                route: route(),
                timeout: self.timeout,
            });
        }
        if self.retries > MAX_RETRIES {
            return Err(RouteError::Retries {
                route: route(),
                retries: self.retries,
            });
        }
        Ok(())
    }

    /// Sum of the backends' weights.
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }

    fn validate_hosts(&self) -> Result<(), RouteError> {
        let route = || self.name.clone();
        if self.hosts.len() > MAX_HOSTS {
            return Err(RouteError::TooManyHosts {
                route: route(),
                count: self.hosts.len(),
            });
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if let Some(why) = host_problem(host) {
                return Err(RouteError::Host {
                    route: route(),
                    host: host.clone(),
                    why,
                });
            }
            if self.hosts[..i].contains(host) {
                return Err(RouteError::DuplicateHost {
                    route: route(),
                    host: host.clone(),
                });
            }
        }
        Ok(())
    }

    fn validate_backends(&self) -> Result<(), RouteError> {
        let route = || self.name.clone();
        if self.backends.is_empty() {
            return Err(RouteError::NoBackends { route: route() });
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(RouteError::TooManyBackends {
                route: route(),
                count: self.backends.len(),
            });
        }
        for (index, b) in self.backends.iter().enumerate() {
            if let Some(why) = name_problem(&b.job) {
                return Err(RouteError::BackendJob {
                    route: route(),
                    index,
                    job: b.job.clone(),
                    why,
                });
            }
            if !b.port.is_empty()
                && let Some(why) = port_problem(&b.port)
            {
                return Err(RouteError::BackendPort {
                    route: route(),
                    index,
                    port: b.port.clone(),
                    why,
                });
            }
            if b.weight > MAX_WEIGHT {
                return Err(RouteError::Weight {
                    route: route(),
                    index,
                    weight: b.weight,
                });
            }
            if self.backends[..index]
                .iter()
                .any(|o| o.job == b.job && o.port == b.port)
            {
                let (job, port) = (b.job.clone(), b.port.clone());
                return Err(RouteError::DuplicateBackend {
                    route: route(),
                    job,
                    port,
                });
            }
        }
        if self.total_weight() == 0 {
            return Err(RouteError::ZeroWeights { route: route() });
        }
        Ok(())
    }
}

impl Fault {
    /// Checks every rule; the first problem found is returned. Expiry is not compared with the
    /// clock here (this crate reads none); the proxy ignores an expired fault.
    pub fn validate(&self) -> Result<(), RouteError> {
        let id = || self.id.clone();
        if let Some(why) = fault_id_problem(&self.id) {
            return Err(RouteError::FaultId { id: id(), why });
        }
        if let Some(why) = name_problem(&self.route) {
            return Err(RouteError::FaultRoute {
                id: id(),
                route: self.route.clone(),
                why,
            });
        }
        if !(self.percent > 0.0 && self.percent <= 100.0) {
            return Err(RouteError::FaultPercent {
                id: id(),
                percent: self.percent.to_string(),
            });
        }
        match self.action {
            FaultAction::Abort(status) if !(400..=599).contains(&status) => {
                return Err(RouteError::FaultStatus { id: id(), status });
            }
            FaultAction::Delay(delay) if delay.is_zero() || delay > MAX_FAULT_DELAY => {
                return Err(RouteError::FaultDelay { id: id(), delay });
            }
            _ => {}
        }
        if let Some((name, value)) = &self.header {
            if let Some(why) = token_problem(name) {
                return Err(RouteError::FaultHeaderName {
                    id: id(),
                    name: name.clone(),
                    why,
                });
            }
            if value.chars().any(|c| !(c == ' ' || c.is_ascii_graphic())) {
                return Err(RouteError::FaultHeaderValue {
                    id: id(),
                    value: value.clone(),
                });
            }
        }
        if self.expires_at_ms == 0 {
            return Err(RouteError::FaultExpiry { id: id() });
        }
        Ok(())
    }

    /// Whether the fault no longer applies at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

/// Parses `JOB=WEIGHT` or `JOB:PORT=WEIGHT`, as `--to` takes it. The result still needs
/// [`Route::validate`] for the name rules.
impl FromStr for Backend {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || RouteError::BackendSyntax(s.to_owned());
        let (target, weight) = s.split_once('=').ok_or_else(syntax)?;
        let weight = weight.trim().parse().map_err(|_| syntax())?;
        let (job, port) = target.split_once(':').unwrap_or((target, ""));
        if job.is_empty() {
            return Err(syntax());
        }
        Ok(Backend {
            job: job.to_owned(),
            port: port.to_owned(),
            weight,
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port.as_str() {
            "" => write!(f, "{}={}", self.job, self.weight),
            port => write!(f, "{}:{port}={}", self.job, self.weight),
        }
    }
}

/// Parses `header:NAME` or `cookie:NAME`.
impl FromStr for Sticky {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("header", name)) if !name.is_empty() => Ok(Sticky::Header(name.to_owned())),
            Some(("cookie", name)) if !name.is_empty() => Ok(Sticky::Cookie(name.to_owned())),
            _ => Err(RouteError::StickySyntax(s.to_owned())),
        }
    }
}

impl fmt::Display for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sticky::Header(name) => write!(f, "header:{name}"),
            Sticky::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

fn root_path() -> String {
    "/".to_owned()
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// Why `name` is not a route or job name: `[a-z0-9-]{1,63}`, a letter first, no trailing `-`.
fn name_problem(name: &str) -> Option<String> {
    if let Some(why) = port_problem(name) {
        return Some(why);
    }
    match name.chars().next() {
        Some(c) if !c.is_ascii_lowercase() => Some(format!("starts with {c:?}")),
        _ if name.ends_with('-') => Some("ends with '-'".to_owned()),
        _ => None,
    }
}

fn port_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty() {
        Some("is empty".to_owned())
    } else if let Some((i, c)) = name.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        Some(format!("has {c:?} at character {}", i + 1))
    } else if name.len() > 63 {
        Some(format!("is {} characters long", name.len()))
    } else {
        None
    }
}

/// Why `host` is not a lowercase DNS name or `*.` followed by one.
fn host_problem(host: &str) -> Option<String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.len() > 253 {
        return Some(format!("is {} characters long", name.len()));
    }
    if name.contains(':') {
        return Some("has a port".to_owned());
    }
    if let Some(c) = name.chars().find(char::is_ascii_uppercase) {
        return Some(format!("has the uppercase letter {c:?}"));
    }
    for label in name.split('.') {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if label.is_empty() {
            return Some("has an empty label (two dots in a row, or a dot at an end)".to_owned());
        }
        if label.len() > 63 {
            return Some(format!("has the label {label:?}, longer than 63 characters"));
        }
        if let Some(c) = label.chars().find(|&c| !ok(c)) {
            return Some(format!("has {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("has the label {label:?}, which starts or ends with '-'"));
        }
    }
    None
}

fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        Some("does not start with '/'".to_owned())
    } else if path.len() > MAX_PATH_LEN {
        Some(format!("is {} bytes long", path.len()))
    } else {
        path.chars()
            .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
            .map(|c| format!("has {c:?}"))
    }
}

/// Why `name` is not an HTTP token (header and cookie names).
fn token_problem(name: &str) -> Option<String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > 64 {
        Some(format!("is {} characters long", name.len()))
    } else {
        name.chars().find(|&c| !tchar(c)).map(|c| format!("has {c:?}"))
    }
}

fn fault_id_problem(id: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if id.is_empty() {
        Some("is empty".to_owned())
    } else if id.len() > 64 {
        Some(format!("is {} characters long", id.len()))
    } else {
        id.chars().find(|&c| !ok(c)).map(|c| format!("has {c:?}"))
    }
}

#[cfg(test)]
mod tests;
