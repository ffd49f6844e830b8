//! The `Routing` service: the edge router's routes and faults, kept in the store (the proxy
//! follows them through a watch), and their conversions to and from the API's messages.
//!
//! Store layout: `/routes/<name>` → [`RouteRecord`], `/faults/<id>` → [`FaultRecord`]. A fault
//! past its expiry is ignored by the proxy at once and deleted by the reconciler's next pass.

use std::time::Duration;

use std::pin::Pin;

use futures::{Stream, StreamExt};
use paved_api::v1::{self as pb, routing_server::Routing};
use paved_store::{Expect, Op};
use paved_types::edge::Snapshot;
use paved_types::{Backend, Fault, FaultAction, Job, Route, Sticky};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::api::Api;
use crate::caller::Caller;
use crate::edge::snapshot_message;
use crate::error::ApiError;
use crate::mirror::Mirror;
use crate::repo::{Repo, RepoError};

pub const ROUTES: &str = "/routes/";
pub const FAULTS: &str = "/faults/";

/// A route as stored: who made it and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub route: Route,
    /// `job:<name>` for a route a job's manifest declares; empty for one made through the API.
    #[serde(default)]
    pub owner: String,
    pub updated_at_ms: u64,
}

/// A fault as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub created_at_ms: u64,
}

/// Longest a fault may last: a forgotten experiment must not outlive the working day.
const MAX_FAULT_FOR: Duration = Duration::from_secs(24 * 3600);

type ApiResult<T> = Result<Response<T>, Status>;
pub type EdgeStream = Pin<Box<dyn Stream<Item = Result<pb::EdgeSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Routing for Api {
    type WatchEdgeStream = EdgeStream;

    /// Admin only: the snapshot holds the endpoints of every routed job.
    async fn watch_edge(&self, req: Request<pb::WatchEdgeRequest>) -> ApiResult<EdgeStream> {
        Caller::admin_only(&req)?;
        let mirror = Mirror::start(self.repo()).await.map_err(ApiError::from)?;
        // The newest snapshot wins: a slow proxy skips the ones it had no time for.
        let (tx, rx) = tokio::sync::watch::channel(None);
        let tx = std::sync::Arc::new(tx);
        tokio::spawn(async move {
            let sender = tx.clone();
            let publish = |snapshot: Snapshot| sender.send(Some(snapshot_message(&snapshot))).is_ok();
            tokio::select! {
                outcome = crate::edge::follow(mirror, publish) => if let Err(e) = outcome {
                    tracing::warn!(error = %e, "an edge watch lost the store; the proxy reconnects");
                },
                // The proxy went away: stop following at once, not at the next change.
                () = tx.closed() => {}
            }
        });
        let stream = WatchStream::new(rx).filter_map(|s| std::future::ready(s.map(Ok)));
        Ok(Response::new(Box::pin(stream)))
    }

    /// Routes are shared by every tenant: tenants may read them, only admins change them.
    async fn list_routes(&self, req: Request<pb::ListRoutesRequest>) -> ApiResult<pb::ListRoutesResponse> {
        Caller::user(&req)?;
        let routes = routes(self.repo()).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListRoutesResponse {
            routes: routes.iter().map(route_message).collect(),
        }))
    }

    async fn put_route(&self, req: Request<pb::PutRouteRequest>) -> ApiResult<pb::Route> {
        Caller::admin_only(&req)?;
        let req = req.into_inner();
        let message = req
            .route
            .ok_or_else(|| ApiError::invalid("route", "missing; send the route to create or change"))?;
        let route = route_of(&message)?;
        route
            .validate()
            .map_err(|e| ApiError::invalid("route", e.to_string()))?;
        let key = format!("{ROUTES}{}", route.name);
        let exists = self
            .repo()
            .get::<RouteRecord>(&key)
            .await
            .map_err(ApiError::from)?;
        if exists.is_some() && !req.replace {
            return Err(ApiError::AlreadyExists(format!(
                "route {} exists; change it with `paved route set {}`",
                route.name, route.name
            ))
            .into());
        }
        let record = RouteRecord {
            owner: exists.map(|r| r.value.owner).unwrap_or_default(),
            route,
            updated_at_ms: self.now(),
        };
        put(self.repo(), key, &record).await?;
        Ok(Response::new(route_message(&record)))
    }

    async fn delete_route(&self, req: Request<pb::DeleteRouteRequest>) -> ApiResult<pb::Route> {
        Caller::admin_only(&req)?;
        let name = req.into_inner().name;
        let key = format!("{ROUTES}{name}");
        let Some(found) = self
            .repo()
            .get::<RouteRecord>(&key)
            .await
            .map_err(ApiError::from)?
        else {
            return Err(not_found_route(name).into());
        };
        delete(self.repo(), key, found.revision).await?;
        Ok(Response::new(route_message(&found.value)))
    }

    async fn list_faults(&self, req: Request<pb::ListFaultsRequest>) -> ApiResult<pb::ListFaultsResponse> {
        Caller::user(&req)?;
        let now = self.now();
        let faults = faults(self.repo()).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListFaultsResponse {
            faults: faults
                .iter()
                .filter(|f| !f.fault.expired(now))
                .map(fault_message)
                .collect(),
        }))
    }

    async fn add_fault(&self, req: Request<pb::AddFaultRequest>) -> ApiResult<pb::Fault> {
        Caller::admin_only(&req)?;
        let req = req.into_inner();
        let route_key = format!("{ROUTES}{}", req.route);
        let route = self
            .repo()
            .get::<RouteRecord>(&route_key)
            .await
            .map_err(ApiError::from)?;
        if route.is_none() {
            return Err(not_found_route(req.route).into());
        }
        let now = self.now();
        let record = FaultRecord {
            fault: fault_of(&req, &self.new_fault_id(), now)?,
            created_at_ms: now,
        };
        record
            .fault
            .validate()
            .map_err(|e| ApiError::invalid("fault", e.to_string()))?;
        let key = format!("{FAULTS}{}", record.fault.id);
        put(self.repo(), key, &record).await?;
        Ok(Response::new(fault_message(&record)))
    }

    async fn halt_faults(&self, req: Request<pb::HaltFaultsRequest>) -> ApiResult<pb::HaltFaultsResponse> {
        Caller::admin_only(&req)?;
        let (kvs, _) = self
            .repo()
            .store()
            .list(FAULTS)
            .await
            .map_err(|e| ApiError::from(RepoError::from(e)))?;
        let removed = u32::try_from(kvs.len()).unwrap_or(u32::MAX);
        let ops = kvs
            .into_iter()
            .map(|kv| Op::Delete {
                key: kv.key,
                expect: Expect::Any,
            })
            .collect::<Vec<_>>();
        if !ops.is_empty() {
            self.repo().commit(ops).await.map_err(ApiError::from)?;
        }
        Ok(Response::new(pb::HaltFaultsResponse { removed }))
    }
}

