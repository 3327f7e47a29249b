//! The small `*at` operations the walk and its callers build on: each names one entry in
//! an open directory and never follows a symlink there.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

pub(crate) fn path(name: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(name))
}

/// A path split into (parent components, final name). `None` when the path has no usable
/// final name: it is empty, the root itself, or ends in `..`.
pub(crate) fn split_entry(path: &[u8]) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut comps: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let last = comps.pop()?;
    (last != b"..").then_some((comps, last))
}

/// `O_PATH | O_NOFOLLOW`: a descriptor of the entry itself, even when it is a symlink.
pub(crate) fn open_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(dir, path(name), flags, Mode::empty())?)
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

/// The file type bits of a stat.
pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens the real path `comps` below `root` with no symlink anywhere on it (one is
/// ENOTDIR on the way, ELOOP at the end), `O_PATH`: for work deferred until after others
/// may have replaced a component, and for paths a caller already resolved.
pub(crate) fn open_real(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let Some((last, dirs)) = comps.split_last() else {
        return open_path_dir(root, b".");
    };
    let parent = open_real_dir(root, dirs)?;
    let fd = open_nofollow(parent.as_fd(), last)?;
    // `O_PATH | O_NOFOLLOW` opens a symlink itself rather than failing.
    if kind(&nix::sys::stat::fstat(&fd)?) == SFlag::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(fd)
}

/// [`open_real`] of a directory.
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

/// The names in a directory (without `.` and `..`).
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
