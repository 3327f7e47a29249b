//! Builds the step's root inside its own mount namespace (runs in the step's pid 1, before
//! `pivot_root`): overlay, /proc, /dev, /sys, generated /etc files, RUN --mount, pivot.
//! Mountpoints are resolved inside the root ([`resolve_in_root`]) so an image symlink such as
//! `/run -> /host` can never make the sandbox mount over a host path.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::protocol::{FileId, InitMount, InitSpec, OVERLAY_FAILED};
use super::security::Security;

/// runc's default masked paths: `/dev/null` over files, an empty read-only tmpfs over dirs.
const MASKED_PROC: [&str; 8] = [
    "acpi",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];
const MASKED_SYS: [&str; 2] = ["firmware", "devices/virtual/powercap"];
/// runc's default read-only paths.
const READ_ONLY_PROC: [&str; 6] = ["asound", "bus", "fs", "irq", "sys", "sysrq-trigger"];

type Res<T> = Result<T, String>;

/// Mounts everything and pivots into the merged root. `created` hears of each mountpoint
/// the sandbox had to create, so the parent can take it out of the diff afterwards.
/// `proc_bound` hears when the step gets the container's /proc instead of a fresh one.
pub(crate) fn prepare(
    spec: &InitSpec,
    created: &mut dyn FnMut(&Path),
    proc_bound: &mut dyn FnMut(),
) -> Res<()> {
    let root = spec.merged.as_path();
    mnt(
        None::<&Path>,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    mount_overlay(spec)?;
    let proc_dir = ensure(root, "/proc", Kind::Dir, created)?;
    if mount_proc(spec, &proc_dir)? == Proc::Bound {
        proc_bound();
    }
    mount_dev(root, created)?;
    let sys_dir = mount_sys(root, created);
    if spec.security == Security::Sandbox {
        mask_kernel_paths(&proc_dir, sys_dir.as_deref())?;
    }
    for (source, name) in &spec.etc_files {
        let target = ensure(root, format!("/etc/{name}"), Kind::File, created)?;
        bind(source, &target, true)?;
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        mount_one(spec, i, m, created)?;
    }
    pivot(root)
}

#[derive(Debug, PartialEq)]
enum Proc {
    Fresh,
    Bound,
}

/// A fresh proc for the step's pid namespace. In a user namespace the kernel refuses one
/// where the surrounding container masks parts of its own /proc (podman, Docker,
/// Kubernetes: the mount would reveal what the masks hide); the container's /proc is then
/// bound instead, recursively, so its masks come along (kiln's own go on top). It lists the
/// container's processes, but those live in a parent user and pid namespace: the step finds
/// none of them by pid (kill, ptrace and pidfd_open look pids up in its own pid namespace)
/// and may not read their memory or environment (ptrace access needs CAP_SYS_PTRACE in
/// their user namespace). Without a user namespace (chroot mode, real root) a refusal fails.
fn mount_proc(spec: &InitSpec, proc_dir: &Path) -> Res<Proc> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match mnt(Some("proc"), proc_dir, Some("proc"), flags, None) {
        Ok(()) => Ok(Proc::Fresh),
        Err(fresh) if spec.user_namespace => {
            bind_as_is(Path::new("/proc"), proc_dir)
                .and_then(|()| remount(proc_dir, flags))
                .map_err(|bound| format!("{fresh}; binding the container's /proc: {bound}"))?;
            Ok(Proc::Bound)
        }
        Err(fresh) => Err(fresh),
    }
}

fn mount_overlay(spec: &InitSpec) -> Res<()> {
    if spec.copy {
        // The root is a plain copy; pivot_root needs it to be a mount point.
        return bind(&spec.merged, &spec.merged, false);
    }
    let links = spec.scratch.join("lower");
    let data = overlay_options(spec, &links)?;
    // The short lower dir names are relative to `links`: mount from there.
    nix::unistd::chdir(&links).map_err(|e| format!("chdir {}: {e}", links.display()))?;
    // nodev: a base layer may ship a block device node for the host's disk; only the /dev
    // nodes bound in below may work.
    let mounted = mnt(
        Some("overlay"),
        &spec.merged,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(&data),
    );
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    mounted.map_err(|e| format!("{OVERLAY_FAILED}{e}"))
}

