//! `kiln build` end to end, FROM the busybox base in a loopback registry: multi-stage with
//! `--target`, `.dockerignore`, and a Dockerfile on stdin (`kiln build -`). Its helpers also
//! serve `heredoc.rs`.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::build_support::{LayoutImage, bases_or_skip, kiln_build, succeeded};

/// Builds `ctx` into an OCI layout in `tmp`; returns the image and the build's stderr.
pub(super) fn build(tmp: &Path, ctx: &Path, extra: &[&str]) -> (LayoutImage, String) {
    let layout = tmp.join(format!("out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&layout);
    let dest = format!("--output=type=oci,dest={}", layout.display());
    let mut args = vec!["-t", "features", "--progress=plain", dest.as_str()];
    args.extend_from_slice(extra);
    let stderr = succeeded(&kiln_build(&tmp.join("store"), &args, ctx));
    (crate::build_support::read_layout(&layout, "latest"), stderr)
}

pub(super) fn text(image: &LayoutImage, path: &str) -> Option<String> {
    crate::build_support::file_content(image, path).map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn target_builds_that_stage_and_only_the_stages_it_needs() {
    let Some(bases) = bases_or_skip() else { return };
    let busybox = bases.busybox();
    let dockerfile = format!(
        "FROM {busybox} AS base\nRUN echo base > /base\n\
         FROM {busybox} AS unrelated\nRUN echo unrelated-marker > /unrelated\n\
         FROM base AS build\nRUN echo built > /built\n\
         FROM {busybox} AS final\nCOPY --from=build /built /built\nRUN echo final-marker > /final\n"
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let tmp = tempfile::tempdir().unwrap();
    let (image, stderr) = build(tmp.path(), ctx.path(), &["--target", "build"]);
    assert_eq!(text(&image, "base").as_deref(), Some("base\n"));
    assert_eq!(text(&image, "built").as_deref(), Some("built\n"));
    assert!(
        text(&image, "final").is_none(),
        "the image is the target stage"
    );
    let positions: Vec<String> = crate::build_support::steps(&stderr)
        .into_iter()
        .map(|s| s.position)
        .collect();
    assert_eq!(positions, ["base 1/1", "build 1/1"], "{stderr}");
    assert!(!stderr.contains("final-marker"), "{stderr}");
    assert!(!stderr.contains("unrelated-marker"), "{stderr}");

    // Without --target the last stage is the image, and it needs `unrelated` no more than before.
    let (last, stderr) = build(tmp.path(), ctx.path(), &[]);
    assert_eq!(text(&last, "final").as_deref(), Some("final-marker\n"));
    assert_eq!(text(&last, "built").as_deref(), Some("built\n"));
    assert!(text(&last, "base").is_none());
    assert!(!stderr.contains("[unrelated "), "{stderr}");
}

#[test]
fn an_unknown_target_is_refused_with_the_stage_names() {
    let Some(bases) = bases_or_skip() else { return };
    let dockerfile = format!(
        "FROM {} AS build\nRUN true\nFROM scratch\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let out = kiln_build(store.path(), &["-t", "x", "--target", "biuld"], ctx.path());
    let err = crate::build_support::failed(&out);
    assert!(err.contains("biuld") && err.contains("build"), "{err}");
}

#[test]
fn dockerignored_files_are_left_out_and_do_not_bust_the_cache() {
    let Some(bases) = bases_or_skip() else { return };
    let dockerfile = format!(
        "FROM {}\nCOPY . /app\nRUN ls -R /app > /listing\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[
        ("Dockerfile", &dockerfile),
        (".dockerignore", "secret.txt\n*.log\n!keep.log\nbuild/\n"),
        ("app.txt", "app"),
        ("secret.txt", "s3cr3t"),
        ("debug.log", "noise"),
        ("keep.log", "kept"),
        ("sub/notes.log", "only top-level *.log is ignored"),
        ("build/out.bin", "artifact"),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = build(tmp.path(), ctx.path(), &[]);
    let tree = crate::build_support::file_tree(&image);
    for present in [
        "app/app.txt",
        "app/keep.log",
        "app/sub/notes.log",
        "app/Dockerfile",
        "app/.dockerignore",
    ] {
        assert!(tree.contains_key(present), "{present} missing");
    }
    for absent in ["app/secret.txt", "app/debug.log", "app/build"] {
        assert!(!tree.contains_key(absent), "{absent} must be ignored");
    }
    // Changing, adding or removing ignored files changes nothing.
    std::fs::write(ctx.path().join("secret.txt"), "rotated").unwrap();
    std::fs::write(ctx.path().join("other.log"), "more noise").unwrap();
    std::fs::remove_file(ctx.path().join("build/out.bin")).unwrap();
    let (again, stderr) = build(tmp.path(), ctx.path(), &[]);
    assert!(!stderr.contains("cache miss"), "{stderr}");
    assert_eq!(again.manifest_digest, image.manifest_digest);
    // A file that is not ignored does.
    std::fs::write(ctx.path().join("keep.log"), "changed").unwrap();
    let (_, stderr) = build(tmp.path(), ctx.path(), &[]);
    assert!(
        stderr.contains("COPY . /app: cache miss, 1 file changed (keep.log)"),
        "{stderr}"
    );
}

/// `kiln build -` reads the Dockerfile from stdin, with no context.
fn build_from_stdin(store: &Path, dockerfile: &str, layout: &Path) -> std::process::Output {
    let mut child = crate::build_support::kiln(store)
        .args(["build", "-t", "stdin", "--progress=plain"])
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_dockerfile_on_stdin_builds_run_steps_and_refuses_copy_clearly() {
    let Some(bases) = bases_or_skip() else { return };
    let busybox = bases.busybox();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("out");
    let ok = build_from_stdin(
        &tmp.path().join("store"),
        &format!(
            "FROM {busybox}\nRUN echo from stdin > /stdin.txt\nCMD [\"cat\", \"/stdin.txt\"]\n"
        ),
        &layout,
    );
    succeeded(&ok);
    let image = crate::build_support::read_layout(&layout, "latest");
    assert_eq!(text(&image, "stdin.txt").as_deref(), Some("from stdin\n"));
    assert_eq!(
        image.config["config"]["Cmd"],
        serde_json::json!(["cat", "/stdin.txt"])
    );

    let refused = build_from_stdin(
        &tmp.path().join("store"),
        &format!("FROM {busybox}\nCOPY app.txt /app.txt\n"),
        &tmp.path().join("refused"),
    );
    let err = crate::build_support::failed(&refused);
    assert!(
        err.contains(
            "<stdin>:2:1: COPY needs a build context, but the Dockerfile came from stdin without one"
        ),
        "{err}"
    );
    assert!(!tmp.path().join("refused").exists(), "nothing half-written");
}
