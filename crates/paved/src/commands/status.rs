//! `paved status` and `paved nodes`: the server and the machines it runs tasks on.

use std::time::Duration;

use paved_api::v1::{GetStatusRequest, ListNodesRequest, Node, Status};
use paved_types::units::{format_duration, format_memory};

use super::Ctx;
use crate::client::Answer as _;
use crate::output::{self, Table, age, now_ms};

pub async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let status = client
        .system()
        .get_status(GetStatusRequest {})
        .await
        .answer(&client)?;
    if ctx.json() {
        return output::print_json(&status);
    }
    Ok(output::print(&output::fields(&fields(&status)))?)
}

pub async fn nodes(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let nodes = client
        .nodes()
        .list_nodes(ListNodesRequest {})
        .await
        .answer(&client)?
        .nodes;
    if ctx.json() {
        return output::print_json(&nodes);
    }
    if nodes.is_empty() {
        eprintln!("no nodes; `paved up` starts a local agent");
        return Ok(());
    }
    Ok(output::print(&table(&nodes, now_ms()).render())?)
}

fn fields(status: &Status) -> Vec<(&'static str, String)> {
    vec![
        ("Version", status.version.clone()),
        ("Listen", status.listen.clone()),
        ("Store", status.store.clone()),
        ("Revision", status.store_revision.to_string()),
        ("Data", status.data_dir.clone()),
        (
            "Uptime",
            format_duration(Duration::from_secs(status.uptime_ms / 1000)),
        ),
        ("Jobs", output::counts(&status.jobs_by_state)),
        ("Tasks", output::counts(&status.tasks_by_state)),
        ("Nodes", status.nodes.to_string()),
    ]
}

/// `ready`, `down`, and whether it takes new tasks: `ready, draining` while a drain moves its
/// tasks, `ready, ineligible` after.
fn node_state(node: &Node) -> String {
    match (node.drain_deadline_ms, node.eligible) {
        (0, true) => node.state.clone(),
        (0, false) => format!("{}, ineligible", node.state),
        _ => format!("{}, draining", node.state),
    }
}

/// `paved nodes drain NODE` and `paved nodes undrain NODE`.
pub async fn drain(ctx: &Ctx, node: &str, deadline: Option<Duration>, undo: bool) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let request = paved_api::v1::DrainNodeRequest {
        name: node.to_owned(),
        deadline_ms: deadline.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        undo,
    };
    let node = client.nodes().drain_node(request).await.answer(&client)?;
    if ctx.json() {
        return output::print_json(&node);
    }
    if undo {
        println!("node {} is eligible for new tasks again", node.name);
    } else {
        println!(
            "draining node {}: its tasks move elsewhere within each job's [update] max_unavailable; \
             `paved nodes` shows it `ineligible` once empty",
            node.name
        );
    }
    Ok(())
}

fn table(nodes: &[Node], now: u64) -> Table {
    let mut table = Table::new(&[
        "NAME", "STATE", "REGION", "ZONE", "CPU", "MEMORY", "TASKS", "AGENT", "SEEN", "LABELS", "RUNTIME",
    ]);
    for node in nodes {
        table.row(vec![
            node.name.clone(),
            node_state(node),
            output::or_dash(&node.region),
            output::or_dash(&node.zone),
            node.cpu.to_string(),
            format_memory(node.memory_bytes),
            node.tasks.to_string(),
            output::or_dash(&node.agent_version),
            age(now, node.heartbeat_at_ms),
            output::pairs(&node.labels),
            output::or_dash(&node.runtime),
        ]);
    }
    table
}
