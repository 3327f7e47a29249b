//! `--root` given as a relative path names one store for the whole build: the sandbox mounts
//! the store's layer directories after changing directory, so a path left relative would name
//! nothing there (a build with RUN used to fail with "store/layers/… must be an existing
//! absolute directory").

use crate::build_support::{bases_or_skip, context, kiln};

#[test]
fn a_relative_root_builds_with_run_and_is_the_same_store_afterwards() {
    let Some(bases) = bases_or_skip() else { return };
    if !crate::build_support::is_root() {
        println!("SKIPPED: needs root (chroot isolation with overlay)");
        return;
    }
    let dockerfile = format!(
        "FROM {}\nRUN echo one > /one\nRUN cat /one > /two\n",
        bases.busybox()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let cwd = tempfile::tempdir().unwrap();
    let out = kiln(&cwd.path().join("unused"))
        .env_remove("KILN_ROOT")
        .current_dir(cwd.path())
        .args(["--root", "rel/store", "build", "--progress", "plain"])
        .args(["-t", "localhost/relative-root:latest"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = kiln(&cwd.path().join("rel/store"))
        .arg("images")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(listing.contains("relative-root"), "{listing}");
}
