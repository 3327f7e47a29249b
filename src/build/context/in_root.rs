//! A directory used as `/`: every path read below it is resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink (absolute or full of `..`) met on the way is
//! followed as if the directory were the root of the filesystem and can never lead outside
//! it. This is what Docker does for the build context and a stage's files: `link -> /etc`
//! in the context means `<context>/etc`.
//!
//! The resolution happens in one system call on a held directory descriptor, so no
//! component can be swapped for a symlink between a check and the use that follows it.
//! Kernels before 5.6 have no `openat2`: there the same resolution is made one component
//! at a time, each opened `O_NOFOLLOW` relative to the descriptor of its parent, which is
//! just as race-free (only slower).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Linux gives up after 40 symlinks in one resolution (ELOOP); so does the fallback.
const MAX_SYMLINKS: u32 = 40;

/// Set once `openat2` said ENOSYS: the fallback is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// An open root directory (see the module docs).
#[derive(Debug)]
pub(crate) struct Root {
    /// Canonical (no symlink in it), so resolved paths below it share its prefix.
    path: PathBuf,
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` (canonicalized) as a root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC);
        let fd = openat2(nix::fcntl::AT_FDCWD, &path, how).map_err(io::Error::from)?;
        Ok(Root { path, fd })
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
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2(&self.fd, rel, how) {
                Err(nix::Error::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                other => return other.map_err(io::Error::from),
            }
        }
        self.open_by_components(rel, flags, follow)
            .map_err(io::Error::from)
    }

    /// [`Root::open_at`] without `openat2`: each component is opened `O_PATH | O_NOFOLLOW`
    /// relative to the descriptor of its parent, a symlink met is read through its own
    /// descriptor and its target resolved again from the root (absolute) or from where it
    /// sits, and `..` goes back to the parent descriptor, never above the root.
    fn open_by_components(&self, rel: &OsStr, flags: OFlag, follow: bool) -> nix::Result<OwnedFd> {
        let mut queue: VecDeque<Vec<u8>> = components(rel.as_bytes());
        // The directories walked so far below the root; empty at the root.
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(name) = queue.pop_front() {
            if name == b".." {
                dirs.pop();
                continue;
            }
            let here = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
            let last = queue.is_empty();
            let fd = openat(
                here,
                name.as_slice(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let kind = SFlag::from_bits_truncate(fstat(&fd)?.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK && (!last || follow) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(nix::Error::ELOOP);
                }
                let target = readlinkat(&fd, "")?;
                if target.as_bytes().starts_with(b"/") {
                    dirs.clear();
                }
                for c in components(target.as_bytes()).into_iter().rev() {
                    queue.push_front(c);
                }
                continue;
            }
            if last {
                // The name is re-opened with the caller's flags, never following a link
                // that replaced it since.
                return openat(
                    here,
                    name.as_slice(),
                    flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                );
            }
            if kind != SFlag::S_IFDIR {
                return Err(nix::Error::ENOTDIR);
            }
            dirs.push(fd);
        }
        // The path ended on a directory reached by `..`, `.` or a link (or is the root).
        let here = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
        openat(here, ".", flags & !OFlag::O_NOFOLLOW, Mode::empty())
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
        // The kernel kept the walk inside the root; a path outside it means the root was
        // moved or /proc lies, and nothing is read then.
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
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// The names of a relative path, without empty ones and `.` (`..` is kept).
fn components(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// The path an open descriptor refers to, from `/proc/self/fd`.
pub(crate) fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(proc_fd(fd))
}

/// `/proc/self/fd/N`: opening it reopens the descriptor's own file, whatever happened to
/// the path since (a race-free way to hand an open directory to a path-based API).
pub(crate) fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_and_dotdot_never_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/secret"), "inside").unwrap();
        symlink(outside.path(), r.join("out")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../../../etc", r.join("up")).unwrap();
        let root = Root::open(r).unwrap();
        let read = |p: &str| {
            std::io::read_to_string(root.open_file(OsStr::new(p)).map_err(|e| e.kind())?)
                .map_err(|e| e.kind())
        };
        assert_eq!(read("abs/secret").unwrap(), "inside");
        assert_eq!(read("up/secret").unwrap(), "inside");
        assert_eq!(read("../../etc/secret").unwrap(), "inside");
        assert_eq!(read("/etc/secret").unwrap(), "inside");
        // `out` points at a host directory: inside the root that path does not exist.
        assert_eq!(read("out/secret"), Err(io::ErrorKind::NotFound));
        let real = root.resolve(OsStr::new("abs/secret"), true).unwrap();
        assert_eq!(real, root.path().join("etc/secret"));
        assert_eq!(
            root.resolve_rel(OsStr::new("abs"), false).unwrap(),
            Path::new("abs")
        );
        assert_eq!(
            root.resolve_rel(OsStr::new("abs"), true).unwrap(),
            Path::new("etc")
        );

        // The fallback for kernels without openat2 resolves every path the same way.
        for (p, follow) in [
            ("abs/secret", true),
            ("up/secret", true),
            ("../../etc/secret", true),
            ("/etc/secret", true),
            ("out/secret", true),
            ("abs", false),
            ("abs", true),
            ("etc/..", true),
            ("", true),
        ] {
            let kernel = root.open_at(OsStr::new(p), OFlag::O_PATH, follow);
            let fallback = root.open_by_components(OsStr::new(p), OFlag::O_PATH, follow);
            let path = |r: Result<OwnedFd, io::Error>| {
                r.map(|fd| fd_path(&fd).unwrap()).map_err(|e| e.kind())
            };
            assert_eq!(
                path(kernel),
                path(fallback.map_err(io::Error::from)),
                "{p:?}"
            );
        }
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(
            root.open_by_components(OsStr::new("loop/x"), OFlag::O_PATH, true)
                .unwrap_err(),
            nix::Error::ELOOP
        );
    }
}
