//! `paved token create|revoke` and `paved tokens`: API tokens (admin only).

use paved_api::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Token};

use super::Ctx;
use crate::cli::TokenAction;
use crate::client::Answer as _;
use crate::output::{self, Table, age, now_ms, or_dash};

pub async fn token(ctx: &Ctx, action: TokenAction) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match action {
        TokenAction::Create { role, tenant, name } => {
            let req = CreateTokenRequest {
                role: role.as_str().to_owned(),
                tenant: tenant.unwrap_or_default(),
                name: name.unwrap_or_default(),
            };
            let created = client.tokens().create_token(req).await.answer(&client)?;
            if ctx.json() {
                return output::print_json(&created);
            }
            let token = created.token.unwrap_or_default();
            let tenant = if token.tenant.is_empty() {
                String::new()
            } else {
                format!(" of tenant {}", token.tenant)
            };
            // The note goes to stderr, so `paved token create … > file` keeps the secret alone.
            eprintln!(
                "created {} token {}{tenant}; this is the only time its secret is shown:",
                token.role, token.name
            );
            Ok(output::print(&format!("{}\n", created.secret))?)
        }
        TokenAction::Revoke { name } => {
            let revoked = client
                .tokens()
                .revoke_token(RevokeTokenRequest { name })
                .await
                .answer(&client)?;
            if ctx.json() {
                return output::print_json(&revoked);
            }
            Ok(output::print(&format!(
                "revoked token {}; every server refuses it from now on\n",
                revoked.name
            ))?)
        }
    }
}

pub async fn tokens(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let tokens = client
        .tokens()
        .list_tokens(ListTokensRequest {})
        .await
        .answer(&client)?
        .tokens;
    if ctx.json() {
        return output::print_json(&tokens);
    }
    Ok(output::print(&table(&tokens, now_ms()).render())?)
}

fn table(tokens: &[Token], now: u64) -> Table {
    let mut table = Table::new(&["NAME", "ROLE", "TENANT", "CREATED"]);
    for t in tokens {
        table.row(vec![
            or_dash(&t.name),
            t.role.clone(),
            or_dash(&t.tenant),
            age(now, t.created_at_ms),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_never_shows_a_secret_and_dashes_blanks() {
        let tokens = [
            Token {
                name: "admin".into(),
                role: "admin".into(),
                tenant: String::new(),
                created_at_ms: 1_000,
            },
            Token {
                name: "shop-ci".into(),
                role: "tenant".into(),
                tenant: "shop".into(),
                created_at_ms: 61_000,
            },
        ];
        let want = "\
NAME      ROLE     TENANT   CREATED
admin     admin    -        2m
shop-ci   tenant   shop     1m
";
        assert_eq!(table(&tokens, 121_000).render(), want);
    }
}
