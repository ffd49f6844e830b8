//! The proxy's metric handles, looked up once per route and backend when a snapshot is
//! compiled, so recording on the request path is a few atomic adds with no tag hashing.

use paved_telemetry::catalog::{
    PROXY_EJECTIONS, PROXY_IN_FLIGHT, PROXY_INJECTED_FAULTS, PROXY_REQUEST_DURATION, PROXY_REQUESTS,
    PROXY_RETRIES, PROXY_UPSTREAM_ERRORS,
};
use paved_telemetry::{Counter, Gauge, Histogram, Registry};

/// The tag value of route and job for requests no route matched (no route or job is named so).
pub(crate) const UNROUTED: &str = "-";

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const ERROR_KINDS: [&str; 4] = ["connect", "timeout", "reset", "status"];
const FAULT_ACTIONS: [&str; 2] = ["delay", "abort"];

/// Kinds of upstream failure, as the `kind` tag spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Status,
}

/// Handles for one route and backend job.
#[derive(Debug, Clone)]
pub(crate) struct JobMetrics {
    requests: [Counter; 5],
    pub(crate) duration: Histogram,
    pub(crate) in_flight: Gauge,
    errors: [Counter; 4],
    pub(crate) retries: Counter,
    pub(crate) ejections: Counter,
}

/// Handles for one route.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    pub(crate) delays: Counter,
    pub(crate) aborts: Counter,
}

impl JobMetrics {
    pub(crate) fn new(registry: &Registry, route: &str, job: &str) -> Self {
        let requests = registry.counter(&PROXY_REQUESTS);
        let errors = registry.counter(&PROXY_UPSTREAM_ERRORS);
        let rj = [("route", route), ("job", job)];
        JobMetrics {
            requests: CLASSES.map(|class| requests.with(&[("route", route), ("job", job), ("class", class)])),
            duration: registry.histogram(&PROXY_REQUEST_DURATION).with(&rj),
            in_flight: registry.gauge(&PROXY_IN_FLIGHT).with(&rj),
            errors: ERROR_KINDS.map(|kind| errors.with(&[("route", route), ("job", job), ("kind", kind)])),
            retries: registry.counter(&PROXY_RETRIES).with(&rj),
            ejections: registry.counter(&PROXY_EJECTIONS).with(&rj),
        }
    }

    /// Removes every series of `route` and `job` from `registry`.
    pub(crate) fn forget(registry: &Registry, route: &str, job: &str) {
        let requests = registry.counter(&PROXY_REQUESTS);
        for class in CLASSES {
            requests.remove(&[("route", route), ("job", job), ("class", class)]);
        }
        let errors = registry.counter(&PROXY_UPSTREAM_ERRORS);
        for kind in ERROR_KINDS {
            errors.remove(&[("route", route), ("job", job), ("kind", kind)]);
        }
        let rj = [("route", route), ("job", job)];
        registry.histogram(&PROXY_REQUEST_DURATION).remove(&rj);
        registry.gauge(&PROXY_IN_FLIGHT).remove(&rj);
        registry.counter(&PROXY_RETRIES).remove(&rj);
        registry.counter(&PROXY_EJECTIONS).remove(&rj);
    }

    /// Counts an answered request by its status class and times it.
    pub(crate) fn answered(&self, status: u16, elapsed: std::time::Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe_duration(elapsed);
    }

    pub(crate) fn upstream_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }
}

impl RouteMetrics {
    pub(crate) fn new(registry: &Registry, route: &str) -> Self {
        let faults = registry.counter(&PROXY_INJECTED_FAULTS);
        let [delays, aborts] =
            FAULT_ACTIONS.map(|action| faults.with(&[("route", route), ("action", action)]));
        RouteMetrics { delays, aborts }
    }

    /// Removes the series of `route` from `registry`.
    pub(crate) fn forget(registry: &Registry, route: &str) {
        let faults = registry.counter(&PROXY_INJECTED_FAULTS);
        for action in FAULT_ACTIONS {
            faults.remove(&[("route", route), ("action", action)]);
        }
    }
}
