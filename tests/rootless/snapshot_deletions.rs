//! Deleted files stay deleted (issue 13.1), end to end through `kiln build`: a file removed by
//! one RUN is gone for the next RUN (`ls`), and a later `chmod -R` does not write it back into
//! a layer; a base image pulled from a registry whose layer holds a whiteout and an opaque
//! directory shows neither the deleted file nor the hidden directory's old content to RUN.
//! In chroot mode (root, overlay with `trusted.` xattrs), rootless (the unprivileged test user,
//! `userxattr` overlay, layers unpacked as root of its id map) and the copy fallback of both
//! (`KILN_SANDBOX_FORCE=no-overlay`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::build_support::{
    bases, file_content, file_tree, missing, missing_for_bases, read_layout,
};

const TOPSECRET: &str = r#"FROM {BUSYBOX}
RUN mkdir /d && echo TOPSECRET > /d/secret && echo kept > /d/kept
RUN rm /d/secret
RUN ls /d > /listing
RUN chmod -R go-w /d
"#;

/// A base image whose last layer deletes `/gone` (whiteout) and replaces `/o` (opaque).
const BASE: &str = r#"FROM {BUSYBOX}
RUN mkdir -p /o/sub && echo old > /o/sub/f && echo old > /o/lowerfile && echo x > /gone
RUN rm /gone && rm -rf /o && mkdir /o && echo new > /o/newfile
"#;

const ON_BASE: &str = r#"FROM {BASE}
RUN ls -A / > /root-listing && ls -A /o > /o-listing && test ! -e /gone && test ! -e /o/sub
"#;

/// How kiln is run: as root with extra environment, or as the unprivileged test user.
#[derive(Clone, Copy)]
enum Mode {
    Chroot,
    CopyFallback,
    Rootless,
    RootlessCopyFallback,
}

impl Mode {
    fn kiln(self, store: &Path) -> Command {
        let mut cmd = match self {
            Mode::Chroot | Mode::CopyFallback => crate::build_support::kiln(store),
            Mode::Rootless | Mode::RootlessCopyFallback => {
                crate::sandbox_support::kiln_as_test_user(store)
            }
        };
        if self.copy_fallback() {
            cmd.env("KILN_SANDBOX_FORCE", "no-overlay");
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn copy_fallback(self) -> bool {
        matches!(self, Mode::CopyFallback | Mode::RootlessCopyFallback)
    }

    fn rootless(self) -> bool {
        matches!(self, Mode::Rootless | Mode::RootlessCopyFallback)
    }
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds `dockerfile` in `work/<name>` into the OCI layout `work/<name>/layout`, tagged `name`.
fn build(
    mode: Mode,
    work: &Path,
    name: &str,
    dockerfile: &str,
) -> crate::build_support::LayoutImage {
    let ctx = work.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    crate::sandbox_support::runner().give(work);
    let layout = ctx.join("layout");
    let mut cmd = mode.kiln(&work.join("store"));
    cmd.args(["build", "--progress", "plain", "-t", name]);
    if !mode.rootless() {
        cmd.args(["--isolation", "chroot"]);
    }
    cmd.arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(&ctx);
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if mode.copy_fallback() {
        assert!(stderr.contains("copy of their root"), "{stderr}");
    }
    read_layout(&layout, "latest")
}

/// The uncompressed bytes of a (gzip) layer blob.
fn layer_bytes(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn layer_paths(path: &Path) -> Vec<String> {
    let bytes = layer_bytes(path);
    let mut a = tar::Archive::new(&bytes[..]);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn check_mode(mode: Mode) {
    let work = crate::sandbox_support::runner().tempdir();
    let busybox = bases().busybox();

    // A file deleted by one RUN is not seen by the next ones, nor written back.
    let image = build(
        mode,
        work.path(),
        "topsecret",
        &TOPSECRET.replace("{BUSYBOX}", &busybox),
    );
    assert_eq!(image.layers.len(), 5, "busybox + four RUN layers");
    assert_eq!(
        file_content(&image, "listing").as_deref(),
        Some(&b"kept\n"[..]),
        "RUN ls saw the deleted file"
    );
    assert!(!file_tree(&image).contains_key("d/secret"));
    for (i, layer) in image.layers.iter().enumerate().skip(2) {
        let paths = layer_paths(layer);
        assert!(
            !paths
                .iter()
                .any(|p| p.trim_start_matches("./") == "d/secret"),
            "layer {i} holds d/secret: {paths:?}"
        );
        assert!(
            !contains(&layer_bytes(layer), b"TOPSECRET"),
            "layer {i} holds TOPSECRET"
        );
    }

    // A base image with a whiteout and an opaque directory, pushed and pulled back.
    let based = build(
        mode,
        work.path(),
        "deletions-base",
        &BASE.replace("{BUSYBOX}", &busybox),
    );
    let last = layer_paths(based.layers.last().unwrap());
    assert!(last.iter().any(|p| p.ends_with(".wh.gone")), "{last:?}");
    assert!(
        last.iter().any(|p| p.ends_with("o/.wh..wh..opq")),
        "{last:?}"
    );
    let tag = match mode {
        Mode::Chroot => "chroot",
        Mode::CopyFallback => "fallback",
        Mode::Rootless => "rootless",
        Mode::RootlessCopyFallback => "rootless-fallback",
    };
    let target = format!("{}/deletions/base:{tag}", bases().addr());
    let mut push = mode.kiln(&work.path().join("store"));
    push.args(["push", "-q", "deletions-base", &target]);
    run(push);

    let fresh = crate::sandbox_support::runner().tempdir();
    let image = build(
        mode,
        fresh.path(),
        "on-base",
        &ON_BASE.replace("{BASE}", &target),
    );
    let listing = String::from_utf8(file_content(&image, "o-listing").unwrap()).unwrap();
    assert_eq!(
        listing, "newfile\n",
        "the opaque dir let lower content through"
    );
    let root = String::from_utf8(file_content(&image, "root-listing").unwrap()).unwrap();
    assert!(!root.lines().any(|l| l == "gone"), "{root}");
}

fn root_and_bases() -> bool {
    if let Some(why) = missing_for_bases().or_else(|| missing(&["setpriv"])) {
        println!("{why}");
        return false;
    }
    true
}

#[test]
fn deleted_files_stay_deleted_in_chroot_mode() {
    if root_and_bases() {
        check_mode(Mode::Chroot);
    }
}

#[test]
fn deleted_files_stay_deleted_with_the_copy_fallback() {
    if root_and_bases() {
        check_mode(Mode::CopyFallback);
    }
}

#[test]
fn deleted_files_stay_deleted_in_rootless_mode() {
    if !root_and_bases() {
        return;
    }
    if let Some(why) = missing(&["newuidmap"]) {
        println!("{why}");
        return;
    }
    check_mode(Mode::Rootless);
}

#[test]
fn deleted_files_stay_deleted_with_the_rootless_copy_fallback() {
    if !root_and_bases() {
        return;
    }
    if let Some(why) = missing(&["newuidmap"]) {
        println!("{why}");
        return;
    }
    check_mode(Mode::RootlessCopyFallback);
}
