//! Helpers shared by the integration tests. Each test binary includes this with `mod common;`.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
