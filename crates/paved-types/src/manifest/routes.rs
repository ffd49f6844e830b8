//! `[[routes]]`: the simple case of routing, a job that takes traffic for a host and/or path
//! prefix on one of its ports. Each entry becomes a [`Route`] with this job as its only
//! backend; the control plane stores it beside the job and removes it with the job.
//!
//! ```toml
//! [[routes]]
//! name = "web"                 # default: the job's name, then "<job>-2", "<job>-3"…
//! host = "api.example.com"     # or hosts = ["a.example.com", "*.example.com"]; default: any
//! path = "/api"                # default "/"
//! port = "http"                # default: the job's first port
//! sticky = "cookie:session"    # or "header:x-user"; default: none
//! timeout = "15s"              # default "15s"
//! retries = 2                  # default 2; 0..=10
//! ```
//!
//! Rules are the route's own ([`Route::validate`]); problems are reported at the key that
//! causes them.

use std::ops::Range;

use toml::de::DeTable;

use super::{Checker, Item, Place};
use crate::job::PortSpec;
use crate::route::{Backend, DEFAULT_RETRIES, DEFAULT_TIMEOUT, MAX_RETRIES, Route, RouteError, Sticky};
use crate::units::parse_duration;

/// The most `[[routes]]` one job may declare.
pub const MAX_JOB_ROUTES: usize = 16;
/// A backend's weight when the job is a route's only backend (any positive weight would do).
const ONLY_BACKEND_WEIGHT: u32 = 100;
const ROUTE_EXAMPLE: &str = "[[routes]] with path = \"/\"";

