//! The routing table: a [`Snapshot`] compiled for the request path. Hosts are indexed (exact
//! names in a map, wildcards by suffix), each backend holds its endpoints' live state, and
//! metric handles are resolved, so a request does one map lookup, a short prefix scan and
//! atomic operations only.
//!
//! Matching: the most specific host wins first (exact name, then the longest wildcard suffix,
//! then routes without hosts); among that host's routes, the longest path prefix. When none of
//! the routes of a more specific host matches the path, less specific hosts' routes are tried.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use paved_telemetry::Registry;
use paved_types::{Route, Sticky};

use crate::balance::{self, hash_str};
use crate::endpoint::EndpointState;
use crate::fault::RouteFaults;
use crate::metrics::{JobMetrics, RouteMetrics, UNROUTED};
use crate::snapshot::{Endpoint, Snapshot};

/// Endpoint state is kept across tables by task and address.
type EndpointKey = (String, SocketAddr);

#[derive(Debug)]
pub(crate) struct Table {
    exact: HashMap<String, Vec<Arc<RouteEntry>>>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(String, Vec<Arc<RouteEntry>>)>,
    any: Vec<Arc<RouteEntry>>,
    /// Every route once, in snapshot order.
    routes: Vec<Arc<RouteEntry>>,
    endpoints: HashMap<EndpointKey, Arc<EndpointState>>,
    pub(crate) unrouted: JobMetrics,
}

#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) name: String,
    prefix: String,
    pub(crate) sticky: Option<StickyKey>,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backends: Vec<BackendEntry>,
    cumulative: Vec<u64>,
    pub(crate) faults: RouteFaults,
    pub(crate) metrics: RouteMetrics,
}

/// Where a route's sticky value comes from.
#[derive(Debug)]
pub(crate) enum StickyKey {
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug)]
pub(crate) struct BackendEntry {
    pub(crate) job: String,
    id_hash: u64,
    weight: u32,
    /// The job's endpoints on the routed port, draining ones left out.
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    pub(crate) metrics: JobMetrics,
}

impl Table {
    /// Compiles `snapshot`, keeping the endpoint state `previous` had for the same tasks.
    pub(crate) fn compile(snapshot: &Snapshot, previous: Option<&Table>, registry: &Registry) -> Table {
        let mut endpoints = HashMap::new();
        let mut table = Table {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Vec::new(),
            routes: Vec::new(),
            endpoints: HashMap::new(),
            unrouted: JobMetrics::new(registry, UNROUTED, UNROUTED),
        };
        let mut names = HashSet::new();
        for route in &snapshot.routes {
            if let Err(e) = route.validate() {
                tracing::warn!(route = %route.name, error = %e, "route ignored");
                continue;
            }
            if !names.insert(route.name.as_str()) {
                tracing::warn!(route = %route.name, "a second route of this name ignored");
                continue;
            }
            let entry = Arc::new(compile_route(route, snapshot, previous, &mut endpoints, registry));
            table.routes.push(entry.clone());
            table.index(route, entry);
        }
        table.endpoints = endpoints;
        table.sort();
        table
    }

    /// The route for `host` (any case, no port) and `path`.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<RouteEntry>> {
        let lowered;
        let host = match host {
            Some(h) if h.bytes().any(|b| b.is_ascii_uppercase()) => {
                lowered = h.to_ascii_lowercase();
                Some(lowered.as_str())
            }
            h => h,
        };
        let by_prefix =
            |routes: &'_ [Arc<RouteEntry>]| -> Option<usize> { routes.iter().position(|r| r.matches(path)) };
        if let Some(host) = host {
            if let Some(routes) = self.exact.get(host)
                && let Some(i) = by_prefix(routes)
            {
                return routes.get(i);
            }
            for (suffix, routes) in &self.wildcard {
                if host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && let Some(i) = by_prefix(routes)
                {
                    return routes.get(i);
                }
            }
        }
        by_prefix(&self.any).and_then(|i| self.any.get(i))
    }

    /// Removes from `registry` the series of the routes, and of the backend jobs of routes,
    /// that `self` had and `next` has not, so that removed routes leave no series behind.
    /// Requests still in flight on them record nowhere.
    pub(crate) fn forget_removed(&self, next: &Table, registry: &Registry) {
        let kept: HashSet<(&str, &str)> = next
            .routes
            .iter()
            .flat_map(|r| r.backends.iter().map(|b| (r.name.as_str(), b.job.as_str())))
            .collect();
        for route in &self.routes {
            if !next.routes.iter().any(|r| r.name == route.name) {
                RouteMetrics::forget(registry, &route.name);
            }
            for backend in &route.backends {
                if !kept.contains(&(route.name.as_str(), backend.job.as_str())) {
                    JobMetrics::forget(registry, &route.name, &backend.job);
                }
            }
        }
    }

    fn index(&mut self, route: &Route, entry: Arc<RouteEntry>) {
        if route.hosts.is_empty() {
            self.any.push(entry);
            return;
        }
        for host in &route.hosts {
            match host.strip_prefix('*') {
                Some(suffix) => match self.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                    Some((_, routes)) => routes.push(entry.clone()),
                    None => self.wildcard.push((suffix.to_owned(), vec![entry.clone()])),
                },
                None => self.exact.entry(host.clone()).or_default().push(entry.clone()),
            }
        }
    }

    fn sort(&mut self) {
        let longest_prefix_first = |routes: &mut Vec<Arc<RouteEntry>>| {
            routes.sort_by(|a, b| {
                b.prefix
                    .len()
                    .cmp(&a.prefix.len())
                    .then_with(|| a.name.cmp(&b.name))
            });
        };
        self.exact.values_mut().for_each(longest_prefix_first);
        self.wildcard
            .iter_mut()
            .for_each(|(_, r)| longest_prefix_first(r));
        longest_prefix_first(&mut self.any);
        self.wildcard
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }
}

