//! The JSON documents of an image: manifests, indexes (multi-platform manifests, also a layout's
//! `index.json`) and the image config, reduced to the fields paved uses.
//!
//! Parsed here rather than with oci-client's types so registry pulls and layout imports read the
//! same documents the same way, and unknown fields or Docker media types do not get in the way.

use std::collections::HashMap;

use serde::Deserialize;

use crate::{ImageConfig, ImageError};

/// A pointer to a blob: manifest, config or layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An image manifest or an index of them.
#[derive(Debug)]
pub(crate) enum Manifest {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

/// The annotation naming a manifest in a layout's `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The media types `pull` asks a registry for.
pub(crate) const MANIFEST_MEDIA_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

impl Manifest {
    /// Parses either kind; which one it is shows in the fields, since `mediaType` is optional.
    pub(crate) fn parse(bytes: &[u8], image: &str) -> Result<Manifest, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            schema_version: Option<u32>,
            config: Option<Descriptor>,
            layers: Option<Vec<Descriptor>>,
            manifests: Option<Vec<Descriptor>>,
        }
        let bad = |reason: String| ImageError::BadMetadata {
            image: image.to_string(),
            what: "manifest".to_string(),
            reason,
        };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(bad(format!(
                "schemaVersion is {:?}, only 2 is supported",
                raw.schema_version
            )));
        }
        match (raw.config, raw.layers, raw.manifests) {
            (Some(config), Some(layers), None) => Ok(Manifest::Image { config, layers }),
            (None, None, Some(manifests)) => Ok(Manifest::Index { manifests }),
            _ => Err(bad(
                "neither an image manifest (config, layers) nor an index (manifests)".into(),
            )),
        }
    }
}

/// The GOOS/GOARCH pair of this host, as image indexes spell them.
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other, // arm, riscv64, s390x, mips64 are spelled alike.
    };
    ("linux", arch)
}

/// Picks the entry of an index for `platform` (the first one, as other clients do).
pub(crate) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    (os, arch): (&str, &str),
    image: &str,
) -> Result<&'a Descriptor, ImageError> {
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .ok_or_else(|| ImageError::NoPlatform {
            image: image.to_string(),
            os: os.to_string(),
            arch: arch.to_string(),
        })
}

/// Reads the runtime part of an image config blob; absent fields (or `null`s) are empty.
pub(crate) fn parse_config(bytes: &[u8], image: &str) -> Result<ImageConfig, ImageError> {
    #[derive(Deserialize)]
    struct Raw {
        config: Option<RawConfig>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RawConfig {
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        env: Option<Vec<String>>,
        user: Option<String>,
        working_dir: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ImageError::BadMetadata {
        image: image.to_string(),
        what: "config".to_string(),
        reason: e.to_string(),
    })?;
    let Some(c) = raw.config else {
        return Ok(ImageConfig::default());
    };
    Ok(ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> Vec<Descriptor> {
        let entries: Vec<String> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                format!(
                    r#"{{"mediaType":"m","digest":"d{i}","platform":{{"os":"{os}","architecture":"{arch}"}}}}"#
                )
            })
            .collect();
        let json = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, entries.join(","));
        match Manifest::parse(json.as_bytes(), "img") {
            Ok(Manifest::Index { manifests }) => manifests,
            other => panic!("not an index: {other:?}"),
        }
    }

    fn check_select(platforms: &[(&str, &str)], expected: Option<&str>) {
        let manifests = index(platforms);
        let got = select_platform(&manifests, ("linux", "amd64"), "img").ok();
        assert_eq!(got.map(|d| d.digest.as_str()), expected, "{platforms:?}");
    }

    #[test]
    fn select_platform_picks_the_first_linux_entry_for_the_arch() {
        check_select(&[("linux", "amd64")], Some("d0"));
        check_select(&[("linux", "arm64"), ("linux", "amd64")], Some("d1"));
        check_select(&[("windows", "amd64"), ("linux", "amd64")], Some("d1"));
        check_select(&[("linux", "amd64"), ("linux", "amd64")], Some("d0"));
        check_select(&[("linux", "arm64"), ("unknown", "unknown")], None);
        check_select(&[], None);
    }

    fn check_kind(json: &str, expected: &str) {
        let got = match Manifest::parse(json.as_bytes(), "img") {
            Ok(Manifest::Image { layers, .. }) => format!("image/{}", layers.len()),
            Ok(Manifest::Index { manifests }) => format!("index/{}", manifests.len()),
            Err(e) => e.code().to_string(),
        };
        assert_eq!(got, expected, "{json}");
    }

    #[test]
    fn parse_tells_manifests_from_indexes() {
        let d = r#"{"mediaType":"m","digest":"d"}"#;
        check_kind(
            &format!(r#"{{"schemaVersion":2,"config":{d},"layers":[{d},{d}]}}"#),
            "image/2",
        );
        check_kind(&format!(r#"{{"schemaVersion":2,"manifests":[{d}]}}"#), "index/1");
        check_kind(r#"{"schemaVersion":1,"fsLayers":[]}"#, "image.bad_metadata");
        check_kind(
            &format!(r#"{{"schemaVersion":2,"config":{d}}}"#),
            "image.bad_metadata",
        );
        check_kind("not json", "image.bad_metadata");
    }

    #[test]
    fn parse_config_reads_runtime_fields_and_tolerates_nulls() {
        let json = r#"{"architecture":"amd64","config":{"Entrypoint":["/bin/sh","-c"],
            "Cmd":null,"Env":["A=1"],"User":"1000:1000","WorkingDir":"/w","Labels":{"x":"y"}}}"#;
        let c = parse_config(json.as_bytes(), "img").expect("parses");
        assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
        assert!(c.cmd.is_empty());
        assert_eq!(c.env, ["A=1"]);
        assert_eq!((c.user.as_str(), c.working_dir.as_str()), ("1000:1000", "/w"));
        let empty = parse_config(br#"{"architecture":"amd64"}"#, "img").expect("parses");
        assert_eq!(empty, ImageConfig::default());
    }
}
