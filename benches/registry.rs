//! Push and pull a 1 GiB image (4 layers) to and from a loopback `docker-registry`, in MB/s,
//! beside `skopeo copy` of the same image and beside the registry's own ceiling (a raw
//! monolithic `curl` PUT of the same blobs, no client work). Each measurement gets a fresh
//! registry so none profits from blobs another left behind.
//!
//! Run: `cargo bench --bench registry` (release build), or `cargo test --release --bench
//! registry -- --bench`. `KILN_BENCH_MB=256` for a quicker run. Without `--bench` (as under
//! `cargo test --all-targets`) it does nothing.

#[path = "../tests/registry_support/mod.rs"]
mod registry_support;

use std::process::Command;
use std::time::Instant;

use kiln::Reference;
use kiln::progress::Progress;
use kiln::registry::{Manifest, Parsed};
use registry_support::{Layout, TestRegistry, noise, test_config};

const LAYERS: usize = 4;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("registry: bench");
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("registry bench: skipped (run it with `cargo bench --bench registry`)");
        return;
    }
    let total_mb: usize = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(&dir.path().join("src"));
    let image = make_big_image(&layout, total_mb << 20);
    layout.tag(&image, "big");
    let bytes = (total_mb << 20) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mb = |secs: f64| bytes as f64 / 1e6 / secs;
    println!("image: {total_mb} MiB in {LAYERS} layers, loopback docker-registry, plain HTTP");

    let reg = TestRegistry::start("plain");
    let t = time(|| raw_put(&reg.addr, &layout, &image));
    println!(
        "ceiling  raw monolithic PUT (curl)      {:7.1} MB/s  ({t:.2} s)",
        mb(t)
    );

    let reg = TestRegistry::start("plain");
    let client = reg.client(None);
    let t = time(|| {
        rt.block_on(client.push_image(
            "bench/kiln",
            &["1".into()],
            &image,
            &layout,
            None,
            &Progress::none(),
        ))
        .unwrap();
    });
    println!(
        "push     kiln                           {:7.1} MB/s  ({t:.2} s)",
        mb(t)
    );
    let t = time(|| {
        let s = rt
            .block_on(client.push_image(
                "bench/kiln",
                &["1".into()],
                &image,
                &layout,
                None,
                &Progress::none(),
            ))
            .unwrap();
        assert_eq!(s.bytes_sent, 0);
    });
    println!(
        "push     kiln, registry has every blob   {:7.3} s (HEAD requests only)",
        t
    );

    let reg2 = TestRegistry::start("plain");
    let src = format!("oci:{}:big", layout.root.display());
    let t = time(|| {
        skopeo(&[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &src,
            &format!("docker://{}/bench/skopeo:1", reg2.addr),
        ])
    });
    println!(
        "push     skopeo copy                    {:7.1} MB/s  ({t:.2} s)",
        mb(t)
    );

    let r: Reference = format!("{}/bench/kiln:1", reg.addr).parse().unwrap();
    let pull_dir = tempfile::tempdir().unwrap();
    let dst = Layout::new(pull_dir.path());
    let t = time(|| {
        rt.block_on(client.pull_image(
            &r,
            &"linux/amd64".parse().unwrap(),
            &dst,
            &Progress::none(),
        ))
        .unwrap();
    });
    println!(
        "pull     kiln (verified, to disk)       {:7.1} MB/s  ({t:.2} s)",
        mb(t)
    );
    let t = time(|| {
        let p = rt
            .block_on(client.pull_image(
                &r,
                &"linux/amd64".parse().unwrap(),
                &dst,
                &Progress::none(),
            ))
            .unwrap();
        assert_eq!(p.bytes_downloaded, 0);
    });
    println!("pull     kiln, every blob present        {:7.3} s", t);
    let out = tempfile::tempdir().unwrap();
    let t = time(|| {
        skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}/bench/kiln:1", reg.addr),
            &format!("oci:{}:x", out.path().display()),
        ])
    });
    println!(
        "pull     skopeo copy (to oci layout)    {:7.1} MB/s  ({t:.2} s)",
        mb(t)
    );
    let _ = test_config();
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn skopeo(args: &[&str]) {
    let st = Command::new("skopeo").args(args).status().unwrap();
    assert!(st.success(), "skopeo {args:?}");
}

/// Layers of incompressible bytes (registries never look inside), so the numbers measure
/// transfer and hashing, not compression.
fn make_big_image(layout: &Layout, total: usize) -> Manifest {
    let per = total / LAYERS;
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        let tmp = layout.root.join(format!("blobs/sha256/.gen-{i}"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
        let mut h = kiln::digest::HashingWriter::new(&mut f);
        let chunk = 4 << 20;
        let mut left = per;
        let mut seed = i as u64 * 7919 + 1;
        while left > 0 {
            let n = left.min(chunk);
            std::io::Write::write_all(&mut h, &noise(seed, n)).unwrap();
            seed += 1;
            left -= n;
        }
        let (_, d, size) = h.finish();
        drop(f);
        std::fs::rename(&tmp, layout.blob_path(&d)).unwrap();
        layers.push((d, size));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.0.to_string()).collect::<Vec<_>>()},
    }))
    .unwrap();
    let cd = layout.put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": kiln::registry::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
    }))
    .unwrap();
    layout.put(&manifest);
    Manifest::from_bytes(manifest, Some(kiln::registry::OCI_MANIFEST))
}

/// POST + one PUT per blob with curl, sequentially: the registry's own speed.
fn raw_put(addr: &str, layout: &Layout, image: &Manifest) {
    let Parsed::Image { config, layers } = image.parse().unwrap() else {
        unreachable!()
    };
    for d in std::iter::once(config).chain(layers) {
        let out = Command::new("curl")
            .args(["-sf", "-X", "POST", "-D", "-", "-o", "/dev/null"])
            .arg(format!("http://{addr}/v2/bench/raw/blobs/uploads/"))
            .output()
            .unwrap();
        let head = String::from_utf8(out.stdout).unwrap();
        let loc = head
            .lines()
            .find_map(|l| l.strip_prefix("Location: "))
            .expect("Location")
            .trim();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let st = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-H",
                "Content-Type: application/octet-stream",
                "-T",
            ])
            .arg(layout.blob_path(&d.digest))
            .arg(format!("{loc}{sep}digest={}", d.digest))
            .status()
            .unwrap();
        assert!(st.success(), "raw PUT failed");
    }
}
