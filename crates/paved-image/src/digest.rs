//! Content digests: parsing the `sha256:<hex>` strings that name blobs, and checking content
//! against them before anything reaches the cache.
//!
//! Digests come from manifests, i.e. from the network; they become file names in the cache, so
//! they are validated strictly (64 lowercase hex digits) before use.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// A validated sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; `image` names the image in the error.
    pub(crate) fn parse(s: &str, image: &str) -> Result<Digest, ImageError> {
        let hex = s
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        match hex {
            Some(hex) => Ok(Digest { hex: hex.to_string() }),
            None => Err(ImageError::UnsupportedDigest {
                image: image.to_string(),
                digest: s.to_string(),
            }),
        }
    }

    pub(crate) fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn of_file(path: &Path) -> io::Result<Digest> {
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(Digest::from_hasher(hasher));
            }
            hasher.update(&buf[..n]);
        }
    }

    pub(crate) fn hex(&self) -> &str {
        &self.hex
    }

    /// Errors unless `actual` is this digest; `blob` says what was checked (a digest, a path).
    pub(crate) fn verify(&self, actual: &Digest, image: &str, blob: &str) -> Result<(), ImageError> {
        if self == actual {
            return Ok(());
        }
        Err(ImageError::DigestMismatch {
            image: image.to_string(),
            blob: blob.to_string(),
            expected: self.to_string(),
            actual: actual.to_string(),
        })
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: format!("{:x}", hasher.finalize()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(Digest::parse(input, "img").is_ok(), ok, "{input:?}");
    }

    #[test]
    fn parse_accepts_only_canonical_sha256() {
        let hex = "a".repeat(64);
        check(&format!("sha256:{hex}"), true);
        check(&format!("sha256:{}", "0123456789abcdef".repeat(4)), true);
        check(&format!("sha256:{}", "A".repeat(64)), false);
        check(&format!("sha256:{}", "a".repeat(63)), false);
        check(&format!("sha256:{}", "a".repeat(65)), false);
        check(&format!("sha512:{hex}"), false);
        check(&format!("sha256:../{}", "a".repeat(61)), false);
        check(&hex, false);
        check("", false);
    }

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of_bytes(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
