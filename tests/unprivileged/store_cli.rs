//! `kiln images / inspect / tag / rmi / prune / save` against a store in a temp dir.

use std::fs;
use std::path::Path;
use std::process::Command;

use assert_cmd::prelude::*;
use chrono::DateTime;
use predicates::prelude::*;

use kiln::Digest;
use kiln::image::{Compression, ImageBuilder, ImageFormat, Layer, Platform};
use kiln::store::Store;

/// Commits a one-layer image (a single file holding `content`) named `name`.
fn image(store: &Store, name: &str, content: &str) -> (Digest, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", content.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let digest = store.put_blob(&gz).unwrap();
    let mut b = ImageBuilder::new(
        Platform::host(),
        DateTime::from_timestamp(1_600_000_000, 0).unwrap(),
    );
    b.add_layer(
        Layer {
            digest,
            size: gz.len() as u64,
            diff_id: Digest::of(&tar),
            compression: Compression::Gzip,
        },
        "COPY hello.txt /",
    );
    b.set_cmd(vec!["cat".into(), "/hello.txt".into()]);
    let blobs = b
        .commit(store, ImageFormat::Oci, &[name.parse().unwrap()])
        .unwrap();
    (blobs.manifest_digest, blobs.config_digest)
}

fn kiln(root: &Path) -> Command {
    let mut c = Command::cargo_bin("kiln").unwrap();
    c.arg("--root").arg(root).env_remove("KILN_ROOT");
    c
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn images_lists_names_ids_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (_, id) = image(&store, "alpha:1", "a");
    image(&store, "registry.example:5000/team/beta", "b");
    let table = stdout(kiln(dir.path()).arg("images"));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(lines[0].contains(col), "{table}");
    }
    assert!(lines[1].starts_with("alpha "), "{table}");
    assert!(lines[1].contains(&id.hex()[..12]), "{table}");
    assert!(lines[1].contains(" years ago"), "{table}");
    assert!(
        lines[2].starts_with("registry.example:5000/team/beta   latest"),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&stdout(
        kiln(dir.path()).args(["images", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["name"], "docker.io/library/alpha:1");
    assert_eq!(json[0]["id"], id.to_string());
    assert!(json[0]["size"].as_u64().unwrap() > 0);
    assert_eq!(json[0]["created"], "2020-09-13T12:26:40Z");

    // An index (multi-platform) record is one row, the index digest its ID.
    let index = store
        .put_blob(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)
        .unwrap();
    store.tag(&"multi:1".parse().unwrap(), &index).unwrap();
    kiln(dir.path()).arg("images").assert().success().stdout(
        predicate::str::contains("multi ").and(predicate::str::contains(&index.hex()[..12])),
    );
    // One whose member is missing from the store still gets its row, and a warning.
    let missing = store
        .put_blob(format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}]}}"#, kiln::Digest::of(b"gone")).as_bytes())
        .unwrap();
    store.tag(&"broken:1".parse().unwrap(), &missing).unwrap();
    kiln(dir.path())
        .arg("images")
        .assert()
        .success()
        .stdout(predicate::str::contains("broken "))
        .stderr(predicate::str::contains("broken:1"));
}

