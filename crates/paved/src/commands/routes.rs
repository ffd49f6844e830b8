//! `paved route`, `paved routes`, `paved fault` and `paved faults`: the edge router's routes
//! (host and path to weighted jobs) and the faults injected into them.

use std::time::Duration;

use paved_api::v1::{
    AddFaultRequest, Backend, DeleteRouteRequest, Fault, HaltFaultsRequest, ListFaultsRequest,
    ListRoutesRequest, PutRouteRequest, Route,
};

use super::Ctx;
use crate::cli::{FaultAction, RouteAction, RouteArgs};
use crate::client::Answer as _;
use crate::output::{self, Table, now_ms};

/// What `route add` sets when not told: the router's own defaults.
const DEFAULT_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_RETRIES: u32 = 2;

pub async fn route(ctx: &Ctx, action: RouteAction) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let (route, replace) = match action {
        RouteAction::Add(args) => (route_of(args, None)?, false),
        RouteAction::Set(args) => {
            let current = client
                .routing()
                .list_routes(ListRoutesRequest {})
                .await
                .answer(&client)?
                .routes
                .into_iter()
                .find(|r| r.name == args.name);
            let Some(current) = current else {
                anyhow::bail!("no route {:?}; create it with `paved route add`", args.name);
            };
            (route_of(args, Some(current))?, true)
        }
        RouteAction::Rm { name } => {
            let gone = client
                .routing()
                .delete_route(DeleteRouteRequest { name })
                .await
                .answer(&client)?;
            if ctx.json() {
                return output::print_json(&gone);
            }
            return Ok(output::print(&format!("route {} removed\n", gone.name))?);
        }
    };
    let saved = client
        .routing()
        .put_route(PutRouteRequest {
            route: Some(route),
            replace,
        })
        .await
        .answer(&client)?;
    if ctx.json() {
        return output::print_json(&saved);
    }
    Ok(output::print(&routes_table(&[saved]).render())?)
}

pub async fn routes(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let routes = client
        .routing()
        .list_routes(ListRoutesRequest {})
        .await
        .answer(&client)?
        .routes;
    if ctx.json() {
        return output::print_json(&routes);
    }
    if routes.is_empty() {
        eprintln!("no routes; add one with `paved route add NAME --path / --to JOB=100`");
        return Ok(());
    }
    Ok(output::print(&routes_table(&routes).render())?)
}

pub async fn fault(ctx: &Ctx, action: FaultAction) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match action {
        FaultAction::Add {
            route,
            delay,
            abort,
            percent,
            header,
            duration,
        } => {
            let (header_name, header_value) = match header {
                Some(kv) => split_header(&kv)?,
                None => (String::new(), String::new()),
            };
            let request = AddFaultRequest {
                route,
                delay_ms: delay.map_or(0, millis),
                abort_status: abort.map_or(0, u32::from),
                percent,
                header_name,
                header_value,
                for_ms: millis(duration),
            };
            let fault = client.routing().add_fault(request).await.answer(&client)?;
            if ctx.json() {
                return output::print_json(&fault);
            }
            Ok(output::print(&faults_table(&[fault]).render())?)
        }
        FaultAction::Halt => {
            let halted = client
                .routing()
                .halt_faults(HaltFaultsRequest {})
                .await
                .answer(&client)?;
            if ctx.json() {
                return output::print_json(&halted);
            }
            Ok(output::print(&format!("removed {} fault(s)\n", halted.removed))?)
        }
    }
}

pub async fn faults(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let faults = client
        .routing()
        .list_faults(ListFaultsRequest {})
        .await
        .answer(&client)?
        .faults;
    if ctx.json() {
        return output::print_json(&faults);
    }
    if faults.is_empty() {
        eprintln!("no faults are injected");
        return Ok(());
    }
    Ok(output::print(&faults_table(&faults).render())?)
}

