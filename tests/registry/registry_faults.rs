//! A fault-injecting proxy between kiln and a real registry: pushes complete through transient
//! faults, fail clearly on permanent ones and never leave a tag on an incomplete image; pulls
//! never store a blob whose digest does not match.

use crate::registry_support::proxy::{Fault, Proxy, Rule};
use crate::registry_support::*;
use kiln::Reference;
use kiln::progress::Progress;
use kiln::registry::{Parsed, RegistryError};

fn rule(
    method: &'static str,
    path_contains: impl Into<String>,
    times: usize,
    fault: Fault,
) -> Rule {
    Rule {
        method,
        path_contains: path_contains.into(),
        times,
        fault,
    }
}

/// The manifest's tag as the registry itself (not the proxy) sees it.
async fn tag_exists(reg: &TestRegistry, repo: &str, tag: &str) -> bool {
    let direct = reg.client(None);
    direct.get_manifest(repo, tag, None).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_reset_500_and_429_and_restarts_upload_sessions() {
    let reg = TestRegistry::start("plain");
    let proxy = Proxy::start(
        &reg.addr,
        vec![
            rule("PUT", "/blobs/uploads/", 1, Fault::ResetAfter(100_000)),
            rule("POST", "/blobs/uploads/", 1, Fault::Status(500, None)),
            rule("HEAD", "/blobs/", 1, Fault::Status(503, None)),
            rule("PUT", "/manifests/", 1, Fault::Status(429, Some(1))),
        ],
    )
    .await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 11, &[600_000, 400_000], "amd64");
    let client = Registry_for(&proxy);
    let started = std::time::Instant::now();
    let sum = client
        .push_image(
            "kiln/faulty",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(sum.blobs_uploaded, 3);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let log = proxy.requests();
    for fault in ["ResetAfter", "Status(500", "Status(503", "Status(429"] {
        assert!(
            log.iter().any(|l| l.contains(fault)),
            "{fault} never fired: {log:#?}"
        );
    }
    // Everything the registry now serves is intact.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(dst_dir.path());
    let r: Reference = format!("{}/kiln/faulty:t", reg.addr).parse().unwrap();
    reg.client(None)
        .pull_image(&r, &"linux/amd64".parse().unwrap(), &dst, &Progress::none())
        .await
        .unwrap();
    assert_eq!(dst.blobs(), src.blobs());
}

#[allow(non_snake_case)]
fn Registry_for(proxy: &Proxy) -> kiln::registry::Registry {
    kiln::registry::Registry::new(&proxy.addr, test_config(), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_clear_and_leaves_no_tag() {
    let reg = TestRegistry::start("plain");
    // Every upload of one layer's bytes fails; the other blobs go through.
    let proxy = Proxy::start(
        &reg.addr,
        vec![rule(
            "PUT",
            "/blobs/uploads/",
            usize::MAX,
            Fault::Status(500, None),
        )],
    )
    .await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 12, &[50_000], "amd64");
    let err = Registry_for(&proxy)
        .push_image(
            "kiln/broken",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&proxy.addr) && msg.contains("HTTP 500") && msg.contains("retry later"),
        "{msg}"
    );
    assert!(!tag_exists(&reg, "kiln/broken", "t").await);
    let manifest_puts = proxy
        .requests()
        .iter()
        .filter(|l| l.contains("/manifests/"))
        .count();
    assert_eq!(
        manifest_puts, 0,
        "no manifest is sent before every blob is confirmed"
    );
    let attempts = proxy
        .requests()
        .iter()
        .filter(|l| l.starts_with("PUT"))
        .count();
    assert!(attempts >= 4, "retried before giving up: {attempts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_never_stores_a_blob_whose_digest_does_not_match() {
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 13, &[80_000, 90_000], "amd64");
    reg.client(None)
        .push_image(
            "kiln/corrupt",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    let Parsed::Image { layers, .. } = image.parse().unwrap() else {
        unreachable!()
    };
    let proxy = Proxy::start(
        &reg.addr,
        vec![rule(
            "GET",
            layers[1].digest.to_string(),
            usize::MAX,
            Fault::Corrupt,
        )],
    )
    .await;
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(dst_dir.path());
    let r: Reference = format!("{}/kiln/corrupt:t", proxy.addr).parse().unwrap();
    let err = Registry_for(&proxy)
        .pull_image(&r, &"linux/amd64".parse().unwrap(), &dst, &Progress::none())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layers[1].digest.to_string()));
    let stored = dst.blobs();
    assert!(
        !stored.contains(&layers[1].digest.hex()),
        "corrupt blob stored: {stored:?}"
    );
    assert!(
        !stored.contains(&image.digest.hex()),
        "manifest stored before its blobs"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dst.root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A manifest served wrong for a digest reference is refused the same way.
    let proxy2 = Proxy::start(
        &reg.addr,
        vec![rule("GET", "/manifests/", usize::MAX, Fault::Corrupt)],
    )
    .await;
    let by_digest: Reference = format!("{}/kiln/corrupt@{}", proxy2.addr, image.digest)
        .parse()
        .unwrap();
    let err = Registry_for(&proxy2)
        .resolve(&by_digest, &"linux/amd64".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_are_followed_without_the_registry_authorization() {
    let reg = TestRegistry::start("token");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 14, &[40_000], "amd64");
    reg.client(creds())
        .push_image(
            "kiln/redir",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    let Parsed::Image { layers, .. } = image.parse().unwrap() else {
        unreachable!()
    };
    // "Blob storage" on another port serves the layer; the registry answers 307 to it.
    let (storage, heads) = Proxy::serve_static(src.read(&layers[0].digest)).await;
    let proxy = Proxy::start(
        &reg.addr,
        vec![rule(
            "GET",
            layers[0].digest.to_string(),
            usize::MAX,
            Fault::Redirect(format!("http://{storage}/bucket/blob")),
        )],
    )
    .await;
    let client = kiln::registry::Registry::new(&proxy.addr, test_config(), creds()).unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(dst_dir.path());
    let r: Reference = format!("{}/kiln/redir:t", proxy.addr).parse().unwrap();
    client
        .pull_image(&r, &"linux/amd64".parse().unwrap(), &dst, &Progress::none())
        .await
        .unwrap();
    assert_eq!(dst.read(&layers[0].digest), src.read(&layers[0].digest));
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization"),
        "credentials leaked to blob storage: {}",
        heads[0]
    );
    let to_registry = proxy.requests();
    assert!(
        to_registry.iter().any(|l| l.contains("Redirect")),
        "{to_registry:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_too_large_switches_to_chunked_upload() {
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 15, &[9_000_000], "amd64");
    let Parsed::Image { layers, .. } = image.parse().unwrap() else {
        unreachable!()
    };
    // The monolithic PUT of the 9 MB layer is refused once (its URL ends in digest=…<hex>).
    let proxy = Proxy::start(
        &reg.addr,
        vec![rule(
            "PUT",
            layers[0].digest.hex(),
            1,
            Fault::Status(413, None),
        )],
    )
    .await;
    let (progress, events) = kiln::progress::Progress::channel();
    Registry_for(&proxy)
        .push_image("kiln/big", &["t".into()], &image, &src, None, &progress)
        .await
        .unwrap();
    drop(progress);
    let warned = events.iter().any(
        |e| matches!(e, kiln::progress::Event::Warning { message } if message.contains("chunks")),
    );
    assert!(warned, "the fallback is reported");
    let patches = proxy
        .requests()
        .iter()
        .filter(|l| l.starts_with("PATCH"))
        .count();
    assert!(patches >= 2, "uploaded in chunks: {:#?}", proxy.requests());
    assert!(tag_exists(&reg, "kiln/big", "t").await);
}