#[test]
fn inspect_prints_config_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (manifest, id) = image(&store, "alpha:1", "a");
    for by in [
        "alpha:1".to_string(),
        id.hex()[..8].to_string(),
        manifest.to_string(),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(kiln(dir.path()).args(["inspect", &by]))).unwrap();
        assert_eq!(v["Id"], id.to_string(), "{by}");
        assert_eq!(v["Digest"], manifest.to_string());
        assert_eq!(
            v["Config"]["config"]["Cmd"],
            serde_json::json!(["cat", "/hello.txt"])
        );
        assert_eq!(v["Manifest"]["config"]["digest"], id.to_string());
    }
    kiln(dir.path())
        .args(["inspect", "nosuch:1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("nosuch:1").and(predicate::str::contains("kiln images")));
}

#[test]
fn tag_rmi_prune_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (manifest, _) = image(&store, "alpha:1", "a");
    let (other, _) = image(&store, "other:1", "o");
    kiln(dir.path())
        .args(["tag", "alpha:1", "example.com/alpha:2"])
        .assert()
        .success();
    assert_eq!(store.resolve("example.com/alpha:2").unwrap(), manifest);
    kiln(dir.path())
        .args(["tag", "alpha:1", &format!("x@{manifest}")])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot tag with a digest"));

    // Removing one name keeps the content: the other name still needs it.
    kiln(dir.path())
        .args(["rmi", "alpha:1"])
        .assert()
        .success()
        .stdout("Untagged: alpha:1\n");
    let out = stdout(kiln(dir.path()).arg("prune"));
    assert!(out.contains("Deleted 0 blobs"), "{out}");
    assert!(store.has_blob(&manifest));

    // rmi of a missing name fails but still removes the others.
    kiln(dir.path())
        .args(["rmi", "nosuch", "example.com/alpha:2"])
        .assert()
        .code(1)
        .stdout("Untagged: example.com/alpha:2\n")
        .stderr(predicate::str::contains("nosuch"));
    let out = stdout(kiln(dir.path()).arg("prune"));
    assert!(out.contains("Deleted 3 blobs"), "{out}"); // manifest, config, layer
    assert!(!store.has_blob(&manifest));
    assert!(store.has_blob(&other));
    let out = stdout(kiln(dir.path()).arg("prune"));
    assert!(out.contains("Deleted 0 blobs"), "{out}");
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
}

#[test]
fn save_writes_archives_skopeo_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let (manifest, id) = image(&store, "alpha:1", "a");
    let docker = dir.path().join("docker.tar");
    let oci = dir.path().join("oci.tar");
    kiln(store.root())
        .args(["save", "alpha:1", "-o"])
        .arg(&docker)
        .assert()
        .success();
    kiln(store.root())
        .args(["save", &id.hex()[..12], "--format", "oci", "-o"])
        .arg(&oci)
        .assert()
        .success();
    for (transport, digest) in [
        (format!("docker-archive:{}", docker.display()), None),
        (format!("oci-archive:{}", oci.display()), Some(manifest)),
    ] {
        let out = Command::new("skopeo")
            .args(["inspect", &transport])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(d) = digest {
            assert_eq!(v["Digest"], d.to_string());
        }
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    }
    let names = Command::new("tar")
        .arg("-xOf")
        .arg(&docker)
        .arg("manifest.json")
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&names.stdout).unwrap();
    assert_eq!(m[0]["RepoTags"], serde_json::json!(["alpha:1"]));
    // A failing save names the image and leaves no file.
    let missing = dir.path().join("missing.tar");
    kiln(store.root())
        .args(["save", "nosuch", "-o"])
        .arg(&missing)
        .assert()
        .failure()
        .stderr(predicate::str::contains("nosuch"));
    assert!(!missing.exists());
    assert!(fs::metadata(&docker).unwrap().len() > 0);
}

#[test]
fn kiln_root_env_selects_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    image(&store, "from-env:1", "e");
    let out = Command::cargo_bin("kiln")
        .unwrap()
        .env("KILN_ROOT", dir.path())
        .args(["images", "--quiet"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
}

/// Issue 14: an error's cause is printed once (it used to be in the message and again as the
/// cause: `…: Not a directory (os error 20): Not a directory (os error 20)`).
#[test]
fn a_store_error_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notadir"), b"").unwrap();
    let out = kiln(&dir.path().join("notadir/y"))
        .arg("images")
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    let cause = std::io::Error::from_raw_os_error(libc::ENOTDIR).to_string();
    assert_eq!(err.matches(&cause).count(), 1, "{err}");
    assert!(err.contains("notadir/y"), "{err}");
}
