//! Real layers (the layer engine) through the store and image outputs: what goes in comes back
//! out of `umoci unpack` and out of the store's unpacked-layer cache, bit for bit, including
//! ownership, modes, symlinks, hard links and xattrs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use chrono::DateTime;
use kiln::image::{
    ImageBuilder, ImageFormat, LayoutKind, Platform, StoredImage, commit_layer, unpacked_layer,
    write_oci_layout,
};
use kiln::layer::{DiffKind, LayerOptions, Ownership, UnpackOptions};
use kiln::reference::Reference;
use kiln::store::Store;

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("home/app")).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    symlink("../usr/bin/tool", root.join("home/tool")).unwrap();
    fs::write(root.join("home/app/data"), vec![42u8; 200_000]).unwrap();
    fs::set_permissions(
        root.join("home/app/data"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("home/app/data"), Some(1000), Some(100)).unwrap();
    xattr::set(root.join("home/app/data"), "user.kiln.test", b"value").unwrap();
    fs::set_permissions(root.join("home"), fs::Permissions::from_mode(0o750)).unwrap();
}

type Entry = (
    String,
    char,
    u32,
    u32,
    u32,
    Vec<u8>,
    Vec<(String, Vec<u8>)>,
    u64,
);

/// Every entry: path, kind, mode, uid, gid, content/target, user xattrs, link count.
fn tree(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let p = e.path();
        let md = p.symlink_metadata().unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let (kind, data) = if md.file_type().is_symlink() {
            (
                'l',
                fs::read_link(p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if md.is_dir() {
            ('d', vec![])
        } else {
            ('f', fs::read(p).unwrap())
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = if kind == 'l' {
            vec![]
        } else {
            xattr::list(p)
                .unwrap()
                .filter_map(|n| n.into_string().ok())
                .filter(|n| n.starts_with("user."))
                .map(|n| (n.clone(), xattr::get(p, &n).unwrap().unwrap_or_default()))
                .collect()
        };
        xattrs.sort();
        let mode = if kind == 'l' { 0 } else { md.mode() & 0o7777 };
        let nlink = if kind == 'f' { md.nlink() } else { 0 };
        out.push((rel, kind, mode, md.uid(), md.gid(), data, xattrs, nlink));
    }
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn umoci_and_the_layer_cache_give_back_the_input_tree() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to create files owned by other users");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    sample_tree(&input);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let layer = commit_layer(
        &store,
        &input,
        DiffKind::Directory,
        &LayerOptions::default(),
    )
    .unwrap();
    assert_eq!(
        store.cached_compressed(&layer.diff_id, "gzip").unwrap(),
        Some(layer.digest)
    );
    let mut b = ImageBuilder::new(Platform::host(), DateTime::from_timestamp(0, 0).unwrap());
    b.add_layer(layer, "COPY input /");
    let name: Reference = "example.com/layers:1".parse().unwrap();
    let blobs = b
        .commit(&store, ImageFormat::Oci, std::slice::from_ref(&name))
        .unwrap();
    let image = StoredImage::load(&store, &blobs.manifest_digest).unwrap();

    let layout = tmp.path().join("layout");
    write_oci_layout(&store, &image, Some(&name), &layout, LayoutKind::Dir).unwrap();
    let bundle = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&bundle.join("rootfs")), tree(&input));

    let opts = UnpackOptions {
        ownership: Ownership::Preserve,
        xattrs: true,
        ..UnpackOptions::default()
    };
    let dir = unpacked_layer(&store, &image.layers[0], &opts).unwrap();
    assert_eq!(dir, store.layer_dir(&layer.diff_id));
    assert_eq!(tree(&dir), tree(&input));
    // Second call: served from the cache.
    assert_eq!(
        unpacked_layer(&store, &image.layers[0], &opts).unwrap(),
        dir
    );
}

#[test]
fn the_same_tree_gives_the_same_image_digest_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    fs::create_dir_all(input.join("a/b")).unwrap();
    fs::write(input.join("a/b/c"), b"same").unwrap();
    let digests: Vec<_> = (0..2)
        .map(|i| {
            let store = Store::open(tmp.path().join(format!("store{i}"))).unwrap();
            let opts = LayerOptions {
                source_date_epoch: Some(1_700_000_000),
                ..Default::default()
            };
            let layer = commit_layer(&store, &input, DiffKind::Directory, &opts).unwrap();
            let mut b = ImageBuilder::new(
                Platform::host(),
                DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            );
            b.add_layer(layer, "COPY . /");
            b.commit(&store, ImageFormat::Oci, &[])
                .unwrap()
                .manifest_digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn a_layer_whose_tar_does_not_match_its_diff_id_is_not_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    fs::create_dir_all(&input).unwrap();
    fs::write(input.join("f"), b"x").unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let mut layer = commit_layer(
        &store,
        &input,
        DiffKind::Directory,
        &LayerOptions::default(),
    )
    .unwrap();
    layer.diff_id = kiln::Digest::of(b"something else");
    let err = unpacked_layer(&store, &layer, &UnpackOptions::default()).unwrap_err();
    let shown = kiln::error_chain::Causes(&err).to_string();
    assert!(shown.contains("diffID"), "{shown}");
    assert!(!store.is_unpacked(&layer.diff_id));
    assert!(!store.layer_dir(&layer.diff_id).exists());
}

#[test]
fn podman_runs_the_image_from_both_archives() {
    let busybox = Path::new("/bin/busybox");
    if !is_root() || !busybox.exists() {
        eprintln!("SKIPPED: needs root and busybox-static (/bin/busybox)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    fs::create_dir_all(input.join("bin")).unwrap();
    fs::copy(busybox, input.join("bin/busybox")).unwrap();
    symlink("busybox", input.join("bin/sh")).unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let layer = commit_layer(
        &store,
        &input,
        DiffKind::Directory,
        &LayerOptions::default(),
    )
    .unwrap();
    let mut b = ImageBuilder::new(Platform::host(), DateTime::from_timestamp(0, 0).unwrap());
    b.add_layer(layer, "COPY busybox /bin/");
    b.set_env("GREETING", "hello from kiln");
    b.set_entrypoint(vec!["/bin/sh".into(), "-c".into()]);
    b.set_cmd(vec!["echo $GREETING".into()]);
    let name: Reference = "localhost/kiln-run-test:1".parse().unwrap();
    let blobs = b
        .commit(&store, ImageFormat::Oci, std::slice::from_ref(&name))
        .unwrap();
    let image = StoredImage::load(&store, &blobs.manifest_digest).unwrap();
    let archive = tmp.path().join("img.tar");
    kiln::image::write_docker_archive(&store, &image, std::slice::from_ref(&name), &archive)
        .unwrap();
    let podman = |args: &[&str]| {
        let out = crate::common::podman()
            .arg("--root")
            .arg(tmp.path().join("podman"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
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
    podman(&["load", "-i", archive.to_str().unwrap()]);
    let out = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/kiln-run-test:1",
    ]);
    assert_eq!(out, "hello from kiln\n");
}
