//! The unpacker against hand-built archives, malicious ones included: each case is a list of
//! entries and the tree (or error code) it must produce.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A file whose name is not UTF-8, as Linux allows.
    RawFile(&'a [u8], &'a str),
}
use E::*;

#[test]
fn plain_entries_keep_their_kind_and_links_stay_inside() {
    check(
        &[
            Dir("./"),
            Dir("./a/"),
            File("./a/f", "x"),
            Symlink("a/abs", "/etc/passwd"),
            Hardlink("a/h", "./a/f"),
        ],
        "a/\na/abs -> /etc/passwd\na/f:x (2 links)\na/h:x (2 links)",
    );
    check(&[File("deep/er/f", "x")], "deep/\ndeep/er/\ndeep/er/f:x");
    check(&[Symlink("up", "../../..")], "up -> ../../..");
}

#[test]
fn non_utf8_names_are_names_like_any_other() {
    check(&[RawFile(b"caf\xe9", "x")], "caf\u{FFFD}:x");
    check(
        &[RawFile(b"caf\xe9", "x"), RawFile(b".wh.caf\xe9", "")],
        "caf\u{FFFD} whiteout",
    );
}

#[test]
fn whiteouts_become_overlay_markers() {
    check(&[File("a/.wh.gone", "")], "a/\na/gone whiteout");
    check(
        &[Dir("a/"), File("a/.wh..wh..opq", ""), File("a/new", "n")],
        "a/ opaque\na/new:n",
    );
    check(&[File("a/.wh..wh.plnk", "")], "a/");
    check(&[File("x", "1"), File(".wh.x", "")], "x whiteout");
}

#[test]
fn later_entries_replace_earlier_ones() {
    check(&[File("x", "1"), File("x", "2")], "x:2");
    check(&[File("d/f", "1"), Dir("d/")], "d/\nd/f:1");
    check(&[File("x", "1"), Dir("x/")], "x/");
    check(&[Symlink("s", "/t"), File("s", "2")], "s:2");
    check(&[Dir("d/"), File("d/f", "1"), File("d", "2")], "d:2");
}

#[test]
fn entries_escaping_the_layer_are_refused() {
    let refused = "image.unsafe_entry";
    check(&[File("../evil", "x")], refused);
    check(&[File("/etc/evil", "x")], refused);
    check(&[File("a/../../evil", "x")], refused);
    check(&[Symlink("etc", "/etc"), File("etc/evil", "x")], refused);
    check(&[Symlink("l", "../.."), Dir("l/x/")], refused);
    check(&[Symlink("l", "/tmp"), File("l/.wh.x", "")], refused);
    check(&[Symlink("l", "/tmp"), File("l/.wh..wh..opq", "")], refused);
    check(&[Hardlink("h", "../outside")], refused);
    check(&[Hardlink("h", "/etc/passwd")], refused);
    check(&[Symlink("d", "/etc"), Hardlink("h", "d/passwd")], refused);
    check(&[Hardlink("h", "missing")], refused);
    check(&[Dir("d/"), Hardlink("h", "d")], refused);
    check(&[File("f", "x"), File("f/g", "y")], refused);
}

#[test]
fn gzip_is_sniffed_and_zstd_refused() {
    let tar = archive(&[File("f", "x")]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).expect("gzip");
    assert_eq!(unpack_bytes(&gz.finish().expect("gzip")), Ok("f:x".to_string()));
    let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    assert_eq!(unpack_bytes(&zstd), Err("image.unsupported_layer".to_string()));
    assert_eq!(
        unpack_bytes(b"definitely not a tar archive, but long enough to have a header? no"),
        Err("image.corrupt_layer".to_string())
    );
}

/// Unpacks `entries` and compares the tree (or the error code) with `expected`.
fn check(entries: &[E], expected: &str) {
    let got = match unpack_bytes(&archive(entries)) {
        Ok(tree) => tree,
        Err(code) => code,
    };
    assert_eq!(got, expected);
}

fn unpack_bytes(bytes: &[u8]) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (blob, dest) = (dir.path().join("blob"), dir.path().join("dest"));
    fs::write(&blob, bytes).expect("write blob");
    fs::create_dir(&dest).expect("mkdir");
    unpack_layer(&blob, &dest, "test").map_err(|e| e.code().to_string())?;
    let mut lines = Vec::new();
    render(&dest, Path::new(""), &mut lines);
    Ok(lines.join("\n"))
}

/// One line per entry, sorted: `dir/`, `dir/ opaque`, `file:content`, `link -> target`, `name whiteout`.
fn render(root: &Path, rel: &Path, lines: &mut Vec<String>) {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    entries.sort();
    for name in entries {
        let rel = rel.join(name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).expect("stat");
        let shown = rel.display();
        if meta.file_type().is_symlink() {
            lines.push(format!(
                "{shown} -> {}",
                fs::read_link(&path).expect("readlink").display()
            ));
        } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
            lines.push(format!("{shown} whiteout"));
        } else if meta.is_dir() {
            let opaque = rustix::fs::lgetxattr(&path, OPAQUE_XATTR, &mut [0u8; 4]).is_ok();
            lines.push(format!("{shown}/{}", if opaque { " opaque" } else { "" }));
            render(root, &rel, lines);
        } else {
            let links = if meta.nlink() > 1 {
                format!(" ({} links)", meta.nlink())
            } else {
                String::new()
            };
            lines.push(format!(
                "{shown}:{}{links}",
                fs::read_to_string(&path).expect("read")
            ));
        }
    }
}

/// A tar of `entries`, with names written raw: the tar crate's own setters refuse `..` and
/// absolute paths, which these tests need to produce.
fn archive(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (name, kind, link, data) = match entry {
            Dir(name) => (name.as_bytes(), tar::EntryType::Directory, "", ""),
            File(name, data) => (name.as_bytes(), tar::EntryType::Regular, "", *data),
            Symlink(name, target) => (name.as_bytes(), tar::EntryType::Symlink, *target, ""),
            Hardlink(name, target) => (name.as_bytes(), tar::EntryType::Link, *target, ""),
            RawFile(name, data) => (*name, tar::EntryType::Regular, "", *data),
        };
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data.as_bytes()).expect("append");
    }
    builder.into_inner().expect("finish tar")
}
