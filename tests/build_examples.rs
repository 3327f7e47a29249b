//! `kiln build` of the example projects with RUN steps, FROM a base image that kiln pulls from a
//! loopback registry; the images run under podman and print what buildah's builds print
//! (`testdata/examples/*/expected-output`, recorded with buildah + podman).

mod common;
mod registry_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use registry_support::TestRegistry;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Root runs steps in chroot isolation; podman and the base-image script need root too.
fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        Some("needs root (base-images.sh, podman)")
    } else if !(have("podman") && have("skopeo")) {
        Some("needs podman and skopeo")
    } else {
        None
    }
}

/// The busybox base pushed to `registry` as `<registry>/kiln-test/busybox:latest`.
fn push_bases(registry: &str) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("base-images");
    let status = Command::new("bash")
        .arg(common::repo_root().join("tests/scripts/base-images.sh"))
        .arg(&out)
        .args(["--only", "busybox", "--push", registry])
        .status()
        .unwrap();
    assert!(status.success(), "base-images.sh failed");
}

/// A lowercase scratch dir: podman names `oci:` images after their path.
fn lowercase_tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-")
        .rand_bytes(0)
        .suffix(&format!("{}-{name}", std::process::id()))
        .tempdir()
        .unwrap()
}

fn kiln_build(root: &Path, registry: &str, example: &Path, layout: &Path) -> std::process::Output {
    Command::cargo_bin("kiln")
        .unwrap()
        .env("KILN_ROOT", root)
        .args(["build", "-t", "example"])
        .arg(format!("--build-arg=BASE={registry}/kiln-test"))
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(example)
        .output()
        .unwrap()
}

fn podman_run(tmp: &Path, layout: &Path) -> String {
    let out = common::podman()
        .arg("--root")
        .arg(tmp.join("podman-root"))
        .arg("--runroot")
        .arg(tmp.join("podman-run"))
        .args(["run", "--rm", "--network", "none"])
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn examples_with_run_steps_build_from_a_pulled_base_and_run_like_buildahs() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = TestRegistry::start("plain");
    push_bases(&registry.addr);
    for name in ["shell-app", "multi-stage"] {
        let tmp = lowercase_tempdir(name);
        let layout = tmp.path().join("layout");
        let example = common::repo_root().join("testdata/examples").join(name);
        let out = kiln_build(&tmp.path().join("store"), &registry.addr, &example, &layout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("pulling "),
            "{name}: the base should have been pulled: {stderr}"
        );
        let expected = std::fs::read_to_string(example.join("expected-output")).unwrap();
        assert_eq!(podman_run(tmp.path(), &layout), expected, "{name}");
    }
}

#[test]
fn a_failing_run_names_the_line_the_exit_code_and_its_last_output() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = TestRegistry::start("plain");
    push_bases(&registry.addr);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let dockerfile = format!(
        "FROM {}/kiln-test/busybox:latest\nRUN echo first line && echo boom >&2 && exit 3\n",
        registry.addr
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = kiln_build(
        &tmp.path().join("store"),
        &registry.addr,
        &ctx,
        &tmp.path().join("out"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "Dockerfile:2:1: RUN echo first line && echo boom >&2 && exit 3 exited with code 3"
        ),
        "{err}"
    );
    assert!(err.contains("    boom"), "{err}");
    // Nothing half-built is named, and no RUN scratch dir is left in the store.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("store"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn build_push_sends_every_tag_and_writes_the_manifest_digest() {
    if !(have("skopeo") && Path::new("/usr/bin/docker-registry").exists()) {
        println!("SKIPPED: needs skopeo and docker-registry");
        return;
    }
    let registry = TestRegistry::start("plain");
    let tmp = tempfile::tempdir().unwrap();
    let digest_file = tmp.path().join("digest");
    let (v1, latest) = (
        format!("{}/test/hello:v1", registry.addr),
        format!("{}/test/hello:latest", registry.addr),
    );
    let out = Command::cargo_bin("kiln")
        .unwrap()
        .env("KILN_ROOT", tmp.path().join("store"))
        .args([
            "build",
            "-q",
            "-t",
            &v1,
            "-t",
            &latest,
            "--push",
            "--digest-file",
        ])
        .arg(&digest_file)
        .arg(common::repo_root().join("testdata/examples/hello"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    for name in [&v1, &latest] {
        let inspect = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{name}"))
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(v["Digest"], pushed.as_str(), "{name}");
    }
}
