//! The rootless sandbox that runs one RUN step and leaves its diff in an overlay upper dir.
//!
//! The only module allowed `unsafe` code; each block carries a `// SAFETY:` line.
//!
//! # Public API
//! - [`Sandbox::new`]`(kiln_exe, `[`Isolation`]`)`: the kiln executable is re-executed as the
//!   step's init (never fork-and-mount from the multi-threaded caller). Integration tests pass
//!   `env!("CARGO_BIN_EXE_kiln")`, the CLI `std::env::current_exe()`.
//! - [`Sandbox::probe`] says which mode [`Isolation::Auto`] takes and why ([`Probe`]).
//! - [`Sandbox::run_step`]`(&`[`StepSpec`]`, &Progress)` runs one step: overlay of
//!   `lower_dirs` (top first) with `upper_dir` as the diff; returns [`StepOutcome`] (exit code,
//!   last output lines, the [`LayerIdMap`](crate::layer::LayerIdMap) the upper dir's host ids were written through). Output is
//!   streamed as `Event::StepOutput`. A non-zero exit is an outcome, not an error.
//! - [`Cancel`]: a handle (from [`Sandbox::cancel_handle`]) that kills every running step's
//!   whole process tree (Ctrl-C/SIGTERM in the CLI). Mounts live only in the step's mount
//!   namespace, so nothing stays mounted; the step's temporary dirs are removed.
//! - [`init::enter_if_requested`]: the hook `main` calls first; it runs the hidden re-exec
//!   entries (`__sandbox-init`, `__sandbox-probe`, `__sandbox-run <spec.json>`,
//!   `__sandbox-mapped <op>`).
//!
//! # What a step sees
//! Namespaces mount/pid/ipc/uts (+net for `Network::None`, with `lo` up), a fresh `/proc`,
//! a tmpfs `/dev` with host `null zero full random urandom tty` bound in plus its own `pts` and
//! `shm`, `/sys` read-only, generated `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` bound
//! over the image's (never in the diff; mountpoints the sandbox had to create are removed from
//! the upper dir afterwards), umask 022, only fds 0-2 open (stdin is /dev/null),
//! every signal at SIG_DFL and none blocked,
//! `USER` resolved through the rootfs `/etc/passwd` and `/etc/group`, missing `WORKDIR`
//! components created owned by that user (as BuildKit does).
//!
//! # Containment (what runc/buildah give a container by default)
//! containers-common's default capabilities (0x800405fb) in the bounding, permitted,
//! effective and inheritable sets (none effective for a non-root `USER`), ambient empty;
//! no_new_privs; a seccomp filter equivalent to Docker's default profile (`security/`);
//! runc's masked `/proc`/`/sys` paths and read-only `/proc` paths; the root and every
//! bind `nodev` (only the `/dev` nodes the sandbox binds in work). Plain chroot has no mounts
//! (no masks, no nodev), no pid namespace, and drops CAP_SYS_CHROOT too (chroot(2) would
//! leave it): its one copy warning says so.
//! [`Security::Insecure`] (`RUN --security=insecure`, allowed by the caller) skips the
//! capabilities, the filter and the masks.
//! As root, at most [`Sandbox::with_pids_limit`] pids per step (default
//! [`DEFAULT_PIDS_LIMIT`]) through a cgroup per step (`cgroup.rs`); unprivileged, none (an
//! info line says so once).
//! Bind and cache sources must be resolved paths: the sandbox opens each without following
//! any symlink, and the init mounts that same file (checked by device and inode) through
//! its descriptor, so a component swapped for a symlink after the caller's check is refused.
//!
//! # How the root is built
//! `mount_plan.rs` decides, `rootfs.rs` performs: `mount_plan::plan` is a pure function
//! from the step's spec (mode, probe result, `RUN --mount` list, `--security`) to an ordered
//! list of `MountOp`s, whose targets are paths inside the root and whose bind sources are
//! either files the parent checked (device, inode) or kiln's own; `rootfs::prepare` applies
//! them in the step's pid 1 and is the only code that calls mount(2).
//!
//! # The upper dir afterwards
//! Overlay's own format: whiteouts are 0/0 character devices, opaque directories carry
//! `user.overlay.opaque` (rootless) or `trusted.overlay.opaque` (chroot). In rootless mode the
//! files carry *host* ids of the map (container uid 1000 is host `subuid_start + 999`):
//! the layer writer turns them back with [`LayerIdMap::image_uid`](crate::layer::LayerIdMap::image_uid)/`image_gid`.
//! Files the step made unreadable to others (mode 0600, owned by a sub-uid) cannot be read
//! by the unprivileged host user outside the namespace: [`Sandbox::mapped_fs`] gives a
//! [`MappedFs`] that unpacks base layers with their owners, writes the layer and removes such
//! trees as root of the map (a re-exec, `__sandbox-mapped`); [`remove_tree_as_mapped_root`]
//! does the removal for the store (`rmi`/`prune`), which the CLI hands it as its
//! [`SubIdRemover`](crate::store::SubIdRemover).
//!
//! # Modes
//! `Rootless`: a user namespace; with a `/etc/subuid`+`/etc/subgid` range and
//! `newuidmap`/`newgidmap` the map is `0 → user, 1..=N → range`, else `0 → user` only (one
//! warning). Overlay is mounted with `userxattr`. Root in a container that refuses mount
//! namespaces but allows user namespaces (podman's default) runs rootless too; with
//! CAP_SETUID/CAP_SETGID its map is every id of its own namespace to itself, written
//! directly (`idmap::plan`), so files keep the ids chroot mode would give them. Where the
//! container masks parts of its /proc, the kernel refuses a fresh proc in a user namespace:
//! the container's /proc is bound instead, masks included (`MountOp::Proc`, said once).
//! `Chroot`: for root, no user namespace, same mount/pid/ipc/uts namespaces. Which mode
//! `auto` takes, in which order, and when it gives up: `probe.rs`.
//!
//! # Fallbacks ([`Force`] forces them)
//! - Overlay cannot be mounted (old kernel, some containers): the step is retried (it had not
//!   run) on one writable copy of the merged lower dirs, and its diff is written into the upper
//!   dir afterwards by comparing (size, mtime ns, mode, uid, gid, inode, ctime) before and
//!   after. Same overlay form; in a user namespace whiteouts are empty files with
//!   `user.overlay.whiteout` (mknod is refused there). A progress warning says so, once.
//! - Chroot mode where mount namespaces are forbidden (kaniko-like containers): plain
//!   chroot(2) into that copy, no namespaces at all, no fresh `/proc`, basic `/dev` nodes
//!   created (and kept out of the diff), the image's own `/etc/hosts`; `RUN --mount` and
//!   `--network none` are refused. [`Probe::mount_namespace`] is `false` and its reason says
//!   why. Cancel kills the command's process group (no pid namespace to tear down). kiln and
//!   the step's init are non-dumpable then, so the command (root, same user namespace)
//!   cannot ptrace them.

