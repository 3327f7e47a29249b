//! `kiln build` end to end for Dockerfiles without RUN: the hello example through the real
//! command, checked with skopeo and podman; reproducibility; errors that name the line.

use std::process::Command;

use crate::build_support::{have, is_root, kiln, kiln_build as build, lowercase_tempdir};

fn hello() -> std::path::PathBuf {
    crate::build_support::example_dir("hello")
}

#[test]
fn hello_example_builds_into_the_store_and_an_oci_layout_that_real_tools_run() {
    let t = lowercase_tempdir("hello");
    let layout = t.path().join("layout");
    let dest = format!("type=oci,dest={}", layout.display());
    let out = build(
        &t.path().join("root"),
        &["-t", "example:latest", "-o", &dest],
        &hello(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");

    let images = kiln(&t.path().join("root")).arg("images").output().unwrap();
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(
        listing.contains("example") && listing.contains(&id[7..19]),
        "{listing}"
    );

    if !have("skopeo") {
        println!("SKIPPED: skopeo checks (skopeo not installed)");
        return;
    }
    let image = format!("oci:{}:latest", layout.display());
    let cfg = Command::new("skopeo")
        .args(["inspect", "--config", &image])
        .output()
        .unwrap();
    assert!(
        cfg.status.success(),
        "{}",
        String::from_utf8_lossy(&cfg.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    let c = &cfg["config"];
    // The values buildah 1.28 gives the same Dockerfile (tests/containers/examples_buildah.rs keeps its image).
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "GREETING=Hello from kiln!",
            "HELLO_EXAMPLE=1"
        ])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["/usr/local/bin/hello"]));
    assert_eq!(c["WorkingDir"], "/srv/hello");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "hello");
    // Two COPY layers and WORKDIR's (empty: /srv/hello exists), as BuildKit writes them.
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    if !(have("podman") && is_root()) {
        println!("SKIPPED: podman run (needs podman and root)");
        return;
    }
    let storage = crate::build_support::Storage::new(None);
    assert_eq!(
        storage.output_of("hello", &image),
        crate::build_support::expected_output("hello")
    );
}

#[test]
fn same_inputs_with_source_date_epoch_give_the_same_image_id_in_fresh_stores() {
    let t = tempfile::tempdir().unwrap();
    let id = |root: &str| {
        let out = kiln(&t.path().join(root))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "-q", "-t", "repro"])
            .arg(hello())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(id("a"), id("b"));
}

