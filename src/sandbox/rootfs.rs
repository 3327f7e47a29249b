//! Performs the step's mount plan (`mount_plan.rs`) inside its own mount namespace (in the
//! step's pid 1, before `pivot_root`): the only code that calls mount(2). Every target is
//! resolved inside the root ([`resolve_in_root`]) so an image symlink such as `/run -> /host`
//! can never make the sandbox mount over a host path; a checked bind source is mounted only
//! through a descriptor of the file the parent checked.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::mount_plan::{BindFlags, BindSource, InRoot, Kind, MountOp};
use super::protocol::{FileId, InitSpec, OVERLAY_FAILED};

type Res<T> = Result<T, String>;

/// Plans the step's mounts and performs them: afterwards the process is in the new root
/// (pivoted, or chroot'ed in plain chroot). `created` hears of each mountpoint the sandbox
/// had to create, so the parent can take it out of the diff afterwards; `proc_bound` hears
/// when the step gets the container's /proc instead of a fresh one.
pub(crate) fn prepare(
    spec: &InitSpec,
    created: &mut dyn FnMut(&Path),
    proc_bound: &mut dyn FnMut(),
) -> Res<()> {
    let ops = super::mount_plan::plan(spec).map_err(|e| e.to_string())?;
    let mut applier = Applier {
        root: &spec.merged,
        created,
        proc_bound,
    };
    applier.apply_all(&ops)
}

struct Applier<'a> {
    root: &'a Path,
    created: &'a mut dyn FnMut(&Path),
    proc_bound: &'a mut dyn FnMut(),
}

