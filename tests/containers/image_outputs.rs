//! Images assembled with the library, exported, and checked with real tools: umoci, skopeo,
//! podman.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::DateTime;
use kiln::Digest;
use kiln::image::{
    ImageBuilder, ImageError, ImageFormat, Layer, LayoutKind, Platform, StoredImage, commit_layer,
    write_docker_archive, write_oci_layout,
};
use kiln::layer::{DiffKind, LayerOptions};
use kiln::reference::Reference;
use kiln::store::Store;

/// A gzip layer of `dir`'s contents, written into the store by the layer engine. mtimes are
/// clamped so two trees made a second apart still give the same bytes.
fn layer_from_dir(store: &Store, dir: &Path) -> Layer {
    let opts = LayerOptions {
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    };
    commit_layer(store, dir, DiffKind::Directory, &opts).unwrap()
}

/// A small tree with the things that are easy to get wrong.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("app/bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("app/bin/run"), b"#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(root.join("app/bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc/secret"), b"s3cret").unwrap();
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    fs::write(root.join("app/data.bin"), big).unwrap();
    symlink("bin/run", root.join("app/run-link")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

struct Built {
    _tmp: tempfile::TempDir,
    store: Store,
    image: StoredImage,
    name: Reference,
    input: PathBuf,
}

fn build(format: ImageFormat) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    sample_tree(&input);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let layer = layer_from_dir(&store, &input);
    let mut b = ImageBuilder::new(Platform::host(), t0());
    b.add_layer(layer, "COPY input /");
    b.set_env("PATH", "/usr/bin:/bin");
    b.set_label("org.example.test", "yes");
    b.expose("8080");
    b.set_working_dir("/app");
    b.set_cmd(vec!["/app/bin/run".into()]);
    b.add_empty_step("CMD [\"/app/bin/run\"]");
    let name: Reference = "example.com/kiln/test:1".parse().unwrap();
    let blobs = b
        .commit(&store, format, std::slice::from_ref(&name))
        .unwrap();
    let image = StoredImage::load(&store, &blobs.manifest_digest).unwrap();
    Built {
        _tmp: tmp,
        store,
        image,
        name,
        input,
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Relative path → (kind, mode, uid, gid, content or link target) for every entry under `root`.
type Entry = (String, char, u32, (u32, u32), Vec<u8>);

fn tree(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let md = e.path().symlink_metadata().unwrap();
        let (kind, data) = if md.file_type().is_symlink() {
            (
                'l',
                fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if md.is_dir() {
            ('d', vec![])
        } else {
            ('f', fs::read(e.path()).unwrap())
        };
        let mode = if kind == 'l' { 0 } else { md.mode() & 0o7777 };
        out.push((rel, kind, mode, (md.uid(), md.gid()), data));
    }
    out
}

#[test]
fn umoci_unpacks_the_oci_layout_to_the_input_tree() {
    let b = build(ImageFormat::Oci);
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    write_oci_layout(&b.store, &b.image, Some(&b.name), &layout, LayoutKind::Dir).unwrap();
    let bundle = out.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle));
    assert_eq!(tree(&bundle.join("rootfs")), tree(&b.input));
    // umoci also renders the config into the runtime spec.
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["cwd"], "/app");
    assert_eq!(spec["process"]["args"], serde_json::json!(["/app/bin/run"]));
}

#[test]
fn skopeo_accepts_oci_dir_oci_archive_and_docker_archive() {
    for format in [ImageFormat::Oci, ImageFormat::Docker] {
        let b = build(format);
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("oci");
        let oci_tar = out.path().join("oci.tar");
        let docker_tar = out.path().join("docker.tar");
        write_oci_layout(&b.store, &b.image, Some(&b.name), &dir, LayoutKind::Dir).unwrap();
        write_oci_layout(&b.store, &b.image, Some(&b.name), &oci_tar, LayoutKind::Tar).unwrap();
        write_docker_archive(
            &b.store,
            &b.image,
            std::slice::from_ref(&b.name),
            &docker_tar,
        )
        .unwrap();
        for (transport, same_manifest) in [
            (
                format!("oci:{}:1", dir.display()),
                format == ImageFormat::Oci,
            ),
            (
                format!("oci-archive:{}", oci_tar.display()),
                format == ImageFormat::Oci,
            ),
            (format!("docker-archive:{}", docker_tar.display()), false),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &transport])))
                    .unwrap();
            if same_manifest {
                assert_eq!(
                    v["Digest"],
                    b.image.manifest_digest.to_string(),
                    "{transport}"
                );
            }
            assert_eq!(v["Labels"]["org.example.test"], "yes", "{transport}");
            assert_eq!(
                v["Env"],
                serde_json::json!(["PATH=/usr/bin:/bin"]),
                "{transport}"
            );
            assert_eq!(v["Layers"].as_array().unwrap().len(), 1, "{transport}");
            let config =
                run(Command::new("skopeo").args(["inspect", "--config", "--raw", &transport]));
            assert_eq!(
                Digest::of(config.as_bytes()),
                b.image.config_digest,
                "{transport}: the config must travel byte for byte"
            );
        }
    }
}