/// The route the flags describe; for `route set`, over the current one (flags not given keep
/// their value).
fn route_of(args: RouteArgs, current: Option<Route>) -> anyhow::Result<Route> {
    let mut route = current.unwrap_or_else(|| Route {
        name: args.name.clone(),
        path_prefix: "/".to_owned(),
        timeout_ms: DEFAULT_TIMEOUT_MS,
        retries: DEFAULT_RETRIES,
        ..Route::default()
    });
    if !args.host.is_empty() {
        route.hosts = args.host;
    }
    if let Some(path) = args.path {
        route.path_prefix = path;
    }
    if !args.to.is_empty() {
        route.backends = args
            .to
            .iter()
            .map(|t| backend(t))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(header) = args.sticky_header {
        route.sticky_header = header;
        route.sticky_cookie.clear();
    }
    if let Some(cookie) = args.sticky_cookie {
        route.sticky_cookie = cookie;
        route.sticky_header.clear();
    }
    if let Some(timeout) = args.timeout {
        route.timeout_ms = millis(timeout);
    }
    if let Some(retries) = args.retries {
        route.retries = retries;
    }
    Ok(route)
}

/// `JOB[:PORT]=WEIGHT`, as `paved-types` reads it.
fn backend(text: &str) -> anyhow::Result<Backend> {
    let parsed: paved_types::Backend = text.parse().map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    Ok(Backend {
        job: parsed.job,
        port: parsed.port,
        weight: parsed.weight,
    })
}

fn split_header(kv: &str) -> anyhow::Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => anyhow::bail!("--header {kv:?} is not NAME=VALUE, e.g. --header x-canary=1"),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn routes_table(routes: &[Route]) -> Table {
    let mut table = Table::new(&["ROUTE", "HOSTS", "PATH", "TO", "STICKY", "OWNER"]);
    for r in routes {
        let to: Vec<String> = r
            .backends
            .iter()
            .map(|b| {
                let port = if b.port.is_empty() {
                    String::new()
                } else {
                    format!(":{}", b.port)
                };
                format!("{}{port}={}", b.job, b.weight)
            })
            .collect();
        let sticky = match (r.sticky_header.as_str(), r.sticky_cookie.as_str()) {
            ("", "") => "-".to_owned(),
            (h, "") => format!("header {h}"),
            (_, c) => format!("cookie {c}"),
        };
        table.row(vec![
            r.name.clone(),
            if r.hosts.is_empty() {
                "*".to_owned()
            } else {
                r.hosts.join(",")
            },
            r.path_prefix.clone(),
            to.join(","),
            sticky,
            output::or_dash(&r.owner),
        ]);
    }
    table
}

fn faults_table(faults: &[Fault]) -> Table {
    let now = now_ms();
    let mut table = Table::new(&["ID", "ROUTE", "ACTION", "PERCENT", "ONLY", "ENDS IN"]);
    for f in faults {
        let action = if f.abort_status != 0 {
            format!("abort {}", f.abort_status)
        } else {
            format!("delay {} ms", f.delay_ms)
        };
        let only = if f.header_name.is_empty() {
            "-".to_owned()
        } else {
            format!("{}={}", f.header_name, f.header_value)
        };
        let left = f.expires_at_ms.saturating_sub(now);
        table.row(vec![
            f.id.clone(),
            f.route.clone(),
            action,
            format!("{}%", f.percent),
            only,
            paved_types::units::format_duration(Duration::from_millis(left)),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_read_job_port_and_weight() {
        let check = |text: &str, expected: Result<(&str, &str, u32), &str>| match (backend(text), expected) {
            (Ok(b), Ok((job, port, weight))) => {
                assert_eq!((b.job.as_str(), b.port.as_str(), b.weight), (job, port, weight))
            }
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        };
        check("web=90", Ok(("web", "", 90)));
        check("web-v2:grpc=10", Ok(("web-v2", "grpc", 10)));
        for bad in ["web", "web=ninety", "=5"] {
            check(bad, Err("is not a backend"));
        }
    }
}
