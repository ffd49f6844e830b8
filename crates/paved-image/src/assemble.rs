//! Turns a manifest digest into an `Image`, taking from the cache what it has and from the
//! source what it lacks: each blob is verified against its digest, then cached (manifests,
//! config) or unpacked in a staging directory and renamed into the cache (layers).
//!
//! A fully cached image therefore touches the source not at all, which is what lets a
//! digest-pinned pull work with the registry down.

use std::path::PathBuf;

use tracing::{debug, info};

use crate::cache::Cache;
use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest, host_platform, parse_config, select_platform};
use crate::source::Source;
use crate::unpack::unpack_layer;
use crate::{Image, ImageError};

/// Builds the image whose manifest (or index) is `top`; `image` names it in errors and logs.
pub(crate) async fn assemble<S: Source>(
    cache: &Cache,
    source: &S,
    image: &str,
    top: &Digest,
) -> Result<Image, ImageError> {
    let (config, layers) = image_manifest(cache, source, image, top).await?;
    let config_digest = Digest::parse(&config.digest, image)?;
    let config = parse_config(&config_blob(cache, source, image, &config_digest).await?, image)?;
    let mut dirs = Vec::with_capacity(layers.len());
    for layer in &layers {
        dirs.push(layer_dir(cache, source, image, layer).await?);
    }
    Ok(Image {
        digest: top.to_string(),
        layers: dirs,
        config,
    })
}

/// The config and layers of `top`, going through an index to this host's platform if need be.
async fn image_manifest<S: Source>(
    cache: &Cache,
    source: &S,
    image: &str,
    top: &Digest,
) -> Result<(Descriptor, Vec<Descriptor>), ImageError> {
    let mut digest = top.clone();
    // An index may point at an image manifest, never (in practice) at another index.
    for _ in 0..2 {
        match Manifest::parse(&manifest(cache, source, image, &digest).await?, image)? {
            Manifest::Image { config, layers } => return Ok((config, layers)),
            Manifest::Index { manifests } => {
                let chosen = select_platform(&manifests, host_platform(), image)?;
                digest = Digest::parse(&chosen.digest, image)?;
            }
        }
    }
    Err(ImageError::BadMetadata {
        image: image.to_string(),
        what: "index".to_string(),
        reason: "it points at another index; nested indexes are not supported".to_string(),
    })
}

async fn manifest<S: Source>(
    cache: &Cache,
    source: &S,
    image: &str,
    digest: &Digest,
) -> Result<Vec<u8>, ImageError> {
    if let Some(bytes) = cache.manifest(digest)? {
        return Ok(bytes);
    }
    let bytes = source.manifest(digest).await?;
    digest.verify(&Digest::of_bytes(&bytes), image, &format!("manifest {digest}"))?;
    cache.put_manifest(digest, &bytes)?;
    Ok(bytes)
}

async fn config_blob<S: Source>(
    cache: &Cache,
    source: &S,
    image: &str,
    digest: &Digest,
) -> Result<Vec<u8>, ImageError> {
    if let Some(bytes) = cache.blob(digest)? {
        return Ok(bytes);
    }
    let bytes = source.blob_bytes(digest).await?;
    digest.verify(&Digest::of_bytes(&bytes), image, &format!("config {digest}"))?;
    cache.put_blob(digest, &bytes)?;
    Ok(bytes)
}

/// The unpacked directory of `layer`, unpacking it first unless an earlier pull did.
async fn layer_dir<S: Source>(
    cache: &Cache,
    source: &S,
    image: &str,
    layer: &Descriptor,
) -> Result<PathBuf, ImageError> {
    let digest = Digest::parse(&layer.digest, image)?;
    let dest = cache.layer_path(&digest);
    if dest.is_dir() {
        debug!(image, layer = %digest, "layer already unpacked");
        return Ok(dest);
    }
    check_layer_media_type(layer)?;
    let download = cache.staging_dir()?;
    let blob = source.blob_file(&digest, download.path()).await?;
    let staged = cache.staging_dir()?;
    let (image_name, layer_digest, staged_path) =
        (image.to_string(), digest.clone(), staged.path().to_path_buf());
    // Hash before unpacking, so a tampered archive never reaches the tar parser.
    let unpacked = tokio::task::spawn_blocking(move || {
        let actual = Digest::of_file(&blob).map_err(|e| ImageError::io("read", &blob, e))?;
        let name = format!("layer {layer_digest}");
        layer_digest.verify(&actual, &image_name, &name)?;
        unpack_layer(&blob, &staged_path, &layer_digest.to_string())
    })
    .await;
    match unpacked {
        Ok(result) => result?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    cache.commit_dir(staged, &dest)?;
    info!(image, layer = %digest, "layer unpacked");
    Ok(dest)
}

/// Refuses blobs that are not filesystem layers (artifacts, foreign layers) by name; the
/// compression is sniffed from the content when unpacking.
fn check_layer_media_type(layer: &Descriptor) -> Result<(), ImageError> {
    let known = [
        "application/vnd.oci.image.layer.",
        "application/vnd.docker.image.rootfs.diff.tar",
    ];
    let media_type = layer.media_type.as_str();
    if media_type.is_empty() || known.iter().any(|prefix| media_type.starts_with(prefix)) {
        return Ok(());
    }
    Err(ImageError::UnsupportedLayer {
        layer: layer.digest.clone(),
        what: format!("of media type {media_type:?}, not a filesystem layer"),
    })
}
