//! The shared registry build cache: `kiln build --cache-to REF` on one store, then
//! `--cache-from REF` on fresh, empty stores (as on another CI runner), against a loopback
//! registry. RUN steps write `date +%N`, so a step that ran again would give another layer.

use std::path::Path;

use crate::build_support::{bases, bases_or_skip, have, kiln, read_layout};
use crate::registry_support::TestRegistry;

/// A context whose Dockerfile has two RUNs (each stamping the time) around two COPYs.
fn project(dir: &Path, registry: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let dockerfile = format!(
        "FROM {registry}/kiln-test/busybox:latest\n\
         RUN date +%N > /stamp\n\
         COPY a.txt /a.txt\n\
         COPY b.txt /b.txt\n\
         RUN cat /a.txt /b.txt > /both && date +%N >> /both\n\
         CMD [\"cat\", \"/both\"]\n"
    );
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(dir.join("b.txt"), "beta\n").unwrap();
}

/// A temporary directory holding [`project`] in `ctx/`, or None (after saying why) when the
/// bases cannot be served here.
fn project_dir() -> Option<tempfile::TempDir> {
    let registry = bases_or_skip()?.addr();
    let tmp = tempfile::tempdir().unwrap();
    project(&tmp.path().join("ctx"), registry);
    Some(tmp)
}

/// What a build produced: its stderr, and the manifest digest and layer digests of the image
/// it wrote as an OCI layout.
struct Built {
    stderr: String,
    manifest: String,
    layers: Vec<String>,
}

impl Built {
    fn layers_written(&self) -> usize {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("built "))
            .unwrap_or_else(|| panic!("no summary line: {}", self.stderr));
        let n = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
        n.parse().unwrap()
    }
}

/// `kiln build` with a fresh store in `tmp/name`, plus `cache_flags`.
fn build(tmp: &Path, name: &str, ctx: &Path, cache_flags: &[String]) -> Built {
    let layout = tmp.join(name).join("layout");
    let out = kiln(&tmp.join(name).join("store"))
        .args(["build", "--progress", "plain", "-t", "app"])
        .args(cache_flags)
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name}: {stderr}");
    let image = read_layout(&layout, "latest");
    Built {
        stderr,
        manifest: image.manifest_digest.clone(),
        layers: image.layer_digests(),
    }
}

/// skopeo's JSON answer to `args`.
fn skopeo(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&crate::registry_support::skopeo(args)).unwrap()
}

#[test]
fn a_fresh_store_reuses_every_layer_from_the_registry_cache_and_rebuilds_only_what_changed() {
    let Some(tmp) = project_dir() else { return };
    let (registry, ctx) = (bases().addr(), tmp.path().join("ctx"));
    let cache_ref = format!("{registry}/cache/app:buildcache");

    let first = build(
        tmp.path(),
        "first",
        &ctx,
        &[format!("--cache-to={cache_ref}")],
    );
    assert_eq!(first.layers_written(), 4, "{}", first.stderr);
    assert!(
        first.stderr.contains(&format!(
            "exported the build cache to {cache_ref}: 4 step record(s)"
        )),
        "{}",
        first.stderr
    );

    // The cache is one manifest at one tag, holding the four layers the build wrote.
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{registry}/cache/app"),
    ]);
    assert_eq!(tags["Tags"], serde_json::json!(["buildcache"]));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{cache_ref}"),
    ]);
    assert_eq!(raw["artifactType"], "application/vnd.kiln.cache.v1");
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    let cached_layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let built = &first.layers[first.layers.len() - 4..];
    assert_eq!(cached_layers, built);

    // Another runner: empty store, same context. Nothing runs; the image is the same image.
    let second = build(
        tmp.path(),
        "second",
        &ctx,
        &[format!("--cache-from={cache_ref}")],
    );
    assert_eq!(second.layers_written(), 0, "{}", second.stderr);
    assert_eq!(
        second
            .stderr
            .matches(&format!("found in the cache at {cache_ref}"))
            .count(),
        4,
        "{}",
        second.stderr
    );
    assert_eq!(second.layers, first.layers);
    assert_eq!(second.manifest, first.manifest);

    // A third runner with b.txt changed: the RUN and COPY a.txt above it still come from the
    // cache; COPY b.txt and the RUN after it are built.
    std::fs::write(ctx.join("b.txt"), "beta, changed\n").unwrap();
    let third = build(
        tmp.path(),
        "third",
        &ctx,
        &[format!("--cache-from={cache_ref}")],
    );
    assert_eq!(third.layers_written(), 2, "{}", third.stderr);
    let n = first.layers.len();
    assert_eq!(third.layers[..n - 2], first.layers[..n - 2]);
    assert_ne!(third.layers[n - 2], first.layers[n - 2]);
    assert_ne!(third.layers[n - 1], first.layers[n - 1]);
    assert!(
        third.stderr.contains("COPY b.txt /b.txt: cache miss"),
        "{}",
        third.stderr
    );
}

