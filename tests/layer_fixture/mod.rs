//! A directory tree with every kind of entry a layer carries, and a snapshot of a tree to
//! compare two of them. Shared by the layer integration tests (`tests/root/main.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use filetime::FileTime;

pub const MTIME: i64 = 1_600_000_000;
pub const FUTURE_MTIME: i64 = 2_000_000_000;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A valid VFS_CAP_REVISION_2 `security.capability` value: cap_net_bind_service, effective.
pub const CAP_NET_BIND: [u8; 20] = [
    0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

pub fn long_dir() -> String {
    format!("long/{}", "a".repeat(120))
}
pub fn long_file() -> String {
    format!("{}/{}", long_dir(), "b".repeat(150))
}

/// Pseudo-random but reproducible bytes, half of them compressible text.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        if (v.len() / 100_000) % 2 == 0 {
            v.extend_from_slice(b"lorem ipsum dolor sit amet, consectetur adipiscing elit\n");
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

fn file(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds the fixture in `root` (which must exist and be empty). Root-only parts (ownership,
/// devices, capabilities) are added only when running as root.
pub fn build(root: &Path) {
    file(root, "bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    file(root, "etc/conf", b"key=value\n", 0o640);
    symlink("conf", root.join("etc/link-rel")).unwrap();
    symlink("/etc/conf", root.join("etc/link-abs")).unwrap();
    file(root, "hard1", b"same inode\n", 0o644);
    fs::hard_link(root.join("hard1"), root.join("hard2")).unwrap();
    file(root, "setuid", b"suid\n", 0o4755);
    file(root, "empty", b"", 0o644);
    file(root, "private/secret", b"s3cret\n", 0o600);
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    file(root, "readonly/f", b"ro\n", 0o444);
    file(root, &long_file(), b"long name\n", 0o644);
    symlink(format!("/{}", long_file()), root.join("long/far-link")).unwrap();
    file(
        root,
        "data/big.bin",
        &data(3 * 1024 * 1024 + 777, 42),
        0o644,
    );
    file(root, "future", b"from the future\n", 0o644);
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    xattr::set(root.join("etc/conf"), "user.comment", b"hello").unwrap();
    if is_root() {
        std::os::unix::fs::lchown(root.join("etc/conf"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("private"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::lchown(root.join("etc/link-rel"), Some(7), Some(8)).unwrap();
        nix::sys::stat::mknod(
            &root.join("bin/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        xattr::set(root.join("bin/tool"), "security.capability", &CAP_NET_BIND).unwrap();
        // chown clears setuid: set it again afterwards.
        std::os::unix::fs::lchown(root.join("setuid"), Some(0), Some(0)).unwrap();
        fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o555)).unwrap();
    set_mtimes(root, MTIME);
    let t = FileTime::from_unix_time(FUTURE_MTIME, 0);
    filetime::set_file_mtime(root.join("future"), t).unwrap();
}

/// Sets every mtime under `root` (not `root` itself) to `secs`, symlinks included.
pub fn set_mtimes(root: &Path, secs: i64) {
    let t = FileTime::from_unix_time(secs, 0);
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .contents_first(true)
    {
        let e = e.unwrap();
        filetime::set_symlink_file_times(e.path(), t, t).unwrap();
    }
}

/// Everything about a path that a layer round trip must preserve.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Desc {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File content digest, symlink target, or device numbers.
    pub content: String,
    /// mtime, except for symlinks (not every tool restores those).
    pub mtime: Option<i64>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Paths sharing this inode, for hardlinks (sorted; empty when nlink == 1).
    pub links: Vec<String>,
}

/// Describes every path below `root` by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Desc> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let (kind, content) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if ft.is_file() {
            let bytes = fs::read(e.path()).unwrap();
            ("file", kiln::Digest::of(&bytes).to_string())
        } else if ft.is_char_device() {
            (
                "char",
                format!(
                    "{}:{}",
                    nix::sys::stat::major(m.rdev()),
                    nix::sys::stat::minor(m.rdev())
                ),
            )
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", String::new())
        };
        if ft.is_file() && m.nlink() > 1 {
            by_ino.entry(m.ino()).or_default().push(rel.clone());
        }
        let mut xattrs: Vec<(String, Vec<u8>)> = xattr::list(e.path())
            .unwrap()
            .filter_map(|n| {
                let n = n.to_string_lossy().into_owned();
                (n != "security.selinux").then(|| {
                    let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                    (n, v)
                })
            })
            .collect();
        xattrs.sort();
        out.insert(
            rel,
            Desc {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                content,
                mtime: (!ft.is_symlink()).then(|| m.mtime()),
                xattrs,
                links: Vec::new(),
            },
        );
    }
    for group in by_ino.values() {
        for p in group {
            out.get_mut(p).unwrap().links = group.clone();
        }
    }
    out
}

/// Asserts two snapshots are equal, naming the first difference.
pub fn assert_same(want: &BTreeMap<String, Desc>, got: &BTreeMap<String, Desc>) {
    let wk: Vec<&String> = want.keys().collect();
    let gk: Vec<&String> = got.keys().collect();
    assert_eq!(wk, gk, "different path sets");
    for (k, w) in want {
        assert_eq!(w, &got[k], "difference at {k}");
    }
}
