//! Every read a build makes from the context, a stage's files or a bind mount's source
//! stays inside that tree, whatever symlinks or `..` it meets: a symlink is resolved with
//! the tree as `/` (as Docker does), never on the host. Each test plants a canary file on
//! the host, outside the context, and checks that its content is in no layer of the result.
//!
//! The COPY tests need nothing but kiln; the RUN --mount and ONBUILD ones need the busybox
//! base in the loopback registry (root, skopeo, docker-registry) and print SKIPPED without.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::build_support::{
    bases_or_skip, failed, file_content, file_tree, kiln_build, layers_contain, raw_entries,
    read_layout, succeeded,
};

/// A host directory outside every context, holding `secret` with a content found nowhere else.
struct Canary {
    dir: tempfile::TempDir,
    content: String,
}

impl Canary {
    fn plant() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        let content = format!("KILN-HOST-CANARY-{}-{}", std::process::id(), line!());
        fs::write(dir.path().join("secret"), &content).unwrap();
        Canary { dir, content }
    }

    /// The canary directory's absolute host path.
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the image in `layout` holds the canary's content in any layer.
    fn leaked_into(&self, layout: &Path) -> bool {
        layers_contain(&read_layout(layout, "latest"), self.content.as_bytes())
    }
}

/// `..` enough times to climb from any context to the host's `/`.
fn way_up() -> String {
    "../".repeat(24)
}

/// A context holding `files` and the Dockerfile.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = crate::build_support::context(files);
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// `kiln build` of `ctx` into the OCI layout `<work>/layout`, tagged `latest`.
fn build(work: &Path, ctx: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let layout = work.join("layout");
    let _ = fs::remove_dir_all(&layout);
    let output = format!("--output=type=oci,dest={}", layout.display());
    let mut args = vec!["--progress", "plain", "-t", "inroot:latest", &output];
    args.extend_from_slice(extra);
    (kiln_build(&work.join("store"), &args, ctx), layout)
}

#[test]
fn copy_through_a_context_symlink_never_reads_the_host() {
    let canary = Canary::plant();
    let work = tempfile::tempdir().unwrap();
    let host_dir = canary.dir().to_str().unwrap().to_string();
    for (link, target) in [
        ("abs", host_dir.clone()),
        (
            "up",
            format!("{}{}", way_up(), host_dir.trim_start_matches('/')),
        ),
    ] {
        for source in [format!("{link}/secret"), link.to_string()] {
            let ctx = context(&format!("FROM scratch\nCOPY {source} /x\n"), &[]);
            symlink(&target, ctx.path().join(link)).unwrap();
            let (out, layout) = build(work.path(), ctx.path(), &[]);
            // Docker resolves the link inside the context, where the host path does not exist.
            let err = failed(&out);
            assert!(err.contains("not found"), "COPY {source}: {err}");
            assert!(err.contains("Dockerfile:2"), "COPY {source}: {err}");
            assert!(!layout.exists() || !canary.leaked_into(&layout));
        }
    }
}

#[test]
fn a_context_symlink_is_resolved_with_the_context_as_root() {
    let canary = Canary::plant();
    let work = tempfile::tempdir().unwrap();
    let ctx = context(
        "FROM scratch\nCOPY abs/f /via-abs\nCOPY up/f /via-up\nCOPY . /ctx/\n",
        &[("data/f", "inside\n")],
    );
    symlink("/data", ctx.path().join("abs")).unwrap();
    symlink(format!("{}data", way_up()), ctx.path().join("up")).unwrap();
    symlink(canary.dir(), ctx.path().join("host")).unwrap();
    let (out, layout) = build(work.path(), ctx.path(), &[]);
    succeeded(&out);
    let img = read_layout(&layout, "latest");
    assert_eq!(
        file_content(&img, "via-abs").as_deref(),
        Some(&b"inside\n"[..])
    );
    assert_eq!(
        file_content(&img, "via-up").as_deref(),
        Some(&b"inside\n"[..])
    );
    // Inside a copied directory a symlink is kept as it is, never followed.
    let tree = file_tree(&img);
    assert_eq!(
        tree["ctx/host"].kind,
        format!("symlink -> {}", canary.dir().display())
    );
    assert!(!canary.leaked_into(&layout));
}

/// A stage (made by COPY, so no base image is needed) with `/hostroot -> /`, an absolute
/// link `/bin/f -> /bin/f.1` and a linked folder `/sub -> /out/sub`, then `rest`.
fn stage_context(rest: &str) -> tempfile::TempDir {
    let files = [
        ("stage/bin/f.1", "f1\n"),
        ("stage/out/sub/foo", "foo\n"),
        ("stage/tmp/keep", "k\n"),
    ];
    let ctx = context(&format!("FROM scratch AS s\nCOPY stage/ /\n{rest}"), &files);
    symlink("/", ctx.path().join("stage/hostroot")).unwrap();
    symlink("/bin/f.1", ctx.path().join("stage/bin/f")).unwrap();
    symlink("/out/sub", ctx.path().join("stage/sub")).unwrap();
    ctx
}

#[test]
fn copy_from_a_stage_follows_its_symlinks_inside_the_stage() {
    let work = tempfile::tempdir().unwrap();
    // issue 15.4: an absolute link as the source, a linked folder in the middle of the path.
    let ctx = stage_context("FROM scratch\nCOPY --from=s /bin/f /bin/\nCOPY --from=s /sub/foo /\n");
    let (out, layout) = build(work.path(), ctx.path(), &[]);
    succeeded(&out);
    let img = read_layout(&layout, "latest");
    assert_eq!(file_content(&img, "bin/f").as_deref(), Some(&b"f1\n"[..]));
    assert_eq!(file_content(&img, "foo").as_deref(), Some(&b"foo\n"[..]));
}

