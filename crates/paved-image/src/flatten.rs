//! Merges unpacked layers into one plain directory tree, for hosts where overlayfs is not
//! available: what overlayfs would show, made of copies.
//!
//! Layers are applied bottom-up. A 0:0 character device deletes what the layers below put at its
//! name; a directory with `trusted.overlay.opaque=y` hides everything the layers below put in it.
//! Hardlinks within a layer stay hardlinks, so files are not duplicated needlessly.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, lchown};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use tracing::warn;

use crate::ImageError;
use crate::unpack::{OPAQUE_XATTR, mknod, set_mode};

/// Materializes `layers` (bottom first) into `dest`, which must be empty or absent.
pub(crate) fn flatten(layers: &[PathBuf], dest: &Path) -> Result<(), ImageError> {
    prepare_dest(dest)?;
    for layer in layers {
        let meta = symlink_metadata(layer)?;
        copy_owner_and_mode(&meta, dest)?;
        // (dev, inode) of multiply linked files already copied from this layer -> the copy.
        let mut links = HashMap::new();
        merge_dir(layer, dest, &mut links)?;
    }
    Ok(())
}

fn prepare_dest(dest: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dest).map_err(|e| ImageError::io("create", dest, e))?;
    let mut entries = fs::read_dir(dest).map_err(|e| ImageError::io("list", dest, e))?;
    if entries.next().is_some() {
        return Err(ImageError::DestNotEmpty {
            dest: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// Applies the directory `src` of one layer onto `dst`, which is a real directory.
fn merge_dir(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<(), ImageError> {
    let entries = fs::read_dir(src).map_err(|e| ImageError::io("list", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", src, e))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            remove_any(&to)?; // A whiteout: the name is gone from here on up.
        } else if kind.is_dir() {
            merge_subdir(&from, &to, &meta, links)?;
        } else {
            remove_any(&to)?;
            copy_non_dir(&from, &to, &meta, links)?;
        }
    }
    Ok(())
}

fn merge_subdir(
    from: &Path,
    to: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), ImageError> {
    let existing_dir = fs::symlink_metadata(to).is_ok_and(|m| m.is_dir());
    if !existing_dir {
        remove_any(to)?;
        fs::create_dir(to).map_err(|e| ImageError::io("create", to, e))?;
    } else if is_opaque(from)? {
        clear_dir(to)?;
    }
    copy_owner_and_mode(meta, to)?;
    merge_dir(from, to, links)
}

fn copy_non_dir(
    from: &Path,
    to: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), ImageError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(from).map_err(|e| ImageError::io("read symlink", from, e))?;
        std::os::unix::fs::symlink(target, to).map_err(|e| ImageError::io("create symlink", to, e))?;
        return lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(|e| ImageError::io("chown", to, e));
    }
    if kind.is_file() {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                return fs::hard_link(first, to).map_err(|e| ImageError::io("create hardlink", to, e));
            }
            links.insert(key, to.to_path_buf());
        }
        fs::copy(from, to).map_err(|e| ImageError::io("copy", from, e))?;
    } else if kind.is_fifo() {
        mknod(to, FileType::Fifo, 0)?;
    } else {
        // Layers hold no devices besides whiteouts: unpacking skips them.
        warn!(path = %from.display(), "skipping special file while flattening");
        return Ok(());
    }
    copy_owner_and_mode(meta, to)
}

fn is_opaque(dir: &Path) -> Result<bool, ImageError> {
    let mut value = [0u8; 8];
    match rustix::fs::lgetxattr(dir, OPAQUE_XATTR, &mut value) {
        Ok(n) => Ok(&value[..n] == b"y"),
        Err(rustix::io::Errno::NODATA) => Ok(false),
        Err(e) => Err(ImageError::io("read the opaque xattr of", dir, e.into())),
    }
}

fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir).map_err(|e| ImageError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", dir, e))?;
        remove_any(&entry.path())?;
    }
    Ok(())
}

/// Removes whatever is at `path`, without following symlinks; absent is fine.
fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    result.map_err(|e| ImageError::io("remove", path, e))
}

/// Owner before mode, since chown clears setuid/setgid bits.
fn copy_owner_and_mode(meta: &Metadata, to: &Path) -> Result<(), ImageError> {
    lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(|e| ImageError::io("chown", to, e))?;
    set_mode(to, meta.mode() & 0o7777)
}

fn symlink_metadata(path: &Path) -> Result<Metadata, ImageError> {
    fs::symlink_metadata(path).map_err(|e| ImageError::io("inspect", path, e))
}
