//! Blobs only for what leaves the build (issue 13): the layers of a stage that only feeds
//! `COPY --from` are kept as their unpacked directories in the store and never compressed;
//! their blob is made from the directory when something needs it (the stage becomes part of
//! an image, `--cache-to mode=max` exports it), byte for byte the blob an eager build makes.
//! A cache record whose directory is gone is a miss, never a broken hit.

use std::path::Path;
use std::process::Output;

use crate::build_support::{
    bases_or_skip, blob_diff_ids, context, file_content, file_tree, is_root, kiln, layer_dir,
    read_layout, steps, succeeded, unpacked_records,
};

/// gen: a RUN (a setuid file, a symlink), a WORKDIR that makes a dir, a COPY from the
/// context into a dir the RUN made, a RUN that deletes the copied file (a whiteout in its
/// upper dir): four layers. The image copies gen's result.
pub(crate) fn dockerfile(busybox: &str) -> String {
    format!(
        "FROM {busybox} AS gen\n\
         RUN mkdir -p /out/sub && echo generated > /out/sub/file && chmod 4755 /out/sub/file \
             && ln -s sub/file /out/link\n\
         WORKDIR /out/w\n\
         COPY ctx.txt /out/ctx.txt\n\
         RUN cat /out/ctx.txt > /out/second && rm /out/ctx.txt\n\
         FROM {busybox}\n\
         COPY --from=gen /out /app\n"
    )
}

