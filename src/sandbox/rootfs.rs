//! Performs the step's mount plan (`mount_plan.rs`) inside its own mount namespace (in the
//! step's pid 1, before `pivot_root`): the only code that calls mount(2). Every target is
//! resolved inside the root by descriptor ([`crate::fs_root`]) and mounted on through that
//! descriptor (`/proc/self/fd/N`, as runc does): an image symlink such as `/run -> /host`
//! can never make the sandbox mount over a host path, and a component swapped for a symlink
//! after the resolution cannot redirect the mount. A checked bind source is mounted only
//! through a descriptor of the file the parent checked.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open, openat};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, mkdirat, mknodat};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::symlinkat;

use super::mount_plan::{BindFlags, BindSource, InRoot, MountOp, OVERLAY_VOLATILE};
use super::protocol::{FileId, InitSpec, OVERLAY_FAILED};
use crate::fs_root::{
    self, Create, Leaf, Walk, in_root_path, open_no_symlinks, open_real, proc_fd, stat_at,
};

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

/// Where a mount goes: a host path of kiln's own (`PathBuf`), or a [`Target`] inside the
/// root, mounted on through its descriptor.
trait Place: Sized {
    /// The path mount(2) is given.
    fn path(&self) -> PathBuf;
    /// How messages name it.
    fn shown(&self) -> PathBuf;
    /// The same place again, opened now: a descriptor opened before a mount on it refers to
    /// what lies under the mount, and a remount must name the mount itself.
    fn again(&self) -> Res<Self>;
}

impl Place for PathBuf {
    fn path(&self) -> PathBuf {
        self.clone()
    }
    fn shown(&self) -> PathBuf {
        self.clone()
    }
    fn again(&self) -> Res<PathBuf> {
        Ok(self.clone())
    }
}

/// A place inside the root reached by the descriptor walk.
struct Target {
    /// The root, to reach the same place again.
    root: OwnedFd,
    /// `O_PATH`: mount(2) is given `/proc/self/fd/N`, so a component swapped for a symlink
    /// since the walk cannot redirect the mount.
    fd: OwnedFd,
    /// The real path from the root (no symlink, no `..`).
    comps: Vec<Vec<u8>>,
}

