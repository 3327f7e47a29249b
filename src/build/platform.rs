//! Building for a platform: does a stored image fit it, and can RUN execute for it, which
//! is possible only when the kernel's binfmt_misc has an emulator registered for the
//! platform's machine (qemu-user-static + binfmt-support install them).
//!
//! The handler must carry the F (fix-binary) flag: the kernel then opens the interpreter once,
//! when the handler is registered, instead of by its path each time a foreign program starts,
//! a path that does not exist inside the step's root (chroot, pivot_root, a user namespace).
//! Debian's qemu-user-static registers its handlers so. kiln never registers handlers (that
//! changes the whole machine); it checks the entry under `/proc/sys/fs/binfmt_misc` and, when
//! it lacks F, prints the command that registers it again with F.

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
        "RUN needs to execute {}/{} programs on this {} machine, and {gap}: install \
         qemu-user-static and binfmt-support (apt-get install qemu-user-static binfmt-support), \
         or build without RUN steps for that platform",
        target.os, target.architecture, host.architecture
    )]
    NoEmulator {
        target: Platform,
        host: Platform,
        gap: Gap,
    },
    /// Without F the kernel opens the interpreter by its path when the program starts, and
    /// that path is looked up inside the step's root, where qemu is not.
    #[error(
        "RUN needs to execute {}/{} programs through binfmt_misc's handler {} (interpreter \
         {interpreter}), which lacks the F (fix-binary) flag, so the kernel would look for the \
         interpreter inside the step's root and fail; register it again with F, as root: \
         {fix}",
        target.os, target.architecture, entry.display()
    )]
    NotFixBinary {
        target: Platform,
        entry: PathBuf,
        interpreter: String,
        /// A shell command that re-registers the handler with F.
        fix: String,
    },
}

/// What binfmt_misc lacks for a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gap {
    /// No `status` file: binfmt_misc is not mounted at the dir (so kiln cannot see handlers).
    NotMounted { dir: PathBuf },
    /// `status` says disabled: no handler runs.
    Disabled { dir: PathBuf },
    /// No `qemu-<machine>` entry.
    NoHandler { dir: PathBuf, machine: String },
    /// The entry exists but is disabled.
    HandlerDisabled { entry: PathBuf },
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gap::NotMounted { dir } => write!(
                f,
                "binfmt_misc is not mounted at {} (as root: mount -t binfmt_misc binfmt_misc {})",
                dir.display(),
                dir.display()
            ),
            Gap::Disabled { dir } => write!(
                f,
                "binfmt_misc is disabled (as root: echo 1 > {})",
                dir.join("status").display()
            ),
            Gap::NoHandler { dir, machine } => write!(
                f,
                "binfmt_misc has no handler for {machine} (looked for qemu-{machine} in {})",
                dir.display()
            ),
            Gap::HandlerDisabled { entry } => write!(
                f,
                "binfmt_misc's handler {} is disabled (as root: echo 1 > {})",
                entry.display(),
                entry.display()
            ),
        }
    }
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
    let handler = find_handler(dir, machine).map_err(|gap| CannotRun::NoEmulator {
        target: target.clone(),
        host: host.clone(),
        gap,
    })?;
    if handler.flags.contains('F') {
        return Ok(());
    }
    Err(Box::new(CannotRun::NotFixBinary {
        target: target.clone(),
        fix: handler.fix_command(dir),
        entry: handler.path,
        interpreter: handler.interpreter,
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

/// An enabled binfmt_misc entry, as its file under the binfmt_misc dir describes it.
#[derive(Debug)]
struct Handler {
    path: PathBuf,
    name: String,
    interpreter: String,
    /// The kernel's letters (`POCF`); empty when none.
    flags: String,
    /// `M` (magic at `offset`, with `mask`) or `E` (file extension).
    rule: Rule,
}

#[derive(Debug)]
enum Rule {
    Magic {
        offset: String,
        magic: String,
        mask: Option<String>,
    },
    Extension(String),
}

/// The enabled `qemu-<machine>` entry in `dir`, or what is missing.
fn find_handler(dir: &Path, machine: &str) -> Result<Handler, Gap> {
    let first_line = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.lines().next().unwrap_or_default().to_string())
    };
    match first_line(&dir.join("status")).as_deref() {
        None => {
            return Err(Gap::NotMounted {
                dir: dir.to_path_buf(),
            });
        }
        Some("enabled") => {}
        Some(_) => {
            return Err(Gap::Disabled {
                dir: dir.to_path_buf(),
            });
        }
    }
    let name = format!("qemu-{machine}");
    let path = dir.join(&name);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Err(Gap::NoHandler {
            dir: dir.to_path_buf(),
            machine: machine.to_string(),
        });
    };
    if text.lines().next() != Some("enabled") {
        return Err(Gap::HandlerDisabled { entry: path });
    }
    Ok(Handler::parse(path, name, &text))
}

