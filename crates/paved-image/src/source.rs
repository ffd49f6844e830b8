//! Where image content comes from: an OCI registry (through oci-client) or a local OCI image
//! layout directory. Both hand out bytes and files *unverified*; `assemble` checks every one of
//! them against its digest before it is cached or unpacked.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference, secrets};
use tracing::{debug, warn};

use crate::cache::Cache;
use crate::digest::Digest;
use crate::manifest::{Descriptor, MANIFEST_MEDIA_TYPES, Manifest, REF_NAME, host_platform, select_platform};
use crate::{ImageError, RegistryAuth};

/// A store of manifests and blobs addressed by digest.
pub(crate) trait Source {
    async fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, ImageError>;
    async fn blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, ImageError>;
    /// A file holding the blob, downloaded into the directory `staging` if it has to be.
    async fn blob_file(&self, digest: &Digest, staging: &Path) -> Result<PathBuf, ImageError>;
}

/// One repository of one registry, with the credentials to read it.
pub(crate) struct Registry {
    client: Client,
    reference: Reference,
    auth: secrets::RegistryAuth,
    /// The reference as the user wrote it, for errors and logs.
    name: String,
}

impl Registry {
    pub(crate) fn new(reference: Reference, auth: &RegistryAuth, name: &str) -> Registry {
        let registry = reference.resolve_registry().to_string();
        // Plain HTTP only for loopback, where test and mirror registries run without certificates.
        let protocol = if is_loopback(&registry) {
            ClientProtocol::HttpsExcept(vec![registry])
        } else {
            ClientProtocol::Https
        };
        let auth = match auth {
            RegistryAuth::Anonymous => secrets::RegistryAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        };
        Registry {
            client: Client::new(ClientConfig {
                protocol,
                // A registry that stops answering fails the pull (retryably) instead of hanging it.
                connect_timeout: Some(Duration::from_secs(10)),
                read_timeout: Some(Duration::from_secs(60)),
                user_agent: concat!("paved/", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
            reference,
            auth,
            name: name.to_string(),
        }
    }

    /// Resolves the reference's tag to a manifest digest, caching the manifest. When the
    /// registry cannot be reached, falls back to what the tag resolved to last time, so a node
    /// keeps starting tasks through a registry outage.
    pub(crate) async fn resolve_tag(&self, cache: &Cache) -> Result<Digest, ImageError> {
        let r = &self.reference;
        let key = (r.resolve_registry(), r.repository(), r.tag().unwrap_or("latest"));
        let bytes = match self.fetch_manifest(&self.reference).await {
            Ok(bytes) => bytes,
            Err(e @ ImageError::Unreachable { .. }) => {
                let cached = cache.tag(key.0, key.1, key.2);
                let Some(digest) = cached else { return Err(e) };
                warn!(
                    image = %self.name, %digest, error = %e,
                    "registry unreachable, using the digest this tag had when last pulled"
                );
                return Digest::parse(&digest, &self.name);
            }
            Err(e) => return Err(e),
        };
        let digest = Digest::of_bytes(&bytes);
        cache.put_manifest(&digest, &bytes)?;
        cache.put_tag(key, &digest)?;
        debug!(image = %self.name, %digest, "tag resolved");
        Ok(digest)
    }

    async fn fetch_manifest(&self, reference: &Reference) -> Result<Vec<u8>, ImageError> {
        let (bytes, _digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| ImageError::from_registry(&self.name, "the manifest", e))?;
        Ok(bytes.to_vec())
    }

    /// oci-client remembers credentials per registry only once asked to; blob pulls do not ask.
    async fn authenticate(&self) {
        let registry = self.reference.resolve_registry();
        self.client.store_auth_if_needed(registry, &self.auth).await;
    }
}

impl Source for Registry {
    async fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        self.fetch_manifest(&self.reference.clone_with_digest(digest.to_string()))
            .await
    }

    async fn blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        self.authenticate().await;
        let mut out = Vec::new();
        let what = format!("blob {digest}");
        let d = digest.to_string();
        self.client
            .pull_blob(&self.reference, d.as_str(), &mut out)
            .await
            .map_err(|e| ImageError::from_registry(&self.name, &what, e))?;
        Ok(out)
    }

    async fn blob_file(&self, digest: &Digest, staging: &Path) -> Result<PathBuf, ImageError> {
        self.authenticate().await;
        let path = staging.join(digest.hex());
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ImageError::io("create", &path, e))?;
        let what = format!("blob {digest}");
        let d = digest.to_string();
        self.client
            .pull_blob(&self.reference, d.as_str(), file)
            .await
            .map_err(|e| ImageError::from_registry(&self.name, &what, e))?;
        Ok(path)
    }
}

/// An OCI image layout directory: `index.json` plus `blobs/sha256/<hex>`.
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The digest of the manifest (or index) `tag` names in `index.json`.
    pub(crate) async fn resolve(&self, tag: Option<&str>) -> Result<Digest, ImageError> {
        let path = self.root.join("index.json");
        let bytes = tokio::fs::read(&path).await.map_err(|e| self.error(&path, e))?;
        let name = self.root.display().to_string();
        let Manifest::Index { manifests } = Manifest::parse(&bytes, &name)? else {
            return Err(self.invalid("index.json is an image manifest, not an index".into()));
        };
        let matching: Vec<Descriptor> = manifests
            .iter()
            .filter(|m| tag.is_none() || ref_name(m) == tag)
            .cloned()
            .collect();
        let chosen = match (matching.as_slice(), tag) {
            ([one], _) => one,
            ([], None) => return Err(self.invalid("index.json lists no manifests".into())),
            // Several platforms under one name: the host's.
            ([_, ..], Some(_)) => select_platform(&matching, host_platform(), &name)?,
            _ => return Err(self.ambiguous(tag, &manifests)),
        };
        Digest::parse(&chosen.digest, &name)
    }

    fn ambiguous(&self, tag: Option<&str>, manifests: &[Descriptor]) -> ImageError {
        let names: Vec<&str> = manifests.iter().filter_map(ref_name).collect();
        let what = match tag {
            Some(tag) => format!("has no manifest named {tag:?}"),
            None => "has several manifests".to_string(),
        };
        self.invalid(format!("index.json {what}; pass one of {names:?}"))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn invalid(&self, reason: String) -> ImageError {
        ImageError::Layout {
            layout: self.root.clone(),
            reason,
        }
    }

    fn error(&self, path: &Path, e: io::Error) -> ImageError {
        self.invalid(format!(
            "cannot read {}: {e}; is this an OCI image layout?",
            path.display()
        ))
    }
}

impl Source for Layout {
    async fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        self.blob_bytes(digest).await
    }

    async fn blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        tokio::fs::read(&path).await.map_err(|e| self.error(&path, e))
    }

    async fn blob_file(&self, digest: &Digest, _staging: &Path) -> Result<PathBuf, ImageError> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(_) => Ok(path),
            Err(e) => Err(self.error(&path, e)),
        }
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations.get(REF_NAME).map(String::as_str)
}

/// Whether `registry` ("host", "host:port", "[v6]:port") is this machine.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(registry: &str, expected: bool) {
        assert_eq!(is_loopback(registry), expected, "{registry}");
    }

    #[test]
    fn only_loopback_registries_count_as_local() {
        check("127.0.0.1:5000", true);
        check("127.1.2.3", true);
        check("localhost:5000", true);
        check("LOCALHOST", true);
        check("[::1]:5000", true);
        check("10.0.0.1:5000", false);
        check("registry.example.com", false);
        check("localhost.example.com:5000", false);
        check("index.docker.io", false);
    }
}
