//! Path resolution inside a root by descriptor, with the semantics of
//! `openat2(RESOLVE_IN_ROOT)`, and the `*at` file operations the unpacker builds on.
//!
//! Every step is an `openat(O_PATH | O_NOFOLLOW)` relative to the directory descriptor
//! reached so far; a symlink met on the way is read (`readlinkat`) and followed as if the
//! root were `/`: an absolute target restarts at the root, and `..` never climbs above it.
//! No path string is ever handed to the kernel whole, so whatever a tar entry names, and
//! whatever symlinks earlier entries left, each operation lands inside the root.
//!
//! Why not openat2 itself: seccomp profiles of CI containers (kiln's chroot mode runs in
//! them) still refuse it at times, and missing components are created on the way, which
//! openat2 cannot do. The unpacker is the only writer of the tree while it runs.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

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

/// A directory reached inside the root: an `O_PATH` descriptor of it and its real path
/// (names of real directories only, no symlink, no `..`) from the root.
pub(crate) struct InRoot {
    pub fd: OwnedFd,
    pub comps: Vec<Vec<u8>>,
}

impl InRoot {
    /// The root itself.
    pub(crate) fn root(root: BorrowedFd<'_>) -> io::Result<InRoot> {
        Ok(InRoot {
            fd: open_path_dir(root, b".")?,
            comps: Vec::new(),
        })
    }

    /// The real path of `name` in this directory, `/`-joined, relative to the root.
    pub(crate) fn child_rel(&self, name: &[u8]) -> Vec<u8> {
        let mut rel = self.comps.join(&b'/');
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        rel
    }
}

fn path(name: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(name))
}

/// `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`: a symlink there is ENOTDIR, never followed.
pub(crate) fn open_path_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(dir, path(name), flags, Mode::empty())?)
}

/// A readable descriptor of the directory `name` in `dir` (for listing it, or its xattrs),
/// never following a symlink.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(dir, path(name), flags, Mode::empty())?)
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`; `None` when nothing is there.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<FileStat>> {
    match fstatat(dir, path(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Resolves the directory `comps` inside the root `root`, following every symlink in
/// root-relative fashion. Missing components are created as plain directories when `create`
/// is set (else ENOENT). ENOTDIR when a component is an existing non-directory, ELOOP on
/// too many symlinks.
pub(crate) fn resolve_dir(
    root: BorrowedFd<'_>,
    comps: &[&[u8]],
    create: bool,
) -> io::Result<InRoot> {
    let mut queue: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    // The real directories from the root down to where we are.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
    let mut links = 0u32;
    while let Some(c) = queue.pop_front() {
        match &c[..] {
            b"" | b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let here = stack.last().map_or(root, |(fd, _)| fd.as_fd());
        let fd = match open_nofollow(here, &c) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                match mkdirat(here, path(&c), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                open_nofollow(here, &c)?
            }
            other => other?,
        };
        let st = fstat(&fd)?;
        match kind(&st) {
            SFlag::S_IFDIR => stack.push((fd, c)),
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = readlinkat(&fd, "")?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for t in target.split(|&b| b == b'/').rev() {
                    queue.push_front(t.to_vec());
                }
            }
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    match stack.pop() {
        None => InRoot::root(root),
        Some((fd, last)) => {
            let mut comps: Vec<Vec<u8>> = stack.into_iter().map(|(_, n)| n).collect();
            comps.push(last);
            Ok(InRoot { fd, comps })
        }
    }
}

/// `O_PATH | O_NOFOLLOW`: a descriptor of the entry itself, even when it is a symlink.
fn open_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(dir, path(name), flags, Mode::empty())?)
}

/// Opens the real directory `comps` (no symlink anywhere: one is ENOTDIR/ELOOP), for work
/// deferred to the end of an unpack, when later entries may have replaced a component.
pub(crate) fn open_real_dir(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let mut fd = open_path_dir(root, b".")?;
    for c in comps {
        fd = open_path_dir(fd.as_fd(), c)?;
    }
    Ok(fd)
}

/// Removes whatever is at `name` in `dir` (a whole tree for a directory), never following
/// a symlink; absent is fine.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if kind(&st) == SFlag::S_IFDIR {
        let sub = open_dir(dir, name)?;
        for child in list_dir(sub.as_fd())? {
            remove_at(sub.as_fd(), &child)?;
        }
        unlinkat(dir, path(name), UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, path(name), UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// The names in a directory opened with [`open_dir`] (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let fd = open_dir(dir, b".")?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
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
        symlink(t.path(), root.join("host")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let fd = std::fs::File::open(&root).unwrap();

        let r = |p: &[&[u8]]| {
            resolve_dir(fd.as_fd(), p, true)
                .map(|d| String::from_utf8(d.comps.join(&b'/')).unwrap())
        };
        assert_eq!(r(&[b"..", b"..", b"etc"]).unwrap(), "etc");
        assert_eq!(r(&[b"abs", b"etc"]).unwrap(), "etc");
        assert_eq!(r(&[b"real", b"up", b"x"]).unwrap(), "x");
        assert_eq!(r(&[b"rel", b"new"]).unwrap(), "real/sub/new");
        // An absolute link to a host dir is that path inside the root, made there.
        let host_in_root = r(&[b"host"]).unwrap();
        assert!(root.join(&host_in_root).is_dir(), "{host_in_root}");
        assert!(!t.path().join("etc").exists());
        assert_eq!(
            r(&[b"loop1"]).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        assert_eq!(
            r(&[b"file", b"x"]).unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert_eq!(
            resolve_dir(fd.as_fd(), &[b"missing"], false)
                .err()
                .and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
    }
}