/// Every stored route.
pub async fn routes(repo: &Repo) -> Result<Vec<RouteRecord>, RepoError> {
    Ok(repo.list(ROUTES).await?.into_iter().map(|r| r.value).collect())
}

/// Every stored fault, expired ones included.
pub async fn faults(repo: &Repo) -> Result<Vec<FaultRecord>, RepoError> {
    Ok(repo.list(FAULTS).await?.into_iter().map(|f| f.value).collect())
}

/// The owner a job's manifest routes are stored with.
pub fn job_owner(job_name: &str) -> String {
    format!("job:{job_name}")
}

/// Puts of the routes `job`'s manifest declares, each compared against what is stored so a
/// concurrent change fails the job's create. A route of the same name made another way
/// (`paved route add`, another job) is refused: the job would take its traffic.
pub async fn job_route_ops(repo: &Repo, job: &Job, now_ms: u64) -> Result<Vec<Op>, ApiError> {
    let owner = job_owner(&job.spec.name);
    let mut ops = Vec::with_capacity(job.spec.routes.len());
    for route in &job.spec.routes {
        let key = format!("{ROUTES}{}", route.name);
        let existing = repo.get::<RouteRecord>(&key).await?;
        let expect = match existing {
            None => Expect::Absent,
            Some(found) if found.value.owner == owner => Expect::Revision(found.revision),
            Some(found) => {
                let by = match found.value.owner.strip_prefix("job:") {
                    Some(other) => format!("declared by job {other:?}"),
                    None => "made with `paved route add`".to_owned(),
                };
                return Err(ApiError::AlreadyExists(format!(
                    "route {:?} already exists ({by}); give this job's route another name \
                     ([[routes]] name = \"...\") or remove the other with `paved route delete {}`",
                    route.name, route.name
                )));
            }
        };
        let record = RouteRecord {
            route: route.clone(),
            owner: owner.clone(),
            updated_at_ms: now_ms,
        };
        ops.push(crate::repo::put_op(key, &record, expect)?);
    }
    Ok(ops)
}

async fn put<T: Serialize>(repo: &Repo, key: String, value: &T) -> Result<(), ApiError> {
    let op = crate::repo::put_op(key, value, Expect::Any)?;
    repo.commit(vec![op]).await?;
    Ok(())
}

async fn delete(repo: &Repo, key: String, revision: u64) -> Result<(), ApiError> {
    let op = Op::Delete {
        key,
        expect: Expect::Revision(revision),
    };
    repo.commit(vec![op]).await?;
    Ok(())
}

fn not_found_route(name: String) -> ApiError {
    ApiError::NotFound {
        what: "route",
        name,
        hint: "`paved routes` lists routes",
    }
}

