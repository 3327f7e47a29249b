//! A directory used as `/`: every path read below it is resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink (absolute or full of `..`) met on the way is
//! followed as if the directory were the root of the filesystem and can never lead outside
//! it. This is what Docker does for the build context and a stage's files: `link -> /etc`
//! in the context means `<context>/etc`.
//!
//! The resolution happens in one system call on a held directory descriptor, so no
//! component can be swapped for a symlink between a check and the use that follows it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

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
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, rel, how).map_err(|e| match e {
            nix::Error::ENOSYS => io::Error::new(
                io::ErrorKind::Unsupported,
                "openat2(2) is not available (Linux 5.6 or later is needed to read files safely inside a root)",
            ),
            e => io::Error::from(e),
        })
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
    }
}
