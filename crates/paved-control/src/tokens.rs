//! The `Tokens` service (admin only): create, list and revoke API tokens. A token's secret is
//! in the create answer only; the store keeps its digest (`/tokens/<sha256>`) and a name index
//! (`/token-names/<name>` → digest) so a token can be revoked by name.

use paved_api::v1::{self as pb, tokens_server::Tokens as TokensService};
use paved_store::{Expect, Op, StoreError};
use tonic::{Request, Response, Status};

use crate::api::{Api, check_name};
use crate::auth::{TokenRecord, digest, hex, new_secret, parse_digest};
use crate::caller::{Caller, Role};
use crate::error::ApiError;
use crate::repo::{RepoError, TOKEN_NAMES, TOKENS, Versioned, put_op};

type ApiResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TokensService for Api {
    async fn create_token(&self, req: Request<pb::CreateTokenRequest>) -> ApiResult<pb::CreatedToken> {
        let caller = Caller::admin_only(&req)?;
        let created = self.create_token(req.into_inner()).await?;
        tracing::info!(token = %created.token.as_ref().map_or("", |t| t.name.as_str()), by = %caller.token_name, "token created");
        Ok(Response::new(created))
    }

    async fn list_tokens(&self, req: Request<pb::ListTokensRequest>) -> ApiResult<pb::ListTokensResponse> {
        Caller::admin_only(&req)?;
        let records: Vec<Versioned<TokenRecord>> = self.repo().list(TOKENS).await.map_err(ApiError::from)?;
        let mut tokens: Vec<pb::Token> = records.iter().map(|r| token_message(&r.value)).collect();
        tokens.sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> ApiResult<pb::Token> {
        let caller = Caller::admin_only(&req)?;
        let name = req.into_inner().name;
        let revoked = self.revoke_token(&name).await?;
        tracing::info!(token = %name, by = %caller.token_name, "token revoked");
        Ok(Response::new(token_message(&revoked)))
    }
}

impl Api {
    async fn create_token(&self, req: pb::CreateTokenRequest) -> Result<pb::CreatedToken, ApiError> {
        let role = Role::parse(&req.role).ok_or_else(|| {
            ApiError::invalid(
                "role",
                format!("{:?} is not a role; use admin, agent or tenant", req.role),
            )
        })?;
        let tenant = token_tenant(role, req.tenant)?;
        let secret = new_secret(self.ids());
        let d = digest(&secret);
        let name = if req.name.is_empty() {
            default_name(role, tenant.as_deref(), &hex(&d))
        } else {
            check_name("name", "token name", &req.name)?;
            req.name
        };
        let record = TokenRecord {
            role,
            tenant,
            name: name.clone(),
            created_at_ms: self.now(),
        };
        let ops = vec![
            Op::Put {
                key: format!("{TOKEN_NAMES}{name}"),
                value: hex(&d).into_bytes(),
                expect: Expect::Absent,
            },
            put_op(format!("{TOKENS}{}", hex(&d)), &record, Expect::Absent)?,
        ];
        match self.repo().commit(ops).await {
            Ok(_) => {}
            Err(RepoError::Store(StoreError::Conflict { key, .. })) if key.starts_with(TOKEN_NAMES) => {
                return Err(ApiError::AlreadyExists(format!(
                    "a token named {name:?} exists; choose another --name, or revoke it first (`paved token revoke {name}`)"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.tokens().insert(d, record.clone());
        Ok(pb::CreatedToken {
            token: Some(token_message(&record)),
            secret,
        })
    }

    async fn revoke_token(&self, name: &str) -> Result<TokenRecord, ApiError> {
        let not_found = || ApiError::NotFound {
            what: "token",
            name: name.to_owned(),
            hint: "`paved tokens` lists tokens by name",
        };
        if name.is_empty() {
            return Err(ApiError::invalid("name", "empty; name the token to revoke"));
        }
        let store = self.repo().store();
        let index_key = format!("{TOKEN_NAMES}{name}");
        let index = store
            .get(&index_key)
            .await
            .map_err(|e| ApiError::from(RepoError::from(e)))?
            .ok_or_else(not_found)?;
        let hex_digest = String::from_utf8_lossy(&index.value).into_owned();
        let d = parse_digest(&hex_digest)
            .ok_or_else(|| ApiError::Internal(format!("{index_key} holds no token digest")))?;
        let key = format!("{TOKENS}{hex_digest}");
        let record = self.repo().get::<TokenRecord>(&key).await?;
        let ops = vec![
            Op::Delete {
                key: index_key,
                expect: Expect::Revision(index.mod_revision),
            },
            Op::Delete {
                key,
                expect: Expect::Any,
            },
        ];
        match self.repo().commit(ops).await {
            Ok(_) => {}
            Err(RepoError::Store(StoreError::Conflict { .. })) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        }
        self.tokens().remove(&d);
        Ok(record.map(|r| r.value).unwrap_or(TokenRecord {
            role: Role::Admin,
            tenant: None,
            name: name.to_owned(),
            created_at_ms: 0,
        }))
    }
}

/// The tenant of a token of `role`: required for tenant tokens, refused for the others.
fn token_tenant(role: Role, tenant: String) -> Result<Option<String>, ApiError> {
    match (role, tenant.is_empty()) {
        (Role::Tenant, true) => Err(ApiError::invalid(
            "tenant",
            "missing; a tenant token belongs to a tenant: pass --tenant NAME",
        )),
        (Role::Tenant, false) => {
            check_name("tenant", "tenant name", &tenant)?;
            Ok(Some(tenant))
        }
        (_, true) => Ok(None),
        (role, false) => Err(ApiError::invalid(
            "tenant",
            format!(
                "only tenant tokens have a tenant, and this one is {}; drop --tenant or use --role tenant",
                role.as_str()
            ),
        )),
    }
}

/// `<tenant or role>-<6 hex digits of the digest>`, short enough to be a valid name.
fn default_name(role: Role, tenant: Option<&str>, hex_digest: &str) -> String {
    let stem = tenant.unwrap_or(role.as_str());
    let stem = &stem[..stem.len().min(56)];
    format!("{}-{}", stem.trim_end_matches('-'), &hex_digest[..6])
}

fn token_message(record: &TokenRecord) -> pb::Token {
    pb::Token {
        name: record.name.clone(),
        role: record.role.as_str().to_owned(),
        tenant: record.tenant.clone().unwrap_or_default(),
        created_at_ms: record.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_go_with_tenant_tokens_only() {
        let check = |role: Role, tenant: &str, expected: Result<Option<&str>, &str>| {
            let got = token_tenant(role, tenant.to_owned());
            match (got, expected) {
                (Ok(t), Ok(want)) => assert_eq!(t.as_deref(), want),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
                (got, want) => panic!("{role:?} {tenant:?}: {got:?}, expected {want:?}"),
            }
        };
        check(Role::Tenant, "team-a", Ok(Some("team-a")));
        check(Role::Tenant, "", Err("pass --tenant"));
        check(Role::Tenant, "Team A", Err("not a tenant name"));
        check(Role::Admin, "", Ok(None));
        check(Role::Agent, "", Ok(None));
        check(Role::Agent, "team-a", Err("drop --tenant"));
    }

    #[test]
    fn default_names_are_valid_names() {
        let hex = "abcdef0123456789";
        assert_eq!(default_name(Role::Agent, None, hex), "agent-abcdef");
        assert_eq!(default_name(Role::Tenant, Some("shop"), hex), "shop-abcdef");
        let long = "a".repeat(63);
        let name = default_name(Role::Tenant, Some(&long), hex);
        assert!(check_name("name", "token name", &name).is_ok(), "{name}");
    }
}
