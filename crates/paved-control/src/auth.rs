//! Bearer tokens: every API call carries one. Tokens live in the store as SHA-256 digests (so
//! every server of a cluster shares them and a leaked store does not leak them); `paved up`
//! writes the admin token to `admin.token` in its data directory for the local CLI.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use paved_store::{Event, EventKind, Expect, Op, StoreError, WatchStream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::caller::{Caller, Role};
use crate::env::Ids;
use crate::error::ApiError;
use crate::repo::{Repo, RepoError, TOKEN_NAMES, TOKENS, put_op};

/// File in the data directory holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The name of the first server's admin token; later servers sharing the store add a suffix.
pub const ADMIN_TOKEN_NAME: &str = "admin";

/// gRPC paths an `agent` token may call: the agent protocol's service.
pub const AGENT_SERVICE_PATH: &str = "/paved.v1.NodeStore/";

/// A token as stored at `/tokens/<sha256 of the token>`; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub role: Role,
    /// The tenant of a `tenant` token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Unique; `/token-names/<name>` holds the digest, so a token can be revoked by name.
    /// Empty only in records written before tokens had names.
    #[serde(default)]
    pub name: String,
    pub created_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "cannot write the admin token to {path}: {source}; check the data directory's permissions and free space"
    )]
    WriteToken { path: PathBuf, source: std::io::Error },
    #[error("cannot read the admin token at {path}: {source}")]
    ReadToken { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Every valid token's digest and record, checked on each request. It follows the store
/// ([`Tokens::follow`]), so a token created or revoked through any server sharing the store is
/// honoured or refused here within a moment.
#[derive(Default)]
pub struct Tokens {
    table: RwLock<HashMap<[u8; 32], TokenRecord>>,
    /// The store revision the last listing was taken at, where the watch starts.
    listed_at: AtomicU64,
}

/// How long a broken token watch waits before listing the tokens again.
const RELIST_AFTER: Duration = Duration::from_millis(250);

impl Tokens {
    /// Loads every token from the store.
    pub async fn load(repo: &Repo) -> Result<Arc<Tokens>, AuthError> {
        let tokens = Tokens::default();
        tokens.relist(repo).await?;
        Ok(Arc::new(tokens))
    }

    /// Keeps the table current from a watch on `/tokens/`, listing again after a broken
    /// watch; runs until dropped.
    pub async fn follow(self: Arc<Self>, repo: Repo) {
        let mut relist = false;
        loop {
            let outcome = async {
                if relist {
                    self.relist(&repo).await?;
                }
                let from = self.listed_at.load(Ordering::Acquire);
                let watch = repo.store().watch(TOKENS, from).await.map_err(RepoError::from)?;
                self.apply_all(watch).await
            }
            .await;
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "the token watch broke; listing tokens again");
            }
            relist = true;
            tokio::time::sleep(RELIST_AFTER).await;
        }
    }

    /// The caller a presented token stands for, if it is valid.
    pub fn check(&self, token: &str) -> Option<Caller> {
        let digest = digest(token);
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let record = table.get(&digest)?;
        let tenant = match record.role {
            Role::Tenant => Some(record.tenant.clone()?),
            Role::Admin | Role::Agent => None,
        };
        Some(Caller {
            role: record.role,
            tenant,
            token_name: record.name.clone(),
        })
    }

    /// Honours a token at once on this server (the watch would, a moment later).
    pub(crate) fn insert(&self, digest: [u8; 32], record: TokenRecord) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest, record);
    }

    /// Refuses a token at once on this server.
    pub(crate) fn remove(&self, digest: &[u8; 32]) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
    }

    /// Replaces the table with what the store holds now.
    async fn relist(&self, repo: &Repo) -> Result<(), RepoError> {
        let store = repo.store();
        // The revision before the listing: the watch from it replays whatever the listing
        // may have missed, and replaying a put or delete over a newer state changes nothing.
        let revision = store.revision().await?;
        let (kvs, _) = store.list(TOKENS).await?;
        let mut table = HashMap::new();
        for kv in kvs {
            if let Some((digest, record)) = decode_token(&kv.key, &kv.value) {
                table.insert(digest, record);
            }
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        self.listed_at.store(revision, Ordering::Release);
        Ok(())
    }

    async fn apply_all(&self, mut watch: WatchStream) -> Result<(), RepoError> {
        while let Some(event) = watch.next().await {
            self.apply(event?);
        }
        Err(RepoError::Rejected("the store ended the token watch".into()))
    }

    fn apply(&self, event: Event) {
        let Some(digest) = event.key.strip_prefix(TOKENS).and_then(parse_digest) else {
            return;
        };
        match event.kind {
            EventKind::Put => match decode_token(&event.key, &event.value) {
                Some((_, record)) => self.insert(digest, record),
                None => self.remove(&digest),
            },
            EventKind::Delete => self.remove(&digest),
        }
        self.listed_at.fetch_max(event.revision, Ordering::AcqRel);
    }
}

