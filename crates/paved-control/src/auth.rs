//! Bearer tokens: every API call carries one. Tokens live in the store as SHA-256 digests (so
//! every server of a cluster shares them and a leaked store does not leak them); `paved up`
//! writes the admin token to `admin.token` in its data directory for the local CLI.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paved_store::Expect;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env::Ids;
use crate::repo::{Repo, RepoError, TOKENS, put_op};

/// File in the data directory holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `admin` for now; `agent` and `tenant` come with clusters and tenants.
    pub role: String,
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

/// The digests of every valid token, checked on each request.
#[derive(Default)]
pub struct Tokens {
    digests: RwLock<HashSet<[u8; 32]>>,
}

impl Tokens {
    /// Loads every token digest from the store.
    pub async fn load(repo: &Repo) -> Result<Arc<Tokens>, AuthError> {
        let (kvs, _) = repo.store().list(TOKENS).await.map_err(RepoError::from)?;
        let tokens = Tokens::default();
        for kv in kvs {
            if let Some(d) = parse_digest(&kv.key[TOKENS.len()..]) {
                tokens.insert(d);
            }
        }
        Ok(Arc::new(tokens))
    }

    pub fn check(&self, token: &str) -> bool {
        let digest = digest(token);
        self.digests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&digest)
    }

    fn insert(&self, digest: [u8; 32]) {
        self.digests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest);
    }
}

/// Returns the admin token of `data_dir`, creating it (in the store, then in the file) on first
/// start. A token file from an earlier start is kept and re-registered.
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
        Ok(_) => format!("pvd_{}", ids.secret()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("pvd_{}", ids.secret()),
        Err(source) => return Err(AuthError::ReadToken { path, source }),
    };
    let d = digest(&token);
    let record = TokenRecord {
        role: "admin".to_owned(),
        created_at_ms: now_ms,
    };
    let key = format!("{TOKENS}{}", hex(&d));
    if repo.store().get(&key).await.map_err(RepoError::from)?.is_none() {
        repo.commit(vec![put_op(key, &record, Expect::Any)?]).await?;
    }
    tokens.insert(d);
    write_private(&path, &token).map_err(|source| AuthError::WriteToken { path, source })?;
    Ok(token)
}

/// Axum middleware: refuses any call without a valid bearer token, except health checks, which
/// load balancers make without credentials and which reveal nothing.
pub async fn require_token(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
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
    match presented {
        Some(token) if tokens.check(token) => next.run(req).await,
        _ => refuse(&req),
    }
}

fn refuse(req: &Request) -> Response {
    let message = "missing or invalid bearer token; send `authorization: Bearer <token>` (paved up writes one to <data dir>/admin.token)";
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
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

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
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
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d = digest("pvd_example");
        assert_eq!(parse_digest(&hex(&d)), Some(d));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }

    #[test]
    fn tokens_check_only_known_ones() {
        let tokens = Tokens::default();
        tokens.insert(digest("pvd_right_token_value_0000"));
        assert!(tokens.check("pvd_right_token_value_0000"));
        assert!(!tokens.check("pvd_wrong_token_value_0000"));
        assert!(!tokens.check(""));
    }
}
