//! `paved tenants`: what an admin has set for each tenant.

use paved_api::v1::{ListTenantsRequest, SetTenantRequest, Tenant};

use super::Ctx;
use crate::cli::TenantAction;
use crate::client::Answer as _;
use crate::output::{self, Table, age, now_ms};

pub async fn run(ctx: &Ctx, action: Option<TenantAction>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let (name, trusted) = match action {
        None => {
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
                eprintln!("no tenant is configured: every tenant is untrusted (sandboxed tasks only)");
                return Ok(());
            }
            return Ok(output::print(&table(&tenants).render())?);
        }
        Some(TenantAction::Trust { name }) => (name, true),
        Some(TenantAction::Untrust { name }) => (name, false),
    };
    let tenant = client
        .system()
        .set_tenant(SetTenantRequest { name, trusted })
        .await
        .answer(&client)?;
    if ctx.json() {
        return output::print_json(&tenant);
    }
    let what = if tenant.trusted {
        "trusted: its jobs may use driver = \"process\" and run unsandboxed on the host"
    } else {
        "untrusted: its jobs run sandboxed only"
    };
    Ok(output::print(&format!("tenant {} is {what}\n", tenant.name))?)
}

fn table(tenants: &[Tenant]) -> Table {
    let now = now_ms();
    let mut table = Table::new(&["TENANT", "TRUSTED", "CHANGED"]);
    for t in tenants {
        table.row(vec![
            t.name.clone(),
            t.trusted.to_string(),
            age(now, t.updated_at_ms),
        ]);
    }
    table
}
