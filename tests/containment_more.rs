//! Containment gaps closed after the first round (issue 12): each test feeds kiln a hostile
//! input that the earlier code let through.
//!
//! - The Dockerfile and the ignore files, when inside the context, are read with the context
//!   as `/`: a symlink to a host file reads nothing of the host (and shows nothing of it).

mod build_support;
mod common;
mod registry_support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use build_support::{failed, kiln, kiln_build, succeeded};

/// A host file outside every context whose text is a hostile Dockerfile and ignore file:
/// read, its first line is a parse error that quotes it.
fn host_secret(dir: &Path) -> (std::path::PathBuf, String) {
    let secret = format!("KILN-HOST-SECRET-{}", std::process::id());
    let path = dir.join("shadow");
    fs::write(&path, format!("[{secret}\n")).unwrap();
    (path, secret)
}

#[test]
fn a_dockerfile_symlinked_out_of_the_context_is_not_read() {
    let host = tempfile::tempdir().unwrap();
    let (secret_file, secret) = host_secret(host.path());
    let ctx = tempfile::tempdir().unwrap();
    symlink(&secret_file, ctx.path().join("Dockerfile")).unwrap();
    let work = tempfile::tempdir().unwrap();
    for cmd in ["plan", "build"] {
        let out = kiln(work.path())
            .arg(cmd)
            .arg(ctx.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = failed(&out);
        let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
        assert!(
            !all.contains(&secret),
            "kiln {cmd} read the host file:\n{all}"
        );
        assert!(err.contains("Dockerfile"), "kiln {cmd}: {err}");
    }
    // Named with -f from outside the context, the same file is the user's choice: read.
    let out = kiln(work.path())
        .args(["plan", "-f"])
        .arg(&secret_file)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&secret));
}

#[test]
fn an_ignore_file_symlinked_out_of_the_context_is_not_read() {
    let host = tempfile::tempdir().unwrap();
    let (secret_file, secret) = host_secret(host.path());
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    fs::write(ctx.path().join("a"), "a").unwrap();
    for name in [
        ".dockerignore",
        ".containerignore",
        "Dockerfile.dockerignore",
    ] {
        symlink(&secret_file, ctx.path().join(name)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let out = kiln_build(work.path(), &[], ctx.path());
    let err = succeeded(&out);
    assert!(!err.contains(&secret), "{err}");
}
