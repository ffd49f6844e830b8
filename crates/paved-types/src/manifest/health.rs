//! The `[health]` table: which check tells that a task works, against which port, how often, and
//! how many failures make it unhealthy.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::rules::argument;
use super::{
    Checker, DEFAULT_HEALTH_GRACE, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_THRESHOLD, DEFAULT_HEALTH_TIMEOUT,
    Item, MAX_HEALTH_THRESHOLD, MIN_HEALTH_INTERVAL, MIN_HEALTH_TIMEOUT, Place, quote,
};
use crate::job::{HealthCheck, HealthSpec, Network, PortSpec};
use crate::units::{format_duration, parse_duration};

/// The keys that each name a kind of check; a `[health]` table has exactly one.
const CHECK_KEYS: [&str; 4] = ["http", "tcp", "grpc", "exec"];
const CHECKS: &str = "http = \"/healthz\", tcp = true, grpc = \"\" (the whole server) or \
                      exec = [\"/bin/sh\", \"-c\", \"test -f ready\"]";
const GRPC_RULE: &str = "a gRPC service name is its full name in letters, digits, '_' and '.', e.g. \
                         \"paved.v1.Jobs\", or \"\" for the server as a whole";

impl Checker<'_> {
    /// The `[health]` table of a job with these (valid) `ports` and `network` (`None` when the
    /// network key itself is invalid).
    pub(super) fn health(
        &mut self,
        v: &Item<'_>,
        ports: &[PortSpec],
        network: Option<Network>,
    ) -> Option<HealthSpec> {
        let table = self.table(v, "health", "[health] with http = \"/healthz\"")?;
        self.unknown_keys(table, "health", Place::Health);
        let check = self.health_check(table, v.span());
        let port = check
            .as_ref()
            .and_then(|(check, span)| self.health_port(table, check, span, ports, network));
        let interval = self.health_interval(table);
        let timeout = self.health_timeout(table, interval);
        let grace = self.health_grace(table);
        let threshold = table
            .get("threshold")
            .map_or(Some(DEFAULT_HEALTH_THRESHOLD), |v| {
                let range = 1..=MAX_HEALTH_THRESHOLD;
                self.whole(v, "health.threshold", range, "threshold = 3")
            });
        Some(HealthSpec {
            check: check?.0,
            port: port?,
            interval: interval?,
            timeout: timeout?,
            grace: grace?,
            threshold: threshold?,
        })
    }

    /// The one check the table names, with the span of its value.
    fn health_check(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<(HealthCheck, Range<usize>)> {
        let mut given: Vec<(&str, &Item<'_>)> = table
            .iter()
            .map(|(key, value)| (key.get_ref().as_ref(), value))
            .filter(|(key, _)| CHECK_KEYS.contains(key))
            .collect();
        given.sort_by_key(|(_, v)| v.span().start);
        match given.as_slice() {
            [] => {
                let message = format!("no check given; add exactly one of {CHECKS}");
                self.report(span, "health", message);
                None
            }
            [(key, v)] => self.one_check(key, v).map(|check| (check, v.span())),
            [(first, _), rest @ ..] => {
                for (key, v) in rest {
                    let message = format!(
                        "a [health] table has exactly one check and this one already has {first:?}; \
                         remove one of them"
                    );
                    self.report(v.span(), &format!("health.{key}"), message);
                }
                None
            }
        }
    }

    fn one_check(&mut self, key: &str, v: &Item<'_>) -> Option<HealthCheck> {
        let field = format!("health.{key}");
        match key {
            "http" => {
                let path = self.string(v, &field, "http = \"/healthz\"")?;
                self.check(v.span(), &field, http_path(path))
            }
            "tcp" => self.tcp(v, &field),
            "grpc" => {
                let service = self.string(v, &field, "grpc = \"\"")?;
                self.check(v.span(), &field, grpc_service(service))
            }
            _ => self.exec(v, &field),
        }
    }

    fn tcp(&mut self, v: &Item<'_>, field: &str) -> Option<HealthCheck> {
        match v.get_ref() {
            DeValue::Boolean(true) => Some(HealthCheck::Tcp),
            DeValue::Boolean(false) => {
                let message = "tcp = false asks for no check; write tcp = true to check that the port \
                               accepts connections, or remove the [health] table";
                self.report(v.span(), field, message.to_owned());
                None
            }
            _ => {
                self.wrong_type(v, field, "a boolean", "; write tcp = true");
                None
            }
        }
    }

    fn exec(&mut self, v: &Item<'_>, field: &str) -> Option<HealthCheck> {
        let example = "exec = [\"/bin/sh\", \"-c\", \"test -f ready\"]";
        let Some(items) = v.get_ref().as_array() else {
            let hint = match v.get_ref().as_str() {
                Some(s) => format!("; to run it through a shell: [\"/bin/sh\", \"-c\", {s:?}]"),
                None => format!("; e.g. {example}"),
            };
            self.wrong_type(v, field, "an array of strings", &hint);
            return None;
        };
        if items.is_empty() {
            let message = format!("is empty; give the program and its arguments, e.g. {example}");
            self.report(v.span(), field, message);
            return None;
        }
        let args: Vec<Option<String>> = items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let field = format!("{field}[{i}]");
                let s = self.string(a, &field, "")?;
                self.check(a.span(), &field, argument(i, s))
            })
            .collect();
        let command = args.into_iter().collect::<Option<Vec<String>>>()?;
        Some(HealthCheck::Exec { command })
    }

    /// The port the check connects to: `Some(None)` for the first one, or no port at all for an
    /// exec check; `None` after reporting a problem.
    fn health_port(
        &mut self,
        table: &DeTable<'_>,
        check: &HealthCheck,
        check_span: &Range<usize>,
        ports: &[PortSpec],
        network: Option<Network>,
    ) -> Option<Option<String>> {
        let (kind, check_field) = (check.kind(), format!("health.{}", check.kind()));
        if check.uses_port() && network == Some(Network::None) {
            let message = format!(
                "{} check connects to the task from the node, but network = \"none\" gives the \
                 task a network namespace of its own with only loopback; use an exec check, which runs \
                 inside the task's namespaces, or set network = \"host\"",
                with_article(kind)
            );
            self.report(check_span.clone(), &check_field, message);
            return None;
        }
        let Some(v) = table.get("port") else {
            if check.uses_port() && ports.is_empty() {
                let message = format!(
                    "{} check connects to one of the job's ports, but the job declares none; add \
                     [[ports]] with name = \"http\" (the task finds its number in $PORT), or use an \
                     exec check",
                    with_article(kind)
                );
                self.report(check_span.clone(), &check_field, message);
                return None;
            }
            return Some(None);
        };
        let name = self.string(v, "health.port", "port = \"http\"")?;
        let named = port_named(name, check, ports).map(Some);
        self.check(v.span(), "health.port", named)
    }

    fn health_interval(&mut self, table: &DeTable<'_>) -> Option<Duration> {
        let Some(v) = table.get("interval") else {
            return Some(DEFAULT_HEALTH_INTERVAL);
        };
        let s = self.duration_string(v, "health.interval", "interval = \"10s\"")?;
        self.check(v.span(), "health.interval", interval(s))
    }

    /// The timeout, given or by default, which must fit in `interval` (`None` when that is
    /// itself invalid: the comparison is then left for after it is fixed).
    fn health_timeout(&mut self, table: &DeTable<'_>, interval: Option<Duration>) -> Option<Duration> {
        let Some(v) = table.get("timeout") else {
            let interval = interval.unwrap_or(DEFAULT_HEALTH_INTERVAL);
            return Some(DEFAULT_HEALTH_TIMEOUT.min(interval));
        };
        let s = self.duration_string(v, "health.timeout", "timeout = \"2s\"")?;
        self.check(v.span(), "health.timeout", timeout(s, interval))
    }

    fn health_grace(&mut self, table: &DeTable<'_>) -> Option<Duration> {
        let Some(v) = table.get("grace") else {
            return Some(DEFAULT_HEALTH_GRACE);
        };
        let s = self.duration_string(v, "health.grace", "grace = \"5s\"")?;
        let grace = parse_duration(s).map_err(|e| e.to_string());
        self.check(v.span(), "health.grace", grace)
    }
}