fn dockerfile_build(dockerfile: &str, files: &[(&str, &str)]) -> (bool, String) {
    let mut files = files.to_vec();
    files.push(("Dockerfile", dockerfile));
    let ctx = crate::build_support::context(&files);
    let store = tempfile::tempdir().unwrap();
    let out = build(store.path(), &["-t", "x"], ctx.path());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_copy_source_names_the_line_and_suggests_a_close_match() {
    let (ok, err) = dockerfile_build(
        "FROM scratch\nCOPY config.yml /etc/\n",
        &[("config.yaml", "a: 1\n")],
    );
    assert!(!ok);
    assert!(
        err.contains("Dockerfile:2:1: COPY source \"config.yml\" not found in the build context; did you mean config.yaml?"),
        "{err}"
    );
    assert!(err.contains(" 2 | COPY config.yml /etc/"), "{err}");
}

#[test]
fn dockerignored_files_are_not_in_the_context() {
    let (ok, err) = dockerfile_build(
        "FROM scratch\nCOPY secret.txt /\n",
        &[(".dockerignore", "secret.txt\n"), ("secret.txt", "s")],
    );
    assert!(!ok);
    assert!(
        err.contains("Dockerfile:2:1: COPY source \"secret.txt\" not found"),
        "{err}"
    );
}

#[test]
fn a_rebuild_hits_the_cache_and_a_changed_file_is_named_in_the_miss() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY src/ /src/\nENV X=1\n",
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a").unwrap();
    std::fs::write(ctx.join("src/b.txt"), "b").unwrap();
    let root = t.path().join("root");
    let run_with_id = || {
        let out = build(&root, &["-t", "cached"], &ctx);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let run = || run_with_id().1;
    let (first_id, first) = run_with_id();
    assert!(
        first.contains("COPY a.txt /a.txt: cache miss, not built before"),
        "{first}"
    );
    // A second must pass so that a created time of "now" would differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (again_id, again) = run_with_id();
    assert_eq!(
        again_id, first_id,
        "an unchanged rebuild from cache gives the same image ID"
    );
    assert_eq!(again.matches("CACHED").count(), 2, "{again}");
    assert!(again.contains("0 layer(s) written"), "{again}");
    std::fs::write(ctx.join("src/b.txt"), "changed").unwrap();
    let edited = run();
    assert!(
        edited.contains("COPY src/ /src/: cache miss, 1 file changed (src/b.txt)"),
        "{edited}"
    );
    assert_eq!(edited.matches("CACHED").count(), 1, "{edited}");
    let forced = build(&root, &["-t", "cached", "--no-cache"], &ctx);
    let forced = String::from_utf8_lossy(&forced.stderr);
    assert!(
        forced.contains("cache miss, cache disabled (--no-cache)"),
        "{forced}"
    );
}

#[test]
fn the_compression_level_sets_new_layers_and_a_level_out_of_range_is_refused() {
    // Compressible enough that level 1 and level 9 must differ in size.
    let text: String = (0..20_000)
        .map(|i| format!("line {} of a repetitive file {}\n", i % 97, i % 13))
        .collect();
    let ctx = crate::build_support::context(&[
        ("Dockerfile", "FROM scratch\nCOPY big.txt /big.txt\n"),
        ("big.txt", &text),
    ]);
    let t = tempfile::tempdir().unwrap();
    let layer = |name: &str, args: &[&str]| {
        let layout = t.path().join(name);
        let dest = format!("type=oci,dest={}", layout.display());
        let mut all = vec!["-t", "lvl", "-o", &dest];
        all.extend_from_slice(args);
        crate::build_support::succeeded(&build(
            &t.path().join(format!("{name}-root")),
            &all,
            ctx.path(),
        ));
        let image = crate::build_support::read_layout(&layout, "lvl");
        let diff_ids = image.config["rootfs"]["diff_ids"].clone();
        (std::fs::read(&image.layers[0]).unwrap(), diff_ids)
    };
    let (fast, fast_ids) = layer("l1", &["--compression-level", "1"]);
    let (best, best_ids) = layer("l9", &["--compression-level", "9"]);
    let (default, default_ids) = layer("default", &[]);
    // Same tar (diffID), different bytes; every one is gzip.
    assert_eq!(fast_ids, best_ids);
    assert_eq!(fast_ids, default_ids);
    for blob in [&fast, &best, &default] {
        assert_eq!(&blob[..2], &[0x1f, 0x8b]);
    }
    assert!(best.len() < fast.len(), "{} vs {}", best.len(), fast.len());
    assert!(default.len() <= fast.len() && default.len() >= best.len());

    let (zstd, zstd_ids) = layer(
        "z19",
        &["--compression", "zstd", "--compression-level", "19"],
    );
    assert_eq!(&zstd[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    assert_eq!(zstd_ids, fast_ids);

    for (algo, level, range) in [("gzip", "10", "0-9"), ("zstd", "0", "1-22")] {
        let store = tempfile::tempdir().unwrap();
        let out = build(
            store.path(),
            &[
                "-t",
                "x",
                "--compression",
                algo,
                "--compression-level",
                level,
            ],
            ctx.path(),
        );
        let err = crate::build_support::failed(&out);
        assert!(
            err.contains(&format!(
                "--compression-level {level} is out of range for {algo}: use {range}"
            )),
            "{err}"
        );
    }
}