/// A stored token; one that does not decode (damaged, or a role this version does not know)
/// is logged and refused.
fn decode_token(key: &str, value: &[u8]) -> Option<([u8; 32], TokenRecord)> {
    let digest = parse_digest(key.strip_prefix(TOKENS)?)?;
    match serde_json::from_slice::<TokenRecord>(value) {
        Ok(record) => Some((digest, record)),
        Err(e) => {
            tracing::warn!(key, error = %e, "refusing a token whose record is unreadable");
            None
        }
    }
}

/// Returns the admin token of `data_dir`, creating it (in the store, then in the file) on first
/// start. A token file from an earlier start is kept and re-registered, so several servers
/// sharing a store each keep their own admin token (named `admin`, `admin-<digest prefix>`).
pub async fn ensure_admin_token(
    repo: &Repo,
    tokens: &Tokens,
    data_dir: &Path,
    ids: &Ids,
    now_ms: u64,
) -> Result<String, AuthError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(text) if is_well_formed(text.trim()) => text.trim().to_owned(),
        Ok(_) => new_secret(ids),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_secret(ids),
        Err(source) => return Err(AuthError::ReadToken { path, source }),
    };
    let d = digest(&token);
    let record = register_admin(repo, &d, now_ms).await?;
    tokens.insert(d, record);
    write_private(&path, &token).map_err(|source| AuthError::WriteToken { path, source })?;
    Ok(token)
}