/// "an http", "a tcp": the check's name as a sentence starts it.
fn with_article(kind: &str) -> String {
    let article = if kind.starts_with(['e', 'h']) { "an" } else { "a" };
    format!("{article} {kind}")
}

fn http_path(path: &str) -> Result<HealthCheck, String> {
    let example = "e.g. http = \"/healthz\"";
    if !path.starts_with('/') {
        return Err(format!(
            "{} does not start with '/'; give the path to request, {example}",
            quote(path)
        ));
    }
    // Whatever else a URL may hold is percent-encoded into printable ASCII.
    if let Some((i, c)) = path.chars().enumerate().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(format!(
            "{} has {c:?} at character {}; a request path is printable ASCII without spaces \
             (percent-encode the rest), {example}",
            quote(path),
            i + 1
        ));
    }
    Ok(HealthCheck::Http {
        path: path.to_owned(),
    })
}

fn grpc_service(service: &str) -> Result<HealthCheck, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if let Some((i, c)) = service.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "{} has {c:?} at character {}; {GRPC_RULE}",
            quote(service),
            i + 1
        ));
    }
    Ok(HealthCheck::Grpc {
        service: service.to_owned(),
    })
}

/// `name` when the check may name a port and the job declares that one.
fn port_named(name: &str, check: &HealthCheck, ports: &[PortSpec]) -> Result<String, String> {
    if !check.uses_port() {
        return Err("an exec check runs beside the task and connects to no port; remove port".to_owned());
    }
    if ports.iter().any(|p| p.name == name) {
        return Ok(name.to_owned());
    }
    if ports.is_empty() {
        return Err(format!(
            "{} names no port: the job declares no [[ports]]; add [[ports]] with name = {:?}",
            quote(name),
            name
        ));
    }
    let names: Vec<String> = ports.iter().map(|p| format!("{:?}", p.name)).collect();
    Err(format!(
        "{} is not one of the job's ports; name one of its [[ports]]: {}",
        quote(name),
        names.join(", ")
    ))
}

fn interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d >= MIN_HEALTH_INTERVAL {
        return Ok(d);
    }
    let min = format_duration(MIN_HEALTH_INTERVAL);
    Err(format!(
        "{} is less than the minimum of {min}; check at most once every {min}, e.g. interval = \"10s\"",
        quote(s)
    ))
}

fn timeout(s: &str, interval: Option<Duration>) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_HEALTH_TIMEOUT {
        let min = format_duration(MIN_HEALTH_TIMEOUT);
        return Err(format!(
            "{} is less than the minimum of {min}; allow a check at least {min}, e.g. timeout = \"2s\"",
            quote(s)
        ));
    }
    match interval {
        Some(interval) if d > interval => Err(format!(
            "{} is longer than the interval of {}; a check must end before the next one starts, so \
             shorten the timeout or lengthen health.interval",
            quote(s),
            format_duration(interval)
        )),
        _ => Ok(d),
    }
}