impl Place for Target {
    fn path(&self) -> PathBuf {
        proc_fd(&self.fd)
    }
    fn shown(&self) -> PathBuf {
        in_root_path(&self.comps)
    }
    /// Reached along the real path, so no symlink is followed this time.
    fn again(&self) -> Res<Target> {
        let fail = |e: std::io::Error| format!("{}: {e}", self.shown().display());
        Ok(Target {
            root: self.root.try_clone().map_err(fail)?,
            fd: open_real(self.root.as_fd(), &self.comps).map_err(fail)?,
            comps: self.comps.clone(),
        })
    }
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
                &PathBuf::from("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            ),
            MountOp::RootOverlay {
                links,
                lowers,
                data,
            } => root_overlay(self.root, links, lowers, data),
            MountOp::RootSelfBind => {
                let root = self.root.to_path_buf();
                bind(self.root, &root, BindFlags::NoDev)
            }
            MountOp::Mount {
                fstype,
                source,
                at,
                flags,
                data,
            } => {
                let target = self.ensure(at, Leaf::Dir)?;
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
            MountOp::MakeDir { at } => self.make(at, |dir, name| {
                mkdirat(dir, name, Mode::from_bits_truncate(0o777))
            }),
            MountOp::MakeFile { at } => self.make(at, |dir, name| {
                let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
                openat(
                    dir,
                    name,
                    flags | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o666),
                )
                .map(drop)
            }),
            MountOp::Symlink { at, target } => {
                self.make(at, |dir, name| symlinkat(target.as_path(), dir, name))
            }
            MountOp::Mask { at } => self.mask(at),
            MountOp::ReadOnly { at } => match self.resolve(at)? {
                Some(path) => bind(&path.path(), &path, BindFlags::ReadOnly),
                None => Ok(()),
            },
            MountOp::Secret {
                at,
                staging,
                data,
                mode,
                uid,
                gid,
            } => {
                let target = self.ensure(at, Leaf::File)?;
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

    /// The root, opened now: after the root overlay and its self-bind, so walks start on
    /// top of them.
    fn open_root(&self) -> Res<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        open(self.root, flags, Mode::empty()).map_err(|e| format!("{}: {e}", self.root.display()))
    }

    /// `at` resolved inside the root, every symlink followed; `None` when it is not there.
    fn resolve(&self, at: &InRoot) -> Res<Option<Target>> {
        let root = self.open_root()?;
        match fs_root::resolve(root.as_fd(), bytes(at), Walk::FOLLOW) {
            Ok(r) => Ok(Some(Target {
                root,
                fd: r.fd,
                comps: r.comps,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", at.absolute().display())),
        }
    }

    /// [`resolve`](Self::resolve), creating missing parents as directories and the last
    /// component as `kind`; each created path is reported.
    fn ensure(&mut self, at: &InRoot, kind: Leaf) -> Res<Target> {
        ensure(self.root, at, kind, self.created)
    }

    /// Makes the last component of `at` with `make` in its parent, which must exist (every
    /// symlink on the way followed inside the root); the name itself is never followed.
    fn make(
        &mut self,
        at: &InRoot,
        make: impl FnOnce(BorrowedFd<'_>, &Path) -> nix::Result<()>,
    ) -> Res<()> {
        let shown = at.absolute();
        let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", shown.display());
        let name = at.as_path().file_name().ok_or_else(|| fail(&"no name"))?;
        let root = self.open_root()?;
        let parent = at.as_path().parent().unwrap_or(Path::new(""));
        let dir = fs_root::resolve(root.as_fd(), parent.as_os_str().as_bytes(), Walk::FOLLOW)
            .map_err(|e| fail(&e))?;
        make(dir.fd.as_fd(), Path::new(name)).map_err(|e| fail(&e))
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
        let target = self.ensure(at, Leaf::Dir)?;
        match mnt(Some("proc"), &target, Some("proc"), flags, None) {
            Ok(()) => Ok(()),
            Err(fresh) if or_bind_container => {
                bind(Path::new("/proc"), &target, BindFlags::AsIs)
                    .and_then(|()| remount(&target.again()?, flags))
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
        let Ok(sys) = self.ensure(at, Leaf::Dir) else {
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
        let Ok(mounted) = sys.again() else {
            return false;
        };
        if remount(&mounted, MsFlags::MS_RDONLY).is_err() {
            let _ = umount2(&mounted.path(), MntFlags::MNT_DETACH);
            return false;
        }
        true
    }

    /// A kernel file system path under runc's mask; one this kernel lacks is skipped.
    fn mask(&mut self, at: &InRoot) -> Res<()> {
        let Some(target) = self.resolve(at)? else {
            return Ok(());
        };
        let st = nix::sys::stat::fstat(&target.fd)
            .map_err(|e| format!("masking {}: {e}", at.absolute().display()))?;
        match fs_root::kind(&st) == SFlag::S_IFDIR {
            true => {
                let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                mnt(Some("tmpfs"), &target, Some("tmpfs"), ro, Some("size=0"))
            }
            false => bind(Path::new("/dev/null"), &target, BindFlags::AsIs),
        }
    }

    fn bind(&mut self, source: &BindSource, at: &InRoot, flags: BindFlags) -> Res<()> {
        match source {
            BindSource::Checked { path, id } => {
                let (fd, st) = open_checked(path, *id)?;
                let target = self.ensure(at, kind_of(&st))?;
                bind(&proc_fd(&fd), &target, flags)
            }
            BindSource::Kiln(path) => {
                let is_dir = std::fs::metadata(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .is_dir();
                let kind = if is_dir { Leaf::Dir } else { Leaf::File };
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
        let source = &proc_fd(&fd);
        let target = self.ensure(at, Leaf::Dir)?;
        std::fs::create_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        // The writes of a read-write bind are thrown away: they land on a tmpfs.
        let data = Some("mode=700");
        let scratch = tmp.to_path_buf();
        mnt(
            Some("tmpfs"),
            &scratch,
            Some("tmpfs"),
            MsFlags::empty(),
            data,
        )?;
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
        let Target { fd: dir, comps, .. } = self.ensure(&parent, Leaf::Dir)?;
        let shown = at.absolute();
        let fail = |e: &dyn std::fmt::Display| format!("creating {}: {e}", shown.display());
        if stat_at(dir.as_fd(), name.as_bytes())
            .map_err(|e| fail(&e))?
            .is_some()
        {
            return Ok(());
        }
        let mode = Mode::from_bits_truncate(0o666);
        let devno = nix::sys::stat::makedev(major, minor);
        mknodat(&dir, name, SFlag::S_IFCHR, mode, devno).map_err(|e| fail(&e))?;
        // mknod honours the umask; the nodes must be usable by every user.
        fchmodat(&dir, name, mode, FchmodatFlags::FollowSymlink).map_err(|e| fail(&e))?;
        (self.created)(&in_root_path(&comps).join(name));
        Ok(())
    }
}

/// The bytes of an in-root path, relative to the root.
fn bytes(at: &InRoot) -> &[u8] {
    at.as_path().as_os_str().as_bytes()
}

fn kind_of(st: &FileStat) -> Leaf {
    match st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
        true => Leaf::Dir,
        false => Leaf::File,
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
    let root = root.to_path_buf();
    let mut mounted = mnt(Some("overlay"), &root, Some("overlay"), flags, Some(data));
    if let (Err(_), Some(synced)) = (&mounted, data.strip_suffix(OVERLAY_VOLATILE)) {
        // A kernel before 5.10 has no `volatile`: the same overlay, synced at unmount.
        mounted = mnt(Some("overlay"), &root, Some("overlay"), flags, Some(synced));
    }
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
        &staging.to_path_buf(),
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

/// Opens a bind source without following any symlink on its path, and it must be the file
/// the parent checked (`id`): whatever happened to the path since, the mount is made from
/// this descriptor (`/proc/self/fd/N`), so what is checked is what is mounted.
fn open_checked(source: &Path, id: FileId) -> Res<(OwnedFd, FileStat)> {
    let changed = |why: String| {
        format!(
            "bind source {} changed after it was checked ({why}); nothing was mounted",
            source.display()
        )
    };
    let (fd, st) = open_no_symlinks(source).map_err(|e| changed(e.to_string()))?;
    if FileId::of(&st) != id {
        return Err(changed("another file is there now".into()));
    }
    Ok((fd, st))
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
fn bind(source: &Path, target: &impl Place, flags: BindFlags) -> Res<()> {
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
    remount(&target.again()?, extra)
}

/// Remounts a bind with `extra` flags added; in a user namespace the source's
/// nosuid/nodev/noexec/atime flags are locked and must be repeated or the kernel refuses.
/// `target` must name the mount itself (see [`Place::again`]).
fn remount(target: &impl Place, extra: MsFlags) -> Res<()> {
    let st = statvfs(&target.path())
        .map_err(|e| format!("statvfs {}: {e}", target.shown().display()))?;
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
    target: &impl Place,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Res<()> {
    let path = target.path();
    mount(source.map(|s| s.as_ref()), &path, fstype, flags, data).map_err(|e| {
        let what = fstype.unwrap_or("bind");
        format!("mounting {what} on {}: {e}", target.shown().display())
    })
}

/// `at` resolved inside `root` by descriptor (every symlink followed as if `root` were
/// `/`), creating missing parents as directories and the last component as `kind`; each
/// created path is reported.
fn ensure(root: &Path, at: &InRoot, kind: Leaf, created: &mut dyn FnMut(&Path)) -> Res<Target> {
    let shown = at.absolute();
    let fail = |e: std::io::Error| format!("creating mountpoint {}: {e}", shown.display());
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = open(root, flags, Mode::empty()).map_err(|e| fail(e.into()))?;
    let mut made = |_: BorrowedFd<'_>, comps: &[Vec<u8>]| {
        created(&in_root_path(comps));
        Ok(())
    };
    let how = Walk {
        follow_last: true,
        create: Some(Create {
            leaf: kind,
            made: &mut made,
        }),
    };
    let r = fs_root::resolve(root.as_fd(), bytes(at), how).map_err(fail)?;
    Ok(Target {
        root,
        fd: r.fd,
        comps: r.comps,
    })
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
        let (_, st) = open_no_symlinks(&src).unwrap();
        let id = FileId::of(&st);
        let (fd, _) = open_checked(&src, id).unwrap();
        // The descriptor's path names the checked directory, whatever the path names later.
        assert_eq!(FileId::of(&nix::sys::stat::fstat(&fd).unwrap()), id);
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
    fn overlay_options_refuse_their_separators() {
        assert!(!overlay_safe(Path::new("/a,b")) && overlay_safe(Path::new("/a/b")));
        assert!(!overlay_safe(Path::new("/a:b")) && !overlay_safe(Path::new("")));
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
        let at = InRoot::new("/run/secrets/token");
        let dest = ensure(root.path(), &at, Leaf::File, &mut |p| {
            made.push(p.to_path_buf())
        })
        .unwrap();
        // The descriptor's path is the file made in the root.
        assert!(dest.path().is_file());
        assert!(root.path().join("run/secrets/token").is_file());
        assert_eq!(dest.shown(), PathBuf::from("/run/secrets/token"));
        assert_eq!(
            made,
            ["/run", "/run/secrets", "/run/secrets/token"].map(PathBuf::from)
        );
    }

    /// A hostile image: the mount target is a symlink to a host directory (absolute, and
    /// relative through `..`), and `..` runs through a symlink. The target is made inside
    /// the root; the host directory stays untouched.
    #[test]
    fn a_mount_target_linked_out_of_the_root_is_made_inside_it() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.join("abs")).unwrap();
        let up = "../".repeat(r.components().count());
        let rel = format!("{up}{}", host.path().display());
        std::os::unix::fs::symlink(&rel, r.join("usr/rel")).unwrap();
        std::os::unix::fs::symlink("lib", r.join("usr/l")).unwrap();
        let host_rel = host.path().strip_prefix("/").unwrap();
        for (at, name) in [("/abs/x", "x"), ("/usr/rel/y", "y")] {
            let mut made = Vec::new();
            let dest = ensure(r, &InRoot::new(at), Leaf::Dir, &mut |p| {
                made.push(p.to_path_buf())
            })
            .unwrap();
            assert_eq!(
                dest.shown(),
                Path::new("/").join(host_rel).join(name),
                "{at}"
            );
            assert!(r.join(host_rel).join(name).is_dir(), "{at}");
            assert_eq!(made.last(), Some(&dest.shown()));
        }
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
        // `usr/l/..` is `usr/lib/..` = `usr`, where the link `l` points, not its name.
        let dest = ensure(r, &InRoot::new("/usr/l/../m"), Leaf::Dir, &mut |_| {}).unwrap();
        assert_eq!(dest.shown(), PathBuf::from("/usr/m"));
    }

    /// The race the old path-string resolver lost: a component of a resolved target is
    /// swapped for a symlink to the host before the mount. The mount goes through the
    /// descriptor, which still names the directory inside the root, and reaching the target
    /// again (for a remount) refuses the symlink instead of following it.
    #[test]
    fn a_component_swapped_after_resolution_cannot_redirect_the_mount() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let dest = ensure(r, &InRoot::new("/run/secrets"), Leaf::Dir, &mut |_| {}).unwrap();
        let inside = std::fs::metadata(r.join("run/secrets")).unwrap();
        std::fs::rename(r.join("run"), r.join("old")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.join("run")).unwrap();
        std::fs::create_dir(host.path().join("secrets")).unwrap();
        let via_fd = std::fs::metadata(dest.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((via_fd.dev(), via_fd.ino()), (inside.dev(), inside.ino()));
        let again = dest
            .again()
            .err()
            .expect("a symlink on the real path is refused");
        assert!(again.contains("/run/secrets"), "{again}");
    }

    /// Mounts for real (root only): a tmpfs planned on `/run` of an image whose `/run` is a
    /// symlink to a host directory lands inside the root, and a read-only remount reaches
    /// the mount through the descriptor walk.
    #[test]
    fn a_mount_on_a_linked_target_lands_inside_the_root() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED a_mount_on_a_linked_target_lands_inside_the_root: needs root");
            return;
        }
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_path_buf();
        std::os::unix::fs::symlink(host.path(), r.join("run")).unwrap();
        let host_rel = host.path().strip_prefix("/").unwrap().to_path_buf();
        let (in_host, in_root) = std::thread::scope(|s| {
            s.spawn(|| {
                // This thread's own mount namespace: nothing leaks to the test process.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                let (mut created, mut proc_bound) = (|_: &Path| {}, || {});
                let mut applier = Applier {
                    root: &r,
                    created: &mut created,
                    proc_bound: &mut proc_bound,
                };
                let run = InRoot::new("/run");
                let ops = [
                    MountOp::PrivateMounts,
                    MountOp::Mount {
                        fstype: "tmpfs",
                        source: "tmpfs",
                        at: run.clone(),
                        flags: MsFlags::empty(),
                        data: None,
                    },
                    MountOp::ReadOnly { at: run },
                ];
                applier.apply_all(&ops).unwrap();
                let in_root = r.join(&host_rel);
                // A mount point is on another device than its parent directory.
                let mounted = |p: &Path| {
                    use std::os::unix::fs::MetadataExt;
                    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
                    dev(p) != dev(p.parent().unwrap())
                };
                let ro = statvfs(&in_root)
                    .unwrap()
                    .flags()
                    .contains(FsFlags::ST_RDONLY);
                (mounted(host.path()), (mounted(&in_root), ro))
            })
            .join()
            .unwrap()
        });
        assert!(!in_host, "the tmpfs went onto the host directory");
        assert_eq!(in_root, (true, true));
    }
}