/// Stores the admin token's record and name unless they are there already.
async fn register_admin(repo: &Repo, d: &[u8; 32], now_ms: u64) -> Result<TokenRecord, RepoError> {
    let key = format!("{TOKENS}{}", hex(d));
    for _ in 0..8 {
        let existing = repo.get::<TokenRecord>(&key).await?;
        if let Some(found) = existing.as_ref().filter(|r| !r.value.name.is_empty()) {
            return Ok(found.value.clone());
        }
        // Unnamed (an older store) or new: take `admin`, or `admin-<digest prefix>` when
        // another server's admin token has it.
        let names = repo
            .store()
            .get(&format!("{TOKEN_NAMES}{ADMIN_TOKEN_NAME}"))
            .await?;
        let name = match names {
            Some(kv) if kv.value != hex(d).as_bytes() => format!("{ADMIN_TOKEN_NAME}-{}", &hex(d)[..8]),
            _ => ADMIN_TOKEN_NAME.to_owned(),
        };
        let record = TokenRecord {
            role: Role::Admin,
            tenant: None,
            name: name.clone(),
            created_at_ms: existing.as_ref().map_or(now_ms, |r| r.value.created_at_ms),
        };
        let expect = existing.map_or(Expect::Absent, |r| Expect::Revision(r.revision));
        let ops = vec![
            put_op(key.clone(), &record, expect)?,
            Op::Put {
                key: format!("{TOKEN_NAMES}{name}"),
                value: hex(d).into_bytes(),
                expect: Expect::Any,
            },
        ];
        match repo.commit(ops).await {
            Ok(_) => return Ok(record),
            Err(RepoError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RepoError::Rejected(
        "the admin token's record keeps changing under us; retry".into(),
    ))
}

/// Axum middleware: refuses any call without a valid bearer token, except health checks, which
/// load balancers make without credentials and which reveal nothing; refuses agent tokens
/// outside the agent protocol; hands the [`Caller`] to the handlers in the request's
/// extensions.
pub async fn require_token(State(tokens): State<Arc<Tokens>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/grpc.health.v1.Health/") || path == "/healthz" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(caller) = presented.and_then(|token| tokens.check(token)) else {
        return refuse(&req);
    };
    if caller.role == Role::Agent && !path.starts_with(AGENT_SERVICE_PATH) {
        let message = format!(
            "token {:?} is an agent token, which may call only the agent protocol ({}); use an admin or tenant token",
            caller.token_name,
            AGENT_SERVICE_PATH.trim_matches('/')
        );
        return deny(&req, message);
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Where `token`'s record lives in the store: `/tokens/<sha256 of the token>`.
pub fn token_key(token: &str) -> String {
    format!("{TOKENS}{}", hex(&digest(token)))
}

/// A new token's secret: `pvd_` and 64 hex digits.
pub(crate) fn new_secret(ids: &Ids) -> String {
    format!("pvd_{}", ids.secret())
}

fn refuse(req: &Request) -> Response {
    let message = "missing or invalid bearer token; send `authorization: Bearer <token>` (paved up writes one to <data dir>/admin.token)";
    if is_grpc(req) {
        return tonic::Status::unauthenticated(message).into_http();
    }
    let body =
        serde_json::json!({"error": {"code": "unauthenticated", "message": message, "retryable": false}});
    (
        http::StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}

fn deny(req: &Request, message: String) -> Response {
    let error = ApiError::PermissionDenied(message);
    if is_grpc(req) {
        return tonic::Status::from(error).into_http();
    }
    let body = serde_json::json!({"error": {"code": error.code(), "message": error.to_string(), "retryable": false}});
    (http::StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_digest(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn is_well_formed(token: &str) -> bool {
    token.len() >= 20 && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Writes `text` to `path` readable by its owner only, atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use paved_store::{KeyValue, RedbStore, Store};

    use super::*;

    /// A store whose first watch breaks at once, as a watch does when its server goes away.
    struct BrokenFirstWatch {
        inner: RedbStore,
        watches: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for BrokenFirstWatch {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), StoreError> {
            self.inner.list(prefix).await
        }
        async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
            self.inner.txn(ops).await
        }
        async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, StoreError> {
            if self.watches.fetch_add(1, Ordering::SeqCst) == 0 {
                let broken = StoreError::Backend("connection reset".into());
                return Ok(Box::pin(futures::stream::once(async { Err(broken) })));
            }
            self.inner.watch(prefix, after).await
        }
        async fn revision(&self) -> Result<u64, StoreError> {
            self.inner.revision().await
        }
        fn describe(&self) -> String {
            "broken-first-watch".into()
        }
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_table_follows_the_store_and_lists_again_after_a_broken_watch() {
        let dir = tempfile::tempdir().unwrap();
        let store = BrokenFirstWatch {
            inner: RedbStore::open(&dir.path().join("store.redb")).unwrap(),
            watches: AtomicUsize::new(0),
        };
        let repo = Repo::new(Arc::new(store));
        let put = |token: &str, role: Role, tenant: Option<&str>| {
            put_op(token_key(token), &record(role, tenant), Expect::Any).unwrap()
        };
        repo.commit(vec![put("pvd_first", Role::Admin, None)])
            .await
            .unwrap();
        let tokens = Tokens::load(&repo).await.unwrap();
        assert!(tokens.check("pvd_first").is_some());
        // Written while the first watch is broken: only listing again finds it.
        repo.commit(vec![put("pvd_second", Role::Tenant, Some("a"))])
            .await
            .unwrap();
        let follow = tokio::spawn(tokens.clone().follow(repo.clone()));
        eventually("the second token", || tokens.check("pvd_second").is_some()).await;
        let delete = Op::Delete {
            key: token_key("pvd_first"),
            expect: Expect::Any,
        };
        repo.commit(vec![delete]).await.unwrap();
        eventually("the first token's revocation", || {
            tokens.check("pvd_first").is_none()
        })
        .await;
        follow.abort();
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = digest("pvd_example");
        assert_eq!(parse_digest(&hex(&d)), Some(d));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }

    fn record(role: Role, tenant: Option<&str>) -> TokenRecord {
        TokenRecord {
            role,
            tenant: tenant.map(str::to_owned),
            name: "t1".into(),
            created_at_ms: 1,
        }
    }

    #[test]
    fn tokens_check_only_known_ones() {
        let tokens = Tokens::default();
        tokens.insert(digest("pvd_right_token_value_0000"), record(Role::Admin, None));
        assert_eq!(
            tokens.check("pvd_right_token_value_0000"),
            Some(Caller::admin("t1"))
        );
        assert_eq!(tokens.check("pvd_wrong_token_value_0000"), None);
        assert_eq!(tokens.check(""), None);
        tokens.remove(&digest("pvd_right_token_value_0000"));
        assert_eq!(tokens.check("pvd_right_token_value_0000"), None);
    }

    #[test]
    fn tenant_tokens_carry_their_tenant_and_need_one() {
        let tokens = Tokens::default();
        tokens.insert(digest("pvd_a"), record(Role::Tenant, Some("a")));
        tokens.insert(digest("pvd_broken"), record(Role::Tenant, None));
        assert_eq!(tokens.check("pvd_a"), Some(Caller::tenant("a", "t1")));
        assert_eq!(tokens.check("pvd_broken"), None);
    }

    #[test]
    fn records_from_before_names_and_unknown_roles() {
        let key = format!("{TOKENS}{}", hex(&digest("x")));
        let old = br#"{"role":"admin","created_at_ms":5}"#;
        let (_, r) = decode_token(&key, old).unwrap();
        assert_eq!((r.role, r.name.as_str(), r.tenant), (Role::Admin, "", None));
        assert!(decode_token(&key, br#"{"role":"root","created_at_ms":5}"#).is_none());
        assert!(decode_token("/tokens/zz", old).is_none());
    }
}