impl Applier<'_> {
    fn apply_all(&mut self, ops: &[MountOp]) -> Res<()> {
        ops.iter().try_for_each(|op| self.apply(op))
    }

    fn apply(&mut self, op: &MountOp) -> Res<()> {
        match op {
            MountOp::PrivateMounts => mnt(
                None::<&Path>,
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            ),
            MountOp::RootOverlay {
                links,
                lowers,
                data,
            } => root_overlay(self.root, links, lowers, data),
            MountOp::RootSelfBind => bind(self.root, self.root, BindFlags::NoDev),
            MountOp::Mount {
                fstype,
                source,
                at,
                flags,
                data,
            } => {
                let target = self.ensure(at, Kind::Dir)?;
                mnt(
                    Some(*source),
                    &target,
                    Some(fstype),
                    *flags,
                    data.as_deref(),
                )
            }
            MountOp::Proc {
                at,
                flags,
                or_bind_container,
            } => self.proc(at, *flags, *or_bind_container),
            MountOp::Sys { at, then } => match self.sys(at) {
                true => self.apply_all(then),
                false => Ok(()),
            },
            MountOp::Bind { source, at, flags } => self.bind(source, at, *flags),
            MountOp::WritableBind {
                path,
                id,
                at,
                tmp,
                copy,
                userxattr,
            } => self.writable_bind(path, *id, at, tmp, *copy, *userxattr),
            MountOp::MakeDir { at } => {
                let path = self.resolve(at)?;
                std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", at.absolute().display()))
            }
            MountOp::MakeFile { at } => {
                let path = self.resolve(at)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map(drop)
                    .map_err(|e| format!("{}: {e}", at.absolute().display()))
            }
            MountOp::Symlink { at, target } => {
                let path = self.resolve(at)?;
                std::os::unix::fs::symlink(target, &path)
                    .map_err(|e| format!("{}: {e}", at.absolute().display()))
            }
            MountOp::Mask { at } => self.mask(at),
            MountOp::ReadOnly { at } => {
                let path = self.resolve(at)?;
                match path.exists() {
                    true => bind(&path, &path, BindFlags::ReadOnly),
                    false => Ok(()),
                }
            }
            MountOp::Secret {
                at,
                staging,
                data,
                mode,
                uid,
                gid,
            } => {
                let target = self.ensure(at, Kind::File)?;
                let file = stage_secret(staging, &data.0, *mode, *uid, *gid)?;
                bind(&file, &target, BindFlags::ReadOnly)
            }
            MountOp::OwnSocket {
                socket,
                mode,
                uid,
                gid,
            } => {
                std::fs::set_permissions(socket, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("ssh socket: {e}"))?;
                std::os::unix::fs::chown(socket, Some(*uid), Some(*gid))
                    .map_err(|e| format!("ssh socket owner {uid}:{gid}: {e}"))
            }
            MountOp::Mknod { at, major, minor } => self.mknod(at, *major, *minor),
            MountOp::Chroot => {
                let root = self.root;
                nix::unistd::chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
                nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
            }
            MountOp::Pivot => pivot(self.root),
        }
    }

    /// The host path of `at`, resolved inside the root (missing components kept).
    fn resolve(&self, at: &InRoot) -> Res<PathBuf> {
        resolve_in_root(self.root, &at.absolute())
    }

    /// [`resolve`](Self::resolve), creating missing parents as directories and the last
    /// component as `kind`; each created path is reported.
    fn ensure(&mut self, at: &InRoot, kind: Kind) -> Res<PathBuf> {
        ensure(self.root, at.absolute(), kind, self.created)
    }

    /// A fresh proc for the step's pid namespace. In a user namespace the kernel refuses one
    /// where the surrounding container masks parts of its own /proc (podman, Docker,
    /// Kubernetes: the mount would reveal what the masks hide); the container's /proc is then
    /// bound instead, recursively, so its masks come along (kiln's own go on top). It lists
    /// the container's processes, but those live in a parent user and pid namespace: the
    /// step finds none of them by pid (kill, ptrace and pidfd_open look pids up in its own
    /// pid namespace) and may not read their memory or environment (ptrace access needs
    /// CAP_SYS_PTRACE in their user namespace). Without a user namespace (chroot mode, real
    /// root) a refusal fails.
    fn proc(&mut self, at: &InRoot, flags: MsFlags, or_bind_container: bool) -> Res<()> {
        let target = self.ensure(at, Kind::Dir)?;
        match mnt(Some("proc"), &target, Some("proc"), flags, None) {
            Ok(()) => Ok(()),
            Err(fresh) if or_bind_container => {
                bind(Path::new("/proc"), &target, BindFlags::AsIs)
                    .and_then(|()| remount(&target, flags))
                    .map_err(|bound| format!("{fresh}; binding the container's /proc: {bound}"))?;
                (self.proc_bound)();
                Ok(())
            }
            Err(fresh) => Err(fresh),
        }
    }

    /// `/sys` read-only where the kernel lets us: a fresh sysfs (root, or a private network
    /// namespace), else a bind of the host's (without its cgroup submounts when allowed).
    /// When it cannot be made read-only it is not mounted at all rather than left writable.
    fn sys(&mut self, at: &InRoot) -> bool {
        let Ok(sys) = self.ensure(at, Kind::Dir) else {
            return false;
        };
        let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if mnt(Some("sysfs"), &sys, Some("sysfs"), ro, None).is_ok() {
            return true;
        }
        // In a user namespace a bind of a mount with submounts must be recursive (EINVAL).
        let bound = mnt(Some("/sys"), &sys, None, MsFlags::MS_BIND, None).or_else(|_| {
            let rec = MsFlags::MS_BIND | MsFlags::MS_REC;
            mnt(Some("/sys"), &sys, None, rec, None)
        });
        if bound.is_err() {
            return false;
        }
        if remount(&sys, MsFlags::MS_RDONLY).is_err() {
            let _ = umount2(&sys, MntFlags::MNT_DETACH);
            return false;
        }
        true
    }

    /// A kernel file system path under runc's mask; one this kernel lacks is skipped.
    fn mask(&mut self, at: &InRoot) -> Res<()> {
        let path = self.resolve(at)?;
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("masking {}: {e}", at.absolute().display())),
            Ok(m) if m.is_dir() => {
                let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                mnt(Some("tmpfs"), &path, Some("tmpfs"), ro, Some("size=0"))
            }
            Ok(_) => bind(Path::new("/dev/null"), &path, BindFlags::AsIs),
        }
    }

    fn bind(&mut self, source: &BindSource, at: &InRoot, flags: BindFlags) -> Res<()> {
        match source {
            BindSource::Checked { path, id } => {
                let (fd, st) = open_checked(path, *id)?;
                let target = self.ensure(at, kind_of(&st))?;
                bind(&fd_path(&fd), &target, flags)
            }
            BindSource::Kiln(path) => {
                let is_dir = std::fs::metadata(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .is_dir();
                let kind = if is_dir { Kind::Dir } else { Kind::File };
                let target = self.ensure(at, kind)?;
                bind(path, &target, flags)
            }
        }
    }

    fn writable_bind(
        &mut self,
        path: &Path,
        id: FileId,
        at: &InRoot,
        tmp: &Path,
        copy: bool,
        userxattr: bool,
    ) -> Res<()> {
        // Held until the overlay (or the copy) is made from it.
        let (fd, _) = open_checked(path, id)?;
        let source = &fd_path(&fd);
        let target = self.ensure(at, Kind::Dir)?;
        std::fs::create_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        // The writes of a read-write bind are thrown away: they land on a tmpfs.
        let data = Some("mode=700");
        mnt(Some("tmpfs"), tmp, Some("tmpfs"), MsFlags::empty(), data)?;
        if copy {
            // No overlay here: the writes go to a throwaway copy on that tmpfs.
            let copy = tmp.join("copy");
            std::fs::create_dir(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
            super::snapshot::populate(std::slice::from_ref(source), &copy)?;
            return bind(&copy, &target, BindFlags::NoDev);
        }
        for d in ["upper", "work"] {
            std::fs::create_dir(tmp.join(d)).map_err(|e| format!("{d}: {e}"))?;
        }
        let mut data = format!(
            "lowerdir={},upperdir={}/upper,workdir={}/work",
            source.display(),
            tmp.display(),
            tmp.display()
        );
        if userxattr {
            data.push_str(",userxattr");
        }
        let flags = MsFlags::MS_NODEV;
        mnt(
            Some("overlay"),
            &target,
            Some("overlay"),
            flags,
            Some(&data),
        )
    }

    /// Plain chroot: a basic device node the image lacks (reported, so it leaves the diff).
    fn mknod(&mut self, at: &InRoot, major: u64, minor: u64) -> Res<()> {
        let name = at
            .as_path()
            .file_name()
            .ok_or("a device node needs a name")?;
        let parent = InRoot::new(at.as_path().parent().unwrap_or(Path::new("")));
        let path = self.ensure(&parent, Kind::Dir)?.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Ok(());
        }
        let shown = at.absolute();
        let mode = Mode::from_bits_truncate(0o666);
        let devno = nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknod(&path, SFlag::S_IFCHR, mode, devno)
            .map_err(|e| format!("creating {}: {e}", shown.display()))?;
        // mknod honours the umask; the nodes must be usable by every user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("{}: {e}", shown.display()))?;
        (self.created)(&in_root_path(self.root, &path));
        Ok(())
    }
}

