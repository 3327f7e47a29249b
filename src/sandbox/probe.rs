//! Which isolation a step gets: `auto` takes the strongest mode this kernel and the
//! surrounding container allow, and says why it could not take a stronger one.
//!
//! `auto`, in order:
//! 1. root that may unshare a mount namespace (a host, a privileged container): chroot mode;
//! 2. anyone who may unshare a user namespace: rootless mode. Root lands here in podman's
//!    default container (no CAP_SYS_ADMIN, user namespaces allowed) and maps all of its ids
//!    to themselves when it has CAP_SETUID/CAP_SETGID (`idmap::plan`);
//! 3. root with CAP_SYS_CHROOT, CAP_MKNOD and CAP_SETPCAP where no namespace is allowed
//!    (Docker's and containerd's default seccomp profile): plain chroot into a copy;
//! 4. otherwise no RUN step can run: the probe fails with what is missing and the setting
//!    that allows it (the build says so at its first RUN; COPY-only builds never probe).

use std::path::Path;
use std::process::{Command, Stdio};

use super::security::caps;
use super::{Force, Isolation, IsolationUnavailable};

/// The mode steps will run in, and the reason in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub isolation: Isolation,
    /// `false`: the surrounding container forbids mount namespaces, steps run by plain
    /// chroot(2) into a copy of the root, without a fresh /proc or /dev (chroot mode only).
    pub mount_namespace: bool,
    /// Rootless mode of root in a container (`auto` only): the user namespace maps every id
    /// of kiln's own namespace to itself where CAP_SETUID/CAP_SETGID allow (`idmap::plan`),
    /// instead of the subordinate range or single id an explicit `rootless` gets.
    pub own_ids: bool,
    pub reason: String,
}

/// What plain chroot needs: chroot(2) itself, the basic `/dev` nodes, and dropping the
/// bounding set to the step's capabilities.
const PLAIN_CHROOT_CAPS: [u32; 3] = [caps::SYS_CHROOT, caps::MKNOD, caps::SETPCAP];

/// The one setting that lets kiln isolate steps in a container that forbids namespaces.
const ALLOW_NAMESPACES: &str = "run the container with `--security-opt seccomp=unconfined` \
    (Kubernetes: `seccompProfile: {type: Unconfined}`) or a seccomp profile that allows \
    unshare, mount and clone with namespace flags, such as podman's default";

pub(crate) fn probe(
    kiln_exe: &Path,
    requested: Isolation,
    force: Force,
) -> Result<Probe, IsolationUnavailable> {
    let tries = Tries { kiln_exe, force };
    let root = nix::unistd::geteuid().is_root();
    match requested {
        Isolation::Chroot if !root => Err(IsolationUnavailable {
            requested: "chroot".into(),
            reason: "it needs root (mount namespaces without a user namespace); use --isolation rootless".into(),
        }),
        Isolation::Chroot => Ok(match tries.mount_namespace() {
            Ok(()) => chroot("chroot isolation requested".into()),
            Err(why) => plain_chroot(format!("chroot isolation requested; no mount namespace ({why})")),
        }),
        Isolation::Rootless => match tries.user_namespace() {
            Ok(()) => Ok(rootless("rootless isolation requested; user namespaces work".into())),
            Err(why) => Err(IsolationUnavailable {
                requested: "rootless".into(),
                reason: why.to_string(),
            }),
        },
        Isolation::Auto if root => auto_as_root(&tries),
        Isolation::Auto => match tries.user_namespace() {
            Ok(()) => Ok(rootless("user namespaces work: rootless isolation".into())),
            Err(why) => Err(IsolationUnavailable {
                requested: "auto".into(),
                reason: format!(
                    "RUN steps cannot be isolated here: user namespaces are refused ({why}) \
                     and chroot isolation needs root. To allow RUN, {ALLOW_NAMESPACES}, or \
                     run kiln as root. Builds without RUN work as they are"
                ),
            }),
        },
    }
}

