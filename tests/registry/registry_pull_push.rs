//! Pull and push against real loopback registries (Debian's docker-registry): plain HTTP,
//! htpasswd behind TLS, and token auth; interop with skopeo both ways.

use crate::registry_support::*;
use kiln::Reference;
use kiln::progress::Progress;
use kiln::registry::{BlobPushed, Parsed, Platform, RegistryError};

fn reference(addr: &str, rest: &str) -> Reference {
    format!("{addr}/{rest}").parse().unwrap()
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_round_trips_and_second_transfers_cost_only_heads() {
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 1, &[300_000, 5_000, 1_200_000], "amd64");
    let client = reg.client(None);
    let tags = vec!["v1".to_string(), "latest".to_string()];
    let sum = client
        .push_image("kiln/app", &tags, &image, &src, None, &Progress::none())
        .await
        .unwrap();
    assert_eq!(sum.digest, image.digest);
    assert_eq!(sum.blobs_uploaded, 4);
    assert!(sum.bytes_sent > 1_000_000);

    // skopeo accepts what kiln pushed, under both tags, with the same digest.
    for tag in ["v1", "latest"] {
        let out = skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/kiln/app:{tag}", reg.addr),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], image.digest.to_string());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
    }

    // podman pulls it too (its own storage in a temp dir) and reports the same image ID.
    let podman_root = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let root = podman_root.path().join("root");
        let run = podman_root.path().join("run");
        let out = crate::common::podman()
            .args([
                "--root",
                root.to_str().unwrap(),
                "--runroot",
                run.to_str().unwrap(),
            ])
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        &format!("{}/kiln/app:v1", reg.addr),
    ]);
    let Parsed::Image { config, .. } = image.parse().unwrap() else {
        unreachable!()
    };
    let ids = podman(&["images", "--no-trunc", "--format", "{{.ID}}"]);
    assert!(ids.contains(&config.digest.hex()), "{ids}");

    let again = client
        .push_image("kiln/app", &tags, &image, &src, None, &Progress::none())
        .await
        .unwrap();
    assert_eq!(
        (again.blobs_uploaded, again.blobs_present, again.bytes_sent),
        (0, 4, 0)
    );

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(dst_dir.path());
    let r = reference(&reg.addr, "kiln/app:v1");
    let pulled = client
        .pull_image(&r, &amd64(), &dst, &Progress::none())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, image.digest);
    assert_eq!(pulled.layers.len(), 3);
    assert_eq!(
        dst.blobs(),
        src.blobs(),
        "every blob arrives, byte for byte by name"
    );
    for name in dst.blobs() {
        let d: kiln::Digest = format!("sha256:{name}").parse().unwrap();
        assert_eq!(kiln::Digest::of(&dst.read(&d)), d);
    }
    let second = client
        .pull_image(&r, &amd64(), &dst, &Progress::none())
        .await
        .unwrap();
    assert_eq!((second.bytes_downloaded, second.blobs_skipped), (0, 4));

    // Pull by digest works too; a digest that does not exist is a clear 404.
    let by_digest = reference(&reg.addr, &format!("kiln/app@{}", image.digest));
    client.resolve(&by_digest, &amd64()).await.unwrap();
    let missing = reference(&reg.addr, "kiln/app:nope");
    let err = client
        .resolve(&missing, &amd64())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&reg.addr) && err.contains("HTTP 404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_is_accepted_by_registry_and_skopeo() {
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 2, &[700_000, 10], "amd64");
    let client = reg.client_with(None, |c| c.chunk_size = Some(64 * 1024));
    client
        .push_image(
            "kiln/chunked",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:t", out_dir.path().display());
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/kiln/chunked:t", reg.addr),
        &dest,
    ]);
    let copied = Layout::new(out_dir.path());
    assert!(copied.has_blob_named(&image.digest));
}

trait HasNamed {
    fn has_blob_named(&self, d: &kiln::Digest) -> bool;
}
impl HasNamed for Layout {
    fn has_blob_named(&self, d: &kiln::Digest) -> bool {
        self.blob_path(d).exists()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_htpasswd_needs_ca_and_credentials() {
    let reg = TestRegistry::start("tls");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 3, &[50_000], "amd64");

    // Without credentials: 401 with the registry named and what to do.
    let anon = reg.client(None);
    let err = anon
        .push_image(
            "kiln/tls",
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
        msg.contains(&reg.addr) && msg.contains("HTTP 401") && msg.contains("kiln login"),
        "{msg}"
    );

    // Wrong password: still a clear 401, and the password never shows.
    let wrong = reg.client(kiln::registry::Credential::parse_user_pass(
        "kiln:hunter2-wrong",
    ));
    let msg = wrong
        .blob_exists("kiln/tls", &image.digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("HTTP 401") && !msg.contains("hunter2"),
        "{msg}"
    );

    // Without the CA: TLS fails and the message says what to do.
    let no_ca = kiln::registry::Registry::new(&reg.addr, test_config(), creds()).unwrap();
    let msg = no_ca
        .blob_exists("kiln/tls", &image.digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&reg.addr) && msg.contains("--tls-verify=false"),
        "{msg}"
    );

