//! `paved tenants`: what an admin has set for each tenant: trust and capacity groups.

use paved_api::v1::{CapacityGroup, ListTenantsRequest, SetTenantRequest, Tenant};
use paved_types::units::format_memory;

use super::Ctx;
use crate::cli::TenantAction;
use crate::client::Answer as _;
use crate::output::{self, Table, age, now_ms};

pub async fn run(ctx: &Ctx, action: Option<TenantAction>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let Some(action) = action else {
        let tenants = client
            .system()
            .list_tenants(ListTenantsRequest {})
            .await
            .answer(&client)?
            .tenants;
        if ctx.json() {
            return output::print_json(&tenants);
        }
        if tenants.is_empty() {
            eprintln!(
                "no tenant is configured: every tenant is untrusted (sandboxed tasks only) and has no quota"
            );
            return Ok(());
        }
        return Ok(output::print(&table(&tenants).render())?);
    };
    let (request, quota) = request(action);
    let tenant = client.system().set_tenant(request).await.answer(&client)?;
    if ctx.json() {
        return output::print_json(&tenant);
    }
    let message = match quota {
        Some(tier) => {
            let group = tenant.capacity_groups.iter().find(|g| g.tier == tier);
            format!(
                "tenant {} tier {tier}: {}\n",
                tenant.name,
                group.map_or_else(|| "unlimited".to_owned(), limits)
            )
        }
        None if tenant.trusted => format!(
            "tenant {} is trusted: its jobs may use driver = \"process\" and run unsandboxed on the host\n",
            tenant.name
        ),
        None => format!(
            "tenant {} is untrusted: its jobs run sandboxed only\n",
            tenant.name
        ),
    };
    Ok(output::print(&message)?)
}

/// The request an action makes, and the tier whose quota it sets, if any.
fn request(action: TenantAction) -> (SetTenantRequest, Option<String>) {
    let trust = |name, trusted| SetTenantRequest {
        name,
        trusted: Some(trusted),
        ..SetTenantRequest::default()
    };
    match action {
        TenantAction::Trust { name } => (trust(name, true), None),
        TenantAction::Untrust { name } => (trust(name, false), None),
        TenantAction::Quota {
            name,
            tier,
            cpu,
            memory,
            tasks,
            clear,
        } => {
            let mut req = SetTenantRequest {
                name,
                ..SetTenantRequest::default()
            };
            if clear {
                req.remove_capacity_groups.push(tier.clone());
            } else {
                req.capacity_groups.push(CapacityGroup {
                    tier: tier.clone(),
                    cpu,
                    memory_bytes: memory,
                    tasks,
                });
            }
            (req, Some(tier))
        }
    }
}

fn table(tenants: &[Tenant]) -> Table {
    let now = now_ms();
    let mut table = Table::new(&["TENANT", "TRUSTED", "CRITICAL", "FLEX", "CHANGED"]);
    for t in tenants {
        let tier = |name: &str| {
            t.capacity_groups
                .iter()
                .find(|g| g.tier == name)
                .map_or_else(|| "unlimited".to_owned(), limits)
        };
        table.row(vec![
            t.name.clone(),
            t.trusted.to_string(),
            tier("critical"),
            tier("flex"),
            age(now, t.updated_at_ms),
        ]);
    }
    table
}

/// "cpu 4, memory 8GiB, tasks 100"; a limit not set is left out.
fn limits(group: &CapacityGroup) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = group.cpu {
        parts.push(format!("cpu {cpu}"));
    }
    if let Some(memory) = group.memory_bytes {
        parts.push(format!("memory {}", format_memory(memory)));
    }
    if let Some(tasks) = group.tasks {
        parts.push(format!("tasks {tasks}"));
    }
    if parts.is_empty() {
        return "unlimited".to_owned();
    }
    parts.join(", ")
}
