//! Every project in `testdata/examples/` built by `kiln build` FROM the base images in a loopback
//! registry, pushed there, pulled and run by podman: it prints the example's `expected-output`
//! (recorded with buildah + podman). Its config and its unpacked file tree equal those of
//! buildah's image of the same Dockerfile (`crate::build_support::buildah_reference`), apart from
//! buildah's additions ([`BUILDAH_ONLY_LABELS`], [`crate::build_support::drop_buildah_mount_stubs`]) and the random
//! names yarn picks ([`mask_yarn_randomness`]).
//!
//! Also: a failing RUN, and `--push` of several tags.

use std::collections::BTreeMap;
use std::path::Path;

use crate::build_support::{Node, Storage, bases_or_skip};

/// The config fields Docker's builder sets from the Dockerfile; kiln's must equal buildah's.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
];

/// buildah stamps its own version into every image it builds; Docker and kiln do not.
const BUILDAH_ONLY_LABELS: &[&str] = &["io.buildah.version"];

/// Builds example `name` with kiln, pushes it as `<registry>/e2e/<name>:latest` and also writes
/// it as an OCI layout under `tmp`; returns the layout.
fn kiln_build_and_push(tmp: &Path, name: &str) -> std::path::PathBuf {
    let bases = crate::build_support::bases_with_node();
    let layout = tmp.join("layout");
    let pushed = format!("{}/e2e/{name}:latest", bases.addr());
    let out = crate::build_support::kiln_build(
        &tmp.join("store"),
        &[
            "-t",
            &pushed,
            &bases.base_arg(),
            "--push",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        &crate::build_support::example_dir(name),
    );
    let stderr = crate::build_support::succeeded(&out);
    if name != "hello" {
        assert!(
            stderr.contains("pulling "),
            "{name}: the base should have been pulled: {stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("pushed {}/e2e/{name}@sha256:", bases.addr())),
        "{stderr}"
    );
    layout
}

/// The pushed image, pulled by podman, prints what the example must print.
fn check_runs(name: &str) {
    let storage = Storage::new(None);
    let image = format!("{}/e2e/{name}:latest", crate::build_support::bases().addr());
    storage.pull(&image);
    assert_eq!(
        storage.output_of(name, &image),
        crate::build_support::expected_output(name),
        "{name}: podman run of kiln's pushed image"
    );
}

fn config_fields(config: &serde_json::Value) -> BTreeMap<&'static str, serde_json::Value> {
    let mut fields: BTreeMap<_, _> = CONFIG_FIELDS
        .iter()
        .map(|f| (*f, config["config"][f].clone()))
        .collect();
    if let Some(labels) = fields.get_mut("Labels").and_then(|l| l.as_object_mut()) {
        for l in BUILDAH_ONLY_LABELS {
            labels.remove(*l);
        }
        if labels.is_empty() {
            fields.insert("Labels", serde_json::Value::Null);
        }
    }
    fields
}

/// yarn names its cache entry for a `file:` dependency with a random UUID and a timestamp, and
/// records them in its `.yarn-metadata.json`: output of the RUN step that no builder controls.
/// The random part becomes `<random>` and that file's content is not compared.
fn mask_yarn_randomness(tree: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    let random = regex::Regex::new(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-[0-9]+").unwrap();
    tree.into_iter()
        .map(|(path, mut node)| {
            let masked = random.replace_all(&path, "<random>").into_owned();
            if masked != path && path.ends_with("/.yarn-metadata.json") {
                node.content = None;
            }
            (masked, node)
        })
        .collect()
}

fn check_same_as_buildah(name: &str, kiln_layout: &Path) {
    let reference = crate::build_support::buildah_reference(name);
    let ours = crate::build_support::read_layout(kiln_layout, "latest");
    let theirs = crate::build_support::read_layout(&reference, "latest");
    assert_eq!(
        config_fields(&ours.config),
        config_fields(&theirs.config),
        "{name}: kiln's config (left) differs from buildah's (right)"
    );
    let kiln_tree = mask_yarn_randomness(crate::build_support::file_tree(&ours));
    let mut buildah_tree = mask_yarn_randomness(crate::build_support::file_tree(&theirs));
    crate::build_support::drop_buildah_mount_stubs(&kiln_tree, &mut buildah_tree);
    let diff = crate::build_support::tree_diff(&kiln_tree, &buildah_tree);
    assert!(
        diff.is_empty(),
        "{name}: kiln's file tree (-) differs from buildah's (+):\n{}",
        diff.join("\n")
    );
}

fn example(name: &str) {
    if let Some(skip) = crate::build_support::missing(&[
        "skopeo",
        "docker-registry",
        "jq",
        "podman",
        "buildah",
        "runc",
    ]) {
        return println!("{skip}");
    }
    let tmp = crate::build_support::lowercase_tempdir(name);
    let layout = kiln_build_and_push(tmp.path(), name);
    check_runs(name);
    check_same_as_buildah(name, &layout);
}

#[test]
fn hello_builds_pushes_runs_and_matches_buildah() {
    example("hello");
}

#[test]
fn static_site_builds_pushes_serves_and_matches_buildah() {
    example("static-site");
}

#[test]
fn shell_app_builds_pushes_runs_and_matches_buildah() {
    example("shell-app");
}

#[test]
fn multi_stage_builds_pushes_runs_and_matches_buildah() {
    example("multi-stage");
}

#[test]
fn node_app_builds_pushes_serves_and_matches_buildah() {
    example("node-app");
}

#[test]
fn a_failing_run_names_the_line_the_exit_code_and_its_last_output() {
    let Some(bases) = bases_or_skip() else { return };
    let dockerfile = format!(
        "FROM {}\nRUN echo first line && echo boom >&2 && exit 3\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let out = crate::build_support::kiln_build(store.path(), &["-t", "failing"], ctx.path());
    let err = crate::build_support::failed(&out);
    assert!(
        err.contains(
            "Dockerfile:2:1: RUN echo first line && echo boom >&2 && exit 3 exited with code 3"
        ),
        "{err}"
    );
    assert!(err.contains("    boom"), "{err}");
    // Nothing half-built is named, and no RUN scratch dir is left in the store.
    let leftovers: Vec<_> = std::fs::read_dir(store.path().join("scratch"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let images = crate::build_support::kiln(store.path())
        .arg("images")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&images.stdout).contains("failing"),
        "a failed build must not tag an image"
    );
}

#[test]
fn build_push_sends_every_tag_and_writes_the_manifest_digest() {
    let Some(bases) = bases_or_skip() else { return };
    let addr = bases.addr();
    let tmp = tempfile::tempdir().unwrap();
    let digest_file = tmp.path().join("digest");
    let (v1, latest) = (
        format!("{addr}/test/hello:v1"),
        format!("{addr}/test/hello:latest"),
    );
    let out = crate::build_support::kiln_build(
        &tmp.path().join("store"),
        &[
            "-q",
            "-t",
            &v1,
            "-t",
            &latest,
            "--push",
            "--digest-file",
            digest_file.to_str().unwrap(),
        ],
        &crate::build_support::example_dir("hello"),
    );
    crate::build_support::succeeded(&out);
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    for name in [&v1, &latest] {
        let inspect = crate::build_support::run_ok(
            std::process::Command::new("skopeo")
                .args(["inspect", "--tls-verify=false"])
                .arg(format!("docker://{name}")),
        );
        let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(v["Digest"], pushed.as_str(), "{name}");
    }
}

/// The metadata instructions the examples do not use, against buildah: STOPSIGNAL, HEALTHCHECK
/// (only in Docker's format: buildah drops it from OCI images, with a warning), USER with a
/// group, several EXPOSE/VOLUME values, and ENTRYPOINT resetting the base image's CMD.
#[test]
fn metadata_instructions_give_buildahs_config() {
    if let Some(skip) =
        crate::build_support::missing(&["skopeo", "docker-registry", "jq", "buildah"])
    {
        return println!("{skip}");
    }
    let bases = crate::build_support::bases();
    let dockerfile = format!(
        "FROM {}\n\
         ENV A=1 B=\"two words\"\n\
         LABEL maintainer=\"kiln\" version=\"1.0\"\n\
         USER 1000:1000\n\
         WORKDIR /data\n\
         EXPOSE 80/udp 443\n\
         VOLUME /data /cache\n\
         STOPSIGNAL SIGQUIT\n\
         HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD wget -q -O- http://localhost/ || exit 1\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let storage = Storage::new(None);
    let buildah = |format: &str| {
        let image = format!("localhost/kiln-e2e/metadata:{format}");
        crate::build_support::run_ok(
            storage
                .buildah()
                .args(["bud", "--quiet", "--tls-verify=false", "--isolation=chroot"])
                .arg(format!("--format={format}"))
                .args(["-t", &image])
                .arg(ctx.path()),
        );
        let out = crate::build_support::run_ok(storage.buildah().args([
            "inspect",
            "--type=image",
            &image,
        ]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = if format == "oci" { "OCIv1" } else { "Docker" };
        v[key].clone()
    };
    let (buildah_oci, mut buildah_docker) = (buildah("oci"), buildah("docker"));
    // buildah's Docker format writes the CMD that ENTRYPOINT reset as `[]`; Docker writes
    // `null`, as buildah's OCI format and kiln (both formats) do.
    if buildah_docker["config"]["Cmd"] == serde_json::json!([]) {
        buildah_docker["config"]["Cmd"] = serde_json::Value::Null;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kiln = |format: &str| {
        let layout = tmp.path().join(format);
        let out = crate::build_support::kiln_build(
            &tmp.path().join("store"),
            &[
                "-t",
                "metadata",
                &format!("--format={format}"),
                &format!("--output=type=oci,dest={}", layout.display()),
            ],
            ctx.path(),
        );
        crate::build_support::succeeded(&out);
        crate::build_support::read_layout(&layout, "latest").config
    };
    let (kiln_oci, kiln_docker) = (kiln("oci"), kiln("docker"));
    assert_eq!(config_fields(&kiln_oci), config_fields(&buildah_oci), "OCI");
    assert_eq!(
        config_fields(&kiln_docker),
        config_fields(&buildah_docker),
        "Docker format"
    );
    assert_eq!(
        kiln_oci["config"]["Cmd"],
        serde_json::Value::Null,
        "ENTRYPOINT resets CMD"
    );
    assert_eq!(
        kiln_docker["config"]["Healthcheck"], buildah_docker["config"]["Healthcheck"],
        "Docker format Healthcheck"
    );
    assert!(
        kiln_docker["config"]["Healthcheck"]["Test"].is_array(),
        "{kiln_docker}"
    );
}
