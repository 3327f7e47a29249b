//! `COPY --from` a stage reads the stage's unpacked layer dirs in the store, merged (issue
//! 13): a source spread over several layers, a deletion in an upper layer, a wildcard, a
//! symlink inside the stage and a hostile one to `/`, `--chown` and a hard link pair give
//! the same layers as root, as `kilntest` with a subordinate id range and as `kilntest`
//! without one (single id: every file of the store is the user's, so the owners come from
//! the layers' tar headers); and, but for that single-id case, no layer blob of the stage
//! is read: the COPYs work with the stage's blobs deleted from the store.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::build_support::{
    LayoutImage, file_content, file_tree, kiln, missing, missing_for_bases, read_layout, succeeded,
};

/// The stage (`gen`) spreads `/out/spread` over three RUNs and a COPY, the last RUN deleting
/// a file of an earlier one; `/escape -> /` tries to reach the host's `/etc/shadow`.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base} AS gen\n\
         RUN mkdir -p /out/spread /out/keep && echo 1 > /out/spread/one && echo a > /out/a.txt \
             && echo b > /out/b.txt && echo n > /out/c.dat\n\
         COPY --chown=5:6 --chmod=600 owned /out/spread/owned\n\
         COPY --chown=5:6 --chmod=700 private /out/private/\n\
         RUN echo 2 > /out/spread/two && echo gone > /out/spread/gone \
             && echo target > /out/keep/target && ln -s keep /out/inside \
             && echo stage-shadow > /etc/shadow && ln -s / /escape\n\
         RUN echo 3 > /out/spread/three && rm /out/spread/gone && echo h > /out/h1 \
             && ln /out/h1 /out/h2\n\
         FROM {base}\n\
         COPY marker /marker\n\
         COPY --from=gen /out/*.txt /wild/\n\
         COPY --from=gen /out/spread /spread\n\
         COPY --from=gen /out/inside/target /via-link\n\
         COPY --from=gen /escape/etc/shadow /shadow\n\
         COPY --from=gen --chown=7:8 /out/spread /chowned\n\
         COPY --from=gen /out/h1 /out/h2 /links/\n\
         COPY --from=gen /out/private /private\n"
    )
}

/// The number of `COPY --from` steps in [`dockerfile`]: the image's top layers.
const FROM_LAYERS: usize = 7;

fn skip_reason() -> Option<String> {
    missing_for_bases().or_else(|| missing(&["newuidmap", "setpriv"]))
}

/// Who builds: root, `kilntest` with its id range, `kilntest` as a single id.
#[derive(Debug, Clone, Copy)]
enum Builder {
    Root,
    Mapped,
    SingleId,
}

impl Builder {
    fn kiln(self, store: &Path) -> Command {
        let mut cmd = match self {
            Builder::Root => kiln(store),
            Builder::Mapped | Builder::SingleId => crate::sandbox_support::kiln_as_test_user(store),
        };
        if let Builder::SingleId = self {
            // A PATH without newuidmap: how a machine without the `uidmap` package looks.
            cmd.env("PATH", "/nonexistent");
        }
        cmd.env("SOURCE_DATE_EPOCH", "1600000000");
        cmd
    }
}

/// A context (owned by the builder) with the Dockerfile, `owned` and `marker`.
fn context_dir(dir: &Path, marker: &str) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let bases = crate::build_support::bases();
    std::fs::write(ctx.join("Dockerfile"), dockerfile(&bases.busybox())).unwrap();
    std::fs::write(ctx.join("owned"), "owned\n").unwrap();
    std::fs::create_dir_all(ctx.join("private/sub")).unwrap();
    std::fs::write(ctx.join("private/sub/secret"), "private\n").unwrap();
    std::fs::write(ctx.join("marker"), marker).unwrap();
    crate::sandbox_support::runner().give(dir);
    ctx
}

fn build(who: Builder, store: &Path, ctx: &Path, layout: &Path, target: Option<&str>) -> Output {
    let mut cmd = who.kiln(store);
    cmd.args(["build", "--progress", "plain"]);
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    cmd.arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(ctx)
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

fn diff_ids(image: &LayoutImage) -> Vec<String> {
    image.config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

/// The files the COPYs must have written, whoever built.
fn check_tree(image: &LayoutImage, who: Builder) {
    let tree = file_tree(image);
    let content = |p: &str| {
        String::from_utf8(file_content(image, p).unwrap_or_else(|| panic!("{who:?}: no {p}")))
            .unwrap()
    };
    let owner = |p: &str| (tree[p].uid, tree[p].gid);
    let has = |p: &str| tree.contains_key(p);
    // Wildcard: the two .txt files, not the .dat.
    assert_eq!(content("wild/a.txt"), "a\n");
    assert_eq!(content("wild/b.txt"), "b\n");
    assert!(!has("wild/c.dat"), "{who:?}");
    // A dir of four layers; the file the last RUN deleted is not copied.
    for (f, body) in [
        ("one", "1\n"),
        ("two", "2\n"),
        ("three", "3\n"),
        ("owned", "owned\n"),
    ] {
        assert_eq!(content(&format!("spread/{f}")), body, "{who:?}");
    }
    assert!(!has("spread/gone"), "{who:?}: a deleted file came back");
    assert_eq!(owner("spread/owned"), (5, 6), "{who:?}");
    assert_eq!(tree["spread/owned"].mode, 0o600, "{who:?}");
    // A file in a 0700 dir of another user of the image.
    assert_eq!(content("private/sub/secret"), "private\n", "{who:?}");
    assert_eq!(
        (owner("private/sub"), tree["private/sub"].mode),
        ((5, 6), 0o700)
    );
    assert_eq!(owner("spread/one"), (0, 0), "{who:?}");
    // --chown applies to every file and to the dir it goes into.
    for f in ["chowned", "chowned/one", "chowned/owned", "chowned/three"] {
        assert_eq!(owner(f), (7, 8), "{who:?}: {f}");
    }
    assert!(!has("chowned/gone"), "{who:?}");
    // A symlink inside the stage is followed inside it.
    assert_eq!(content("via-link"), "target\n");
    // `/escape -> /` is the stage's root: its /etc/shadow, never the host's.
    assert_eq!(content("shadow"), "stage-shadow\n", "{who:?}");
    // One file with two names stays one file.
    let links = [&tree["links/h1"].kind, &tree["links/h2"].kind];
    assert!(
        links.contains(&&"hardlink -> links/h1".to_string()) && links.contains(&&"file".into()),
        "{who:?}: {links:?}"
    );
}

#[test]
fn copy_from_reads_the_stages_layer_dirs_alike_for_root_and_rootless() {
    if let Some(why) = skip_reason() {
        return println!("{why}");
    }
    let mut layers = Vec::new();
    for who in [Builder::Root, Builder::Mapped, Builder::SingleId] {
        let dir = crate::sandbox_support::runner().tempdir();
        let ctx = context_dir(dir.path(), "1");
        let layout = dir.path().join("layout");
        let store = dir.path().join("store");
        let out = build(who, &store, &ctx, &layout, None);
        succeeded(&out);
        let image = read_layout(&layout, "latest");
        check_tree(&image, who);
        let ids = diff_ids(&image);
        layers.push((who, ids[ids.len() - FROM_LAYERS..].to_vec()));
    }
    let (_, root) = &layers[0];
    for (who, ids) in &layers[1..] {
        assert_eq!(
            ids, root,
            "{who:?}: the COPY --from layers differ from root's"
        );
    }
}

/// Under strace, a build opens no layer blob of the stage it copies from and makes no
/// scratch rootfs (`scratch/rootfs-*`): what main did to read a stage (unpacking every
/// blob into a temp dir) is gone. The stage's digests are known after the build (the same
/// store gives them again from the cache with `--target gen`).
#[test]
fn copy_from_opens_no_blob_of_the_stage_and_unpacks_nothing() {
    if let Some(why) = skip_reason().or_else(|| missing(&["strace"])) {
        return println!("{why}");
    }
    for who in [Builder::Root, Builder::Mapped, Builder::SingleId] {
        let dir = crate::sandbox_support::runner().tempdir();
        let store = dir.path().join("store");
        let ctx = context_dir(dir.path(), "1");
        let trace = dir.path().join("trace");
        let layout = dir.path().join("image");
        let out = traced(who.kiln(&store), &trace)
            .args(["build", "--progress", "plain"])
            .arg(format!("--output=type=oci,dest={}", layout.display()))
            .arg(&ctx)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        succeeded(&out);
        let image = read_layout(&layout, "latest");
        check_tree(&image, who);
        let gen_layout = dir.path().join("gen");
        succeeded(&build(who, &store, &ctx, &gen_layout, Some("gen")));
        let kept = image.layer_digests();
        let gen_blobs: Vec<String> = read_layout(&gen_layout, "latest")
            .layer_digests()
            .into_iter()
            .filter(|d| !kept.contains(d)) // the base layer, also the image's
            .map(|d| d.strip_prefix("sha256:").unwrap().to_string())
            .collect();
        assert_eq!(
            gen_blobs.len(),
            5,
            "{who:?}: the stage's RUN and COPY layers"
        );
        let trace = std::fs::read_to_string(&trace).unwrap();
        assert!(
            trace.contains("blobs/sha256/"),
            "{who:?}: the trace does not show the store's files"
        );
        let reads: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("openat(") && l.contains("O_RDONLY"))
            .filter(|l| {
                gen_blobs
                    .iter()
                    .any(|b| l.contains(&format!("sha256/{b}\"")))
            })
            .collect();
        // Root and a mapped user read nothing of them; a single id reads its headers only.
        let expect_reads = matches!(who, Builder::SingleId);
        assert_eq!(!reads.is_empty(), expect_reads, "{who:?}: {reads:#?}");
        let rootfs: Vec<&str> = trace.lines().filter(|l| l.contains("/rootfs-")).collect();
        assert!(rootfs.is_empty(), "{who:?}: {rootfs:#?}");
    }
}

/// `cmd` run under `strace -f`, its file opens and dir creations written to `out`.
fn traced(cmd: Command, out: &Path) -> Command {
    // By absolute path: the single-id builder hides programs through PATH.
    let mut t = Command::new("/usr/bin/strace");
    t.args(["-f", "-qq", "-e", "trace=openat,mkdir,mkdirat", "-o"])
        .arg(out)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    t
}

/// `RUN --mount=type=bind,from=gen` mounts a copy of the stage's merged layer dirs: the
/// file the stage deleted is absent, and the files only an image user may read are there.
#[test]
fn a_run_bind_mount_from_a_stage_sees_its_merged_layers() {
    if let Some(why) = skip_reason() {
        return println!("{why}");
    }
    for who in [Builder::Root, Builder::Mapped, Builder::SingleId] {
        let dir = crate::sandbox_support::runner().tempdir();
        let ctx = context_dir(dir.path(), "1");
        let base = crate::build_support::bases().busybox();
        // The stage of [`dockerfile`], without its final stage.
        let full = dockerfile(&base);
        let gen_stage = &full[..full.rfind("FROM ").unwrap()];
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "{gen_stage}FROM {base}\n\
                 RUN --mount=type=bind,from=gen,source=/out,target=/m \
                     ls /m/spread > /listing && cat /m/private/sub/secret > /secret\n"
            ),
        )
        .unwrap();
        crate::sandbox_support::runner().give(dir.path());
        let layout = dir.path().join("image");
        succeeded(&build(who, &dir.path().join("store"), &ctx, &layout, None));
        let image = read_layout(&layout, "latest");
        let text = |p: &str| String::from_utf8(file_content(&image, p).unwrap()).unwrap();
        assert_eq!(text("listing"), "one\nowned\nthree\ntwo\n", "{who:?}");
        assert_eq!(text("secret"), "private\n", "{who:?}");
    }
}
