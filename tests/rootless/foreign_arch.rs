//! `kiln build --platform linux/arm64` with RUN steps on an amd64 machine, through binfmt_misc
//! and Debian's qemu-user-static (`tests/scripts/binfmt.sh` installs it and registers
//! qemu-aarch64 with the F flag): as root (chroot isolation, and its copy and plain-chroot
//! fallbacks) and as `kilntest` (rootless, and its copy fallback). Each step reports
//! `uname -m` (`aarch64` only when emulated) and, where it has a /proc, the containment it runs
//! under: the same capabilities, no_new_privs and seccomp filter as a native step, with qemu
//! (an x86_64 program) working under the filter. podman runs the pushed image. The errors
//! without a handler, or with one that lacks F, are checked in a private binfmt_misc instance
//! of a user namespace (Linux 6.7+), so the machine's handlers stay untouched.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::build_support::{
    Bases, kiln, kiln_build, missing, missing_for_bases, read_layout, run_ok, succeeded,
};

/// What containers-common gives a root step (the CapEff line of /proc/self/status).
const DEFAULT_CAPS: &str = "00000000800405fb";

/// Why these tests cannot run here: they need root (binfmt.sh, the bases, kilntest), an amd64
/// host (on arm64 the steps would run natively), podman, setpriv and newuidmap.
fn skip_reason() -> Option<String> {
    if std::env::consts::ARCH != "x86_64" {
        return Some(format!(
            "SKIPPED: emulates arm64 on x86_64; this machine is {}",
            std::env::consts::ARCH
        ));
    }
    missing_for_bases().or_else(|| missing(&["podman", "setpriv", "newuidmap", "unshare"]))
}

/// qemu-aarch64 registered with F, and the registry with the arm64 bases; None after printing
/// why the test is skipped.
fn emulation_or_skip() -> Option<&'static Bases> {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return None;
    }
    crate::build_support::arm64_emulation_or_skip()
}

/// The arm64 step: its machine into /arch, its containment on the output, and a pipeline
/// (fork, exec, pipes under qemu and the seccomp filter). Plain chroot has no /proc.
fn dockerfile(base: &str, with_proc: bool) -> String {
    let status = if with_proc {
        " && grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"
    } else {
        ""
    };
    format!(
        "FROM {base}\nRUN uname -m > /arch{status} && echo emulated | tr a-z A-Z\n\
         CMD [\"cat\", \"/arch\"]\n"
    )
}

/// The build's output: /arch is `aarch64`, the config says linux/arm64, the step printed its
/// pipeline's output and (with a /proc) runs with the default capabilities, no_new_privs and
/// the seccomp filter.
fn assert_emulated(layout: &Path, stderr: &str, with_proc: bool) {
    let image = read_layout(layout, "latest");
    assert_eq!(
        crate::build_support::file_content(&image, "arch").as_deref(),
        Some(&b"aarch64\n"[..]),
        "{stderr}"
    );
    assert_eq!(image.config["architecture"], "arm64", "{}", image.config);
    assert_eq!(image.config["os"], "linux", "{}", image.config);
    assert!(stderr.contains("EMULATED"), "{stderr}");
    if with_proc {
        for line in [
            format!("CapEff:\t{DEFAULT_CAPS}"),
            "NoNewPrivs:\t1".into(),
            "Seccomp:\t2".into(),
        ] {
            assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
        }
    }
}

/// Builds [`dockerfile`] FROM `base` as root with `KILN_SANDBOX_FORCE=force` into an OCI
/// layout and checks it; returns the build's stderr.
fn root_build(base: &str, force: &str, with_proc: bool) -> String {
    let t = tempfile::tempdir().unwrap();
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile(base, with_proc))]);
    let layout = t.path().join("layout");
    let out = kiln(&t.path().join("store"))
        .env("KILN_SANDBOX_FORCE", force)
        .args(["build", "--progress=plain", "--platform", "linux/arm64"])
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(ctx.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = succeeded(&out);
    assert_emulated(&layout, &stderr, with_proc);
    stderr
}

#[test]
fn root_runs_arm64_steps_in_chroot_isolation_from_a_multi_arch_index() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let err = root_build(&bases.busybox_multiarch(), "", true);
    assert!(err.contains("chroot isolation"), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn root_runs_arm64_steps_in_the_copy_fallback() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let err = root_build(&bases.busybox_arm64(), "no-overlay", true);
    assert!(err.contains("overlay disabled"), "{err}");
}

#[test]
fn root_runs_arm64_steps_in_plain_chroot() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let err = root_build(&bases.busybox_arm64(), "no-mountns", false);
    assert!(err.contains("plain chroot"), "{err}");
}

