//! The descriptor walk: a path resolved inside a root one component at a time, each opened
//! `O_PATH | O_NOFOLLOW` relative to the descriptor of its parent. A symlink met on the way
//! is read through its own descriptor (`readlinkat`) and its target walked again, from the
//! root when absolute and from where it sits when relative; `..` goes back to the parent's
//! descriptor and never above the root. After 40 symlinks the walk gives up with ELOOP, as
//! Linux does.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

use super::at::{kind, open_nofollow, open_path_dir, path};

/// Linux gives up after 40 symlinks in one resolution (ELOOP); so does the walk.
const MAX_SYMLINKS: u32 = 40;

/// What a walk reached inside the root.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// An `O_PATH` descriptor of it (of the link itself when a last symlink is not followed).
    pub fd: OwnedFd,
    /// Its real path from the root: names of real directories only (no symlink, no `..`),
    /// then its own name. Empty for the root itself.
    pub comps: Vec<Vec<u8>>,
    /// Its file type (`S_IFDIR`, `S_IFREG`, `S_IFLNK`, …).
    pub kind: SFlag,
    /// The directory holding it when it is not a directory itself (to reopen it by name);
    /// `None` when that is the root.
    parent: Option<OwnedFd>,
}

impl Resolved {
    /// The root itself.
    pub(crate) fn root(root: BorrowedFd<'_>) -> io::Result<Resolved> {
        Ok(Resolved {
            fd: open_path_dir(root, b".")?,
            comps: Vec::new(),
            kind: SFlag::S_IFDIR,
            parent: None,
        })
    }

    /// The real directory `name` in the directory `self` (never a symlink: ENOTDIR).
    pub(crate) fn child_dir(&self, name: &[u8]) -> io::Result<Resolved> {
        let mut comps = self.comps.clone();
        comps.push(name.to_vec());
        Ok(Resolved {
            fd: open_path_dir(self.fd.as_fd(), name)?,
            comps,
            kind: SFlag::S_IFDIR,
            parent: None,
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

    /// Its real path as seen from inside the root: `/` and the real components.
    pub(crate) fn in_root_path(&self) -> PathBuf {
        in_root_path(&self.comps)
    }

    /// Opens it again with `flags` (`O_CLOEXEC` added), never following a symlink that took
    /// its name since: a directory through its own descriptor, anything else by name in the
    /// directory that holds it (`root` when `parent` is `None`).
    pub(crate) fn reopen(&self, root: BorrowedFd<'_>, flags: OFlag) -> io::Result<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC;
        if self.kind == SFlag::S_IFDIR {
            return Ok(openat(
                &self.fd,
                ".",
                flags & !OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?);
        }
        let dir = self.parent.as_ref().map_or(root, |p| p.as_fd());
        let name = self.comps.last().map_or(&b"."[..], |n| &n[..]);
        Ok(openat(
            dir,
            path(name),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?)
    }
}

/// `/` and the real components of a path a walk reached: the path as seen from inside
/// the root.
pub(crate) fn in_root_path(comps: &[Vec<u8>]) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(comps.iter().map(|c| path(c)));
    p
}

/// How a walk treats the last component and what is missing.
pub(crate) struct Walk<'a> {
    /// A symlink as the last component is followed (else it is what the walk returns).
    pub follow_last: bool,
    /// Missing components are made (else ENOENT): see [`Create`].
    pub create: Option<Create<'a>>,
}

/// Making what a walk finds missing: directories on the way, `leaf` for the last component.
/// `made` hears of each (its descriptor and real path) before the walk goes on, so a caller
/// can own or record it.
pub(crate) struct Create<'a> {
    pub leaf: Leaf,
    pub made: OnMade<'a>,
}

/// Hears of one thing a walk made: its `O_PATH` descriptor and real path from the root.
pub(crate) type OnMade<'a> = &'a mut dyn FnMut(BorrowedFd<'_>, &[Vec<u8>]) -> io::Result<()>;

/// What a missing last component is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    Dir,
    File,
}

impl Walk<'_> {
    /// Follows every symlink, creates nothing.
    pub(crate) const FOLLOW: Walk<'static> = Walk {
        follow_last: true,
        create: None,
    };
}

