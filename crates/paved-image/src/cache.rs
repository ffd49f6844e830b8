//! The on-disk cache under an `ImageStore` root:
//!
//! ```text
//! manifests/sha256/<hex>             raw manifest or index bytes, as verified
//! manifests/tags/<registry>/<repo>/@<tag>  the digest a tag last resolved to
//! blobs/sha256/<hex>                 config blobs
//! layers/sha256/<hex>/               unpacked layers, overlayfs format, read-only by convention
//! tmp/                               staging; everything is written here, then renamed into place
//! ```
//!
//! **Invariant:** every file or directory under `manifests/`, `blobs/` and `layers/` was verified
//! against its digest before it was renamed there, so presence means complete and correct.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::ImageError;
use crate::digest::Digest;

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

impl Cache {
    pub(crate) fn open(root: PathBuf) -> Result<Cache, ImageError> {
        for dir in [
            "manifests/sha256",
            "manifests/tags",
            "blobs/sha256",
            "layers/sha256",
            "tmp",
        ] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| ImageError::io("create", path, e))?;
        }
        Ok(Cache { root })
    }

    pub(crate) fn manifest(&self, digest: &Digest) -> Result<Option<Vec<u8>>, ImageError> {
        read_optional(&self.manifest_path(digest))
    }

    pub(crate) fn put_manifest(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        self.put_file(&self.manifest_path(digest), bytes)
    }

    pub(crate) fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, ImageError> {
        read_optional(&self.blob_path(digest))
    }

    pub(crate) fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        self.put_file(&self.blob_path(digest), bytes)
    }

    pub(crate) fn layer_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(digest.hex())
    }

    /// The digest `tag` of `repository` on `registry` resolved to when last pulled.
    pub(crate) fn tag(&self, registry: &str, repository: &str, tag: &str) -> Option<String> {
        let path = self.tag_path(registry, repository, tag)?;
        fs::read_to_string(path).ok().map(|s| s.trim().to_string())
    }

    pub(crate) fn put_tag(
        &self,
        (registry, repository, tag): (&str, &str, &str),
        digest: &Digest,
    ) -> Result<(), ImageError> {
        let Some(path) = self.tag_path(registry, repository, tag) else {
            return Ok(()); // A name we cannot store safely is just not remembered.
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
        }
        self.put_file(&path, digest.to_string().as_bytes())
    }

    /// A fresh staging directory on the cache's filesystem, so `commit_dir` can rename it.
    pub(crate) fn staging_dir(&self) -> Result<TempDir, ImageError> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&tmp)
            .map_err(|e| ImageError::io("create a staging directory in", tmp, e))
    }

    /// Moves a fully written `staged` directory to `dest`. Another pull may have got there first
    /// with the same verified content; then ours is dropped.
    pub(crate) fn commit_dir(&self, staged: TempDir, dest: &Path) -> Result<(), ImageError> {
        match fs::rename(staged.path(), dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => Ok(()), // `staged` removes itself on drop.
            Err(e) => Err(ImageError::io("move a staged layer to", dest, e)),
        }
    }

    fn put_file(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp");
        let mut file =
            NamedTempFile::new_in(&tmp).map_err(|e| ImageError::io("create a file in", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| ImageError::io("write", file.path().to_path_buf(), e))?;
        file.persist(path)
            .map_err(|e| ImageError::io("move a staged file to", path, e.error))?;
        Ok(())
    }

    fn manifest_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("manifests/sha256").join(digest.hex())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// `None` for names with components that would leave the tags directory. The reference
    /// parser already forbids them; this keeps the cache safe on its own.
    fn tag_path(&self, registry: &str, repository: &str, tag: &str) -> Option<PathBuf> {
        let mut path = self.root.join("manifests/tags");
        for part in std::iter::once(registry).chain(repository.split('/')) {
            if part.is_empty() || part == "." || part == ".." || part.contains('@') {
                return None;
            }
            path.push(part);
        }
        // `@` cannot start a repository component, so tag files never collide with repo dirs.
        (!tag.is_empty() && !tag.contains('/')).then(|| path.join(format!("@{tag}")))
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ImageError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::io("read", path, e)),
    }
}