// The one module allowed `unsafe` (Cargo.toml denies it everywhere else).
#![allow(unsafe_code)]

mod cache;
mod cgroup;
mod entry;
mod error;
mod idmap;
pub mod init;
mod mapped;
mod mount_plan;
mod output;
mod pidfd;
mod probe;
mod protocol;
mod rootfs;
mod runner;
mod security;
mod snapshot;
mod user;

use std::fmt;
use std::path::PathBuf;

pub use crate::network::Network;
pub use error::{IdMapError, IsolationUnavailable, SandboxError};
pub use mapped::{MappedFs, remove_tree_as_mapped_root};
pub use probe::Probe;
pub use runner::Cancel;
pub use security::Security;

/// How strongly a step is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Probe the kernel and pick the strongest mode that works.
    Auto,
    /// A user namespace in which the caller is root.
    Rootless,
    /// No user namespace (for root, or where `CLONE_NEWUSER` is forbidden).
    Chroot,
}

/// How concurrent steps share one cache mount (`RUN --mount=type=cache,sharing=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Every step uses the same directory at once.
    #[default]
    Shared,
    /// A step that finds the directory busy gets a fresh empty one instead.
    Private,
    /// A step waits until nobody else uses the directory.
    Locked,
}

/// Secret bytes; never printed (the `Debug` impl redacts them).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// One `RUN --mount`. Targets are absolute paths inside the step's root.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSpec {
    /// A persistent directory per `id` under `cache_root` (given by the caller, in the store).
    Cache {
        id: String,
        target: PathBuf,
        cache_root: PathBuf,
        #[serde(default)]
        sharing: CacheSharing,
        #[serde(default)]
        readonly: bool,
    },
    /// A secret file on a tmpfs at `target` (usually `/run/secrets/<id>`); never in the diff.
    Secret {
        target: PathBuf,
        data: SecretBytes,
        #[serde(default = "secret_mode")]
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
    /// A host path (from the context or another stage), already resolved: a symlink left
    /// on it refuses the step. Writes go to a throwaway overlay unless `readonly`.
    Bind {
        source: PathBuf,
        target: PathBuf,
        #[serde(default = "yes")]
        readonly: bool,
    },
    /// An empty tmpfs.
    Tmpfs {
        target: PathBuf,
        #[serde(default)]
        size_bytes: Option<u64>,
    },
    /// An ssh agent socket (the caller's relay, a host path) at `target`, given this mode
    /// and owner; a mountpoint, so never in the diff.
    Ssh {
        socket: PathBuf,
        target: PathBuf,
        #[serde(default = "ssh_mode")]
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
}

fn ssh_mode() -> u32 {
    0o600
}

fn secret_mode() -> u32 {
    0o400
}
fn yes() -> bool {
    true
}

/// Everything one RUN step needs. The caller resolves Dockerfile semantics (SHELL wrapping,
/// ARG/ENV scoping); the sandbox only runs what it is given.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepSpec {
    /// Step id for progress events.
    pub id: String,
    /// Read-only layer directories, top first. May be empty (`FROM scratch`).
    pub lower_dirs: Vec<PathBuf>,
    /// An empty directory that receives the step's diff (overlay upper dir).
    pub upper_dir: PathBuf,
    /// The command, already shell-wrapped by the caller for shell form.
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs. `PATH` defaults to the usual one and `HOME` to the user's.
    pub env: Vec<String>,
    /// `name|uid[:group|gid]`; `None` is root.
    pub user: Option<String>,
    /// Absolute working directory; created if missing. `None` is `/`.
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub network: Network,
    /// Hostname inside the step (default `kiln`).
    pub hostname: Option<String>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// `RUN --security=`; [`Security::Insecure`] only when the user allowed it.
    #[serde(default)]
    pub security: Security,
}

