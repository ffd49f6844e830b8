//! OCI images for paved: pulls them from a registry or imports them from an OCI image layout,
//! verifies every blob against its digest, and caches layers unpacked in overlayfs format, so a
//! sandbox can stack them as read-only `lowerdir`s under a per-task writable layer (or, without
//! overlayfs, copy them into one tree with [`Image::flatten_into`]).
//!
//! **Invariant:** nothing enters the cache unverified or half-written: content is checked against
//! its digest and written in a staging directory, then renamed into place.
//!
//! **Invariant:** plain HTTP is used only for registries on loopback; everything else is HTTPS.

#![forbid(unsafe_code)]

mod assemble;
mod cache;
mod digest;
mod error;
mod flatten;
mod manifest;
mod source;
mod unpack;

use std::fmt;
use std::path::{Path, PathBuf};

use oci_client::Reference;
use serde::{Deserialize, Serialize};
use tracing::info;

pub use error::ImageError;

use cache::Cache;
use digest::Digest;
use source::{Layout, Registry};

/// The image cache of one node, e.g. `<data>/images`. Cheap to clone; safe to share between
/// concurrent pulls (two pulls of one layer both unpack it, and the first rename wins).
#[derive(Debug, Clone)]
pub struct ImageStore {
    cache: Cache,
}

/// Credentials for a registry.
#[derive(Clone, Default)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

/// A pulled image, ready to be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Digest of the manifest the reference resolved to (the index's, for multi-platform images),
    /// i.e. what to put after `@` to get this image again.
    pub digest: String,
    /// Unpacked layer directories, bottom (base) first, in overlayfs format: whiteouts are 0:0
    /// character devices, opaque directories carry `trusted.overlay.opaque=y`. Shared between
    /// images and tasks: never write to them.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// What the image says to run, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// Empty means `/`.
    pub working_dir: String,
}

impl ImageStore {
    /// Opens (creating if need be) the cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, ImageError> {
        Ok(ImageStore {
            cache: Cache::open(root.into())?,
        })
    }

    /// Pulls (or finds cached) `reference` ("host:port/repo:tag" or "host:port/repo@sha256:..."),
    /// verifying every blob's digest, unpacking each layer once. A digest-pinned reference that
    /// is fully cached needs no network; a tag falls back to its last digest when the registry
    /// is unreachable.
    pub async fn pull(&self, reference: &str, auth: &RegistryAuth) -> Result<Image, ImageError> {
        let parsed = parse_reference(reference)?;
        let pinned = parsed.digest().map(|d| Digest::parse(d, reference)).transpose()?;
        let registry = Registry::new(parsed, auth, reference);
        let top = match pinned {
            Some(digest) => digest,
            None => registry.resolve_tag(&self.cache).await?,
        };
        let image = assemble::assemble(&self.cache, &registry, reference, &top).await?;
        info!(image = reference, digest = %image.digest, layers = image.layers.len(), "image ready");
        Ok(image)
    }

    /// Imports from a local OCI image layout directory (index.json + blobs/sha256/...), for sites
    /// without a registry. `tag` picks the manifest by its `org.opencontainers.image.ref.name`
    /// annotation (None = the only one).
    pub async fn import_layout(&self, layout: &Path, tag: Option<&str>) -> Result<Image, ImageError> {
        let source = Layout::new(layout);
        let top = source.resolve(tag).await?;
        let name = match tag {
            Some(tag) => format!("{}:{tag}", layout.display()),
            None => layout.display().to_string(),
        };
        let image = assemble::assemble(&self.cache, &source, &name, &top).await?;
        info!(image = %name, digest = %image.digest, layers = image.layers.len(), "image imported");
        Ok(image)
    }
}

impl Image {
    /// For hosts without overlayfs: materializes the merged root into `dest` (an empty or absent
    /// directory), applying whiteouts by deletion. Blocking; call it from `spawn_blocking`.
    pub fn flatten_into(&self, dest: &Path) -> Result<(), ImageError> {
        flatten::flatten(&self.layers, dest)
    }
}

fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse()
        .map_err(|e: oci_client::ParseError| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })
}

/// Keeps passwords out of logs.
impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}
