//! The step's mounts as data: [`plan`] turns an [`InitSpec`] (isolation mode, what the probe
//! found, `RUN --mount` list, `--security`) into the ordered [`MountOp`]s that
//! `rootfs::apply` performs in the step's pid 1. Deciding is pure, so every mode can be
//! checked by unit tests without root or a user namespace; the applier is the only code that
//! calls mount(2).
//!
//! Two rules are in the types: every target is an [`InRoot`] (a path relative to the step's
//! root, `..` clamped, resolved inside the root by the applier), and a bind source is either
//! a file the parent checked ([`BindSource::Checked`]: mounted through a descriptor of that
//! same file) or one of kiln's own files ([`BindSource::Kiln`]: host device nodes, the
//! step's generated `/etc` files, its ssh relay socket).
//!
//! Fallbacks the kernel decides at mount time stay in the op: [`MountOp::Proc`] says whether
//! a refused fresh `/proc` may be replaced by the container's, [`MountOp::Sys`] carries the
//! masks that apply only when `/sys` could be mounted read-only.

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use super::SecretBytes;
use super::protocol::{FileId, InitMount, InitSpec};
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

/// The host device nodes bound into the step's `/dev` (runc's default devices; plain chroot
/// creates them as nodes instead): name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What mount(2) takes as options at most (one page).
const MAX_MOUNT_DATA: usize = 4096;

/// The root overlay's last option (see [`root`]); kernels before 5.10 refuse it.
pub(crate) const OVERLAY_VOLATILE: &str = ",volatile";

/// A path inside the step's root, relative to it: only normal components (`/`, `.` dropped,
/// `..` clamped at the root, as BuildKit cleans a mount target). The applier resolves it
/// inside the root (symlinks followed as if the root were `/`), so no op can name a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InRoot(PathBuf);