/// Overlay's options, with each lower dir as a short symlink `links/<n>` named relative to
/// `links` (as Docker's overlay2 does): mount(2) takes one page of options, which the store
/// paths of ~40 layers already fill, and Docker allows 127 layers.
fn overlay_options(spec: &InitSpec, links: &Path) -> Res<String> {
    std::fs::create_dir(links).map_err(|e| format!("{}: {e}", links.display()))?;
    let mut names = Vec::with_capacity(spec.lowers.len());
    for (i, lower) in spec.lowers.iter().enumerate() {
        let name = i.to_string();
        let link = links.join(&name);
        std::os::unix::fs::symlink(lower, &link)
            .map_err(|e| format!("{} -> {}: {e}", link.display(), lower.display()))?;
        names.push(name);
    }
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        spec.upper.display(),
        spec.work.display()
    );
    if spec.user_namespace {
        data.push_str(",userxattr");
    }
    // mount(2) takes at most one page of options.
    if data.len() >= 4096 {
        return Err(format!(
            "the overlay options for {} lower dirs are {} bytes, over the kernel's 4 KiB limit: \
             use a shorter store path or fewer layers",
            names.len(),
            data.len()
        ));
    }
    Ok(data)
}

/// runc's masked and read-only paths over the fresh `/proc` and `/sys` (kernel file systems:
/// no image symlink can redirect these joins). A path this kernel lacks is skipped.
fn mask_kernel_paths(proc_dir: &Path, sys_dir: Option<&Path>) -> Res<()> {
    let sys = sys_dir
        .into_iter()
        .flat_map(|d| MASKED_SYS.map(|p| d.join(p)));
    for path in MASKED_PROC.map(|p| proc_dir.join(p)).into_iter().chain(sys) {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("masking {}: {e}", path.display())),
            Ok(m) if m.is_dir() => {
                let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                mnt(Some("tmpfs"), &path, Some("tmpfs"), ro, Some("size=0"))?;
            }
            Ok(_) => bind_as_is(Path::new("/dev/null"), &path)?,
        }
    }
    for path in READ_ONLY_PROC.map(|p| proc_dir.join(p)) {
        if path.exists() {
            bind(&path, &path, true)?;
        }
    }
    Ok(())
}

/// Plain chroot(2) into the copy, for containers that forbid mount namespaces: no mounts at
/// all (no fresh /proc, the image's own /etc files). Missing basic devices are created as
/// nodes (reported, so they leave the diff again).
pub(crate) fn plain_chroot(spec: &InitSpec, created: &mut dyn FnMut(&Path)) -> Res<()> {
    let root = spec.merged.as_path();
    let dev = ensure(root, "/dev", Kind::Dir, created)?;
    let nodes = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let path = dev.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        let devno = nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFCHR, mode, devno)
            .map_err(|e| format!("creating /dev/{name}: {e}"))?;
        // mknod honours the umask; the nodes must be usable by every user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("/dev/{name}: {e}"))?;
        created(&Path::new("/dev").join(name));
    }
    nix::unistd::chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

fn mount_dev(root: &Path, created: &mut dyn FnMut(&Path)) -> Res<()> {
    let dev = ensure(root, "/dev", Kind::Dir, created)?;
    mnt(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        std::fs::write(&target, b"").map_err(|e| format!("{}: {e}", target.display()))?;
        bind_as_is(&Path::new("/dev").join(name), &target)?;
    }
    for dir in ["pts", "shm"] {
        std::fs::create_dir(dev.join(dir)).map_err(|e| format!("/dev/{dir}: {e}"))?;
    }
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mnt(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        shm_flags,
        Some("mode=1777,size=65536k"),
    )?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| format!("/dev/{name}: {e}"))?;
    }
    Ok(())
}