impl Checker<'_> {
    /// Every `[[routes]]` entry of job `job` with these (valid) `ports`.
    pub(super) fn routes(&mut self, v: &Item<'_>, job: &str, ports: &[PortSpec]) -> Vec<Route> {
        let Some(items) = v.get_ref().as_array() else {
            let hint = "; declare each route in its own [[routes]] section (two brackets)";
            self.wrong_type(v, "routes", "an array of tables", hint);
            return Vec::new();
        };
        if let Some(extra) = items.get(MAX_JOB_ROUTES) {
            let message = format!(
                "{} routes declared; a job may declare at most {MAX_JOB_ROUTES}; for more, \
                 make routes with `paved route add`",
                items.len()
            );
            self.report(extra.span(), "routes", message);
        }
        if ports.is_empty() && !items.is_empty() {
            let message = "a route sends traffic to one of the job's ports, and this job declares \
                           none; add [[ports]] with name = \"http\""
                .to_owned();
            self.report(v.span(), "routes", message);
            return Vec::new();
        }
        let mut routes: Vec<Route> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Some(route) = self.route(index, item, job, ports) else {
                continue;
            };
            if routes.iter().any(|r| r.name == route.name) {
                let message = format!(
                    "route name {:?} is used twice in this job; give each [[routes]] its own name",
                    route.name
                );
                self.report(item.span(), &format!("routes[{index}].name"), message);
                continue;
            }
            routes.push(route);
        }
        routes
    }

    fn route(&mut self, index: usize, v: &Item<'_>, job: &str, ports: &[PortSpec]) -> Option<Route> {
        let field = format!("routes[{index}]");
        let table = self.table(v, &field, ROUTE_EXAMPLE)?;
        self.unknown_keys(table, &field, Place::Route);
        let at = |key: &str| format!("{field}.{key}");
        let name = match table.get("name") {
            Some(item) => self.string(item, &at("name"), "name = \"web\"")?.to_owned(),
            None if index == 0 => job.to_owned(),
            None => format!("{job}-{}", index + 1),
        };
        let hosts = self.route_hosts(table, &field)?;
        let path_prefix = match table.get("path") {
            Some(item) => self.string(item, &at("path"), "path = \"/api\"")?.to_owned(),
            None => "/".to_owned(),
        };
        let port = match table.get("port") {
            Some(item) => {
                let port = self.string(item, &at("port"), "port = \"http\"")?;
                if !ports.iter().any(|p| p.name == port) {
                    let declared: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                    let message = format!("{port:?} is not one of the job's ports; use one of {declared:?}");
                    self.report(item.span(), &at("port"), message);
                    return None;
                }
                port.to_owned()
            }
            None => ports.first()?.name.clone(),
        };
        let sticky = match table.get("sticky") {
            Some(item) => {
                let s = self.string(item, &at("sticky"), "sticky = \"cookie:session\"")?;
                let parsed = s.parse::<Sticky>().map_err(|e| e.to_string());
                Some(self.check(item.span(), &at("sticky"), parsed)?)
            }
            None => None,
        };
        let timeout = match table.get("timeout") {
            Some(item) => {
                let s = self.duration_string(item, &at("timeout"), "\"15s\"")?;
                let parsed = parse_duration(s).map_err(|e| e.to_string());
                self.check(item.span(), &at("timeout"), parsed)?
            }
            None => DEFAULT_TIMEOUT,
        };
        let retries = match table.get("retries") {
            Some(item) => self.whole(item, &at("retries"), 0..=MAX_RETRIES, "retries = 2")?,
            None => DEFAULT_RETRIES,
        };
        let route = Route {
            name,
            hosts,
            path_prefix,
            backends: vec![Backend {
                job: job.to_owned(),
                port,
                weight: ONLY_BACKEND_WEIGHT,
            }],
            sticky,
            timeout,
            retries,
        };
        if let Err(e) = route.validate() {
            let (key, span) = route_problem_at(&e, table, v.span());
            self.report(span, &join_key(&field, key), e.to_string());
            return None;
        }
        Some(route)
    }

    /// `host = "…"` or `hosts = ["…", …]`, not both; none means every host.
    fn route_hosts(&mut self, table: &DeTable<'_>, field: &str) -> Option<Vec<String>> {
        match (table.get("host"), table.get("hosts")) {
            (Some(_), Some(both)) => {
                let message = "give host = \"…\" or hosts = [\"…\", …], not both".to_owned();
                self.report(both.span(), &format!("{field}.hosts"), message);
                None
            }
            (Some(one), None) => {
                let host = self.string(one, &format!("{field}.host"), "host = \"api.example.com\"")?;
                Some(vec![host.to_owned()])
            }
            (None, Some(many)) => {
                let hosts_field = format!("{field}.hosts");
                let Some(items) = many.get_ref().as_array() else {
                    let hint = "; e.g. hosts = [\"api.example.com\", \"*.example.com\"]";
                    self.wrong_type(many, &hosts_field, "an array of strings", hint);
                    return None;
                };
                let hosts: Option<Vec<String>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let s = self.string(h, &format!("{hosts_field}[{i}]"), "")?;
                        Some(s.to_owned())
                    })
                    .collect();
                hosts
            }
            (None, None) => Some(Vec::new()),
        }
    }
}

/// The key (and its span) whose value broke a route rule.
fn route_problem_at<'k>(e: &RouteError, table: &DeTable<'_>, whole: Range<usize>) -> (&'k str, Range<usize>) {
    let key = match e {
        RouteError::Name { .. } => "name",
        RouteError::TooManyHosts { .. } | RouteError::Host { .. } | RouteError::DuplicateHost { .. } => {
            if table.get("host").is_some() {
                "host"
            } else {
                "hosts"
            }
        }
        RouteError::Path { .. } => "path",
        RouteError::Sticky { .. } => "sticky",
        RouteError::Timeout { .. } => "timeout",
        RouteError::Retries { .. } => "retries",
        RouteError::BackendPort { .. } => "port",
        _ => "",
    };
    let span = table.get(key).map_or(whole, |v| v.span());
    (key, span)
}

fn join_key(field: &str, key: &str) -> String {
    if key.is_empty() {
        field.to_owned()
    } else {
        format!("{field}.{key}")
    }
}
