//! Rebuilds through the local cache, end to end with RUN steps FROM a pulled base: a no-change
//! rebuild is all cache hits with the same image; a one-file change rebuilds from the affected
//! step only, and the miss names the file.

use std::path::{Path, PathBuf};

use crate::build_support::{StepLog, kiln_build, succeeded};

/// Builds the context with the shared registry's bases; returns (image ID, stderr, manifest
/// digest of the OCI layout written beside).
fn build(store: &Path, ctx: &Path, out: &Path, extra: &[&str]) -> (String, String, String) {
    let bases = crate::build_support::bases();
    let dest = format!("--output=type=oci,dest={}", out.display());
    let mut args = vec!["-t", "rebuilt", "--progress=plain", &dest];
    let base_arg = bases.base_arg();
    args.push(&base_arg);
    args.extend_from_slice(extra);
    let output = kiln_build(store, &args, ctx);
    let stderr = succeeded(&output);
    let id = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let manifest = crate::build_support::read_layout(out, "latest").manifest_digest;
    (id, stderr, manifest)
}

/// The layer-writing steps of shell-app, in order.
const SHELL_APP_LAYER_STEPS: &[&str] = &[
    "RUN echo \"app:x:1500",
    // WORKDIR creates /opt/app in a layer, as BuildKit does.
    "WORKDIR /opt/app",
    "COPY app.sh ./",
    "COPY lib/ ./lib/",
    "COPY greetings/ ./greetings/",
    "RUN chmod 0755 app.sh",
];

fn step<'a>(steps: &'a [StepLog], prefix: &str) -> &'a StepLog {
    steps
        .iter()
        .find(|s| s.instruction.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix:?} in {steps:#?}"))
}

fn shell_app_copy(dir: &Path) -> PathBuf {
    let ctx = dir.join("shell-app");
    crate::build_support::copy_tree(&crate::build_support::example_dir("shell-app"), &ctx);
    ctx
}

/// A temporary directory holding a copy of shell-app, and the store path beside it; None
/// (after saying why) when the bases cannot be served here.
fn shell_app_project() -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    crate::build_support::bases_or_skip()?;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = shell_app_copy(tmp.path());
    let store = tmp.path().join("store");
    Some((tmp, ctx, store))
}

#[test]
fn a_no_change_rebuild_with_run_steps_is_all_hits_with_the_same_digest() {
    let Some((tmp, ctx, store)) = shell_app_project() else {
        return;
    };
    let (id1, first, manifest1) = build(&store, &ctx, &tmp.path().join("out1"), &[]);
    let steps = crate::build_support::steps(&first);
    for s in SHELL_APP_LAYER_STEPS {
        assert_eq!(
            step(&steps, s)
                .miss()
                .map(|m| m.ends_with("cache miss, not built before")),
            Some(true),
            "{first}"
        );
    }
    // A second passes, so a "created" of now would change the digest.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (id2, again, manifest2) = build(&store, &ctx, &tmp.path().join("out2"), &[]);
    let steps = crate::build_support::steps(&again);
    for s in SHELL_APP_LAYER_STEPS {
        assert!(step(&steps, s).cached(), "{s} should be CACHED:\n{again}");
    }
    assert!(!again.contains("cache miss"), "{again}");
    assert!(
        !again.contains("run steps use"),
        "nothing may run:\n{again}"
    );
    assert!(
        again.contains(": 0 layer(s) written, 6 reused") && again.contains(" in 7 layer(s)"),
        "{again}"
    );
    assert_eq!(id1, id2, "image ID");
    assert_eq!(manifest1, manifest2, "manifest digest");
}

#[test]
fn a_one_file_change_rebuilds_from_the_affected_step_and_names_the_file() {
    let Some((tmp, ctx, store)) = shell_app_project() else {
        return;
    };
    let (id1, _, _) = build(&store, &ctx, &tmp.path().join("out1"), &[]);
    std::fs::write(ctx.join("greetings/de"), "Servus, {name}!\n").unwrap();
    let (id2, edited, _) = build(&store, &ctx, &tmp.path().join("out2"), &[]);
    check_rebuilt_from_greetings(&edited);
    assert_ne!(id1, id2);
    assert!(
        edited.contains(": 2 layer(s) written, 4 reused") && edited.contains(" in 7 layer(s)"),
        "{edited}"
    );
}

/// The steps before `COPY greetings/` hit; it misses naming the file; the RUN after it misses
/// because its parent changed.
fn check_rebuilt_from_greetings(stderr: &str) {
    let steps = crate::build_support::steps(stderr);
    for s in &SHELL_APP_LAYER_STEPS[..4] {
        assert!(step(&steps, s).cached(), "{s} should be CACHED:\n{stderr}");
    }
    assert_eq!(
        step(&steps, "COPY greetings/").miss(),
        Some("COPY greetings/ ./greetings/: cache miss, 1 file changed (greetings/de)"),
        "{stderr}"
    );
    let run = step(&steps, "RUN chmod");
    assert!(
        run.miss()
            .is_some_and(|m| m.ends_with(": cache miss, parent changed")),
        "{stderr}"
    );
}