impl InRoot {
    pub fn new(path: impl AsRef<Path>) -> InRoot {
        let mut clean = PathBuf::new();
        for c in path.as_ref().components() {
            match c {
                Component::Normal(name) => clean.push(name),
                Component::ParentDir => {
                    clean.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        InRoot(clean)
    }

    pub fn join(&self, rel: &str) -> InRoot {
        InRoot::new(self.0.join(rel))
    }

    /// Relative to the root (empty for the root itself).
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// As the step sees it: `/` + the path (messages, `Created` reports).
    pub fn absolute(&self) -> PathBuf {
        Path::new("/").join(&self.0)
    }
}

/// Where a bind mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindSource {
    /// A file the parent checked (device and inode, `runner::source_id`): the applier opens
    /// it without following any symlink, compares, and mounts `/proc/self/fd/N`.
    Checked { path: PathBuf, id: FileId },
    /// One of kiln's own files, which nothing of the step's or the image's can replace:
    /// host device nodes, the step's generated `/etc` files, its ssh relay socket.
    Kiln(PathBuf),
}

/// The flags a bind ends up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindFlags {
    /// The source's own flags: the `/dev` nodes (which must work, so not `nodev`).
    AsIs,
    /// Image, context or cache content: `nodev` (it may hold device nodes).
    NoDev,
    /// `nodev` and read-only.
    ReadOnly,
}

/// One step of building the root, performed in order by `rootfs::apply`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MountOp {
    /// Every mount of the new namespace private: nothing below propagates to the host.
    PrivateMounts,
    /// The root: overlay of `lowers` (top first), each reached through a short symlink
    /// `links/<n>` (kiln's scratch) as `data` names them, mounted `nodev`.
    RootOverlay {
        links: PathBuf,
        lowers: Vec<PathBuf>,
        data: String,
    },
    /// The copy fallback's root bound onto itself (`pivot_root` needs a mount point), `nodev`.
    RootSelfBind,
    /// A file system on a directory (created if missing).
    Mount {
        fstype: &'static str,
        source: &'static str,
        at: InRoot,
        flags: MsFlags,
        data: Option<String>,
    },
    /// A fresh proc; when the kernel refuses one and `or_bind_container` (a user namespace:
    /// the container masks parts of its own /proc), the container's /proc bound
    /// recursively with `flags` instead (its masks come along, kiln's go on top).
    Proc {
        at: InRoot,
        flags: MsFlags,
        or_bind_container: bool,
    },
    /// `/sys` read-only: a fresh sysfs, else a read-only bind of the host's, else nothing
    /// (never a writable one). `then` runs only when it was mounted.
    Sys { at: InRoot, then: Vec<MountOp> },
    /// A bind onto a mountpoint made as the source is (a directory or a file).
    Bind {
        source: BindSource,
        at: InRoot,
        flags: BindFlags,
    },
    /// A writable bind whose writes are thrown away: an overlay (or, with `copy`, a copy)
    /// of the source on a tmpfs mounted at `tmp` (kiln's scratch).
    WritableBind {
        path: PathBuf,
        id: FileId,
        at: InRoot,
        tmp: PathBuf,
        copy: bool,
        userxattr: bool,
    },
    /// A directory on a tmpfs kiln just mounted (never on a layer, so not reported).
    MakeDir { at: InRoot },
    /// An empty file on a tmpfs kiln just mounted (a bind target; not reported).
    MakeFile { at: InRoot },
    /// A symlink on a tmpfs kiln just mounted.
    Symlink { at: InRoot, target: PathBuf },
    /// runc's mask: a read-only empty tmpfs over a directory, `/dev/null` over a file;
    /// skipped where this kernel has no such path.
    Mask { at: InRoot },
    /// runc's read-only path: bound onto itself read-only, when it exists.
    ReadOnly { at: InRoot },
    /// A secret file: written on a private tmpfs at `staging` (kiln's scratch), never on
    /// a disk, and bound read-only at `at`.
    Secret {
        at: InRoot,
        staging: PathBuf,
        data: SecretBytes,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// kiln's ssh relay socket given the step's mode and owner (bound by the next op).
    OwnSocket {
        socket: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Plain chroot: a character device node, made (mode 0666) when missing.
    Mknod { at: InRoot, major: u64, minor: u64 },
    /// Plain chroot(2) into the root (no mount namespace).
    Chroot,
    /// `pivot_root` into the root; the host's root is detached.
    Pivot,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error(
        "the overlay options for {lowers} lower dirs are {bytes} bytes, over the kernel's 4 KiB \
         limit: use a shorter store path or fewer layers"
    )]
    OverlayOptionsTooLong { lowers: usize, bytes: usize },
}

/// The ops that build the step's root, in order.
pub(crate) fn plan(spec: &InitSpec) -> Result<Vec<MountOp>, PlanError> {
    if !spec.mount_namespace {
        return Ok(plain_chroot());
    }
    let confine = spec.security == Security::Sandbox;
    let mut ops = vec![MountOp::PrivateMounts, root(spec)?];
    let proc = InRoot::new("proc");
    ops.push(MountOp::Proc {
        at: proc.clone(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        or_bind_container: spec.user_namespace,
    });
    ops.extend(dev());
    let sys = InRoot::new("sys");
    let sys_masks = match confine {
        true => MASKED_SYS.map(|p| MountOp::Mask { at: sys.join(p) }).into(),
        false => Vec::new(),
    };
    ops.push(MountOp::Sys {
        at: sys,
        then: sys_masks,
    });
    if confine {
        ops.extend(MASKED_PROC.map(|p| MountOp::Mask { at: proc.join(p) }));
        ops.extend(READ_ONLY_PROC.map(|p| MountOp::ReadOnly { at: proc.join(p) }));
    }
    for (source, name) in &spec.etc_files {
        ops.push(MountOp::Bind {
            source: BindSource::Kiln(source.clone()),
            at: InRoot::new("etc").join(name),
            flags: BindFlags::ReadOnly,
        });
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        ops.extend(run_mount(spec, i, m));
    }
    ops.push(MountOp::Pivot);
    Ok(ops)
}

/// No mount at all: the basic `/dev` nodes the image lacks, then chroot(2).
fn plain_chroot() -> Vec<MountOp> {
    let dev = InRoot::new("dev");
    DEVICES
        .map(|(name, major, minor)| MountOp::Mknod {
            at: dev.join(name),
            major,
            minor,
        })
        .into_iter()
        .chain([MountOp::Chroot])
        .collect()
}

fn root(spec: &InitSpec) -> Result<MountOp, PlanError> {
    if spec.copy {
        return Ok(MountOp::RootSelfBind);
    }
    // Short lower dir names, relative to `links` (as Docker's overlay2 does): mount(2) takes
    // one page of options, which the store paths of ~40 layers already fill, and Docker
    // allows 127 layers.
    let names: Vec<String> = (0..spec.lowers.len()).map(|i| i.to_string()).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        spec.upper.display(),
        spec.work.display()
    );
    if spec.user_namespace {
        data.push_str(",userxattr");
    }
    // No sync of the upper dir's filesystem at unmount (nor for the step's own fsyncs): the
    // diff is hashed and kept by kiln right after, and a syncfs there would write back
    // everything the build wrote before (a COPY's 200 MB) on the RUN's critical path, as
    // buildah's `fsync=volatile` avoids too. The applier retries without it on kernels
    // before 5.10.
    data.push_str(OVERLAY_VOLATILE);
    if data.len() >= MAX_MOUNT_DATA {
        return Err(PlanError::OverlayOptionsTooLong {
            lowers: names.len(),
            bytes: data.len(),
        });
    }
    Ok(MountOp::RootOverlay {
        links: spec.scratch.join("lower"),
        lowers: spec.lowers.clone(),
        data,
    })
}

/// A tmpfs `/dev` with the host's basic nodes bound in, its own `pts` and `shm`.
fn dev() -> Vec<MountOp> {
    let dev = InRoot::new("dev");
    let mut ops = vec![MountOp::Mount {
        fstype: "tmpfs",
        source: "tmpfs",
        at: dev.clone(),
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=755,size=65536k".into()),
    }];
    for (name, _, _) in DEVICES {
        ops.push(MountOp::MakeFile { at: dev.join(name) });
        ops.push(MountOp::Bind {
            source: BindSource::Kiln(Path::new("/dev").join(name)),
            at: dev.join(name),
            flags: BindFlags::AsIs,
        });
    }
    ops.push(MountOp::MakeDir {
        at: dev.join("pts"),
    });
    ops.push(MountOp::MakeDir {
        at: dev.join("shm"),
    });
    ops.push(MountOp::Mount {
        fstype: "devpts",
        source: "devpts",
        at: dev.join("pts"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: Some("newinstance,ptmxmode=0666,mode=0620".into()),
    });
    ops.push(MountOp::Mount {
        fstype: "tmpfs",
        source: "shm",
        at: dev.join("shm"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: Some("mode=1777,size=65536k".into()),
    });
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        ops.push(MountOp::Symlink {
            at: dev.join(name),
            target: target.into(),
        });
    }
    ops
}

/// One `RUN --mount` (the `i`th: its staging dirs in the scratch are its own).
fn run_mount(spec: &InitSpec, i: usize, m: &InitMount) -> Vec<MountOp> {
    match m {
        InitMount::Bind {
            source,
            source_id,
            target,
            readonly,
        } => vec![MountOp::Bind {
            source: BindSource::Checked {
                path: source.clone(),
                id: *source_id,
            },
            at: InRoot::new(target),
            flags: match readonly {
                true => BindFlags::ReadOnly,
                false => BindFlags::NoDev,
            },
        }],
        InitMount::Overlay {
            source,
            source_id,
            target,
        } => vec![MountOp::WritableBind {
            path: source.clone(),
            id: *source_id,
            at: InRoot::new(target),
            tmp: spec.scratch.join(format!("bind-{i}")),
            copy: spec.copy,
            userxattr: spec.user_namespace,
        }],
        InitMount::Tmpfs { target, size_bytes } => vec![MountOp::Mount {
            fstype: "tmpfs",
            source: "tmpfs",
            at: InRoot::new(target),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: size_bytes.map(|s| format!("size={s}")),
        }],
        InitMount::Secret {
            target,
            data,
            mode,
            uid,
            gid,
        } => vec![MountOp::Secret {
            at: InRoot::new(target),
            staging: spec.scratch.join(format!("secret-{i}")),
            data: data.clone(),
            mode: *mode,
            uid: *uid,
            gid: *gid,
        }],
        InitMount::Ssh {
            socket,
            target,
            mode,
            uid,
            gid,
        } => vec![
            // The socket is kiln's relay, made for this step alone: its mode and owner are
            // the step's to have (connecting needs write permission on it).
            MountOp::OwnSocket {
                socket: socket.clone(),
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
            MountOp::Bind {
                source: BindSource::Kiln(socket.clone()),
                at: InRoot::new(target),
                flags: BindFlags::ReadOnly,
            },
        ],
    }
}

#[cfg(test)]
#[path = "mount_plan_tests.rs"]
mod tests;