impl Handler {
    /// Reads the kernel's format: `enabled`, `interpreter PATH`, `flags: LETTERS`, then
    /// `offset N`, `magic HEX` and `mask HEX`, or `extension .EXT`.
    fn parse(path: PathBuf, name: String, text: &str) -> Handler {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        let rule = match field("extension ") {
            Some(ext) => Rule::Extension(ext),
            None => Rule::Magic {
                offset: field("offset ").unwrap_or_else(|| "0".into()),
                magic: field("magic ").unwrap_or_default(),
                mask: field("mask "),
            },
        };
        Handler {
            path,
            name,
            interpreter: field("interpreter ").unwrap_or_default(),
            flags: field("flags:").unwrap_or_default(),
            rule,
        }
    }

    /// The commands that replace this entry by the same one with F added: the entry prints
    /// its magic and mask as plain hex, the register file wants `\xNN` escapes (which the
    /// kernel decodes, so `printf %s` passes them through untouched).
    fn fix_command(&self, dir: &Path) -> String {
        let escaped = |hex: &str| {
            hex.as_bytes()
                .chunks(2)
                .map(|pair| format!("\\x{}", String::from_utf8_lossy(pair)))
                .collect::<String>()
        };
        let rule = match &self.rule {
            Rule::Magic {
                offset,
                magic,
                mask,
            } => format!(
                "M:{offset}:{}:{}",
                escaped(magic),
                mask.as_deref().map(escaped).unwrap_or_default()
            ),
            Rule::Extension(ext) => format!("E::{}:", ext.trim_start_matches('.')),
        };
        format!(
            "echo -1 > {}; printf %s ':{}:{rule}:{}:{}F' > {}",
            self.path.display(),
            self.name,
            self.interpreter,
            self.flags,
            dir.join("register").display()
        )
    }
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

    /// What a handler's entry file holds (Debian's qemu-aarch64, as the kernel prints it).
    fn entry(state: &str, flags: &str) -> String {
        format!(
            "{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\n\
             offset 0\nmagic 7f454c460201010000000000000000000200b700\n\
             mask ffffffffffffff00fffffffffffffffffeffffff\n"
        )
    }

    fn arm64_error(dir: &Path) -> String {
        check_in(dir, &platform("arm64"), &platform("amd64"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_foreign_platform_needs_an_enabled_qemu_handler() {
        let d = tempfile::tempdir().unwrap();
        let err = arm64_error(d.path());
        assert!(
            err.contains("qemu-user-static") && err.contains("not mounted"),
            "{err}"
        );
        std::fs::write(d.path().join("status"), "disabled\n").unwrap();
        let err = arm64_error(d.path());
        assert!(err.contains("binfmt_misc is disabled"), "{err}");
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        let err = arm64_error(d.path());
        assert!(
            err.contains("qemu-user-static") && err.contains("no handler for aarch64"),
            "{err}"
        );
        std::fs::write(d.path().join("qemu-aarch64"), entry("disabled", "POF")).unwrap();
        let err = arm64_error(d.path());
        assert!(
            err.contains("qemu-user-static") && err.contains("qemu-aarch64 is disabled"),
            "{err}"
        );
        std::fs::write(d.path().join("qemu-aarch64"), entry("enabled", "POF")).unwrap();
        assert!(check_in(d.path(), &platform("arm64"), &platform("amd64")).is_ok());
    }

    #[test]
    fn a_handler_without_fix_binary_is_refused_with_the_command_that_adds_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        std::fs::write(d.path().join("qemu-aarch64"), entry("enabled", "PO")).unwrap();
        let err = arm64_error(d.path());
        let dir = d.path().display();
        assert!(err.contains("lacks the F (fix-binary) flag"), "{err}");
        // The same entry with F: what /usr/lib/binfmt.d/qemu-aarch64.conf registers.
        let register = format!(
            "echo -1 > {dir}/qemu-aarch64; printf %s ':qemu-aarch64:M:0:\
             \\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\
             \\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\
             \\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:\
             POF' > {dir}/register"
        );
        assert!(err.contains(&register), "{err}\nwanted: {register}");
    }

    #[test]
    fn an_extension_handler_is_re_registered_as_one() {
        let h = Handler::parse(
            "/b/qemu-aarch64".into(),
            "qemu-aarch64".into(),
            "enabled\ninterpreter /q\nflags: \nextension .arm\n",
        );
        assert_eq!(
            h.fix_command(Path::new("/b")),
            "echo -1 > /b/qemu-aarch64; printf %s ':qemu-aarch64:E::arm::/q:F' > /b/register"
        );
    }
}