/// The API's route as the domain's, before validation.
pub fn route_of(m: &pb::Route) -> Result<Route, ApiError> {
    let sticky = match (m.sticky_header.as_str(), m.sticky_cookie.as_str()) {
        ("", "") => None,
        (header, "") => Some(Sticky::Header(header.to_owned())),
        ("", cookie) => Some(Sticky::Cookie(cookie.to_owned())),
        _ => {
            return Err(ApiError::invalid(
                "sticky_header",
                "set with sticky_cookie; keep clients by one of them",
            ));
        }
    };
    Ok(Route {
        name: m.name.clone(),
        hosts: m.hosts.clone(),
        path_prefix: if m.path_prefix.is_empty() {
            "/".to_owned()
        } else {
            m.path_prefix.clone()
        },
        backends: m
            .backends
            .iter()
            .map(|b| Backend {
                job: b.job.clone(),
                port: b.port.clone(),
                weight: b.weight,
            })
            .collect(),
        sticky,
        timeout: if m.timeout_ms == 0 {
            paved_types::route::DEFAULT_TIMEOUT
        } else {
            Duration::from_millis(m.timeout_ms)
        },
        retries: m.retries,
    })
}

pub fn route_message(r: &RouteRecord) -> pb::Route {
    let route = &r.route;
    let (sticky_header, sticky_cookie) = match &route.sticky {
        None => (String::new(), String::new()),
        Some(Sticky::Header(h)) => (h.clone(), String::new()),
        Some(Sticky::Cookie(c)) => (String::new(), c.clone()),
    };
    pb::Route {
        name: route.name.clone(),
        hosts: route.hosts.clone(),
        path_prefix: route.path_prefix.clone(),
        backends: route
            .backends
            .iter()
            .map(|b| pb::Backend {
                job: b.job.clone(),
                port: b.port.clone(),
                weight: b.weight,
            })
            .collect(),
        sticky_header,
        sticky_cookie,
        timeout_ms: u64::try_from(route.timeout.as_millis()).unwrap_or(u64::MAX),
        retries: route.retries,
        owner: r.owner.clone(),
        updated_at_ms: r.updated_at_ms,
    }
}

fn fault_of(req: &pb::AddFaultRequest, id: &str, now_ms: u64) -> Result<Fault, ApiError> {
    let action = match (req.delay_ms, req.abort_status) {
        (0, 0) => {
            return Err(ApiError::invalid(
                "delay_ms",
                "and abort_status are both unset; give one",
            ));
        }
        (delay, 0) => FaultAction::Delay(Duration::from_millis(delay)),
        (0, status) => FaultAction::Abort(u16::try_from(status).unwrap_or(u16::MAX)),
        _ => {
            return Err(ApiError::invalid(
                "delay_ms",
                "and abort_status are both set; give one",
            ));
        }
    };
    let lasts = Duration::from_millis(req.for_ms);
    if lasts.is_zero() || lasts > MAX_FAULT_FOR {
        return Err(ApiError::invalid(
            "for_ms",
            "must be between 1 ms and 24 h, e.g. --for 10m",
        ));
    }
    let header = match (req.header_name.as_str(), req.header_value.as_str()) {
        ("", "") => None,
        ("", _) => {
            return Err(ApiError::invalid(
                "header_name",
                "empty while header_value is set",
            ));
        }
        (name, value) => Some((name.to_owned(), value.to_owned())),
    };
    Ok(Fault {
        id: id.to_owned(),
        route: req.route.clone(),
        action,
        percent: req.percent,
        header,
        expires_at_ms: now_ms.saturating_add(req.for_ms),
    })
}

/// A fault as the API sent it in a snapshot, checked like every fault.
pub fn fault_of_message(m: &pb::Fault) -> Result<Fault, ApiError> {
    let action = match (m.delay_ms, m.abort_status) {
        (delay, 0) if delay > 0 => FaultAction::Delay(Duration::from_millis(delay)),
        (0, status) if status > 0 => FaultAction::Abort(u16::try_from(status).unwrap_or(u16::MAX)),
        _ => {
            return Err(ApiError::invalid(
                "delay_ms",
                "and abort_status: exactly one must be set",
            ));
        }
    };
    let header = (!m.header_name.is_empty()).then(|| (m.header_name.clone(), m.header_value.clone()));
    let fault = Fault {
        id: m.id.clone(),
        route: m.route.clone(),
        action,
        percent: m.percent,
        header,
        expires_at_ms: m.expires_at_ms,
    };
    fault
        .validate()
        .map_err(|e| ApiError::invalid("fault", e.to_string()))?;
    Ok(fault)
}

pub fn fault_message(f: &FaultRecord) -> pb::Fault {
    let fault = &f.fault;
    let (delay_ms, abort_status) = match fault.action {
        FaultAction::Delay(d) => (u64::try_from(d.as_millis()).unwrap_or(u64::MAX), 0),
        FaultAction::Abort(status) => (0, u32::from(status)),
    };
    let (header_name, header_value) = fault.header.clone().unwrap_or_default();
    pb::Fault {
        id: fault.id.clone(),
        route: fault.route.clone(),
        delay_ms,
        abort_status,
        percent: fault.percent,
        header_name,
        header_value,
        expires_at_ms: fault.expires_at_ms,
        created_at_ms: f.created_at_ms,
    }
}
