//! `ImageError`: everything pulling, importing or flattening an image can fail with, each with a
//! stable code and whether a retry can help.

use std::io;
use std::path::PathBuf;

use oci_client::errors::OciDistributionError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "invalid image reference {reference:?}: {reason}; use host:port/repo:tag or host:port/repo@sha256:<64 hex digits>"
    )]
    InvalidReference { reference: String, reason: String },

    #[error(
        "registry refused access to {image}: {detail}; check the username and password (or that the image is public)"
    )]
    Unauthorized { image: String, detail: String },

    /// Connection refused, DNS failure, timeout: nothing was said about the image itself.
    #[error(
        "cannot reach the registry for {image}: {detail}; check the address and that the registry is up, then retry"
    )]
    Unreachable { image: String, detail: String },

    /// The registry answered, but not with what we asked for (unknown tag, server error, ...).
    #[error("registry failed to serve {what} of {image}: {source}; check that the image exists")]
    Registry {
        image: String,
        what: String,
        #[source]
        source: OciDistributionError,
    },

    /// Content does not hash to the digest that names it; nothing of it was cached. `blob` says
    /// what it was ("layer sha256:...", "manifest sha256:...").
    #[error(
        "{blob} of {image} hashes to {actual}, expected {expected}; the registry or layout is corrupt or was tampered with, so nothing of it was cached"
    )]
    DigestMismatch {
        image: String,
        blob: String,
        expected: String,
        actual: String,
    },

    #[error("unsupported digest {digest:?} in {image}: only sha256:<64 lowercase hex digits> is supported")]
    UnsupportedDigest { image: String, digest: String },

    #[error("{image} has no manifest for {os}/{arch}; use an image built for this platform")]
    NoPlatform { image: String, os: String, arch: String },

    /// A manifest, index or config that is not valid JSON of the expected shape.
    #[error("cannot understand the {what} of {image}: {reason}; the image is malformed")]
    BadMetadata {
        image: String,
        what: String,
        reason: String,
    },

    #[error("layer {layer} is {what}; rebuild the image with gzip or uncompressed tar layers")]
    UnsupportedLayer { layer: String, what: String },

    #[error("layer {layer} is not a valid tar archive: {source}; the image is malformed")]
    CorruptLayer {
        layer: String,
        #[source]
        source: io::Error,
    },

    /// An entry that would land outside the layer, or write through a link.
    #[error("layer {layer} entry {entry:?} {reason}; refusing to unpack a malformed or malicious layer")]
    UnsafeEntry {
        layer: String,
        entry: PathBuf,
        reason: String,
    },

    #[error("OCI layout {layout}: {reason}")]
    Layout { layout: PathBuf, reason: String },

    #[error("cannot flatten into {dest}: it is not empty; pass an empty directory")]
    DestNotEmpty { dest: PathBuf },

    #[error(
        "cannot {action} {path}: {source}; check that the image store is writable and the disk is not full"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// A stable identifier for dashboards and alerts; never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "image.invalid_reference",
            ImageError::Unauthorized { .. } => "image.unauthorized",
            ImageError::Unreachable { .. } => "image.unreachable",
            ImageError::Registry { .. } => "image.registry",
            ImageError::DigestMismatch { .. } => "image.digest_mismatch",
            ImageError::UnsupportedDigest { .. } => "image.unsupported_digest",
            ImageError::NoPlatform { .. } => "image.no_platform",
            ImageError::BadMetadata { .. } => "image.bad_metadata",
            ImageError::UnsupportedLayer { .. } => "image.unsupported_layer",
            ImageError::CorruptLayer { .. } => "image.corrupt_layer",
            ImageError::UnsafeEntry { .. } => "image.unsafe_entry",
            ImageError::Layout { .. } => "image.layout",
            ImageError::DestNotEmpty { .. } => "image.dest_not_empty",
            ImageError::Io { .. } => "image.io",
        }
    }

    /// Whether the same call may succeed if made again unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            ImageError::Unreachable { .. } | ImageError::Io { .. } => true,
            ImageError::Registry { source, .. } => {
                matches!(source, OciDistributionError::ServerError { code, .. } if *code >= 500)
            }
            _ => false,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Sorts an oci-client failure into what the caller can act on.
    pub(crate) fn from_registry(image: &str, what: &str, source: OciDistributionError) -> Self {
        use oci_client::errors::DigestError;
        let image = image.to_string();
        match source {
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                ImageError::DigestMismatch {
                    image,
                    blob: format!("blob {expected}"),
                    expected,
                    actual,
                }
            }
            OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
                image,
                detail: format!("401 Unauthorized from {url}"),
            },
            OciDistributionError::AuthenticationFailure(detail) => ImageError::Unauthorized { image, detail },
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                ImageError::Unreachable {
                    image,
                    detail: error_chain(&e),
                }
            }
            source => ImageError::Registry {
                image,
                what: what.to_string(),
                source,
            },
        }
    }
}

/// reqwest's own message ("error sending request") hides the cause; the chain names it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out
}
