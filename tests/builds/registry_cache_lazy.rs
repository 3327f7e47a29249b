//! The registry build cache made for fresh runners: a cache hit's layer is downloaded only
//! when a step needs its files; `--push` mounts the others from the cache repository
//! (downloading and uploading them when the registry does not mount); a build without
//! `--push` still stores a complete image; `--cache-to` merges into what the REF held.
//! Requests are watched through a logging proxy in front of the loopback registry.

use std::path::Path;

use crate::build_support::{bases_or_skip, have, kiln, kiln_build_ok, read_layout, run_ok};
use crate::registry_support::proxy::{Fault, Proxy, Rule};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A context whose Dockerfile (FROM the busybox base, pulled from `registry`) has two RUNs
/// stamping the time around a COPY: three layers a rerun would change.
fn project(dir: &Path, registry: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let dockerfile = format!(
        "FROM {registry}/kiln-test/busybox:latest\n\
         RUN date +%N > /stamp\n\
         COPY a.txt /a.txt\n\
         RUN cat /a.txt /stamp > /both && date +%N >> /both\n\
         CMD [\"cat\", \"/both\"]\n"
    );
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("a.txt"), "alpha\n").unwrap();
}

/// The `N` of the summary's `N layer(s) written`.
fn layers_written(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("built "))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    let n = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
    n.parse().unwrap()
}

/// The layer digests of `image` (for this machine's platform).
fn image_layers(image: &str) -> Vec<String> {
    let info: serde_json::Value = serde_json::from_str(&crate::registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .unwrap();
    info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// The GET requests for any of `digests` that `proxy` saw.
fn blob_gets(proxy: &Proxy, digests: &[String]) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && digests.iter().any(|d| r.contains(d.as_str())))
        .collect()
}

/// Copies `image` out of the registry with skopeo (which fetches and verifies every blob)
/// and returns its layer digests.
fn copy_out(image: &str, dir: &Path) -> Vec<String> {
    run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:out", dir.display()),
    ]));
    read_layout(dir, "out").layer_digests()
}

/// Runner A builds the project and exports its cache to `cache_ref`; returns its layers.
fn export_from_runner_a(tmp: &Path, ctx: &Path, cache_ref: &str) -> Vec<String> {
    let stderr = kiln_build_ok(
        &tmp.join("a"),
        &["-t", "app", &format!("--cache-to={cache_ref}")],
        ctx,
    );
    assert_eq!(layers_written(&stderr), 3, "{stderr}");
    let layers = crate::registry_support::manifest_layer_digests(cache_ref);
    assert_eq!(layers.len(), 3);
    layers
}

#[test]
fn a_fresh_runner_pushes_an_unchanged_build_downloading_no_layer_and_fetches_them_on_a_change() {
    let Some(bases) = bases_or_skip() else { return };
    if !have("skopeo") {
        println!("SKIPPED: needs skopeo");
        return;
    }
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start(bases.addr(), vec![]));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    // Everything goes through the proxy: the base, the cache and the push.
    project(&ctx, &proxy.addr);
    let cache_ref = format!("{}/lazy/cache:main", proxy.addr);
    let cached = export_from_runner_a(tmp.path(), &ctx, &cache_ref);
    let base = image_layers(&format!("{}/kiln-test/busybox:latest", proxy.addr));
    let all_layers: Vec<String> = base.iter().chain(&cached).cloned().collect();
    proxy.log.lock().unwrap().clear();

    // Runner B: an empty store, the cache, --push, and an export to another repository.
    let dest = format!("{}/lazy/app:1", proxy.addr);
    let other_cache = format!("{}/lazy/cache-b:main", proxy.addr);
    let stderr = kiln_build_ok(
        &tmp.path().join("b"),
        &[
            "-t",
            &dest,
            "--push",
            &format!("--cache-from={cache_ref}"),
            &format!("--cache-to={other_cache}"),
        ],
        &ctx,
    );
    assert!(
        stderr.contains(&format!(
            "exported the build cache to {other_cache}: 3 step record(s)"
        )),
        "{stderr}"
    );
    assert_eq!(layers_written(&stderr), 0, "{stderr}");
    // Manifests and configs only: no layer of the base or of the cache.
    assert_eq!(
        blob_gets(&proxy, &all_layers),
        Vec::<String>::new(),
        "{stderr}"
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains("/blobs/")),
        "the configs are fetched through the proxy: {:#?}",
        proxy.requests()
    );
    let mounts_into = |repo: &str, digests: &[String]| {
        proxy
            .requests()
            .into_iter()
            .filter(|r| r.starts_with(&format!("POST /v2/{repo}/blobs/uploads/?mount=")))
            .filter(|r| digests.iter().any(|d| r.contains(d.as_str())))
            .count()
    };
    // Each layer into the image's repository, and the cached ones into the other cache's.
    assert_eq!(
        mounts_into("lazy/app", &all_layers),
        all_layers.len(),
        "{:#?}",
        proxy.requests()
    );
    assert_eq!(
        mounts_into("lazy/cache-b", &cached),
        3,
        "{:#?}",
        proxy.requests()
    );
    assert!(
        stderr.contains(&format!(
            "of the layers left in the registry, {} mounted, 0 downloaded",
            all_layers.len()
        )) && stderr.contains("registry cache: 0 layer(s) downloaded (0 bytes), 3 left")
            && stderr.contains("the image is not named in the local store"),
        "{stderr}"
    );
    // The pushed image is whole: every blob can be fetched, the cached layers on top.
    let layers = copy_out(&dest, &tmp.path().join("copy-b"));
    assert_eq!(layers, all_layers);
    // And the local store names no image whose layers it lacks.
    let images = run_ok(kiln(&tmp.path().join("b")).arg("images"));
    let listed = String::from_utf8_lossy(&images.stdout);
    assert!(!listed.contains("lazy/app"), "{listed}");
    assert!(!stderr.contains("stored as"), "{stderr}");

    // Runner C, a.txt changed: the COPY and the RUN above it need the layers below them,
    // which are downloaded then (the base's and the first RUN's); the rest is still mounted.
    std::fs::write(ctx.join("a.txt"), "alpha, changed\n").unwrap();
    proxy.log.lock().unwrap().clear();
    let dest = format!("{}/lazy/app:2", proxy.addr);
    let stderr = kiln_build_ok(
        &tmp.path().join("c"),
        &["-t", &dest, "--push", &format!("--cache-from={cache_ref}")],
        &ctx,
    );
    assert_eq!(layers_written(&stderr), 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "registry cache: {} layer(s) downloaded",
            base.len() + 1
        )),
        "{stderr}"
    );
    let below: Vec<String> = base.iter().chain(&cached[..1]).cloned().collect();
    assert_eq!(
        blob_gets(&proxy, &all_layers).len(),
        below.len(),
        "{stderr}"
    );
    let layers = copy_out(&dest, &tmp.path().join("copy-c"));
    assert_eq!(layers[..below.len()], below[..]);
    assert_eq!(layers.len(), below.len() + 2);
}

