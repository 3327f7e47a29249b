//! Path resolution inside a root, with the semantics of `openat2(RESOLVE_IN_ROOT)`.
//!
//! Every symlink met on the way is followed as if `root` were `/`: an absolute target
//! restarts at `root`, and `..` never climbs above `root`. So a tar entry can name any path
//! at all, and what it resolves to is still inside `root`.
//!
//! Why in user space and not openat2 itself: the only writer of the tree during an unpack is
//! the unpacker, which resolves each entry right before it acts on it, so nothing can swap
//! a checked directory for a symlink in between; and this keeps the code free of `unsafe`
//! and of kernel-version checks.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Linux gives up after 40 symlinks in one resolution (ELOOP); so do we.
const MAX_SYMLINKS: u32 = 40;

/// A tar entry path split into (parent components, final name). `None` when the path has no
/// usable final name: it is empty, the root itself, or ends in `..`.
pub(crate) fn split_entry(path: &[u8]) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut comps: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let last = comps.pop()?;
    (last != b"..").then_some((comps, last))
}

/// Resolves the directory `comps` inside `root`, following every symlink in root-relative
/// fashion. Components that do not exist yet are kept (the caller creates them as plain
/// directories). Fails with `ENOTDIR` when a component is an existing non-directory and
/// `ELOOP` on too many symlinks. The result is `root` joined with real directory names only.
pub(crate) fn resolve_dir(root: &Path, comps: &[&[u8]]) -> io::Result<PathBuf> {
    let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    let mut here = root.to_path_buf();
    let mut depth = 0usize;
    let mut links = 0u32;
    while let Some(c) = queue.pop_front() {
        match &c[..] {
            b"" | b"." => continue,
            b".." => {
                if depth > 0 {
                    here.pop();
                    depth -= 1;
                }
                continue;
            }
            _ => {}
        }
        let next = here.join(OsStr::from_bytes(&c));
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&next)?;
                let target = target.as_os_str().as_bytes();
                if target.starts_with(b"/") {
                    here = root.to_path_buf();
                    depth = 0;
                }
                for t in target.split(|&b| b == b'/').rev() {
                    queue.push_front(t.to_vec());
                }
            }
            Ok(m) if m.is_dir() => {
                here = next;
                depth += 1;
            }
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                here = next;
                depth += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn split_drops_dots_and_refuses_a_trailing_dotdot() {
        let (p, n) = split_entry(b"./a//b/./c").unwrap();
        assert_eq!(p, vec![&b"a"[..], b"b"]);
        assert_eq!(n, b"c");
        assert!(split_entry(b"./").is_none());
        assert!(split_entry(b"a/..").is_none());
        let (p, n) = split_entry(b"/../../etc/passwd").unwrap();
        assert_eq!(p, vec![&b".."[..], b"..", b"etc"]);
        assert_eq!(n, b"passwd");
    }

    #[test]
    fn dotdot_and_symlinks_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/", root.join("abs")).unwrap();
        symlink("../../../..", root.join("real/up")).unwrap();
        symlink("real/sub", root.join("rel")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();

        let r = |p: &[&[u8]]| resolve_dir(&root, p);
        assert_eq!(r(&[b"..", b"..", b"etc"]).unwrap(), root.join("etc"));
        assert_eq!(r(&[b"abs", b"etc"]).unwrap(), root.join("etc"));
        assert_eq!(r(&[b"real", b"up", b"x"]).unwrap(), root.join("x"));
        assert_eq!(r(&[b"rel", b"new"]).unwrap(), root.join("real/sub/new"));
        assert_eq!(
            r(&[b"loop1"]).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        assert_eq!(
            r(&[b"file", b"x"]).unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
    }
}
