//! Cross-repository mounts from the store's blob-locations record, against a real loopback
//! registry (Debian's docker-registry): push to repo a then b mounts everything; a pulled base
//! pushed elsewhere mounts; stale or foreign records fall back to an upload.

use crate::registry_support::proxy::{Fault, Proxy, Rule};
use crate::registry_support::*;
use kiln::progress::Progress;
use kiln::registry::{Manifest, StoreBlobs};
use kiln::store::Store;
use kiln::{Digest, Reference};

/// A store holding every blob of an image made in a temp layout.
fn store_with_image(seed: u64) -> (tempfile::TempDir, Store, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(&dir.path().join("layout"));
    let image = make_image(&layout, seed, &[300_000, 5_000, 700_000], "amd64");
    let store = Store::open(dir.path().join("store")).unwrap();
    for name in layout.blobs() {
        let d: Digest = format!("sha256:{name}").parse().unwrap();
        assert_eq!(store.put_blob(&layout.read(&d)).unwrap(), d);
    }
    (dir, store, image)
}

fn inspect_layers(addr: &str, repo: &str) -> usize {
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{addr}/{repo}:v1"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Layers"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_repository_of_the_registry_gets_every_blob_mounted() {
    let reg = TestRegistry::start("plain");
    let (_dir, store, image) = store_with_image(11);
    let client = reg.client(None);
    let tags = vec!["v1".to_string()];
    let src = StoreBlobs(&store);
    let first = client
        .push_image("kiln/a", &tags, &image, &src, None, &Progress::none())
        .await
        .unwrap();
    assert_eq!((first.blobs_uploaded, first.blobs_mounted), (4, 0));
    let second = client
        .push_image("kiln/b", &tags, &image, &src, None, &Progress::none())
        .await
        .unwrap();
    assert_eq!(
        (
            second.blobs_uploaded,
            second.blobs_mounted,
            second.bytes_sent
        ),
        (0, 4, 0)
    );
    assert_eq!(inspect_layers(&reg.addr, "kiln/b"), 3);
    // The record now lists both repositories, the latest first.
    let Ok(kiln::registry::Parsed::Image { config, .. }) = image.parse() else {
        unreachable!()
    };
    assert_eq!(
        store.blob_locations(client.host(), &config.digest),
        ["kiln/b", "kiln/a"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_base_pushed_to_another_repository_mounts_its_layers() {
    let reg = TestRegistry::start("plain");
    let client = reg.client(None);
    // Someone else pushed the base (no record of it in our store).
    let base_dir = tempfile::tempdir().unwrap();
    let base = Layout::new(base_dir.path());
    let image = make_image(&base, 12, &[400_000, 9_000], "amd64");
    let tags = vec!["v1".to_string()];
    client
        .push_image("lib/base", &tags, &image, &base, None, &Progress::none())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reference: Reference = format!("{}/lib/base:v1", reg.addr).parse().unwrap();
    let platform = "linux/amd64".parse().unwrap();
    let pulled = client
        .pull_image(
            &reference,
            &platform,
            &StoreBlobs(&store),
            &Progress::none(),
        )
        .await
        .unwrap();
    let sum = client
        .push_image(
            "team/app",
            &tags,
            &pulled.manifest,
            &StoreBlobs(&store),
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(
        (sum.blobs_uploaded, sum.blobs_mounted, sum.bytes_sent),
        (0, 3, 0)
    );
    assert_eq!(inspect_layers(&reg.addr, "team/app"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_or_foreign_records_fall_back_to_upload() {
    let reg = TestRegistry::start("plain");
    let client = reg.client(None);
    let (_dir, store, image) = store_with_image(13);
    let kiln::registry::Parsed::Image { config, layers } = image.parse().unwrap() else {
        unreachable!()
    };
    let mut all: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
    all.push(config.digest);
    // A repository of this registry that does not hold the blobs (deleted, or never pushed:
    // the registry answers the mount with 202 and an upload session) …
    store
        .record_blob_locations(client.host(), "gone/repo", &all)
        .unwrap();
    // … and, more recent, another registry, which must not be asked at all.
    store
        .record_blob_locations("elsewhere.example:5000", "lib/x", &all)
        .unwrap();
    let tags = vec!["v1".to_string()];
    let sum = client
        .push_image(
            "kiln/c",
            &tags,
            &image,
            &StoreBlobs(&store),
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!((sum.blobs_uploaded, sum.blobs_mounted), (4, 0));
    assert!(sum.bytes_sent > 1_000_000);
    assert_eq!(inspect_layers(&reg.addr, "kiln/c"), 3);
    assert_eq!(
        store.blob_locations(client.host(), &config.digest),
        ["kiln/c", "gone/repo"]
    );

    // A repository that held the blobs when recorded, then lost them (the registry's link
    // files removed, as a repository delete does): still an upload, still a good image.
    let links = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/kiln/c/_layers/sha256");
    for d in &all {
        std::fs::remove_dir_all(links.join(d.hex())).unwrap();
    }
    let sum = client
        .push_image(
            "kiln/d",
            &tags,
            &image,
            &StoreBlobs(&store),
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!((sum.blobs_uploaded, sum.blobs_mounted), (4, 0));
    assert_eq!(inspect_layers(&reg.addr, "kiln/d"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_mount_source_falls_back_to_upload() {
    let reg = TestRegistry::start("plain");
    // The registry denies every mount request (as for a source repository we may not read).
    let rule = Rule {
        method: "POST",
        path_contains: "mount=".to_string(),
        times: 1000,
        fault: Fault::Status(403, None),
    };
    let proxy = Proxy::start(&reg.addr, vec![rule]).await;
    let client = kiln::registry::Registry::new(&proxy.addr, test_config(), None).unwrap();
    let (_dir, store, image) = store_with_image(14);
    let kiln::registry::Parsed::Image { config, layers } = image.parse().unwrap() else {
        unreachable!()
    };
    let mut all: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
    all.push(config.digest);
    store
        .record_blob_locations(client.host(), "private/repo", &all)
        .unwrap();
    let sum = client
        .push_image(
            "kiln/e",
            &["v1".to_string()],
            &image,
            &StoreBlobs(&store),
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!((sum.blobs_uploaded, sum.blobs_mounted), (4, 0));
    let mounts = proxy
        .requests()
        .iter()
        .filter(|r| r.contains("mount="))
        .count();
    assert_eq!(
        mounts,
        4,
        "one mount attempt per blob: {:?}",
        proxy.requests()
    );
    assert_eq!(inspect_layers(&reg.addr, "kiln/e"), 3);
}

/// The CLI path: `kiln pull` from one repository, `kiln push` to another of the same registry,
/// with no `--mount-from`: the summary reports every blob mounted.
#[test]
fn cli_push_of_a_pulled_image_mounts_without_mount_from() {
    use assert_cmd::Command;
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 15, &[200_000, 100_000], "amd64");
    src.tag(&image, "one");
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:one", src_dir.path().display()),
        &format!("docker://{}/up/app:1", reg.addr),
    ]);
    let home = tempfile::tempdir().unwrap();
    let kiln = || {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_ROOT", home.path().join("store"))
            .env("HOME", home.path())
            .env("DOCKER_CONFIG", home.path().join(".docker"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR");
        c
    };
    kiln()
        .args(["pull", "--platform", "linux/amd64"])
        .arg(format!("{}/up/app:1", reg.addr))
        .assert()
        .success();
    let out = kiln()
        .args(["push", "-q"])
        .arg(format!("{}/up/app:1", reg.addr))
        .arg(format!("{}/down/app:v1", reg.addr))
        .assert()
        .success();
    let o = out.get_output();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("0 blob(s) uploaded") && text.contains("3 mounted"),
        "{text}"
    );
    assert_eq!(inspect_layers(&reg.addr, "down/app"), 2);
}
