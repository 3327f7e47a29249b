//! Helpers shared by the integration tests. Each test binary (`tests/<group>/main.rs`) includes
//! this with `#[path = "../common/mod.rs"] mod common;`.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The name libtest knows a test of this binary by (`feature::test`), to re-run the binary on
/// that one test (`--exact NAME --ignored`): `module` is the caller's `module_path!()`, which
/// starts with the binary's crate name.
pub fn test_name(module: &str, test: &str) -> String {
    match module.split_once("::") {
        Some((_binary, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    }
}

/// The shared conformance vectors (`../shared/conformance` beside the repository, or
/// `$KILN_CONFORMANCE_DIR`). When they are absent the caller must say it skipped: print the
/// returned reason and return, never pass silently.
pub fn conformance_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("KILN_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/conformance"));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "SKIPPED: conformance vectors not found at {} (set KILN_CONFORMANCE_DIR)",
            dir.display()
        ))
    }
}

/// A `podman` command on a machine made ready for it: the first call in a test binary runs
/// `tests/scripts/containers-config.sh` (runc with cgroupfs, ulimits within the hard limits,
/// overlay storage, device modes; see that script), which a fresh machine needs before podman
/// can run a container. Needs root, like every test that runs podman.
pub fn podman() -> std::process::Command {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("tests/scripts/containers-config.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run tests/scripts/containers-config.sh");
        assert!(
            status.success(),
            "tests/scripts/containers-config.sh failed"
        );
    });
    std::process::Command::new("podman")
}