/// `kilntest` builds [`dockerfile`] FROM the arm64 busybox (rootless) with
/// `KILN_SANDBOX_FORCE=force`, and the result is checked.
fn rootless_build(bases: &Bases, force: &str) -> String {
    let runner = crate::sandbox_support::runner();
    let tmp = runner.tempdir();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        dockerfile(&bases.busybox_arm64(), true),
    )
    .unwrap();
    runner.give(tmp.path());
    let layout = tmp.path().join("layout");
    let out = crate::sandbox_support::kiln_as_test_user(&tmp.path().join("store"))
        .args(["build", "--progress=plain", "--platform", "linux/arm64"])
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(&ctx)
        .env("KILN_SANDBOX_FORCE", force)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = succeeded(&out);
    assert!(stderr.contains("rootless isolation"), "{stderr}");
    assert_emulated(&layout, &stderr, true);
    stderr
}

#[test]
fn rootless_runs_arm64_steps() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    rootless_build(bases, "");
}

#[test]
fn rootless_runs_arm64_steps_in_the_copy_fallback() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let err = rootless_build(bases, "no-overlay");
    assert!(err.contains("overlay disabled"), "{err}");
}

#[test]
fn podman_runs_the_pushed_arm64_image() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let ctx = crate::build_support::context(&[(
        "Dockerfile",
        &dockerfile(&bases.busybox_multiarch(), true),
    )]);
    let target = format!("{}/foreign/arch:latest", bases.addr());
    let out = kiln_build(
        &t.path().join("store"),
        &["--platform", "linux/arm64", "--push", "-t", &target],
        ctx.path(),
    );
    succeeded(&out);
    let run = run_ok(
        crate::common::podman()
            .arg("--root")
            .arg(t.path().join("podman-root"))
            .arg("--runroot")
            .arg(t.path().join("podman-run"))
            .args(["run", "--rm", "--network", "none", "--tls-verify=false"])
            .args(["--platform", "linux/arm64"])
            .arg(&target),
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "aarch64\n");
}

/// Runs `kiln build --platform linux/arm64` of [`dockerfile`] (as root of a new user
/// namespace) with a fresh binfmt_misc instance mounted on /proc/sys/fs/binfmt_misc, after
/// `setup` (shell) ran there; then `after` runs, with `$err` the build's stderr file. None
/// (after printing why) when the kernel has no binfmt_misc per user namespace (before 6.7).
fn in_private_binfmt(bases: &Bases, setup: &str, after: &str) -> Option<(Output, String)> {
    let t = tempfile::tempdir().unwrap();
    let ctx =
        crate::build_support::context(&[("Dockerfile", &dockerfile(&bases.busybox_arm64(), true))]);
    let script = format!(
        "set -u; binfmt=/proc/sys/fs/binfmt_misc; \
         mount -t binfmt_misc binfmt_misc $binfmt || {{ echo no-private-binfmt; exit 0; }}; \
         {setup}; \
         err=$2/err; KILN_ROOT=$2/store \"$1\" build --platform linux/arm64 -t x \"$3\" 2>$err; \
         echo \"build exit $?\"; {after}"
    );
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg(t.path())
        .arg(ctx.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.contains("no-private-binfmt") {
        println!("SKIPPED: binfmt_misc cannot be mounted in a user namespace here (Linux < 6.7)");
        return None;
    }
    assert!(
        stdout.contains("build exit 1"),
        "the build must fail: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = std::fs::read_to_string(t.path().join("err")).unwrap();
    Some((out, err))
}

#[test]
fn without_a_handler_the_error_names_qemu_user_static() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let Some((_, err)) = in_private_binfmt(bases, "true", "true") else {
        return;
    };
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("apt-get install qemu-user-static"), "{err}");
    assert!(err.contains("no handler for aarch64"), "{err}");
}

/// Debian's qemu-aarch64 entry (/usr/lib/binfmt.d/qemu-aarch64.conf) without the F flag, as
/// a hand-made or old registration has it.
const WITHOUT_F: &str = r":qemu-aarch64:M:0:\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:PO";

#[test]
fn a_handler_without_fix_binary_is_refused_with_a_command_that_fixes_it() {
    let Some(bases) = emulation_or_skip() else {
        return;
    };
    let setup = format!("printf %s '{WITHOUT_F}' > $binfmt/register");
    // The command the error gives, run as it is, must leave the handler with F.
    let after = "fix=$(sed -n 's/.*register it again with F, as root: //p' $err); \
                 sh -c \"$fix\" && grep '^flags:' $binfmt/qemu-aarch64";
    let Some((out, err)) = in_private_binfmt(bases, &setup, after) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("lacks the F (fix-binary) flag"), "{err}");
    assert!(
        stdout.lines().any(|l| l == "flags: POF"),
        "the fix did not register F: {stdout}{}\n{err}",
        String::from_utf8_lossy(&out.stderr)
    );
}
