//! Which isolation a step gets: `auto` takes the strongest mode this kernel and the
//! surrounding container allow, and says why it could not take a stronger one.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{Force, Isolation, SandboxError};

/// The mode steps will run in, and the reason in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub isolation: Isolation,
    /// `false`: the surrounding container forbids mount namespaces, steps run by plain
    /// chroot(2) into a copy of the root, without a fresh /proc or /dev (chroot mode only).
    pub mount_namespace: bool,
    pub reason: String,
}

pub(crate) fn probe(
    kiln_exe: &Path,
    requested: Isolation,
    force: Force,
) -> Result<Probe, SandboxError> {
    let mut probe = probe_mode(kiln_exe, requested)?;
    if probe.isolation == Isolation::Chroot {
        let why = if force.no_mount_namespace {
            Some("mount namespaces disabled by the caller".to_string())
        } else {
            namespace_works(kiln_exe, "mountns").err()
        };
        if let Some(why) = why {
            probe.mount_namespace = false;
            probe.reason = format!(
                "{}; no mount namespace ({why}): plain chroot into a copy of the root, \
                 without a fresh /proc, /dev or RUN --mount",
                probe.reason
            );
        }
    }
    Ok(probe)
}

fn probe_mode(kiln_exe: &Path, requested: Isolation) -> Result<Probe, SandboxError> {
    let root = nix::unistd::geteuid().is_root();
    match requested {
        Isolation::Chroot if !root => Err(SandboxError::Unavailable {
            requested: "chroot".into(),
            reason: "it needs root (mount namespaces without a user namespace); use --isolation rootless".into(),
        }),
        Isolation::Chroot => Ok(Probe {
            isolation: Isolation::Chroot,
            mount_namespace: true,
            reason: "chroot isolation requested".into(),
        }),
        Isolation::Rootless => match namespace_works(kiln_exe, "userns") {
            Ok(()) => Ok(Probe {
                isolation: Isolation::Rootless,
                mount_namespace: true,
                reason: "rootless isolation requested; user namespaces work".into(),
            }),
            Err(why) => Err(SandboxError::Unavailable {
                requested: "rootless".into(),
                reason: why,
            }),
        },
        Isolation::Auto if root => Ok(Probe {
            isolation: Isolation::Chroot,
            mount_namespace: true,
            reason: "running as root: chroot isolation (no user namespace needed)".into(),
        }),
        Isolation::Auto => match namespace_works(kiln_exe, "userns") {
            Ok(()) => Ok(Probe {
                isolation: Isolation::Rootless,
                mount_namespace: true,
                reason: "user namespaces work: rootless isolation".into(),
            }),
            Err(why) => Err(SandboxError::Unavailable {
                requested: "auto".into(),
                reason: format!("rootless is impossible ({why}) and chroot needs root"),
            }),
        },
    }
}

/// Re-executes kiln to try `unshare(CLONE_NEWUSER|CLONE_NEWNS)` (`what` = `userns`) or
/// `unshare(CLONE_NEWNS)` (`mountns`) in a single-threaded process.
fn namespace_works(kiln_exe: &Path, what: &str) -> Result<(), String> {
    let out = Command::new(kiln_exe)
        .args(["__sandbox-probe", what])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kiln_exe.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let hint = match std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        Ok(n) if n.trim() == "0" => {
            "; user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=15000)"
        }
        _ => "; a seccomp profile (Docker's default, Kubernetes without privileged) may forbid it",
    };
    Err(format!("{err}{hint}"))
}