#[test]
fn without_a_mount_the_push_downloads_the_cached_layers_and_uploads_them() {
    let Some(bases) = bases_or_skip() else { return };
    if !have("skopeo") {
        println!("SKIPPED: needs skopeo");
        return;
    }
    let rt = runtime();
    // A registry that never mounts: every mount request opens a plain upload (202).
    let no_mount = Rule {
        method: "POST",
        path_contains: "mount=".into(),
        times: usize::MAX,
        fault: Fault::Status(202, None),
    };
    let proxy = rt.block_on(Proxy::start(bases.addr(), vec![no_mount]));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    project(&ctx, bases.addr());
    let cache_ref = format!("{}/nomount/cache:main", proxy.addr);
    let cached = export_from_runner_a(tmp.path(), &ctx, &cache_ref);

    // The base comes straight from the registry, so its layer is on another host (as kiln
    // sees it) than the cache's.
    for (runner, dest, mounted, downloaded) in [
        // Same registry as the cache, whose mounts answer 202; another one than the base's.
        ("b", format!("{}/nomount/app:1", proxy.addr), 0, 4),
        // The base's registry (the base layer is mounted), another one than the cache's.
        ("c", format!("{}/nomount/app-c:1", bases.addr()), 1, 3),
    ] {
        proxy.log.lock().unwrap().clear();
        let stderr = kiln_build_ok(
            &tmp.path().join(runner),
            &["-t", &dest, "--push", &format!("--cache-from={cache_ref}")],
            &ctx,
        );
        assert_eq!(layers_written(&stderr), 0, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "of the layers left in the registry, {mounted} mounted, {downloaded} downloaded"
            )),
            "{runner}: {stderr}"
        );
        assert_eq!(blob_gets(&proxy, &cached).len(), 3, "{runner}: {stderr}");
        let layers = copy_out(&dest, &tmp.path().join(format!("copy-{runner}")));
        assert_eq!(layers[layers.len() - 3..], cached[..]);
    }
}

#[test]
fn a_build_without_push_stores_a_complete_image() {
    let Some(bases) = bases_or_skip() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    project(&ctx, bases.addr());
    let cache_ref = format!("{}/stored/cache:main", bases.addr());
    let cached = export_from_runner_a(tmp.path(), &ctx, &cache_ref);

    let store = tmp.path().join("b");
    let stderr = kiln_build_ok(
        &store,
        &["-t", "app", &format!("--cache-from={cache_ref}")],
        &ctx,
    );
    assert_eq!(layers_written(&stderr), 0, "{stderr}");
    assert!(
        stderr.contains("registry cache: 3 layer(s) downloaded"),
        "{stderr}"
    );
    // `kiln save` reads every blob of the image from the store.
    let archive = tmp.path().join("app.tar");
    run_ok(
        kiln(&store)
            .args(["save", "--format", "oci", "-o"])
            .arg(&archive)
            .arg("app"),
    );
    let layout = tmp.path().join("saved");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let image = read_layout(&layout, "latest");
    assert_eq!(image.layer_digests()[image.layers.len() - 3..], cached[..]);
    for l in &image.layers {
        assert!(l.is_file(), "{} missing from the saved image", l.display());
    }
}

#[test]
fn exports_of_two_targets_to_one_ref_keep_both_stages() {
    let Some(bases) = bases_or_skip() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let base = bases.busybox();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS one\nRUN date +%N > /one\n\
             FROM {base} AS two\nRUN date +%N > /two\n"
        ),
    )
    .unwrap();
    let cache_ref = format!("{}/targets/cache:main", bases.addr());
    let to = format!("--cache-to=type=registry,ref={cache_ref},mode=max");
    let from = format!("--cache-from={cache_ref}");
    for target in ["one", "two"] {
        let store = tmp.path().join(format!("export-{target}"));
        let stderr = kiln_build_ok(&store, &["--target", target, "-t", target, &to], &ctx);
        assert_eq!(layers_written(&stderr), 1, "{stderr}");
    }
    // Fresh runners find each target's step: the second export kept the first one's.
    for target in ["one", "two"] {
        let store = tmp.path().join(format!("import-{target}"));
        let stderr = kiln_build_ok(&store, &["--target", target, "-t", target, &from], &ctx);
        assert_eq!(layers_written(&stderr), 0, "{target}: {stderr}");
    }
}