fn kind_of(st: &FileStat) -> Kind {
    match st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
        true => Kind::Dir,
        false => Kind::File,
    }
}

/// The root overlay: each lower dir as a short symlink `links/<n>`, mounted from `links`
/// (the names in `data` are relative to it). `nodev`: a base layer may ship a block
/// device node for the host's disk; only the /dev nodes bound in later may work.
fn root_overlay(root: &Path, links: &Path, lowers: &[PathBuf], data: &str) -> Res<()> {
    std::fs::create_dir(links).map_err(|e| format!("{}: {e}", links.display()))?;
    for (i, lower) in lowers.iter().enumerate() {
        let link = links.join(i.to_string());
        std::os::unix::fs::symlink(lower, &link)
            .map_err(|e| format!("{} -> {}: {e}", link.display(), lower.display()))?;
    }
    nix::unistd::chdir(links).map_err(|e| format!("chdir {}: {e}", links.display()))?;
    let flags = MsFlags::MS_NODEV;
    let mounted = mnt(Some("overlay"), root, Some("overlay"), flags, Some(data));
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    mounted.map_err(|e| format!("{OVERLAY_FAILED}{e}"))
}

/// The secret's bytes in a file on a tmpfs only this mount namespace sees (it never
/// touches a disk), with the step's mode and owner.
fn stage_secret(staging: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> Res<PathBuf> {
    std::fs::create_dir_all(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let opts = Some("mode=700,size=4m");
    mnt(
        Some("tmpfs"),
        staging,
        Some("tmpfs"),
        MsFlags::empty(),
        opts,
    )?;
    let file = staging.join("secret");
    std::fs::write(&file, data).map_err(|e| format!("secret: {e}"))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("secret: {e}"))?;
    std::os::unix::fs::chown(&file, Some(uid), Some(gid))
        .map_err(|e| format!("secret owner {uid}:{gid}: {e}"))?;
    Ok(file)
}

/// `/` + `host` relative to `root` (a path the applier resolved inside it).
fn in_root_path(root: &Path, host: &Path) -> PathBuf {
    Path::new("/").join(
        host.strip_prefix(root)
            .expect("resolved paths stay in the root"),
    )
}

/// Opens a mount source without following any symlink on its path (`openat2` with
/// `RESOLVE_NO_SYMLINKS`; `O_NOFOLLOW` on the last component where the kernel has no
/// `openat2`). Callers hand in paths already resolved, with no symlink left in them: one
/// found now is a component swapped since. Returns the descriptor and what it is.
pub(crate) fn open_source(path: &Path) -> std::io::Result<(OwnedFd, FileStat)> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match openat2(AT_FDCWD, path, how) {
        Err(nix::Error::ENOSYS) => open(path, flags, Mode::empty())?,
        other => other?,
    };
    let st = fstat(&fd)?;
    // `O_PATH | O_NOFOLLOW` opens a symlink itself rather than failing.
    if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
        return Err(nix::Error::ELOOP.into());
    }
    Ok((fd, st))
}