impl RouteEntry {
    /// Whether `path` is the prefix or continues it at a `/`.
    fn matches(&self, path: &str) -> bool {
        let p = self.prefix.as_str();
        path.starts_with(p) && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
    }

    /// The backend for a request: by sticky hash when there is one, else by weighted roll.
    pub(crate) fn backend(&self, sticky: Option<u64>, roll: impl FnOnce() -> u64) -> &BackendEntry {
        let i = match sticky {
            Some(key) => balance::sticky_backend(key, self.backends.iter().map(|b| (b.id_hash, b.weight))),
            None => {
                let total = self.cumulative.last().copied().unwrap_or(1).max(1);
                balance::by_weight(&self.cumulative, roll() % total)
            }
        };
        // Validation guarantees at least one backend.
        &self.backends[i.min(self.backends.len() - 1)]
    }
}

impl BackendEntry {
    /// Whether an endpoint other than `except` is admitted now: the last one is never ejected.
    pub(crate) fn others_admitted(&self, except: &EndpointState, now_ms: u64) -> bool {
        self.endpoints
            .iter()
            .any(|e| !std::ptr::eq(&**e, except) && e.is_admitted(|| now_ms))
    }
}

fn compile_route(
    route: &Route,
    snapshot: &Snapshot,
    previous: Option<&Table>,
    endpoints: &mut HashMap<EndpointKey, Arc<EndpointState>>,
    registry: &Registry,
) -> RouteEntry {
    let backends: Vec<BackendEntry> = route
        .backends
        .iter()
        .map(|b| {
            let listed = snapshot
                .endpoints
                .get(&b.job)
                .map(Vec::as_slice)
                .unwrap_or_default();
            BackendEntry {
                job: b.job.clone(),
                id_hash: hash_str(&b.job),
                weight: b.weight,
                endpoints: on_port(listed, &b.port)
                    .map(|e| state_for(e, previous, endpoints))
                    .collect(),
                metrics: JobMetrics::new(registry, &route.name, &b.job),
            }
        })
        .collect();
    let cumulative = backends
        .iter()
        .scan(0u64, |sum, b| {
            *sum += u64::from(b.weight);
            Some(*sum)
        })
        .collect();
    RouteEntry {
        name: route.name.clone(),
        prefix: route.path_prefix.clone(),
        sticky: route.sticky.as_ref().and_then(sticky_key),
        timeout: route.timeout,
        retries: route.retries,
        backends,
        cumulative,
        faults: RouteFaults::compile(snapshot.faults.iter().filter(|f| f.route == route.name)),
        metrics: RouteMetrics::new(registry, &route.name),
    }
}

/// The non-draining entries for `port` ("" = the port of the job's first entry).
fn on_port<'a>(listed: &'a [Endpoint], port: &'a str) -> impl Iterator<Item = &'a Endpoint> {
    let port = match port {
        "" => listed.first().map_or("", |e| e.port_name.as_str()),
        p => p,
    };
    listed.iter().filter(move |e| e.port_name == port && !e.draining)
}

fn state_for(
    e: &Endpoint,
    previous: Option<&Table>,
    endpoints: &mut HashMap<EndpointKey, Arc<EndpointState>>,
) -> Arc<EndpointState> {
    let key = (e.task.clone(), e.addr);
    if let Some(state) = endpoints.get(&key) {
        return state.clone();
    }
    let state = previous
        .and_then(|t| t.endpoints.get(&key).cloned())
        .unwrap_or_else(|| Arc::new(EndpointState::new(&e.task, e.addr)));
    endpoints.insert(key, state.clone());
    state
}

fn sticky_key(s: &Sticky) -> Option<StickyKey> {
    match s {
        Sticky::Header(name) => HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .ok()
            .map(StickyKey::Header),
        Sticky::Cookie(name) => Some(StickyKey::Cookie(name.clone())),
    }
}

#[cfg(test)]
mod tests;
