//! Shared by the `registry_*` integration tests: loopback registries started through
//! `tests/scripts/registry.sh`, an OCI image layout that serves as blob sink and source, test
//! images with real (gzip'd tar) layers, and a fault-injecting HTTP proxy.
#![allow(dead_code)]

pub mod proxy;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::Digest;
use kiln::registry::{BlobSink, BlobSource, ClientConfig, Credential, Manifest, Registry};

pub const USER: &str = "kiln";
pub const PASS: &str = "kiln-pass";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/registry.sh")
}

/// A `docker-registry` on 127.0.0.1, stopped (and its directory removed) on drop.
pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl TestRegistry {
    /// `kind`: `plain`, `tls` (htpasswd + TLS) or `token`.
    pub fn start(kind: &str) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", dir.path().to_str().unwrap(), kind])
            .output()
            .expect("run registry.sh");
        assert!(
            out.status.success(),
            "registry.sh start {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = String::from_utf8(out.stdout).unwrap().trim().to_string();
        TestRegistry { dir, addr }
    }

    /// The directory holding `127.0.0.1:PORT/ca.crt` (for `tls`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// The token server's request log (for `token`): one JSON line per token request.
    pub fn token_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("token.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A client with fast retries and this registry's CA.
    pub fn client(&self, cred: Option<Credential>) -> Registry {
        self.client_with(cred, |_| {})
    }

    pub fn client_with(
        &self,
        cred: Option<Credential>,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> Registry {
        let mut config = test_config();
        config.cert_dirs = vec![self.cert_dir()];
        tweak(&mut config);
        Registry::new(&self.addr, config, cred).unwrap()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.path().to_str().unwrap()])
            .status();
    }
}

pub fn test_config() -> ClientConfig {
    ClientConfig {
        retries: 3,
        backoff: std::time::Duration::from_millis(50),
        cert_dirs: vec![],
        ..ClientConfig::default()
    }
}

pub fn creds() -> Option<Credential> {
    Credential::parse_user_pass(&format!("{USER}:{PASS}"))
}

/// An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/`), readable by
/// skopeo as `oci:DIR:TAG`. As a [`BlobSink`], blobs land in `blobs/sha256/.tmp-*` and are
/// renamed to their digest only on commit.
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        if !root.join("index.json").exists() {
            std::fs::write(
                root.join("index.json"),
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            )
            .unwrap();
        }
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn put(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(self.blob_path(&d), bytes).unwrap();
        d
    }

    pub fn read(&self, d: &Digest) -> Vec<u8> {
        std::fs::read(self.blob_path(d)).unwrap()
    }

    /// Every committed blob (temporary files excluded).
    pub fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    /// Names `m` as `tag` in index.json.
    pub fn tag(&self, m: &Manifest, tag: &str) {
        let path = self.root.join("index.json");
        let mut idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        idx["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": m.media_type,
                "digest": m.digest.to_string(),
                "size": m.bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(&path, serde_json::to_vec(&idx).unwrap()).unwrap();
    }
}

impl BlobSink for Layout {
    type Writer = tempfile::NamedTempFile;
    fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }
    fn begin(&self) -> std::io::Result<Self::Writer> {
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(self.root.join("blobs/sha256"))
    }
    fn commit(&self, w: Self::Writer, d: &Digest) -> std::io::Result<()> {
        w.persist(self.blob_path(d)).map(drop).map_err(|e| e.error)
    }
}

impl BlobSource for Layout {
    fn open_blob(&self, d: &Digest) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(self.blob_path(d))?))
    }
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A gzip'd tar layer with one file of `size` noise bytes; returns (blob digest, size, diff_id).
pub fn make_layer(layout: &Layout, name: &str, seed: u64, size: usize) -> (Digest, u64, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = noise(seed, size);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, &data[..]).unwrap();
    let (blob, diff_id) = gzip_layer(&tar.into_inner().unwrap());
    (layout.put(&blob), blob.len() as u64, diff_id)
}

/// A tar stream gzip'd as a layer blob: (blob, diff_id).
pub fn gzip_layer(tar: &[u8]) -> (Vec<u8>, Digest) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    (gz.finish().unwrap(), Digest::of(tar))
}

/// An OCI image (config + noise layers of the given sizes) for `os/arch`, stored in `layout`.
pub fn make_image(layout: &Layout, seed: u64, layer_sizes: &[usize], arch: &str) -> Manifest {
    let layers: Vec<_> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, s)| make_layer(layout, &format!("data-{i}"), seed * 1000 + i as u64, *s))
        .collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/data-0"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.2.to_string()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = layout.put(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": kiln::registry::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers.iter().map(|(d, s, _)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": s,
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    layout.put(&bytes);
    Manifest::from_bytes(bytes, Some(kiln::registry::OCI_MANIFEST))
}

/// An OCI index over `images` (each with its `os/arch[/variant]`), stored in `layout`.
pub fn make_index(layout: &Layout, images: &[(&Manifest, &str)]) -> Manifest {
    let entries: Vec<_> = images
        .iter()
        .map(|(m, p)| {
            let parts: Vec<&str> = p.split('/').collect();
            let mut platform = serde_json::json!({"os": parts[0], "architecture": parts[1]});
            if let Some(v) = parts.get(2) {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({"mediaType": m.media_type, "digest": m.digest.to_string(), "size": m.bytes.len(), "platform": platform})
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": kiln::registry::OCI_INDEX, "manifests": entries});
    let bytes = serde_json::to_vec(&index).unwrap();
    layout.put(&bytes);
    Manifest::from_bytes(bytes, Some(kiln::registry::OCI_INDEX))
}

/// Runs skopeo with `args`; returns stdout, panicking with stderr on failure.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The layer digests of the image manifest at `reference` (`HOST/REPO:TAG`, plain HTTP),
/// as the registry serves it.
pub fn manifest_layer_digests(reference: &str) -> Vec<String> {
    let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]))
    .unwrap();
    raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A runnable image: Debian's static busybox as /bin/busybox and /bin/sh, running `script`.
pub fn make_busybox_image(layout: &Layout, script: &str) -> Manifest {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_cksum();
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, "bin/busybox", &busybox[..])
        .unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_mode(0o777);
    l.set_size(0);
    tar.append_link(&mut l, "bin/sh", "busybox").unwrap();
    make_one_layer_image(
        layout,
        &tar.into_inner().unwrap(),
        "amd64",
        serde_json::json!({"Cmd": ["/bin/sh", "-c", script], "Env": ["PATH=/bin"]}),
    )
}

/// An image for `linux/<arch>` whose one layer is the tar stream `tar` (gzip'd here) and whose
/// container config (`Cmd`, `Env`, …) is `config`, stored in `layout`.
pub fn make_one_layer_image(
    layout: &Layout,
    tar: &[u8],
    arch: &str,
    config: serde_json::Value,
) -> Manifest {
    let (blob, diff_id) = gzip_layer(tar);
    let layer = layout.put(&blob);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    }))
    .unwrap();
    let cd = layout.put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": kiln::registry::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": blob.len()}],
    }))
    .unwrap();
    layout.put(&manifest);
    Manifest::from_bytes(manifest, Some(kiln::registry::OCI_MANIFEST))
}
