//! API errors: one enum for every handler, mapped to a gRPC status and an HTTP status with a
//! stable code a script can match on.

use paved_types::ManifestError;
use tonic::{Code, Status};

use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what} {name:?} not found; {hint}")]
    NotFound {
        what: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error("invalid manifest:\n{0}")]
    Manifest(#[from] ManifestError),
    #[error("{field}: {message}")]
    InvalidArgument { field: &'static str, message: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("store unavailable: {0}; retry")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Metadata key carrying the stable error code on gRPC errors.
pub const CODE_HEADER: &str = "paved-error-code";

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// Stable, documented: scripts match on it.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not_found",
            ApiError::Manifest(_) => "invalid_manifest",
            ApiError::InvalidArgument { .. } => "invalid_argument",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::FailedPrecondition(_) => "failed_precondition",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn grpc_code(&self) -> Code {
        match self {
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::Manifest(_) | ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Store(s) if s.is_retryable() => ApiError::Unavailable(s.to_string()),
            RepoError::Store(s) => ApiError::Unavailable(s.to_string()),
            RepoError::Corrupt { .. } => ApiError::Internal(e.to_string()),
            RepoError::Rejected(m) => ApiError::FailedPrecondition(m),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut status = Status::new(e.grpc_code(), e.to_string());
        if let Ok(v) = e.code().parse() {
            status.metadata_mut().insert(CODE_HEADER, v);
        }
        status
    }
}

/// The HTTP status for a gRPC code, as the JSON API reports it.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::InvalidArgument | Code::OutOfRange => S::BAD_REQUEST,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::FailedPrecondition => S::PRECONDITION_FAILED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

/// The stable code a gRPC status carries, or one derived from its gRPC code.
pub fn status_code_name(status: &Status) -> String {
    status
        .metadata()
        .get(CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:?}", status.code()).to_lowercase())
}
