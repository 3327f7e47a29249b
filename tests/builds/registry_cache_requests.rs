//! What a fresh CI runner asks of the registry for an unchanged build with `--cache-from` and
//! `--push` (issue 16): every request is counted through a logging proxy in front of the
//! loopback registry. The build needs one probe (`GET /v2/`), the cache manifest and its
//! record list, the base manifest and config, one cross-repository mount per layer, the new
//! config (a HEAD, and its upload when missing) and the manifest: nothing twice, no layer.

use std::collections::BTreeMap;
use std::path::Path;

use crate::build_support::{bases_or_skip, have, kiln_build_ok};
use crate::registry_support::proxy::Proxy;

/// A small app FROM the busybox base, pulled through `registry`: a WORKDIR, two COPYs and a
/// RUN, like the w1 benchmark.
fn project(dir: &Path, registry: &str) {
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {registry}/kiln-test/busybox:latest\n\
             WORKDIR /app\n\
             COPY conf/ /etc/app/\n\
             COPY a.txt b.txt ./\n\
             RUN find /app -type f | wc -l > /app/file-count\n\
             CMD [\"cat\", \"/app/file-count\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("conf/app.conf"), "port 8080\n").unwrap();
    std::fs::write(dir.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(dir.join("b.txt"), "beta\n").unwrap();
}

/// `METHOD path` of each logged request (the proxy appends what it did).
fn requests(proxy: &Proxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .map(|r| r.split(" -> ").next().unwrap().to_string())
        .collect()
}

#[test]
fn an_unchanged_build_on_a_fresh_runner_asks_each_document_once_and_mounts_every_layer() {
    let Some(bases) = bases_or_skip() else { return };
    if !have("skopeo") {
        println!("SKIPPED: needs skopeo");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(Proxy::start(bases.addr(), vec![]));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    project(&ctx, &proxy.addr);
    let cache_ref = format!("{}/fresh/cache:main", proxy.addr);
    kiln_build_ok(
        &tmp.path().join("a"),
        &["-t", "app", &format!("--cache-to={cache_ref}")],
        &ctx,
    );
    proxy.log.lock().unwrap().clear();

    // Runner B: an empty store (no base image either), the cache, a push to a new repository.
    let dest = format!("{}/fresh/app:1", proxy.addr);
    let stderr = kiln_build_ok(
        &tmp.path().join("b"),
        &["-t", &dest, "--push", &format!("--cache-from={cache_ref}")],
        &ctx,
    );
    let seen = requests(&proxy);
    assert!(stderr.contains(" 0 layer(s) written"), "{stderr}");
    let layers = crate::registry_support::manifest_layer_digests(&dest);
    assert_eq!(layers.len(), 5, "the base's, then WORKDIR, COPY, COPY, RUN");

    // No layer is downloaded: only manifests and configs.
    let layer_gets: Vec<&String> = seen
        .iter()
        .filter(|r| r.starts_with("GET ") && layers.iter().any(|l| r.contains(l.as_str())))
        .collect();
    assert!(layer_gets.is_empty(), "{layer_gets:#?}");
    // Nothing is fetched twice (the lazily pulled base was fetched once per use).
    let mut gets: BTreeMap<&String, usize> = BTreeMap::new();
    for r in seen.iter().filter(|r| r.starts_with("GET ")) {
        *gets.entry(r).or_default() += 1;
    }
    gets.retain(|_, n| *n > 1);
    assert!(gets.is_empty(), "fetched more than once: {gets:#?}");
    // One client per registry: a single probe (each pull, REF and destination had its own).
    let probes = seen.iter().filter(|r| *r == "GET /v2/").count();
    assert_eq!(probes, 1, "{seen:#?}");
    // Every layer is mounted, and a mounted layer is not asked about again.
    for layer in &layers {
        let mounts = seen
            .iter()
            .filter(|r| r.starts_with("POST ") && r.contains(&format!("mount={layer}")))
            .count();
        assert_eq!(mounts, 1, "{layer}: {seen:#?}");
        let heads = seen
            .iter()
            .filter(|r| r.starts_with("HEAD ") && r.contains(layer.as_str()))
            .count();
        assert_eq!(heads, 0, "{layer} was mounted: {seen:#?}");
    }
    // In all: the probe, the cache manifest and its record list, the base manifest and
    // config, a mount per layer, the config's HEAD, POST and PUT, the manifest's PUT.
    // (kiln at 7e3eff4 made 28 requests for this build: 4 probes, the base manifest twice,
    // a HEAD before each mount and another after it.)
    let bound = 1 + 2 + 2 + layers.len() + 3 + 1;
    assert!(
        seen.len() <= bound,
        "{} requests, at most {bound} expected: {seen:#?}",
        seen.len()
    );
}