/// How a step ended (a non-zero exit is an outcome; setup failures are errors).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepOutcome {
    /// The command's exit code; 128+N when killed by signal N.
    pub exit_code: i32,
    /// The last lines of output (stdout and stderr interleaved), for error messages.
    pub tail: Vec<String>,
    /// The mode the step ran in.
    pub isolation: Isolation,
    /// How container ids map to the host ids the upper dir's files carry.
    pub id_map: crate::layer::LayerIdMap,
}

impl StepOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Weaker modes forced on purpose (tests, or a user who knows the kernel lies), as if the
/// surrounding container imposed them. `KILN_SANDBOX_FORCE=no-overlay,no-mountns` sets them
/// for the hidden `__sandbox-run` entry and `kiln build` ([`Force::from_env`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Force {
    /// Use the copy + snapshot-diff fallback instead of overlay.
    pub no_overlay: bool,
    /// Chroot mode: act as if `unshare(CLONE_NEWNS)` were forbidden (plain chroot).
    pub no_mount_namespace: bool,
}

impl Force {
    /// What `KILN_SANDBOX_FORCE` (comma-separated `no-overlay`, `no-mountns`) asks for.
    pub fn from_env() -> Force {
        let force = std::env::var("KILN_SANDBOX_FORCE").unwrap_or_default();
        Force {
            no_overlay: force.split(',').any(|f| f == "no-overlay"),
            no_mount_namespace: force.split(',').any(|f| f == "no-mountns"),
        }
    }
}