#[test]
fn a_cache_ref_that_does_not_exist_is_an_info_line_not_an_error() {
    let Some(tmp) = project_dir() else { return };
    let (registry, ctx) = (bases().addr(), tmp.path().join("ctx"));
    let missing = format!("{registry}/cache/nothing:here");
    let built = build(
        tmp.path(),
        "only",
        &ctx,
        &[format!("--cache-from={missing}")],
    );
    assert_eq!(built.layers_written(), 4, "{}", built.stderr);
    assert!(
        built.stderr.contains(&format!("no cache at {missing}")),
        "{}",
        built.stderr
    );
}

#[test]
fn a_cache_export_that_fails_is_a_warning_and_the_build_succeeds() {
    let Some(tmp) = project_dir() else { return };
    let ctx = tmp.path().join("ctx");
    // Nothing listens on port 9 (discard) of loopback: the push cannot connect.
    let unreachable = "127.0.0.1:9/cache/app:buildcache";
    let built = build(
        tmp.path(),
        "only",
        &ctx,
        &[format!("--cache-to={unreachable}"), "--retries=0".into()],
    );
    assert_eq!(built.layers_written(), 4, "{}", built.stderr);
    assert!(
        built.stderr.contains(&format!(
            "warning: could not export the build cache to {unreachable}"
        )),
        "{}",
        built.stderr
    );
}

/// `kiln build` of `ctx` with a fresh store in `tmp/name`, returning (success, stderr, summary).
fn build_raw(tmp: &Path, name: &str, ctx: &Path, flags: &[String]) -> (bool, String) {
    let out = kiln(&tmp.join(name).join("store"))
        .env("HOME", tmp.join("home"))
        .env("REGISTRY_AUTH_FILE", tmp.join("home/no-auth.json"))
        .args(["build", "--progress", "plain", "-t", "app"])
        .args(flags)
        .arg(ctx)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// No RUN and no base image: runs as any user. The cache goes through an authenticating TLS
/// registry, exported to one repository and imported (and re-exported) into another.
#[test]
fn the_cache_uses_the_registry_flags_and_credentials_and_bad_credentials_only_warn() {
    if !(have("skopeo") && have("docker-registry")) {
        println!("SKIPPED: needs skopeo and docker-registry");
        return;
    }
    let registry = TestRegistry::start("tls");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = crate::build_support::context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\n"),
        ("a.txt", "alpha\n"),
        ("b.txt", "beta\n"),
    ]);
    let ctx = ctx.path();
    let cert_dir = registry.cert_dir().join(&registry.addr);
    let tls = |creds: &str| {
        vec![
            format!("--cert-dir={}", cert_dir.display()),
            format!("--creds={creds}"),
        ]
    };
    let good = format!(
        "{}:{}",
        crate::registry_support::USER,
        crate::registry_support::PASS
    );
    let first_ref = format!("{}/team/app-cache:main", registry.addr);
    let second_ref = format!("{}/other/cache:branch", registry.addr);

    let mut flags = tls(&good);
    flags.push(format!("--cache-to={first_ref}"));
    let (ok, stderr) = build_raw(tmp.path(), "first", ctx, &flags);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("2 layer(s) written"), "{stderr}");
    assert!(
        stderr.contains(&format!("exported the build cache to {first_ref}")),
        "{stderr}"
    );

    // Import from one repository, export to another of the same registry (blobs mounted).
    let mut flags = tls(&good);
    flags.push(format!("--cache-from={first_ref}"));
    flags.push(format!("--cache-to={second_ref}"));
    let (ok, stderr) = build_raw(tmp.path(), "second", ctx, &flags);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("0 layer(s) written"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "exported the build cache to {second_ref}: 2 step record(s)"
        )),
        "{stderr}"
    );
    let mut flags = tls(&good);
    flags.push(format!("--cache-from={second_ref}"));
    let (ok, stderr) = build_raw(tmp.path(), "third", ctx, &flags);
    assert!(ok && stderr.contains("0 layer(s) written"), "{stderr}");

    // Wrong password: the build goes on without the cache and says why, never the password.
    let mut flags = tls("kiln:wrong-password-xyz");
    flags.push(format!("--cache-from={first_ref}"));
    flags.push(format!("--cache-to={first_ref}"));
    let (ok, stderr) = build_raw(tmp.path(), "bad", ctx, &flags);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("2 layer(s) written"), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: cannot use the cache at {first_ref}"))
            && stderr.contains(&format!(
                "warning: could not export the build cache to {first_ref}"
            ))
            && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-password-xyz"), "{stderr}");
}

/// mode=max: the cache holds every stage, so a fresh store rebuilds a multi-stage image (its
/// `COPY --from` keyed on the earlier stage's key, not on anything local) without running a step.
#[test]
fn a_multi_stage_build_is_served_wholly_from_the_registry_cache() {
    let Some(bases) = bases_or_skip() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let example = crate::build_support::example_dir("multi-stage");
    let cache_ref = format!("{}/cache/multi:main", bases.addr());
    let base = bases.base_arg();
    let first = build(
        tmp.path(),
        "first",
        &example,
        &[base.clone(), format!("--cache-to={cache_ref}")],
    );
    assert!(first.layers_written() > 0, "{}", first.stderr);
    let second = build(
        tmp.path(),
        "second",
        &example,
        &[base, format!("--cache-from={cache_ref}")],
    );
    assert_eq!(second.layers_written(), 0, "{}", second.stderr);
    assert_eq!(second.manifest, first.manifest);
}