fn podman(root: &Path) -> Command {
    let mut c = crate::common::podman();
    c.arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs", "--events-backend", "file"]);
    c
}

#[test]
fn podman_loads_both_archives() {
    let b = build(ImageFormat::Oci);
    let out = tempfile::tempdir().unwrap();
    let docker_tar = out.path().join("docker.tar");
    let oci_tar = out.path().join("oci.tar");
    write_docker_archive(
        &b.store,
        &b.image,
        std::slice::from_ref(&b.name),
        &docker_tar,
    )
    .unwrap();
    write_oci_layout(&b.store, &b.image, Some(&b.name), &oci_tar, LayoutKind::Tar).unwrap();
    for archive in [&docker_tar, &oci_tar] {
        let root = tempfile::tempdir().unwrap();
        run(podman(root.path()).arg("load").arg("-i").arg(archive));
        let v: serde_json::Value = serde_json::from_str(&run(podman(root.path()).args([
            "image",
            "inspect",
            &b.image.config_digest.hex(),
        ])))
        .unwrap();
        assert_eq!(
            v[0]["Id"],
            b.image.config_digest.hex(),
            "{}",
            archive.display()
        );
        assert_eq!(v[0]["Config"]["WorkingDir"], "/app");
        if archive == &docker_tar {
            assert_eq!(
                v[0]["RepoTags"],
                serde_json::json!(["example.com/kiln/test:1"]),
                "{}",
                archive.display()
            );
        }
    }
}

#[test]
fn same_input_gives_the_same_digests_and_bytes() {
    let a = build(ImageFormat::Oci);
    let b = build(ImageFormat::Oci);
    assert_eq!(a.image.manifest_digest, b.image.manifest_digest);
    assert_eq!(a.image.config_digest, b.image.config_digest);
    let out = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, built) in [&a, &b].into_iter().enumerate() {
        let oci = out.path().join(format!("oci{i}.tar"));
        let docker = out.path().join(format!("docker{i}.tar"));
        write_oci_layout(
            &built.store,
            &built.image,
            Some(&built.name),
            &oci,
            LayoutKind::Tar,
        )
        .unwrap();
        write_docker_archive(
            &built.store,
            &built.image,
            std::slice::from_ref(&built.name),
            &docker,
        )
        .unwrap();
        files.push((fs::read(oci).unwrap(), fs::read(docker).unwrap()));
    }
    assert!(files[0].0 == files[1].0, "OCI archives differ");
    assert!(files[0].1 == files[1].1, "docker archives differ");
}

#[test]
fn failed_exports_leave_nothing_behind() {
    let b = build(ImageFormat::Oci);
    let out = tempfile::tempdir().unwrap();
    // A non-empty destination directory is refused, and left alone.
    let busy = out.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep"), b"x").unwrap();
    let err = write_oci_layout(&b.store, &b.image, None, &busy, LayoutKind::Dir).unwrap_err();
    assert!(matches!(err, ImageError::DestinationExists(_)), "{err}");
    assert!(err.to_string().contains("busy"), "{err}");
    assert_eq!(fs::read(busy.join("keep")).unwrap(), b"x");
    // A layer missing from the store: the error names it, no file appears.
    let layer = b.image.layers[0].digest;
    fs::remove_file(b.store.root().join("blobs/sha256").join(layer.hex())).unwrap();
    for (i, kind) in [LayoutKind::Tar, LayoutKind::Dir].into_iter().enumerate() {
        let dest = out.path().join(format!("out{i}"));
        let err = write_oci_layout(&b.store, &b.image, None, &dest, kind).unwrap_err();
        assert!(err.to_string().contains(&layer.to_string()), "{err}");
        assert!(!dest.exists());
    }
    let err = write_docker_archive(&b.store, &b.image, &[], &out.path().join("d.tar")).unwrap_err();
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    let mut left: Vec<_> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["busy"]);
}

#[test]
fn docker_archive_refuses_a_layer_that_does_not_match_its_diff_id() {
    let b = build(ImageFormat::Oci);
    let mut image = b.image.clone();
    image.layers[0].diff_id = Digest::of(b"not the tar");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("d.tar");
    let err = write_docker_archive(&b.store, &image, &[], &dest).unwrap_err();
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
    assert!(!dest.exists());
    let _ = std::io::stdout().flush();
}