fn auto_as_root(tries: &Tries) -> Result<Probe, IsolationUnavailable> {
    let mountns = match tries.mount_namespace() {
        Ok(()) => {
            return Ok(chroot(
                "running as root: chroot isolation (no user namespace needed)".into(),
            ));
        }
        Err(why) => why,
    };
    let userns = match tries.user_namespace() {
        Ok(()) => {
            return Ok(Probe {
                own_ids: true,
                ..rootless(format!(
                    "running as root in a container that refuses mount namespaces \
                     ({mountns}); user namespaces work: rootless isolation"
                ))
            });
        }
        Err(why) => why,
    };
    let missing: Vec<&str> = PLAIN_CHROOT_CAPS
        .into_iter()
        .filter(|c| !caps::have(&[*c]))
        .map(caps::name)
        .collect();
    if missing.is_empty() {
        return Ok(plain_chroot(format!(
            "running as root; no mount namespace ({mountns}) and no user namespace \
             ({userns})"
        )));
    }
    let fix = if userns.map {
        // The container allows user namespaces; root may just not map itself into one.
        "run kiln as a non-root user (`--user 1000`; Kubernetes `runAsNonRoot: true`, which \
         the restricted profile asks for anyway), or give it CAP_SETFCAP (`--cap-add=SETFCAP`)"
            .to_string()
    } else {
        format!(
            "{ALLOW_NAMESPACES}; or keep {} (Docker's defaults) for plain chroot",
            missing.join(", ")
        )
    };
    Err(IsolationUnavailable {
        requested: "auto".into(),
        reason: format!(
            "RUN steps cannot be isolated here: mount namespaces are refused ({mountns}), \
             user namespaces are unusable ({userns}), and plain chroot needs {} which kiln \
             lacks. To allow RUN, {fix}. Builds without RUN work as they are",
            missing.join(", "),
        ),
    })
}

fn chroot(reason: String) -> Probe {
    Probe {
        isolation: Isolation::Chroot,
        mount_namespace: true,
        own_ids: false,
        reason,
    }
}

fn rootless(reason: String) -> Probe {
    Probe {
        isolation: Isolation::Rootless,
        mount_namespace: true,
        own_ids: false,
        reason,
    }
}

fn plain_chroot(reason: String) -> Probe {
    Probe {
        isolation: Isolation::Chroot,
        mount_namespace: false,
        own_ids: false,
        reason: format!(
            "{reason}: plain chroot into a copy of the root, without a fresh /proc, /dev \
             or RUN --mount; the job's container is the isolation boundary"
        ),
    }
}

/// The namespace tries, each in a re-executed single-threaded kiln.
struct Tries<'a> {
    kiln_exe: &'a Path,
    force: Force,
}

impl Tries<'_> {
    /// `unshare(CLONE_NEWNS)`: what chroot mode needs.
    fn mount_namespace(&self) -> Result<(), Refused> {
        if self.force.no_mount_namespace {
            return Err("mount namespaces disabled by the caller".into());
        }
        namespace_works(self.kiln_exe, "mountns")
    }

    /// `unshare(CLONE_NEWUSER|CLONE_NEWNS)` and an id map: what rootless mode needs. A
    /// forced `no_mount_namespace` refuses it too, as a container forbidding `CLONE_NEWNS`
    /// would.
    fn user_namespace(&self) -> Result<(), Refused> {
        if self.force.no_mount_namespace {
            return Err("mount namespaces disabled by the caller".into());
        }
        namespace_works(self.kiln_exe, "userns")
    }
}

/// Why a namespace try failed, in words; `map`: the namespace was made, but this process's
/// own id could not be mapped into it.
struct Refused {
    map: bool,
    text: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for Refused {
    fn from(text: &str) -> Refused {
        Refused {
            map: false,
            text: text.into(),
        }
    }
}

/// Re-executes kiln to try `unshare(CLONE_NEWUSER|CLONE_NEWNS)` and a map of its own id
/// (`what` = `userns`) or `unshare(CLONE_NEWNS)` (`mountns`) in a single-threaded process.
fn namespace_works(kiln_exe: &Path, what: &str) -> Result<(), Refused> {
    let out = Command::new(kiln_exe)
        .args(["__sandbox-probe", what])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Refused::from(format!("cannot run {}: {e}", kiln_exe.display()).as_str()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let map = out.status.code() == Some(i32::from(super::protocol::PROBE_MAP_REFUSED));
    let hint = match std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        _ if map => "; root needs CAP_SETFCAP to map uid 0 into a user namespace (Linux ≥ 5.12)",
        Ok(n) if n.trim() == "0" && what == "userns" => {
            "; user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=15000)"
        }
        _ if what == "mountns" => "; it needs CAP_SYS_ADMIN",
        _ => "; a seccomp profile (Docker's default, Kubernetes without privileged) may forbid it",
    };
    Err(Refused {
        map,
        text: format!("{err}{hint}"),
    })
}
