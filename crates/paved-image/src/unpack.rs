//! Unpacks one layer archive into a directory in overlayfs format, so the layers can be stacked
//! as `lowerdir`s as they are: a `.wh.<name>` entry becomes a 0:0 character device `<name>`, and
//! `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! The archive comes from outside, so every entry is checked before it is written: no `..`, no
//! absolute paths, no writing through a symlink (an earlier `etc -> /etc` entry must not turn a
//! later `etc/passwd` into a write to the host), and hardlinks only to files of this layer.
//! Symlink *targets* are left alone: they are resolved inside the container, not here.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, lchown};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use rustix::fs::{CWD, FileType, Mode, XattrFlags, makedev, mknodat};
use tar::{Archive, Entry, EntryType};
use tracing::warn;

use crate::ImageError;

pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks the (already verified) layer blob at `blob` into the empty directory `dest`; `layer`
/// names it in errors.
pub(crate) fn unpack_layer(blob: &Path, dest: &Path, layer: &str) -> Result<(), ImageError> {
    let file = File::open(blob).map_err(|e| ImageError::io("open", blob, e))?;
    let mut input = BufReader::new(file);
    let magic = input.fill_buf().map_err(|e| ImageError::io("read", blob, e))?;
    // Sniffed rather than taken from the media type, which tools get wrong more often.
    let reader: Box<dyn Read> = match magic {
        [0x1f, 0x8b, ..] => Box::new(GzDecoder::new(input)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            return Err(ImageError::UnsupportedLayer {
                layer: layer.to_string(),
                what: "zstd-compressed, which paved does not support yet".to_string(),
            });
        }
        _ => Box::new(input),
    };
    set_mode(dest, 0o755)?; // The staging dir was made 0700; a layer without a `./` entry is 0755.
    let unpacker = Unpacker { dest, layer };
    let mut archive = Archive::new(reader);
    let entries = archive.entries().map_err(|e| unpacker.corrupt(e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unpacker.corrupt(e))?;
        unpacker.entry(entry)?;
    }
    Ok(())
}