/// [`open_source`], and the file must be the one the parent checked (`id`): whatever
/// happened to the path since, the mount is made from this descriptor
/// (`/proc/self/fd/N`), so what is checked is what is mounted.
fn open_checked(source: &Path, id: FileId) -> Res<(OwnedFd, FileStat)> {
    let changed = |why: String| {
        format!(
            "bind source {} changed after it was checked ({why}); nothing was mounted",
            source.display()
        )
    };
    let (fd, st) = open_source(source).map_err(|e| changed(e.to_string()))?;
    if FileId::of(&st) != id {
        return Err(changed("another file is there now".into()));
    }
    Ok((fd, st))
}

/// `/proc/self/fd/N`: a path that names the descriptor's own file (mount(2) and overlay's
/// `lowerdir` follow it to that file, never to whatever the original path names now).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn pivot(root: &Path) -> Res<()> {
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root {}: {e}", root.display()))?;
    // The old root is stacked under the new one at "/"; detaching it hides every host path.
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the host root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// A recursive bind with the flags the plan asks for: `nodev` for image, context or cache
/// content (another stage's root or a cache may hold device nodes), read-only when asked;
/// the source's own flags for the `/dev` nodes.
fn bind(source: &Path, target: &Path, flags: BindFlags) -> Res<()> {
    mnt(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let extra = match flags {
        BindFlags::AsIs => return Ok(()),
        BindFlags::NoDev => MsFlags::MS_NODEV,
        BindFlags::ReadOnly => MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
    };
    remount(target, extra)
}

/// Remounts a bind with `extra` flags added; in a user namespace the source's
/// nosuid/nodev/noexec/atime flags are locked and must be repeated or the kernel refuses.
fn remount(target: &Path, extra: MsFlags) -> Res<()> {
    let st = statvfs(target).map_err(|e| format!("statvfs {}: {e}", target.display()))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
    let locked = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    for (st_flag, ms_flag) in locked {
        if st.flags().contains(st_flag) {
            flags |= ms_flag;
        }
    }
    mnt(None::<&Path>, target, None, flags, None)
}

fn mnt<S: AsRef<Path> + ?Sized>(
    source: Option<&S>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Res<()> {
    mount(source.map(|s| s.as_ref()), target, fstype, flags, data).map_err(|e| {
        let what = fstype.unwrap_or("bind");
        format!("mounting {what} on {}: {e}", target.display())
    })
}

/// The host path of `inside` (absolute, inside `root`), creating missing parents as
/// directories and the last component as `kind`; each created path is reported.
fn ensure(
    root: &Path,
    inside: impl AsRef<Path>,
    kind: Kind,
    created: &mut dyn FnMut(&Path),
) -> Res<PathBuf> {
    let inside = inside.as_ref();
    let resolved = resolve_in_root(root, inside)?;
    let rel = resolved
        .strip_prefix(root)
        .expect("resolved paths stay in the root");
    let mut host = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (n, part) in parts.iter().enumerate() {
        host.push(part);
        if std::fs::symlink_metadata(&host).is_ok() {
            continue;
        }
        let last = n + 1 == parts.len();
        let made = if last && kind == Kind::File {
            std::fs::write(&host, b"")
        } else {
            std::fs::create_dir(&host)
        };
        made.map_err(|e| format!("creating mountpoint {}: {e}", inside.display()))?;
        created(&in_root_path(root, &host));
    }
    Ok(host)
}

/// `inside` resolved against `root` as if `root` were `/`: symlinks (absolute or relative)
/// and `..` never leave the root. Missing components are kept as they are.
pub(crate) fn resolve_in_root(root: &Path, inside: &Path) -> Res<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![inside.to_path_buf()];
    let mut current = PathBuf::new(); // relative to root
    let mut hops = 0;
    while let Some(path) = pending.pop() {
        let mut comps: Vec<Component> = path.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir => current = PathBuf::new(),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    current.pop();
                }
                Component::Normal(name) => {
                    let host = root.join(&current).join(name);
                    match std::fs::read_link(&host) {
                        Ok(target) => {
                            hops += 1;
                            if hops > 40 {
                                return Err(format!("{}: too many symlinks", inside.display()));
                            }
                            let rest: PathBuf = comps.iter().rev().collect();
                            comps.clear();
                            pending.push(rest);
                            pending.push(target);
                        }
                        Err(_) => current.push(name),
                    }
                }
            }
        }
    }
    Ok(root.join(current))
}