/// A fresh checkout of the same project (another directory) hits the cache the first time,
/// and a change made there afterwards is still explained by file, not "not built before".
#[test]
fn a_change_in_a_fresh_checkout_that_hit_the_cache_is_explained_by_file() {
    if crate::build_support::bases_or_skip().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let first = shell_app_copy(&tmp.path().join("a"));
    build(&store, &first, &tmp.path().join("out1"), &[]);
    let checkout = shell_app_copy(&tmp.path().join("b"));
    let (_, hits, _) = build(&store, &checkout, &tmp.path().join("out2"), &[]);
    assert!(!hits.contains("cache miss"), "{hits}");
    std::fs::write(checkout.join("greetings/de"), "Servus, {name}!\n").unwrap();
    let (_, edited, _) = build(&store, &checkout, &tmp.path().join("out3"), &[]);
    check_rebuilt_from_greetings(&edited);
}

#[test]
fn a_build_arg_changes_the_result_and_the_cache_key() {
    let Some((tmp, ctx, store)) = shell_app_project() else {
        return;
    };
    let out = |n: &str| tmp.path().join(n);
    let (default_id, _, _) = build(&store, &ctx, &out("o1"), &[]);
    let info = |dir: &Path| {
        let image = crate::build_support::read_layout(dir, "latest");
        String::from_utf8(crate::build_support::file_content(&image, "opt/app/build-info").unwrap())
            .unwrap()
    };
    assert_eq!(info(&out("o1")), "version 1.2.0, 3 greetings\n");
    let (v2_id, v2, _) = build(
        &store,
        &ctx,
        &out("o2"),
        &["--build-arg", "APP_VERSION=2.0"],
    );
    assert_ne!(default_id, v2_id);
    assert_eq!(info(&out("o2")), "version 2.0, 3 greetings\n");
    let steps = crate::build_support::steps(&v2);
    // `ENV APP_VERSION=${APP_VERSION}` comes before the first RUN, so every layer step's
    // parent changed.
    assert_eq!(
        step(&steps, "RUN echo")
            .miss()
            .map(|m| m.rsplit_once(": ").unwrap().1),
        Some("cache miss, parent changed"),
        "{v2}"
    );
    assert_eq!(
        step(&steps, "COPY app.sh").miss(),
        Some("COPY app.sh ./: cache miss, parent changed"),
        "{v2}"
    );
    let env = &crate::build_support::read_layout(&out("o2"), "latest").config["config"]["Env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP_VERSION=2.0"),
        "{env}"
    );
    // The same value again is a hit all through.
    let (again_id, again, _) = build(
        &store,
        &ctx,
        &out("o3"),
        &["--build-arg", "APP_VERSION=2.0"],
    );
    assert!(!again.contains("cache miss"), "{again}");
    assert_eq!(again_id, v2_id);
}

/// A RUN's bind mounts are inputs of its cache key, as in BuildKit: a changed context file
/// under `--mount=type=bind` reruns the step, and a changed `from=` stage does too.
#[test]
fn a_bind_mounted_source_that_changed_reruns_the_step() {
    if crate::build_support::bases_or_skip().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}/busybox AS gen\nCOPY g /g\n\
         FROM ${BASE}/busybox\n\
         RUN --mount=type=bind,source=f,target=/f cat /f > /out\n\
         RUN --mount=type=bind,from=gen,source=/g,target=/g cat /g > /out2\n",
    )
    .unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("layout");
    let contents = |image: &crate::build_support::LayoutImage| {
        [
            crate::build_support::file_content(image, "out").unwrap(),
            crate::build_support::file_content(image, "out2").unwrap(),
        ]
    };
    std::fs::write(ctx.join("f"), "one\n").unwrap();
    std::fs::write(ctx.join("g"), "gen one\n").unwrap();
    build(&store, &ctx, &out, &[]);
    let first = crate::build_support::read_layout(&out, "latest");
    assert_eq!(contents(&first), [b"one\n".to_vec(), b"gen one\n".to_vec()]);
    std::fs::write(ctx.join("f"), "two!\n").unwrap();
    std::fs::write(ctx.join("g"), "gen two!\n").unwrap();
    let out = tmp.path().join("layout2");
    let (_, stderr, _) = build(&store, &ctx, &out, &[]);
    assert!(stderr.contains("1 file changed (bind /f: f)"), "{stderr}");
    let second = crate::build_support::read_layout(&out, "latest");
    assert_eq!(
        contents(&second),
        [b"two!\n".to_vec(), b"gen two!\n".to_vec()]
    );
}
