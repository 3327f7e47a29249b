//! [`Root`]: an open directory used as `/` for reads, with the kernel's
//! `openat2(RESOLVE_IN_ROOT)` as the fast path and the descriptor walk where the kernel has
//! no `openat2` (before 5.6: ENOSYS) or a seccomp profile refuses it (CI containers: EPERM).
//! Both resolve every path the same way, and race-free: the resolution starts from a held
//! directory descriptor and never hands a whole path string to a path-based call.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

use super::at::open_real;
use super::walk::{self, Walk};

/// An open root directory (see the module docs).
#[derive(Debug)]
pub(crate) struct Root {
    /// Canonical (no symlink in it), so resolved paths below it share its prefix.
    path: PathBuf,
    fd: OwnedFd,
    /// Set once `openat2` turned out missing or refused: the walk is used from then on.
    no_openat2: AtomicBool,
}

impl Root {
    /// Opens `path` (canonicalized) as a root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = open(&path, flags, Mode::empty())?;
        Ok(Root {
            path,
            fd,
            no_openat2: AtomicBool::new(false),
        })
    }

    /// The canonical host path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (relative to the root; a leading `/` or `..` cannot leave it) with
    /// every symlink resolved inside the root; the last component is followed only when
    /// `follow` is set. `flags` are added to `O_CLOEXEC`.
    pub fn open_at(&self, rel: &OsStr, flags: OFlag, follow: bool) -> io::Result<OwnedFd> {
        let mut flags = flags | OFlag::O_CLOEXEC;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let rel: &OsStr = if rel.is_empty() { OsStr::new(".") } else { rel };
        if !self.no_openat2.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2(&self.fd, rel, how) {
                Err(e) if openat2_unusable(e, &self.fd) => {
                    self.no_openat2.store(true, Ordering::Relaxed)
                }
                other => return other.map_err(io::Error::from),
            }
        }
        self.open_by_walk(rel, flags, follow)
    }

    /// [`Root::open_at`] by the descriptor walk (see `walk.rs`), then reopened with `flags`.
    pub(super) fn open_by_walk(
        &self,
        rel: &OsStr,
        flags: OFlag,
        follow: bool,
    ) -> io::Result<OwnedFd> {
        let how = Walk {
            follow_last: follow,
            create: None,
        };
        walk::resolve(self.fd.as_fd(), rel.as_bytes(), how)?.reopen(self.fd.as_fd(), flags)
    }

    /// Opens the regular file (or directory) at `rel` for reading, resolved inside the root.
    pub fn open_file(&self, rel: &OsStr) -> io::Result<File> {
        Ok(File::from(self.open_at(rel, OFlag::O_RDONLY, true)?))
    }

    /// The host path `rel` names once resolved inside the root: its parents never contain a
    /// symlink, and the last component is followed when `follow` is set. The path stays
    /// valid as long as nobody changes the tree (callers that can, open through
    /// [`Root::open_at`] instead).
    pub fn resolve(&self, rel: &OsStr, follow: bool) -> io::Result<PathBuf> {
        let fd = self.open_at(rel, OFlag::O_PATH, follow)?;
        let real = fd_path(&fd)?;
        // The walk kept inside the root; a path outside it means the root was moved or
        // /proc lies, and nothing is read then.
        if !real.starts_with(&self.path) {
            return Err(io::Error::other(format!(
                "{} resolved to {}, outside {}",
                Path::new(rel).display(),
                real.display(),
                self.path.display()
            )));
        }
        Ok(real)
    }

    /// Like [`Root::resolve`], relative to the root (empty for the root itself).
    pub fn resolve_rel(&self, rel: &OsStr, follow: bool) -> io::Result<PathBuf> {
        let real = self.resolve(rel, follow)?;
        Ok(real
            .strip_prefix(&self.path)
            .expect("checked by resolve")
            .to_path_buf())
    }
}

/// Whether `openat2` failing with `e` means the call itself is unavailable: ENOSYS (a
/// kernel before 5.6, or a seccomp profile that says so), or EPERM where even opening the
/// root's own `.` is refused (a seccomp profile: no open of an `O_PATH` descriptor's `.`
/// is a permission matter).
fn openat2_unusable(e: Errno, dir: &OwnedFd) -> bool {
    match e {
        Errno::ENOSYS => true,
        Errno::EPERM => {
            let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC);
            openat2(dir, ".", how).err() == Some(Errno::EPERM)
        }
        _ => false,
    }
}

/// Opens a host path without following any symlink on it, `O_PATH`: `openat2` with
/// `RESOLVE_NO_SYMLINKS`, or one component at a time from `/` (or the working directory)
/// with `O_NOFOLLOW` where `openat2` is missing or refused. For paths a caller resolved
/// already (no symlink left in them): one found now is a component swapped since, and ELOOP
/// or ENOTDIR. Returns the descriptor and what it is.
pub(crate) fn open_no_symlinks(path: &Path) -> io::Result<(OwnedFd, FileStat)> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let start = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = match openat2(AT_FDCWD, path, how) {
        Err(Errno::ENOSYS | Errno::EPERM) => {
            let from = if path.is_absolute() { "/" } else { "." };
            let base = open(from, start, Mode::empty())?;
            let comps: Vec<Vec<u8>> = path
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.as_bytes().to_vec()),
                    Component::ParentDir => Some(b"..".to_vec()),
                    _ => None,
                })
                .collect();
            open_real(base.as_fd(), &comps)?
        }
        other => other?,
    };
    let st = fstat(&fd)?;
    // `O_PATH | O_NOFOLLOW` opens a symlink itself rather than failing.
    if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
        return Err(Errno::ELOOP.into());
    }
    Ok((fd, st))
}

/// Reads the file at `path`: resolved inside `context` (as [`Root::open_file`] does) when
/// `path` lies in it once both are made absolute and cleaned lexically (as the docker CLI
/// does for `-f`), else read as the caller named it. For the Dockerfile and the ignore
/// files: a `.dockerignore -> /etc/shadow` in a context means `<context>/etc/shadow`, and
/// what the context's author links to outside it is never read (nor shown in an error).
pub(crate) fn read_maybe_in(context: &Path, path: &Path) -> io::Result<Vec<u8>> {
    let (context_abs, path_abs) = (clean_abs(context)?, clean_abs(path)?);
    let mut file = match path_abs.strip_prefix(&context_abs) {
        Ok(rel) => Root::open(context)?.open_file(rel.as_os_str())?,
        Err(_) => File::open(path)?,
    };
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// `path` made absolute against the working directory, with `.` and `..` removed by name
/// (Go's `filepath.Abs`), never by following a symlink.
fn clean_abs(path: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// The path an open descriptor refers to, from `/proc/self/fd`.
pub(crate) fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(proc_fd(fd))
}

/// `/proc/self/fd/N`: opening it (or mounting on it, or binding from it) reaches the
/// descriptor's own file, whatever happened to the path since: the race-free way to hand an
/// open file to a path-based API (mount(2), overlay's `lowerdir`, `read_dir`).
pub(crate) fn proc_fd(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