/// Paths with `,`, `:` or `\` cannot be passed in overlay's option string.
pub(crate) fn overlay_safe(path: &Path) -> bool {
    !path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'\\'))
        && path != Path::new(OsStr::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_source_swapped_after_its_check_is_not_opened() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let (_, st) = open_source(&src).unwrap();
        let id = FileId::of(&st);
        let (fd, _) = open_checked(&src, id).unwrap();
        // The descriptor's path names the checked directory, whatever the path names later.
        assert_eq!(FileId::of(&fstat(&fd).unwrap()), id);
        // Another directory renamed into its place.
        std::fs::rename(&src, d.path().join("old")).unwrap();
        std::fs::create_dir(&src).unwrap();
        let err = open_checked(&src, id).unwrap_err();
        assert!(err.contains("another file is there now"), "{err}");
        // A symlink anywhere on the path, even to the checked directory itself.
        std::fs::remove_dir(&src).unwrap();
        std::os::unix::fs::symlink(d.path().join("old"), &src).unwrap();
        assert!(open_checked(&src, id).is_err());
        std::os::unix::fs::symlink(d.path(), d.path().join("up")).unwrap();
        assert!(open_checked(&d.path().join("up/old"), id).is_err());
        assert!(open_checked(&d.path().join("old"), id).is_ok());
    }

    #[test]
    fn symlinks_resolve_inside_the_root_and_never_escape() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("var/run")).unwrap();
        std::os::unix::fs::symlink("/var/run", r.join("run")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("var/escape")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        let got = resolve_in_root(r, Path::new("/run/secrets/x")).unwrap();
        assert_eq!(got, r.join("var/run/secrets/x"));
        let got = resolve_in_root(r, Path::new("/var/escape/passwd")).unwrap();
        assert_eq!(got, r.join("etc/passwd"));
        assert!(resolve_in_root(r, Path::new("/loop/x")).is_err());
        assert!(!overlay_safe(Path::new("/a,b")) && overlay_safe(Path::new("/a/b")));
    }

    #[test]
    fn ops_on_an_image_whose_dev_points_at_the_host_stay_in_the_root() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // A hostile image: /dev is a symlink to a host directory, absolute and relative.
        let up = "../".repeat(root.path().components().count());
        for link in [
            host.path().to_path_buf(),
            PathBuf::from(up).join(host.path()),
        ] {
            let dev = root.path().join("dev");
            let _ = std::fs::remove_file(&dev);
            std::os::unix::fs::symlink(&link, &dev).unwrap();
            let mut made = Vec::new();
            let (mut created, mut proc_bound) = (|p: &Path| made.push(p.to_path_buf()), || {});
            let mut applier = Applier {
                root: root.path(),
                created: &mut created,
                proc_bound: &mut proc_bound,
            };
            let dev = InRoot::new("/dev");
            let ops = [
                MountOp::MakeFile {
                    at: dev.join("null"),
                },
                MountOp::MakeDir {
                    at: dev.join("pts"),
                },
                MountOp::Symlink {
                    at: dev.join("fd"),
                    target: "/proc/self/fd".into(),
                },
            ];
            for op in &ops {
                // The symlink resolves inside the root, where its target does not exist.
                assert!(applier.apply(op).is_err(), "{op:?} through {link:?}");
            }
            assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
            assert!(made.is_empty());
        }
        // Without the symlink the same ops make the files in the root.
        std::fs::remove_file(root.path().join("dev")).unwrap();
        std::fs::create_dir(root.path().join("dev")).unwrap();
        let (mut created, mut proc_bound) = (|_: &Path| {}, || {});
        let mut applier = Applier {
            root: root.path(),
            created: &mut created,
            proc_bound: &mut proc_bound,
        };
        let null = InRoot::new("/dev/null");
        applier.apply(&MountOp::MakeFile { at: null }).unwrap();
        assert!(root.path().join("dev/null").is_file());
    }

    #[test]
    fn ensure_creates_missing_parents_and_reports_them() {
        let root = tempfile::tempdir().unwrap();
        let mut made = Vec::new();
        let host = ensure(root.path(), "/run/secrets/token", Kind::File, &mut |p| {
            made.push(p.to_path_buf())
        })
        .unwrap();
        assert!(host.is_file());
        assert_eq!(
            made,
            ["/run", "/run/secrets", "/run/secrets/token"].map(PathBuf::from)
        );
    }
}
