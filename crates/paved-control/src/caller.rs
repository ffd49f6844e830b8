//! Who is calling: the role and tenant of the token a request carried. `require_token` puts a
//! [`Caller`] into every request's extensions; gRPC handlers read it with [`Caller::of`] (or
//! [`Caller::user`], [`Caller::admin_only`]), JSON handlers pass it on with
//! [`Caller::request`]. A request without one is refused: nothing reaches a handler unnamed.
//!
//! What each role may do:
//! - `admin`: everything.
//! - `tenant`: its own tenant's jobs, tasks, logs and metrics (another tenant's answer
//!   NOT_FOUND, as if they did not exist); reads routes, faults and nodes, which are shared;
//!   changes nothing shared (routes, faults, tenants, tokens).
//! - `agent`: the agent protocol only; `require_token` refuses it everywhere else.

use std::ops::BitOr;

use paved_types::DEFAULT_TENANT;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Agent,
    Tenant,
}

/// A set of roles: `Role::Agent | Role::Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u8);

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// Set for (and only for) `tenant` tokens.
    pub tenant: Option<String>,
    /// The token's name, for logs and audit.
    pub token_name: String,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Agent, Role::Tenant];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Tenant => "tenant",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl Roles {
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    fn names(self) -> String {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Role::as_str)
            .collect();
        names.join(" or ")
    }
}

impl From<Role> for Roles {
    fn from(role: Role) -> Roles {
        Roles(role.bit())
    }
}

impl BitOr for Role {
    type Output = Roles;
    fn bitor(self, other: Role) -> Roles {
        Roles(self.bit() | other.bit())
    }
}

impl BitOr<Role> for Roles {
    type Output = Roles;
    fn bitor(self, other: Role) -> Roles {
        Roles(self.0 | other.bit())
    }
}

impl Caller {
    /// An admin caller for calls the server makes itself (the demo jobs of `paved up --demo`).
    pub fn admin(token_name: &str) -> Caller {
        Caller {
            role: Role::Admin,
            tenant: None,
            token_name: token_name.to_owned(),
        }
    }

    /// A tenant caller, as a tenant token makes it.
    pub fn tenant(tenant: &str, token_name: &str) -> Caller {
        Caller {
            role: Role::Tenant,
            tenant: Some(tenant.to_owned()),
            token_name: token_name.to_owned(),
        }
    }

    /// The caller `require_token` found for this request.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Caller, ApiError> {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated(
                "the request carries no caller; send `authorization: Bearer <token>`",
            ))
    }

    /// The caller of a call of the user API (jobs, tasks, logs, metrics): an admin or a tenant.
    pub fn user<T>(req: &tonic::Request<T>) -> Result<Caller, ApiError> {
        let caller = Caller::of(req)?;
        caller.require_role(Role::Admin | Role::Tenant)?;
        Ok(caller)
    }

    /// The caller of an admin-only call.
    pub fn admin_only<T>(req: &tonic::Request<T>) -> Result<Caller, ApiError> {
        let caller = Caller::of(req)?;
        caller.require_role(Role::Admin)?;
        Ok(caller)
    }

    /// Refuses the call unless the caller has one of `allowed`.
    pub fn require_role(&self, allowed: impl Into<Roles>) -> Result<(), ApiError> {
        let allowed = allowed.into();
        if allowed.contains(self.role) {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(format!(
            "token {:?} has role {}; this call needs a token with role {} (`paved token create --role …`)",
            self.token_name,
            self.role.as_str(),
            allowed.names()
        )))
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may see (and so act on) what belongs to `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Tenant => self.tenant.as_deref() == Some(tenant),
            Role::Agent => false,
        }
    }

    /// The tenant the caller's new jobs belong to, and its job names are looked up in: its
    /// own for a tenant, `default` for an admin.
    pub fn home_tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// A gRPC request carrying `message` on behalf of this caller, for the JSON routes and for
    /// calls the server makes itself.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.extensions_mut().insert(self.clone());
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_combine_and_name_themselves() {
        let check = |allowed: Roles, role: Role, ok: bool| {
            let caller = Caller {
                role,
                tenant: None,
                token_name: "t".into(),
            };
            let result = caller.require_role(allowed);
            assert_eq!(result.is_ok(), ok, "{role:?} in {allowed:?}");
            if let Err(e) = result {
                assert_eq!(e.code(), "permission_denied");
                assert!(e.to_string().contains(&allowed.names()), "{e}");
            }
        };
        check(Role::Admin.into(), Role::Admin, true);
        check(Role::Admin.into(), Role::Tenant, false);
        check(Role::Agent | Role::Admin, Role::Agent, true);
        check(Role::Agent | Role::Admin, Role::Tenant, false);
        check(Role::Admin | Role::Tenant, Role::Agent, false);
        check(Role::Admin | Role::Tenant | Role::Agent, Role::Agent, true);
        assert_eq!((Role::Admin | Role::Tenant).names(), "admin or tenant");
    }

    #[test]
    fn tenants_see_only_their_own() {
        let a = Caller::tenant("a", "a-token");
        assert!(a.sees("a") && !a.sees("b") && !a.sees(DEFAULT_TENANT));
        assert_eq!(a.home_tenant(), "a");
        let admin = Caller::admin("admin");
        assert!(admin.sees("a") && admin.sees("b"));
        assert_eq!(admin.home_tenant(), DEFAULT_TENANT);
        let agent = Caller {
            role: Role::Agent,
            tenant: None,
            token_name: "n1".into(),
        };
        assert!(!agent.sees(DEFAULT_TENANT));
    }

    #[test]
    fn requests_carry_the_caller() {
        let a = Caller::tenant("a", "tok");
        let req = a.request(());
        assert_eq!(Caller::of(&req).unwrap(), a);
        assert!(Caller::of(&tonic::Request::new(())).is_err());
        assert!(Caller::admin_only(&req).is_err());
        assert!(Caller::user(&req).is_ok());
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