#[test]
fn copy_from_a_stage_never_follows_its_links_on_the_host() {
    let canary = Canary::plant();
    let work = tempfile::tempdir().unwrap();
    // `/hostroot -> /` is the stage's root, not the host's.
    let secret = format!("/hostroot{}/secret", canary.dir().display());
    let ctx = stage_context(&format!("FROM scratch\nCOPY --from=s {secret} /x\n"));
    let (out, layout) = build(work.path(), ctx.path(), &[]);
    let err = failed(&out);
    assert!(
        err.contains("not found") && err.contains("Dockerfile:4"),
        "{err}"
    );
    assert!(!layout.exists() || !canary.leaked_into(&layout));
}

/// A RUN step that tries to read the canary through a bind mount of `source`.
fn steal_with_bind(source: &str, canary: &Canary, to: &str, rw: bool) -> String {
    format!(
        "RUN --mount=type=bind,source={source},target=/h{} cat /h{}/secret > /{to} 2>/dev/null; ls /h > /{to}-list; true\n",
        if rw { ",rw" } else { "" },
        canary.dir().display()
    )
}

#[test]
fn bind_mount_sources_are_cleaned_and_resolved_inside_the_context() {
    let Some(bases) = bases_or_skip() else { return };
    let canary = Canary::plant();
    let work = tempfile::tempdir().unwrap();
    let up = way_up();
    let dockerfile = format!(
        "FROM {}\n{}{}",
        bases.busybox(),
        steal_with_bind(&up, &canary, "ro", false),
        steal_with_bind(&up, &canary, "rw", true),
    );
    let ctx = context(&dockerfile, &[("marker", "m")]);
    let (out, layout) = build(work.path(), ctx.path(), &[]);
    succeeded(&out);
    assert!(!canary.leaked_into(&layout));
    // `source=../../..` is the context itself, as BuildKit cleans it against `/`.
    let img = read_layout(&layout, "latest");
    for list in ["ro-list", "rw-list"] {
        let listed = String::from_utf8(file_content(&img, list).unwrap()).unwrap();
        assert!(listed.contains("marker"), "{list}: {listed}");
    }

    // A source that is a symlink to a host directory resolves inside the context: missing.
    let dockerfile = format!(
        "FROM {}\n{}",
        bases.busybox(),
        steal_with_bind("link", &canary, "ro", false)
    );
    let ctx = context(&dockerfile, &[]);
    symlink(canary.dir(), ctx.path().join("link")).unwrap();
    let (out, layout) = build(work.path(), ctx.path(), &[]);
    let err = failed(&out);
    assert!(
        err.contains("not in the build context") && err.contains("Dockerfile:2"),
        "{err}"
    );
    assert!(!layout.exists() || !canary.leaked_into(&layout));
}

#[test]
fn an_onbuild_trigger_of_a_pulled_base_cannot_bind_the_builders_files() {
    let Some(bases) = bases_or_skip() else { return };
    let canary = Canary::plant();
    let work = tempfile::tempdir().unwrap();
    let evil = format!("{}/kiln-test/evil-onbuild:1", bases.addr());
    let base = context(
        &format!(
            "FROM {}\nONBUILD {}",
            bases.busybox(),
            steal_with_bind(&way_up(), &canary, "stolen", false)
        ),
        &[],
    );
    let out = kiln_build(
        &work.path().join("evil-store"),
        &["--progress", "plain", "--push", "-t", &evil],
        base.path(),
    );
    succeeded(&out);

    // The victim: a fresh store, so the base comes from the registry with its trigger.
    let victim = context(&format!("FROM {evil}\n"), &[("marker", "m")]);
    let (out, layout) = build(work.path(), victim.path(), &[]);
    succeeded(&out);
    let img = read_layout(&layout, "latest");
    let listed =
        String::from_utf8(file_content(&img, "stolen-list").expect("the trigger ran")).unwrap();
    assert!(listed.contains("marker"), "{listed}");
    assert!(!canary.leaked_into(&layout));
}

#[test]
fn names_that_are_not_utf8_are_copied_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let ctx = context("FROM scratch\nCOPY . /ctx/\nCOPY caf* /wild/\n", &[]);
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9");
    fs::create_dir(ctx.path().join(raw)).unwrap();
    fs::write(ctx.path().join(raw).join(raw), "bytes").unwrap();
    symlink(raw, ctx.path().join("link")).unwrap();
    let (out, layout) = build(work.path(), ctx.path(), &[]);
    succeeded(&out);
    let entries = raw_entries(&read_layout(&layout, "latest"));
    let find = |p: &[u8]| entries.iter().find(|(path, _)| path.as_slice() == p);
    assert_eq!(
        find(b"ctx/caf\xe9/caf\xe9").map(|(_, body)| body.as_slice()),
        Some(&b"bytes"[..]),
        "{:?}",
        entries
            .iter()
            .map(|(p, _)| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
    );
    assert!(find(b"ctx/caf\xe9/").is_some() || find(b"ctx/caf\xe9").is_some());
    assert_eq!(
        find(b"wild/caf\xe9").map(|(_, body)| body.as_slice()),
        Some(&b"bytes"[..])
    );
    // A symlink's target is bytes too.
    assert_eq!(
        find(b"ctx/link").map(|(_, target)| target.as_slice()),
        Some(&b"caf\xe9"[..])
    );
    // Nothing was replaced by U+FFFD or left in kiln's escaped form (both start with 0xef/0xf4).
    assert!(
        !entries
            .iter()
            .any(|(p, _)| p.contains(&0xef) || p.contains(&0xf4))
    );
}
