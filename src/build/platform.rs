//! Building for a platform: does a stored image fit it, and can RUN execute for it, which
//! is possible only when the kernel's binfmt_misc has an emulator registered for the
//! platform's machine (qemu-user-static + binfmt-support install them).

use std::path::{Path, PathBuf};

use crate::image::{Platform, StoredImage};

/// Whether a stored image's config is for `want` (a missing variant matches any; a config
/// that names no platform is taken as matching, as the registry index already chose it).
pub(super) fn platform_matches(img: &StoredImage, want: &Platform) -> bool {
    let Ok(c) = crate::manifest::ImageConfig::read(&img.config) else {
        return true;
    };
    c.os.is_none_or(|os| os == want.os)
        && c.architecture.is_none_or(|a| a == want.architecture)
        && (c.variant.is_none() || want.variant.is_none() || c.variant == want.variant)
}

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Why a RUN step cannot execute programs of its platform here.
#[derive(Debug, thiserror::Error)]
pub(super) enum CannotRun {
    #[error(
        "RUN cannot execute {} programs on {} (a different OS); build for {}/{} or drop the RUN",
        target.os, host.os, host.os, host.architecture
    )]
    OtherOs { target: Platform, host: Platform },
    #[error(
        "RUN needs to execute {}/{} programs on this {} machine, and binfmt_misc has no \
         enabled handler for {machine} (looked in {}): install qemu-user-static and \
         binfmt-support (apt-get install qemu-user-static binfmt-support), or build without \
         RUN steps for that platform",
        target.os, target.architecture, host.architecture, dir.display()
    )]
    NoEmulator {
        target: Platform,
        host: Platform,
        machine: String,
        dir: PathBuf,
    },
}

/// `Ok` when a RUN step for `target` can execute on this machine.
pub(super) fn check_can_run(target: &Platform) -> Result<(), Box<CannotRun>> {
    check_in(Path::new(BINFMT_DIR), target, &Platform::host())
}

fn check_in(dir: &Path, target: &Platform, host: &Platform) -> Result<(), Box<CannotRun>> {
    if target.os != host.os {
        return Err(Box::new(CannotRun::OtherOs {
            target: target.clone(),
            host: host.clone(),
        }));
    }
    if target.architecture == host.architecture {
        return Ok(());
    }
    let machine = qemu_machine(&target.architecture);
    if has_enabled_handler(dir, machine) {
        return Ok(());
    }
    Err(Box::new(CannotRun::NoEmulator {
        target: target.clone(),
        host: host.clone(),
        machine: machine.to_string(),
        dir: dir.to_path_buf(),
    }))
}

/// The machine name qemu's binfmt entries use for an OCI architecture.
fn qemu_machine(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        other => other,
    }
}

/// Whether an entry like `qemu-aarch64` exists and says `enabled`, with binfmt_misc itself
/// enabled.
fn has_enabled_handler(dir: &Path, machine: &str) -> bool {
    let enabled =
        |p: &Path| std::fs::read_to_string(p).is_ok_and(|s| s.lines().next() == Some("enabled"));
    if !enabled(&dir.join("status")) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_prefix("qemu-").is_some_and(|m| m == machine) && enabled(&e.path())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(arch: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        }
    }

    #[test]
    fn the_host_platform_always_runs() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_in(d.path(), &platform("amd64"), &platform("amd64")).is_ok());
    }

    #[test]
    fn a_foreign_platform_needs_an_enabled_qemu_handler() {
        let d = tempfile::tempdir().unwrap();
        let err = check_in(d.path(), &platform("arm64"), &platform("amd64"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("qemu-user-static") && err.contains("aarch64"),
            "{err}"
        );
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        std::fs::write(d.path().join("qemu-aarch64"), "disabled\ninterpreter x\n").unwrap();
        assert!(check_in(d.path(), &platform("arm64"), &platform("amd64")).is_err());
        std::fs::write(d.path().join("qemu-aarch64"), "enabled\ninterpreter x\n").unwrap();
        assert!(check_in(d.path(), &platform("arm64"), &platform("amd64")).is_ok());
    }
}
