//! Blobs only for what leaves the build, rootless (issue 13): as an unprivileged user with a
//! subordinate range, a stage that only feeds `COPY --from` keeps its layers as unpacked dirs
//! of sub-uid files, which are read (for `COPY --from`) and written as blobs (when the stage
//! becomes an image) as root of the user's id map, giving the blobs an eager build makes.

use std::path::Path;
use std::process::Output;

use crate::build_support::{bases, missing, missing_for_bases, read_layout, steps, succeeded};

/// gen: a RUN with a file owned by a sub-uid, a COPY --chown, a RUN that deletes; the image
/// copies gen's result.
fn dockerfile() -> String {
    let b = bases().busybox();
    format!(
        "FROM {b} AS gen\n\
         RUN mkdir -p /out/sub && echo generated > /out/sub/file && chown 1000:1000 /out/sub/file \
             && ln -s sub/file /out/link\n\
         COPY --chown=33:33 ctx.txt /out/ctx.txt\n\
         RUN cat /out/ctx.txt > /out/second && rm /out/ctx.txt\n\
         FROM {b}\n\
         COPY --from=gen /out /app\n"
    )
}

/// `kiln build` as the unprivileged test user, store `store`, `SOURCE_DATE_EPOCH` fixed.
fn build(store: &Path, args: &[&str], ctx: &Path) -> Output {
    crate::sandbox_support::kiln_as_test_user(store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress=plain"])
        .args(args)
        .arg(ctx)
        .output()
        .unwrap()
}

#[test]
fn a_rootless_copy_from_only_stage_gets_no_blob_and_later_the_eager_ones() {
    if let Some(why) = missing_for_bases().or_else(|| missing(&["setpriv", "newuidmap"])) {
        println!("SKIPPED: {why}");
        return;
    }
    let runner = crate::sandbox_support::runner();
    if runner.user.is_none() {
        println!("SKIPPED: needs root to run kiln as the unprivileged test user");
        return;
    }
    let tmp = runner.tempdir();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile()).unwrap();
    std::fs::write(ctx.join("ctx.txt"), "from the context\n").unwrap();
    runner.give(tmp.path());
    let store = tmp.path().join("store");
    let app = tmp.path().join("app");
    let log = succeeded(&build(
        &store,
        &[
            "-t",
            "app",
            &format!("--output=type=oci,dest={}", app.display()),
        ],
        &ctx,
    ));
    assert!(log.contains("rootless isolation"), "{log}");
    let image = read_layout(&app, "latest");
    let tree = crate::build_support::file_tree(&image);
    assert_eq!(
        crate::build_support::file_content(&image, "app/second").as_deref(),
        Some(&b"from the context\n"[..])
    );
    assert!(!tree.contains_key("app/ctx.txt"));
    assert_eq!(tree["app/sub/file"].uid, 1000, "{:?}", tree["app/sub/file"]);

    crate::build_support::assert_kept_without_blobs(&store, 3);

    // gen as an image: its blobs are made from the dirs, equal to an eager build's.
    let lazy_then = tmp.path().join("lazy-then");
    let log = succeeded(&build(
        &store,
        &[
            "--target",
            "gen",
            &format!("--output=type=oci,dest={}", lazy_then.display()),
        ],
        &ctx,
    ));
    let layer_steps: Vec<_> = steps(&log)
        .into_iter()
        .filter(|s| !s.instruction.starts_with("FROM"))
        .collect();
    assert!(layer_steps.iter().all(|s| s.cached()), "{log}");
    let eager = tmp.path().join("eager");
    succeeded(&build(
        &tmp.path().join("eager-store"),
        &[
            "--target",
            "gen",
            &format!("--output=type=oci,dest={}", eager.display()),
        ],
        &ctx,
    ));
    let (a, b) = (
        read_layout(&lazy_then, "latest"),
        read_layout(&eager, "latest"),
    );
    assert_eq!(a.layer_digests(), b.layer_digests());
    assert_eq!(a.manifest_digest, b.manifest_digest);
}