/// Resolves `rel` (a `/`-separated path; a leading `/` or `..` cannot leave the root) inside
/// `root`, as described in the module docs. ENOTDIR when a component on the way is an
/// existing non-directory, ELOOP after too many symlinks, ENOENT for a missing component
/// unless `how.create` makes it.
pub(crate) fn resolve(root: BorrowedFd<'_>, rel: &[u8], mut how: Walk<'_>) -> io::Result<Resolved> {
    let mut queue = components(rel);
    // The real directories from the root down to where the walk is.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
    let mut links = 0u32;
    while let Some(name) = queue.pop_front() {
        if name == b".." {
            stack.pop();
            continue;
        }
        let here = stack.last().map_or(root, |(fd, _)| fd.as_fd());
        let last = queue.is_empty();
        let fd = match (open_nofollow(here, &name), how.create.as_mut()) {
            (Err(e), Some(create)) if e.raw_os_error() == Some(libc::ENOENT) => {
                let leaf = if last { create.leaf } else { Leaf::Dir };
                make(here, &name, leaf)?;
                let fd = open_nofollow(here, &name)?;
                let mut real: Vec<Vec<u8>> = stack.iter().map(|(_, n)| n.clone()).collect();
                real.push(name.clone());
                (create.made)(fd.as_fd(), &real)?;
                fd
            }
            (other, _) => other?,
        };
        let k = kind(&fstat(&fd)?);
        if k == SFlag::S_IFDIR {
            stack.push((fd, name));
        } else if k == SFlag::S_IFLNK && (!last || how.follow_last) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = readlinkat(&fd, "")?;
            if target.as_bytes().starts_with(b"/") {
                stack.clear();
            }
            for c in components(target.as_bytes()).into_iter().rev() {
                queue.push_front(c);
            }
        } else if last {
            let parent = stack.pop();
            let mut comps: Vec<Vec<u8>> = stack.into_iter().map(|(_, n)| n).collect();
            let parent = parent.map(|(fd, n)| {
                comps.push(n);
                fd
            });
            comps.push(name);
            return Ok(Resolved {
                fd,
                comps,
                kind: k,
                parent,
            });
        } else {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
    }
    // The walk ended on a directory (or the root).
    match stack.pop() {
        None => Resolved::root(root),
        Some((fd, last)) => {
            let mut comps: Vec<Vec<u8>> = stack.into_iter().map(|(_, n)| n).collect();
            comps.push(last);
            Ok(Resolved {
                fd,
                comps,
                kind: SFlag::S_IFDIR,
                parent: None,
            })
        }
    }
}

/// [`resolve`] of the directory `comps`, every symlink followed, missing directories made
/// when `create` is set. ENOTDIR when it is not a directory.
pub(crate) fn resolve_dir(
    root: BorrowedFd<'_>,
    comps: &[&[u8]],
    create: bool,
) -> io::Result<Resolved> {
    let rel = comps.join(&b'/');
    let mut ignore = |_: BorrowedFd<'_>, _: &[Vec<u8>]| Ok(());
    let how = Walk {
        follow_last: true,
        create: create.then_some(Create {
            leaf: Leaf::Dir,
            made: &mut ignore,
        }),
    };
    let dir = resolve(root, &rel, how)?;
    match dir.kind == SFlag::S_IFDIR {
        true => Ok(dir),
        false => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
    }
}

/// Makes `name` in `dir` as `leaf`; one made meanwhile by someone else is fine (the walk
/// opens and checks whatever is there).
fn make(dir: BorrowedFd<'_>, name: &[u8], leaf: Leaf) -> io::Result<()> {
    let made = match leaf {
        Leaf::Dir => mkdirat(dir, path(name), Mode::from_bits_truncate(0o755)),
        Leaf::File => {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
            openat(
                dir,
                path(name),
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
        }
    };
    match made {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The names of a path, without empty ones and `.` (`..` is kept).
fn components(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}