/// `kiln build --progress plain ARGS… CTX` with `SOURCE_DATE_EPOCH` fixed (images of separate
/// stores compare by digest), store at `store`.
fn build(store: &Path, args: &[&str], ctx: &Path) -> Output {
    kiln(store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress", "plain", "--isolation", "chroot"])
        .args(args)
        .arg(ctx)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Whether every step of the build was a cache hit.
pub(crate) fn all_cached(stderr: &str) -> bool {
    let s = steps(stderr);
    let layer_steps: Vec<_> = s
        .iter()
        .filter(|s| {
            ["RUN", "COPY", "WORKDIR"]
                .iter()
                .any(|i| s.instruction.starts_with(i))
        })
        .collect();
    !layer_steps.is_empty() && layer_steps.iter().all(|s| s.cached())
}

fn setup() -> Option<(String, tempfile::TempDir)> {
    let bases = bases_or_skip()?;
    if !is_root() {
        println!("SKIPPED: needs root (chroot isolation)");
        return None;
    }
    let ctx = context(&[
        ("Dockerfile", &dockerfile(&bases.busybox())),
        ("ctx.txt", "from the context\n"),
    ]);
    Some((bases.addr().to_string(), ctx))
}

/// The image the two-stage build writes: gen's files, the deleted one absent.
pub(crate) fn check_app(layout: &Path) {
    let image = read_layout(layout, "latest");
    assert_eq!(
        file_content(&image, "app/sub/file").as_deref(),
        Some(&b"generated\n"[..])
    );
    assert_eq!(
        file_content(&image, "app/second").as_deref(),
        Some(&b"from the context\n"[..])
    );
    let tree = file_tree(&image);
    assert!(!tree.contains_key("app/ctx.txt"), "deleted in gen");
    assert_eq!(tree["app/link"].kind, "symlink -> sub/file");
}

#[test]
fn a_stage_that_only_feeds_copy_from_gets_no_blob_until_one_is_needed() {
    let Some((registry, ctx)) = setup() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let layout = tmp.path().join("app");
    let out = build(
        &store,
        &[
            "-t",
            "app",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        ctx.path(),
    );
    succeeded(&out);
    check_app(&layout);

    // gen's three layers: recorded without a blob, their dirs in the store, and no blob in
    // the store holds any of them.
    let lazy = crate::build_support::assert_kept_without_blobs(&store, 4);
    // The image's own layers all have their blobs (`kiln save` reads them from the store).
    let saved = tmp.path().join("saved.tar");
    let save = kiln(&store)
        .args(["save", "-o"])
        .arg(&saved)
        .arg("app")
        .output()
        .unwrap();
    assert!(
        save.status.success(),
        "{}",
        String::from_utf8_lossy(&save.stderr)
    );

    // `--cache-to` (mode=max) afterwards: every step hits, and the export makes gen's blobs.
    let cache_ref = format!("{registry}/cache/lazy-blobs:max");
    let out = build(
        &store,
        &["-t", "app", &format!("--cache-to={cache_ref}")],
        ctx.path(),
    );
    let log = succeeded(&out);
    assert!(all_cached(&log), "{log}");
    let blobs = blob_diff_ids(&store);
    for d in &lazy {
        assert!(blobs.contains(d), "no blob made for {d}: {log}");
    }

    // A fresh store builds gen as an image from that cache: nothing runs, each layer is
    // downloaded (its diffID checked) and the image is the one an eager build of gen makes.
    let from_cache = tmp.path().join("from-cache");
    let out = build(
        &tmp.path().join("fresh"),
        &[
            "--target",
            "gen",
            &format!("--cache-from={cache_ref}"),
            &format!("--output=type=oci,dest={}", from_cache.display()),
        ],
        ctx.path(),
    );
    let log = succeeded(&out);
    assert!(all_cached(&log), "{log}");
    same_as_an_eager_build_of_gen(&from_cache, ctx.path(), tmp.path());
    // And the whole image from the cache on another fresh store: nothing runs.
    let out = build(
        &tmp.path().join("fresh2"),
        &["-t", "app", &format!("--cache-from={cache_ref}")],
        ctx.path(),
    );
    let log = succeeded(&out);
    assert!(all_cached(&log), "{log}");
}

#[test]
fn a_later_image_of_the_stage_gets_the_blobs_an_eager_build_makes() {
    let Some((_, ctx)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    succeeded(&build(&store, &["-t", "app"], ctx.path()));
    assert_eq!(unpacked_records(&store).len(), 4);
    // gen is the image now: its cached layers get their blobs from their dirs.
    let lazy_then = tmp.path().join("lazy");
    let out = build(
        &store,
        &[
            "--target",
            "gen",
            "-t",
            "gen",
            &format!("--output=type=oci,dest={}", lazy_then.display()),
        ],
        ctx.path(),
    );
    let log = succeeded(&out);
    assert!(all_cached(&log), "{log}");
    same_as_an_eager_build_of_gen(&lazy_then, ctx.path(), tmp.path());
}

#[test]
fn a_record_whose_dir_is_gone_is_a_miss_and_prune_keeps_the_dirs_records_need() {
    let Some((_, ctx)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    succeeded(&build(&store, &["-t", "app"], ctx.path()));
    let lazy = unpacked_records(&store);
    assert_eq!(lazy.len(), 4);

    // The cache's records pin their dirs: prune keeps them, and a rebuild hits.
    let prune = kiln(&store).arg("prune").output().unwrap();
    assert!(prune.status.success());
    for d in &lazy {
        assert!(layer_dir(&store, d).is_dir(), "{d} pruned while pinned");
    }
    let log = succeeded(&build(&store, &["-t", "app"], ctx.path()));
    assert!(all_cached(&log), "{log}");

    // Dropping the records lets prune take the dirs; their steps then run again.
    let prune = kiln(&store)
        .args(["prune", "--keep-duration", "0s"])
        .output()
        .unwrap();
    assert!(
        prune.status.success(),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    for d in &lazy {
        assert!(!layer_dir(&store, d).exists(), "{d} kept without a record");
    }
    let layout = tmp.path().join("after-prune");
    let log = succeeded(&build(
        &store,
        &[
            "-t",
            "app",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        ctx.path(),
    ));
    check_app(&layout);
    let ran: Vec<_> = steps(&log)
        .into_iter()
        .filter(|s| s.instruction.starts_with("RUN") && !s.cached())
        .collect();
    assert_eq!(ran.len(), 2, "{log}");

    // A dir removed behind the cache's back: its step misses and runs, never a broken hit.
    let first_run = unpacked_records(&store)
        .into_iter()
        .find(|d| layer_dir(&store, d).join("out/sub/file").exists())
        .expect("the first RUN's dir");
    std::fs::remove_dir_all(layer_dir(&store, &first_run)).unwrap();
    let layout = tmp.path().join("after-rm");
    let log = succeeded(&build(
        &store,
        &[
            "-t",
            "app",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        ctx.path(),
    ));
    check_app(&layout);
    let first = steps(&log)
        .into_iter()
        .find(|s| s.instruction.starts_with("RUN mkdir"))
        .unwrap();
    assert!(!first.cached(), "{log}");
}

/// The OCI layout at `layout` holds the image an eager build of `gen` (every layer a blob at
/// once, on a fresh store under `tmp`) makes: same layers, same manifest digest.
fn same_as_an_eager_build_of_gen(layout: &Path, ctx: &Path, tmp: &Path) {
    let eager = tmp.join("eager");
    succeeded(&build(
        &tmp.join("eager-store"),
        &[
            "--target",
            "gen",
            &format!("--output=type=oci,dest={}", eager.display()),
        ],
        ctx,
    ));
    let (a, b) = (read_layout(layout, "latest"), read_layout(&eager, "latest"));
    assert_eq!(a.layer_digests(), b.layer_digests());
    assert_eq!(a.manifest_digest, b.manifest_digest);
}