struct Unpacker<'a> {
    dest: &'a Path,
    layer: &'a str,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&self, mut entry: Entry<R>) -> Result<(), ImageError> {
        let raw = entry.path().map_err(|e| self.corrupt(e))?.into_owned();
        let rel = self.relative(&raw)?;
        let Some(name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
            // The layer root itself (`./`): only its metadata matters.
            return self.metadata(&entry, self.dest);
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.ensure_dir(parent, &raw)?;
        if name == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&self.dest.join(parent));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parent, OsStr::from_bytes(hidden), &raw);
        }
        let path = self.dest.join(&rel);
        let kind = entry.header().entry_type();
        let is_dir = kind == EntryType::Directory;
        remove_existing(&path, is_dir)?;
        match kind {
            EntryType::Directory => create_dir(&path)?,
            EntryType::Regular | EntryType::Continuous => self.file(&mut entry, &path)?,
            EntryType::Symlink => self.symlink(&entry, &path, &raw)?,
            EntryType::Link => return self.hardlink(&entry, &path, &raw),
            EntryType::Fifo => mknod(&path, FileType::Fifo, 0)?,
            other => {
                // Device nodes, mostly: a sandbox gets its /dev from the runtime, not the image.
                let entry = raw.display();
                warn!(layer = %self.layer, %entry, kind = ?other, "skipping layer entry of unsupported type");
                return Ok(());
            }
        }
        self.xattrs(&mut entry, &path);
        self.metadata(&entry, &path)
    }

    /// `raw` as a path relative to the layer root; `None` components (`./`) are dropped.
    fn relative(&self, raw: &Path) -> Result<PathBuf, ImageError> {
        let mut rel = PathBuf::new();
        for component in raw.components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.unsafe_entry(raw, "contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(raw, "is an absolute path"));
                }
            }
        }
        Ok(rel)
    }

    /// Makes `rel` (relative to the layer root) a real directory, refusing to follow symlinks.
    /// Archives need not list parents before children, so missing ones are created 0755.
    fn ensure_dir(&self, rel: &Path, raw: &Path) -> Result<(), ImageError> {
        let mut path = self.dest.to_path_buf();
        for part in rel.components() {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    let why = format!("would be written through the symlink {}", path.display());
                    return Err(self.unsafe_entry(raw, &why));
                }
                Ok(_) => {
                    let why = format!("is below {}, which is not a directory", path.display());
                    return Err(self.unsafe_entry(raw, &why));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    create_dir(&path)?;
                    set_mode(&path, 0o755)?;
                }
                Err(e) => return Err(ImageError::io("inspect", path, e)),
            }
        }
        Ok(())
    }

    fn file<R: Read>(&self, entry: &mut Entry<R>, path: &Path) -> Result<(), ImageError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| ImageError::io("create", path, e))?;
        io::copy(entry, &mut file).map_err(|e| match e.raw_os_error() {
            Some(_) => ImageError::io("write", path, e), // Disk full and the like, not the archive.
            None => self.corrupt(e),
        })?;
        let mtime = entry.header().mtime().unwrap_or(0);
        // Build tools compare mtimes; a wrong one is harmless, so a failure is only logged.
        if let Err(e) = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime)) {
            warn!(path = %path.display(), error = %e, "cannot set mtime");
        }
        Ok(())
    }

    fn symlink<R: Read>(&self, entry: &Entry<R>, path: &Path, raw: &Path) -> Result<(), ImageError> {
        let target = entry.link_name().map_err(|e| self.corrupt(e))?;
        let target = target.ok_or_else(|| self.unsafe_entry(raw, "is a symlink without a target"))?;
        std::os::unix::fs::symlink(&target, path).map_err(|e| ImageError::io("create symlink", path, e))
    }

    /// Hardlinks share metadata with their target, so none is applied here.
    fn hardlink<R: Read>(&self, entry: &Entry<R>, path: &Path, raw: &Path) -> Result<(), ImageError> {
        let target = entry.link_name().map_err(|e| self.corrupt(e))?;
        let target = target.ok_or_else(|| self.unsafe_entry(raw, "is a hardlink without a target"))?;
        let target_rel = self.relative(&target)?;
        let target_parent = target_rel.parent().unwrap_or(Path::new(""));
        self.ensure_dir(target_parent, raw)?; // Parents of the target must not be symlinks either.
        let source = self.dest.join(&target_rel);
        match fs::symlink_metadata(&source) {
            Ok(meta) if !meta.is_dir() => {
                fs::hard_link(&source, path).map_err(|e| ImageError::io("create hardlink", path, e))
            }
            _ => {
                let why = format!("links to {}, which is not a file of this layer", target.display());
                Err(self.unsafe_entry(raw, &why))
            }
        }
    }

    /// `.wh.<name>` hides `<name>` of the layers below: overlayfs spells that as a 0:0 char device.
    fn whiteout(&self, parent: &Path, hidden: &OsStr, raw: &Path) -> Result<(), ImageError> {
        let bytes = hidden.as_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.starts_with(b".wh.") {
            // `.wh..wh.plnk` and friends are aufs bookkeeping, meaningless to overlayfs.
            warn!(layer = %self.layer, entry = %raw.display(), "skipping unknown whiteout entry");
            return Ok(());
        }
        let path = self.dest.join(parent).join(hidden);
        remove_existing(&path, false)?;
        mknod(&path, FileType::CharacterDevice, makedev(0, 0))
    }

    fn opaque(&self, dir: &Path) -> Result<(), ImageError> {
        rustix::fs::lsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|e| {
            ImageError::io(
                "mark opaque (needs CAP_SYS_ADMIN for trusted.* xattrs)",
                dir,
                e.into(),
            )
        })
    }

    /// Owner first: chown clears setuid/setgid bits, so the mode must come after it.
    fn metadata<R: Read>(&self, entry: &Entry<R>, path: &Path) -> Result<(), ImageError> {
        let header = entry.header();
        let (uid, gid) = (header.uid(), header.gid());
        let (uid, gid) = (
            uid.map_err(|e| self.corrupt(e))?,
            gid.map_err(|e| self.corrupt(e))?,
        );
        let (uid, gid) = (id(uid, path, self)?, id(gid, path, self)?);
        lchown(path, Some(uid), Some(gid)).map_err(|e| ImageError::io("chown", path, e))?;
        if header.entry_type() != EntryType::Symlink {
            let mode = header.mode().map_err(|e| self.corrupt(e))?;
            set_mode(path, mode & 0o7777)?;
        }
        Ok(())
    }

    /// Extended attributes from PAX headers (file capabilities, mostly). `trusted.*` ones are
    /// dropped: an image must not plant overlayfs's own markers. Failures (a filesystem without
    /// xattrs) only lose the attribute, so they are logged.
    fn xattrs<R: Read>(&self, entry: &mut Entry<R>, path: &Path) {
        let Ok(Some(extensions)) = entry.pax_extensions() else {
            return;
        };
        for ext in extensions.flatten() {
            let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
                continue;
            };
            if name.starts_with("trusted.") {
                continue;
            }
            if let Err(e) = rustix::fs::lsetxattr(path, name, ext.value_bytes(), XattrFlags::empty()) {
                warn!(path = %path.display(), xattr = name, error = %e, "cannot set xattr");
            }
        }
    }

    fn corrupt(&self, source: io::Error) -> ImageError {
        ImageError::CorruptLayer {
            layer: self.layer.to_string(),
            source,
        }
    }

    fn unsafe_entry(&self, raw: &Path, reason: &str) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: raw.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Archives may carry the same path twice; the later entry wins, as with any tar extraction.
/// A directory stays when a directory replaces it, so its earlier children survive.
fn remove_existing(path: &Path, keep_dir: bool) -> Result<(), ImageError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let result = match (meta.is_dir(), keep_dir) {
        (true, true) => return Ok(()),
        (true, false) => fs::remove_dir_all(path),
        (false, _) => fs::remove_file(path),
    };
    result.map_err(|e| ImageError::io("replace", path, e))
}

fn create_dir(path: &Path) -> Result<(), ImageError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(ImageError::io("create", path, e)),
        _ => Ok(()),
    }
}

pub(crate) fn mknod(path: &Path, kind: FileType, dev: u64) -> Result<(), ImageError> {
    mknodat(CWD, path, kind, Mode::empty(), dev).map_err(|e| ImageError::io("mknod", path, e.into()))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| ImageError::io("chmod", path, e))
}

fn id(value: u64, path: &Path, unpacker: &Unpacker) -> Result<u32, ImageError> {
    u32::try_from(value).map_err(|_| {
        unpacker.unsafe_entry(path, &format!("has owner id {value}, which does not fit 32 bits"))
    })
}

#[cfg(test)]
mod tests;