    // With CA and credentials it works; so does --tls-verify=false without the CA.
    let ok = reg.client(creds());
    ok.push_image(
        "kiln/tls",
        &["t".into()],
        &image,
        &src,
        None,
        &Progress::none(),
    )
    .await
    .unwrap();
    let insecure = kiln::registry::Registry::new(
        &reg.addr,
        kiln::registry::ClientConfig {
            tls_verify: false,
            ..test_config()
        },
        creds(),
    )
    .unwrap();
    let layer = match image.parse().unwrap() {
        kiln::registry::Parsed::Image { layers, .. } => layers[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        insecure
            .blob_exists("kiln/tls", &layer.digest)
            .await
            .unwrap(),
        Some(layer.size)
    );
    let out = skopeo(&[
        "inspect",
        "--cert-dir",
        reg.cert_dir().join(&reg.addr).to_str().unwrap(),
        "--creds",
        &format!("{USER}:{PASS}"),
        &format!("docker://{}/kiln/tls:t", reg.addr),
    ]);
    assert!(out.contains(&image.digest.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_anonymous_pull_authenticated_push_and_cross_repo_mount() {
    let reg = TestRegistry::start("token");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 4, &[200_000, 300_000], "amd64");

    let anon = reg.client(None);
    let err = anon
        .push_image(
            "kiln/base",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 401, .. }),
        "{err}"
    );

    let user = reg.client(creds());
    let first = user
        .push_image(
            "kiln/base",
            &["t".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(first.blobs_uploaded, 3);
    let user_tokens = reg.token_log().iter().filter(|l| l["user"] == USER).count();
    assert_eq!(
        user_tokens,
        1,
        "one token for the whole push: {:?}",
        reg.token_log()
    );

    // Same blobs into another repository: mounted, not uploaded; one token request carries both scopes.
    let second = user
        .push_image(
            "kiln/derived",
            &["t".into()],
            &image,
            &src,
            Some("kiln/base"),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            second.blobs_mounted,
            second.blobs_uploaded,
            second.bytes_sent
        ),
        (3, 0, 0)
    );
    let log = reg.token_log();
    assert!(
        log.iter().any(|l| {
            let s = l["scope"].to_string();
            s.contains("repository:kiln/derived:pull,push")
                && s.contains("repository:kiln/base:pull")
        }),
        "{log:?}"
    );
    let cfg = match image.parse().unwrap() {
        kiln::registry::Parsed::Image { config, .. } => config,
        other => panic!("{other:?}"),
    };
    let again = user
        .push_blob(
            "kiln/derived",
            &cfg.digest,
            cfg.size,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(again, BlobPushed::Present);

    // Anonymous pull gets a pull-only token and verifies everything.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(dst_dir.path());
    let pulled = anon
        .pull_image(
            &reference(&reg.addr, "kiln/derived:t"),
            &amd64(),
            &dst,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, image.digest);
    assert_eq!(dst.blobs(), src.blobs());
    assert!(reg.token_log().iter().any(|l| l["user"] == "anonymous"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_pushed_by_skopeo_is_pulled_per_platform() {
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let amd = make_image(&src, 5, &[100_000], "amd64");
    let arm = make_image(&src, 6, &[120_000], "arm64");
    let index = make_index(&src, &[(&amd, "linux/amd64"), (&arm, "linux/arm64/v8")]);
    src.tag(&index, "multi");
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", src_dir.path().display()),
        &format!("docker://{}/kiln/multi:1", reg.addr),
    ]);

    let client = reg.client(None);
    let r = reference(&reg.addr, "kiln/multi:1");
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(dst_dir.path());
    let arm_pull = client
        .pull_image(&r, &"linux/arm64".parse().unwrap(), &dst, &Progress::none())
        .await
        .unwrap();
    assert_eq!(arm_pull.manifest.digest, arm.digest);
    assert_eq!(
        arm_pull.index.as_ref().map(|i| i.digest),
        Some(index.digest)
    );
    let amd_pull = client
        .pull_image(&r, &amd64(), &dst, &Progress::none())
        .await
        .unwrap();
    assert_eq!(amd_pull.manifest.digest, amd.digest);

    let err = client
        .pull_image(&r, &"linux/s390x".parse().unwrap(), &dst, &Progress::none())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64/v8"),
        "{err}"
    );

    // kiln pushes the index itself; skopeo copies every platform back out of it.
    client
        .push_image(
            "kiln/multi2",
            &["x".into()],
            &index,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/kiln/multi2:x", reg.addr),
    ]);
    assert_eq!(kiln::Digest::of(raw.as_bytes()), index.digest);
    let back = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/kiln/multi2:x", reg.addr),
        &format!("oci:{}:x", back.path().display()),
    ]);
    assert!(Layout::new(back.path()).has_blob_named(&arm.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_runs_what_kiln_pushed() {
    if std::env::consts::ARCH != "x86_64" {
        println!("SKIPPED: the test image is amd64");
        return;
    }
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_busybox_image(&src, "echo pushed-by-kiln-runs");
    reg.client(None)
        .push_image(
            "kiln/runnable",
            &["1".into()],
            &image,
            &src,
            None,
            &Progress::none(),
        )
        .await
        .unwrap();
    // runc + cgroupfs and ulimits within the hard limits: see docs machine-quirks 1 and 2.
    let hard = |flag: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("ulimit -H{flag}")])
            .output()
            .unwrap();
        let v = String::from_utf8(out.stdout).unwrap().trim().to_string();
        if v == "unlimited" {
            "65536".to_string()
        } else {
            v
        }
    };
    let nproc = hard("u").parse::<u64>().unwrap_or(32768).min(32768);
    let root = tempfile::tempdir().unwrap();
    let out = crate::common::podman()
        .args(["--root", root.path().join("root").to_str().unwrap()])
        .args(["--runroot", root.path().join("run").to_str().unwrap()])
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .args(["run", "--rm", "--tls-verify=false", "--network", "none"])
        .args(["--ulimit", &format!("nofile={0}:{0}", hard("n"))])
        .args(["--ulimit", &format!("nproc={nproc}:{nproc}")])
        .arg(format!("{}/kiln/runnable:1", reg.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pushed-by-kiln-runs"
    );
}