/// `/sys` read-only where the kernel lets us: a fresh sysfs (root, or a private network
/// namespace), else a bind of the host's (without its cgroup submounts when allowed). When it
/// cannot be made read-only it is not mounted at all rather than left writable.
fn mount_sys(root: &Path, created: &mut dyn FnMut(&Path)) -> Option<PathBuf> {
    let sys = ensure(root, "/sys", Kind::Dir, created).ok()?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mnt(Some("sysfs"), &sys, Some("sysfs"), ro, None).is_ok() {
        return Some(sys);
    }
    // In a user namespace a bind of a mount with submounts must be recursive (EINVAL).
    let bound = mnt(Some("/sys"), &sys, None, MsFlags::MS_BIND, None).or_else(|_| {
        mnt(
            Some("/sys"),
            &sys,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
    });
    if bound.is_err() {
        return None;
    }
    if remount(&sys, MsFlags::MS_RDONLY).is_err() {
        let _ = umount2(&sys, MntFlags::MNT_DETACH);
        return None;
    }
    Some(sys)
}

fn mount_one(spec: &InitSpec, i: usize, m: &InitMount, created: &mut dyn FnMut(&Path)) -> Res<()> {
    let root = spec.merged.as_path();
    match m {
        InitMount::Bind {
            source,
            source_id,
            target,
            readonly,
        } => {
            let (fd, st) = open_checked(source, *source_id)?;
            let is_dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
            let kind = if is_dir { Kind::Dir } else { Kind::File };
            let target = ensure(root, target, kind, created)?;
            bind(&fd_path(&fd), &target, *readonly)
        }
        InitMount::Overlay {
            source,
            source_id,
            target,
        } => {
            // Held until the overlay (or the copy) is made from it.
            let (fd, _) = open_checked(source, *source_id)?;
            let source = &fd_path(&fd);
            let target = ensure(root, target, Kind::Dir, created)?;
            let base = spec.scratch.join(format!("bind-{i}"));
            std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
            // The writes of a read-write bind are thrown away: they land on a tmpfs.
            mnt(
                Some("tmpfs"),
                &base,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=700"),
            )?;
            if spec.copy {
                // No overlay here: the writes go to a throwaway copy on that tmpfs.
                let copy = base.join("copy");
                std::fs::create_dir(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
                super::snapshot::populate(std::slice::from_ref(source), &copy)?;
                return bind(&copy, &target, false);
            }
            for d in ["upper", "work"] {
                std::fs::create_dir(base.join(d)).map_err(|e| format!("{d}: {e}"))?;
            }
            let mut data = format!(
                "lowerdir={},upperdir={}/upper,workdir={}/work",
                source.display(),
                base.display(),
                base.display()
            );
            if spec.user_namespace {
                data.push_str(",userxattr");
            }
            mnt(
                Some("overlay"),
                &target,
                Some("overlay"),
                MsFlags::MS_NODEV,
                Some(&data),
            )
        }
        InitMount::Tmpfs { target, size_bytes } => {
            let target = ensure(root, target, Kind::Dir, created)?;
            let data = size_bytes.map(|s| format!("size={s}"));
            mnt(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data.as_deref(),
            )
        }
        InitMount::Secret {
            target,
            data,
            mode,
            uid,
            gid,
        } => {
            let target = ensure(root, target, Kind::File, created)?;
            let staging = spec.scratch.join(format!("secret-{i}"));
            std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
            // A tmpfs only this mount namespace sees: the secret never touches a disk.
            mnt(
                Some("tmpfs"),
                &staging,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=700,size=4m"),
            )?;
            let file = staging.join("secret");
            std::fs::write(&file, &data.0).map_err(|e| format!("secret: {e}"))?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| format!("secret: {e}"))?;
            std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                .map_err(|e| format!("secret owner {uid}:{gid}: {e}"))?;
            bind(&file, &target, true)
        }
        InitMount::Ssh {
            socket,
            target,
            mode,
            uid,
            gid,
        } => {
            let target = ensure(root, target, Kind::File, created)?;
            // The socket is kiln's relay, made for this step alone: its mode and owner are
            // the step's to have (connecting needs write permission on it).
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| format!("ssh socket: {e}"))?;
            std::os::unix::fs::chown(socket, Some(*uid), Some(*gid))
                .map_err(|e| format!("ssh socket owner {uid}:{gid}: {e}"))?;
            bind(socket, &target, true)
        }
    }
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

/// A bind of image, context or cache content: always `nodev` (another stage's root or a
/// cache may hold device nodes), read-only when asked.
fn bind(source: &Path, target: &Path, readonly: bool) -> Res<()> {
    bind_as_is(source, target)?;
    let mut flags = MsFlags::MS_NODEV;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    remount(target, flags)
}

/// A bind that keeps the source's flags: the `/dev` nodes the sandbox binds in.
fn bind_as_is(source: &Path, target: &Path) -> Res<()> {
    mnt(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
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

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Dir,
    File,
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
        created(&Path::new("/").join(host.strip_prefix(root).expect("in root")));
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