/// Runs RUN steps. Cheap to create; probes the kernel once, on first use.
#[derive(Debug)]
pub struct Sandbox {
    kiln_exe: PathBuf,
    isolation: Isolation,
    force: Force,
    probed: std::sync::OnceLock<Result<Probe, IsolationUnavailable>>,
    cancel: Cancel,
    warned_single_map: std::sync::atomic::AtomicBool,
    /// Overlay failed once (or is forced off): later steps go straight to the copy.
    no_overlay: std::sync::atomic::AtomicBool,
    warned_copy: std::sync::atomic::AtomicBool,
    /// A step got the container's /proc: said once.
    warned_proc: std::sync::atomic::AtomicBool,
    mapped: std::sync::OnceLock<Option<MappedFs>>,
    /// Most pids (processes and threads) one step may have; 0 is no limit.
    pids_limit: u32,
    /// Where step cgroups go, or why there is none (said once).
    pids_parent: std::sync::OnceLock<Result<cgroup::PidsParent, String>>,
    warned_pids: std::sync::atomic::AtomicBool,
}

/// The pids limit of a step unless told otherwise: twice podman's container default
/// (containers.conf `pids_limit = 2048`), as a build runs parallel compilers and linkers;
/// far below the host's `pid_max`, so a fork bomb stops long before the host does.
pub const DEFAULT_PIDS_LIMIT: u32 = 4096;

impl Sandbox {
    /// A sandbox that re-executes `kiln_exe` as each step's init.
    pub fn new(kiln_exe: impl Into<PathBuf>, isolation: Isolation) -> Sandbox {
        Sandbox {
            kiln_exe: kiln_exe.into(),
            isolation,
            force: Force::default(),
            probed: std::sync::OnceLock::new(),
            cancel: Cancel::default(),
            warned_single_map: Default::default(),
            no_overlay: Default::default(),
            warned_copy: Default::default(),
            warned_proc: Default::default(),
            mapped: Default::default(),
            pids_limit: DEFAULT_PIDS_LIMIT,
            pids_parent: Default::default(),
            warned_pids: Default::default(),
        }
    }

    /// The same sandbox with at most `max` pids per step (0: no limit). Applied as root
    /// through a cgroup per step; an unprivileged kiln says once that it applies none.
    pub fn with_pids_limit(mut self, max: u32) -> Sandbox {
        self.pids_limit = max;
        self
    }

    /// The same sandbox with weaker modes forced (see [`Force`]).
    pub fn forcing(mut self, force: Force) -> Sandbox {
        self.force = force;
        self.no_overlay = force.no_overlay.into();
        self
    }

    /// Which mode steps run in, and why a stronger one was not taken.
    pub fn probe(&self) -> Result<Probe, SandboxError> {
        self.probed
            .get_or_init(|| probe::probe(&self.kiln_exe, self.isolation, self.force))
            .clone()
            .map_err(SandboxError::from)
    }

    /// File operations as root of the full rootless id map ([`MappedFs`]), for steps that
    /// run rootless with a subordinate range; `None` for root, chroot mode or a single-id map
    /// (then the caller's own process does the work, as root or with files owned by the user).
    pub fn mapped_fs(&self) -> Option<MappedFs> {
        self.mapped
            .get_or_init(|| {
                let rootless = self
                    .probe()
                    .is_ok_and(|p| p.isolation == Isolation::Rootless);
                rootless.then(|| MappedFs::detect(&self.kiln_exe)).flatten()
            })
            .clone()
    }

    /// A handle that kills the running steps (for Ctrl-C / SIGTERM handlers).
    pub fn cancel_handle(&self) -> Cancel {
        self.cancel.clone()
    }

    /// Runs one step; see the module documentation. On `Err` the upper dir's content is
    /// undefined (the step may have half run): the caller discards it. The scratch dir beside
    /// it is always removed.
    pub fn run_step(
        &self,
        spec: &StepSpec,
        progress: &crate::progress::Progress,
    ) -> Result<StepOutcome, SandboxError> {
        let probe = self.probe()?;
        runner::run_step(self, &probe, spec, progress)
    }
}
