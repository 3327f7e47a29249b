//! `kiln build --platform linux/amd64,linux/arm64`: one build, one image per platform, one
//! index under the tag. FROM scratch / COPY / ARG TARGETARCH (no RUN: a foreign RUN needs an
//! emulator, tested with the sandbox): the index names each member's platform and each member
//! has its own TARGETARCH's files; a `FROM --platform=$BUILDPLATFORM` stage is built once and
//! its layer shared; the index is pushed, written as an OCI layout, listed, saved, removed and
//! pruned as one image; an unknown platform and a base lacking a platform are named.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::build_support::{
    LayoutImage, bases_or_skip, context, failed, file_content, kiln, kiln_build, run_ok, steps,
    succeeded,
};
use crate::registry_support::skopeo;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const TWO: &str = "linux/amd64,linux/arm64";

/// A shared stage built for the build platform, and a per-target stage that copies from it
/// and copies the file named after its TARGETARCH.
const DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM scratch AS tools
COPY shared.txt /shared.txt
FROM scratch
COPY --from=tools /shared.txt /shared.txt
ARG TARGETARCH
ARG TARGETPLATFORM
COPY ${TARGETARCH}.txt /arch.txt
LABEL built.for=$TARGETPLATFORM
";

fn project() -> tempfile::TempDir {
    context(&[
        ("Dockerfile", DOCKERFILE),
        ("shared.txt", "the same for every platform\n"),
        ("amd64.txt", "amd64 files\n"),
        ("arm64.txt", "arm64 files\n"),
    ])
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The members of the index an OCI layout's `index.json` names: (platform, image).
fn layout_members(layout: &Path) -> Vec<(String, LayoutImage)> {
    let top = read_json(&layout.join("index.json"));
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{top}");
    assert_eq!(entries[0]["mediaType"], OCI_INDEX, "{top}");
    let index = read_json(&blob(layout, entries[0]["digest"].as_str().unwrap()));
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let p = &d["platform"];
            let platform = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            let digest = d["digest"].as_str().unwrap().to_string();
            let manifest = read_json(&blob(layout, &digest));
            let config = read_json(&blob(
                layout,
                manifest["config"]["digest"].as_str().unwrap(),
            ));
            let layers = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| blob(layout, l["digest"].as_str().unwrap()))
                .collect();
            let image = LayoutImage {
                manifest_digest: digest,
                config,
                layers,
            };
            (platform, image)
        })
        .collect()
}

fn text(image: &LayoutImage, path: &str) -> String {
    String::from_utf8(file_content(image, path).unwrap_or_else(|| panic!("no {path}"))).unwrap()
}

fn kiln_ok(root: &Path, args: &[&str]) -> String {
    String::from_utf8(run_ok(kiln(root).args(args)).stdout).unwrap()
}

#[test]
fn two_platforms_give_one_index_whose_members_have_their_own_targetarch() {
    let ctx = project();
    let tmp = tempfile::tempdir().unwrap();
    let (store, layout) = (tmp.path().join("store"), tmp.path().join("layout"));
    let output = format!("--output=type=oci,dest={}", layout.display());
    let args = [
        "--platform",
        TWO,
        "-t",
        "multi:1",
        "--progress",
        "plain",
        &output,
    ];
    let out = kiln_build(&store, &args, ctx.path());
    let log = succeeded(&out);

    let members = layout_members(&layout);
    let platforms: Vec<&str> = members.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (platform, image) in &members {
        let arch = platform.strip_prefix("linux/").unwrap();
        assert_eq!(image.config["architecture"], arch);
        assert_eq!(image.config["os"], "linux");
        assert_eq!(text(image, "arch.txt"), format!("{arch} files\n"));
        assert_eq!(text(image, "shared.txt"), "the same for every platform\n");
        assert_eq!(image.config["config"]["Labels"]["built.for"], *platform);
    }
    // The shared file's layer is the same blob in both members.
    let first_layers: Vec<&PathBuf> = members.iter().map(|(_, i)| &i.layers[0]).collect();
    assert_eq!(first_layers[0], first_layers[1]);
    assert_ne!(members[0].1.layers[1], members[1].1.layers[1]);

    // The build-platform stage was built once: the second platform found it in the cache.
    let tools: Vec<_> = steps(&log)
        .into_iter()
        .filter(|s| s.position.ends_with("tools 1/1"))
        .collect();
    assert_eq!(tools.len(), 2, "{log}");
    assert_eq!(tools.iter().filter(|s| !s.cached()).count(), 1, "{log}");
    // The per-target stage is keyed per platform: arm64 builds its own COPY --from (whose
    // layer comes out the same bytes as amd64's, checked above).
    let copy_from: Vec<_> = steps(&log)
        .into_iter()
        .filter(|s| s.instruction.starts_with("COPY --from=tools"))
        .collect();
    assert_eq!(copy_from.len(), 2, "{log}");
    assert!(copy_from.iter().all(|s| !s.cached()), "{log}");
    // Every step says which platform it is for.
    let positions: Vec<String> = steps(&log).into_iter().map(|s| s.position).collect();
    assert!(
        positions
            .iter()
            .any(|p| p.starts_with("linux/arm64 stage-1 ")),
        "{positions:?}"
    );
    assert!(
        positions
            .iter()
            .any(|p| p.starts_with("linux/amd64 stage-1 ")),
        "{positions:?}"
    );

    // The printed ID is the index, named by the tag; inspect shows it with its members.
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let inspect: Value = serde_json::from_str(&kiln_ok(&store, &["inspect", "multi:1"])).unwrap();
    assert_eq!(inspect["Id"], id);
    assert_eq!(inspect["Index"]["mediaType"], OCI_INDEX);
    assert_eq!(inspect["Manifests"][1]["Platform"], "linux/arm64");
    assert_eq!(inspect["Manifests"][1]["Config"]["architecture"], "arm64");

    // `kiln images` lists the tag once, with the index as its ID.
    let images = kiln_ok(&store, &["images", "--format", "json"]);
    let rows: Vec<Value> = serde_json::from_str(&images).unwrap();
    assert_eq!(rows.len(), 1, "{images}");
    assert_eq!(rows[0]["id"], id);
    assert!(rows[0]["size"].as_u64().unwrap() > 0, "{images}");

    // A rebuild finds every step in the cache and gives the same index.
    let again = kiln_build(&store, &args[..6], ctx.path());
    let again_log = succeeded(&again);
    assert!(
        steps(&again_log)
            .iter()
            .filter(|s| s.instruction.starts_with("COPY"))
            .all(|s| s.cached()),
        "{again_log}"
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), id);
}

#[test]
fn docker_format_gives_a_manifest_list_and_save_picks_one_platform() {
    let ctx = project();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let args = ["--platform", TWO, "--format", "docker", "-t", "list:1"];
    succeeded(&kiln_build(&store, &args, ctx.path()));
    let inspect: Value = serde_json::from_str(&kiln_ok(&store, &["inspect", "list:1"])).unwrap();
    assert_eq!(inspect["Index"]["mediaType"], DOCKER_LIST);
    assert_eq!(
        inspect["Index"]["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // docker save writes one platform's image: the one asked for.
    let archive = tmp.path().join("arm.tar");
    let a = archive.to_str().unwrap();
    kiln_ok(
        &store,
        &["save", "list:1", "-o", a, "--platform", "linux/arm64"],
    );
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    let arm_id = inspect["Manifests"][1]["Id"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&format!("{arm_id}.json")), "{names:?}");

    // A platform the index lacks is named, with --platform and what there is.
    let out = kiln(&store)
        .args(["save", "list:1", "-o", a, "--platform", "linux/s390x"])
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("--platform") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
    // An OCI archive holds the whole index.
    let oci = tmp.path().join("oci.tar");
    kiln_ok(
        &store,
        &[
            "save",
            "list:1",
            "-o",
            oci.to_str().unwrap(),
            "--format",
            "oci",
        ],
    );
    // A docker archive output cannot hold an index: the error says what to do.
    let dest = format!(
        "--output=type=docker,dest={}",
        tmp.path().join("d.tar").display()
    );
    let err = failed(&kiln_build(&store, &["--platform", TWO, &dest], ctx.path()));
    assert!(
        err.contains("--platform") && err.contains("type=oci"),
        "{err}"
    );
}

#[test]
fn removing_the_tag_and_pruning_leaves_no_member_behind() {
    let ctx = project();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    succeeded(&kiln_build(
        &store,
        &["--platform", TWO, "-t", "gc:1"],
        ctx.path(),
    ));
    // The members are not named themselves; the index keeps them through a prune.
    kiln_ok(&store, &["prune"]);
    let oci = tmp.path().join("kept.tar");
    kiln_ok(
        &store,
        &[
            "save",
            "gc:1",
            "-o",
            oci.to_str().unwrap(),
            "--format",
            "oci",
        ],
    );

    let rmi = kiln_ok(&store, &["rmi", "gc:1"]);
    assert!(rmi.contains("Untagged: gc:1"), "{rmi}");
    // Without the name and the build cache, nothing of the build is left.
    kiln_ok(&store, &["prune", "--keep-duration", "0s"]);
    let blobs: Vec<_> = std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    let images = kiln_ok(&store, &["images", "--quiet"]);
    assert!(images.trim().is_empty(), "{images}");
}

#[test]
fn an_unknown_platform_is_named_before_anything_is_built() {
    let ctx = project();
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln_build(
        &tmp.path().join("store"),
        &["--platform", "linux/amd64,linux/amd46"],
        ctx.path(),
    );
    let err = failed(&out);
    assert!(
        err.contains("--platform") && err.contains("\"amd46\""),
        "{err}"
    );
    assert!(steps(&err).is_empty(), "{err}");
}

#[test]
fn push_sends_the_members_then_the_index_under_the_one_tag() {
    let Some(bases) = bases_or_skip() else { return };
    let ctx = project();
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{}/kiln-test/multi-push:1", bases.addr());
    let out = kiln_build(
        &tmp.path().join("store"),
        &["--platform", TWO, "-t", &dest, "--push"],
        ctx.path(),
    );
    succeeded(&out);
    let docker = format!("docker://{dest}");
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &docker,
    ]))
    .unwrap();
    assert_eq!(raw["mediaType"], OCI_INDEX, "{raw}");
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    // `kiln push` sends the index from the store to another tag, members first.
    let copy = format!("{}/kiln-test/multi-copy:2", bases.addr());
    kiln_ok(&tmp.path().join("store"), &["push", &dest, &copy]);
    let raw_copy: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{copy}"),
    ]))
    .unwrap();
    assert_eq!(raw_copy, raw);

    // A client on arm64 gets the arm64 member.
    let layout = tmp.path().join("arm");
    let oci = format!("oci:{}:latest", layout.display());
    skopeo(&[
        "copy",
        "--override-arch",
        "arm64",
        "--src-tls-verify=false",
        &docker,
        &oci,
    ]);
    let image = crate::build_support::read_layout(&layout, "latest");
    assert_eq!(image.config["architecture"], "arm64");
    assert_eq!(text(&image, "arch.txt"), "arm64 files\n");
}

#[test]
fn a_base_without_a_requested_platform_is_named_with_what_it_has() {
    let Some(bases) = bases_or_skip() else { return };
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {}\nCOPY Dockerfile /\n", bases.busybox()),
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln_build(
        &tmp.path().join("store"),
        &["--platform", "linux/amd64,linux/s390x"],
        ctx.path(),
    );
    let err = failed(&out);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64"),
        "{err}"
    );
    assert!(err.contains("busybox"), "{err}");
}

#[test]
fn platforms_after_the_first_build_in_parallel_and_share_the_build_platform_stage() {
    let ctx = project();
    std::fs::write(ctx.path().join("s390x.txt"), "s390x files\n").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (store, layout) = (tmp.path().join("store"), tmp.path().join("layout"));
    let output = format!("--output=type=oci,dest={}", layout.display());
    let three = "linux/amd64,linux/arm64,linux/s390x";
    let args = [
        "--platform",
        three,
        "--jobs",
        "2",
        "--progress",
        "plain",
        &output,
    ];
    let log = succeeded(&kiln_build(&store, &args, ctx.path()));
    let tools: Vec<_> = steps(&log)
        .into_iter()
        .filter(|s| s.position.ends_with("tools 1/1"))
        .collect();
    assert_eq!(tools.len(), 3, "{log}");
    assert_eq!(tools.iter().filter(|s| !s.cached()).count(), 1, "{log}");
    let members = layout_members(&layout);
    let got: Vec<(String, String)> = members
        .iter()
        .map(|(p, i)| (p.clone(), text(i, "arch.txt")))
        .collect();
    let want: Vec<(String, String)> = ["amd64", "arm64", "s390x"]
        .iter()
        .map(|a| (format!("linux/{a}"), format!("{a} files\n")))
        .collect();
    assert_eq!(got, want);
}

/// How many layers the build's summary line (`built in 1.2s: N layer(s) written, …`) says
/// it wrote.
fn layers_written(log: &str) -> usize {
    let line = log
        .lines()
        .find(|l| l.starts_with("built "))
        .unwrap_or_else(|| panic!("no summary line: {log}"));
    line.split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `kiln build` with a reproducible created time (so two stores give one index digest):
/// (stdout's image ID, stderr).
fn epoch_build(store: &Path, args: &[&str], ctx: &Path) -> (String, String) {
    let out = kiln(store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress", "plain"])
        .args(args)
        .arg(ctx)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let log = succeeded(&out);
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        log,
    )
}

#[test]
fn a_fresh_store_rebuilds_every_platform_from_the_registry_cache_keyed_per_platform() {
    let Some(bases) = bases_or_skip() else { return };
    let ctx = project();
    let tmp = tempfile::tempdir().unwrap();
    let cache_ref = format!("{}/kiln-test/multi-cache:c1", bases.addr());
    let (to, from) = (
        format!("--cache-to={cache_ref}"),
        format!("--cache-from={cache_ref}"),
    );

    let (id, log) = epoch_build(&tmp.path().join("a"), &["--platform", TWO, &to], ctx.path());
    // tools once, then COPY --from and COPY per platform.
    assert_eq!(layers_written(&log), 5, "{log}");
    assert!(
        log.contains(&format!("exported the build cache to {cache_ref}")),
        "{log}"
    );

    // Another runner: an empty store builds nothing and makes the same index.
    let b_args = ["--platform", TWO, "-t", "multi:1", &from];
    let (again, log) = epoch_build(&tmp.path().join("b"), &b_args, ctx.path());
    assert_eq!(layers_written(&log), 0, "{log}");
    assert!(
        steps(&log)
            .iter()
            .filter(|s| s.instruction.starts_with("COPY"))
            .all(|s| s.cached()),
        "every COPY of both platforms is a hit: {log}"
    );
    assert_eq!(again, id, "{log}");
    let inspect: Value =
        serde_json::from_str(&kiln_ok(&tmp.path().join("b"), &["inspect", "multi:1"])).unwrap();
    assert_eq!(inspect["Id"], id);
    assert_eq!(inspect["Manifests"][1]["Config"]["architecture"], "arm64");

    // Per platform: a step whose inputs are the same bytes on both platforms is not served
    // to amd64 from arm64's record.
    let same = context(&[
        ("Dockerfile", "FROM scratch\nCOPY same.txt /\n"),
        ("same.txt", "x\n"),
    ]);
    let arm_ref = format!("{}/kiln-test/multi-cache:arm", bases.addr());
    let arm_to = format!("--cache-to={arm_ref}");
    let arm_from = format!("--cache-from={arm_ref}");
    let (_, log) = epoch_build(
        &tmp.path().join("c"),
        &["--platform", "linux/arm64", &arm_to],
        same.path(),
    );
    assert_eq!(layers_written(&log), 1, "{log}");
    let (_, log) = epoch_build(
        &tmp.path().join("d"),
        &["--platform", "linux/amd64", &arm_from],
        same.path(),
    );
    assert_eq!(
        layers_written(&log),
        1,
        "amd64 must build its own step: {log}"
    );
    assert!(!log.contains("found in the cache at"), "{log}");
    // While arm64 from the same cache is a hit.
    let (_, log) = epoch_build(
        &tmp.path().join("e"),
        &["--platform", "linux/arm64", &arm_from],
        same.path(),
    );
    assert_eq!(layers_written(&log), 0, "{log}");
}

/// `--platform linux/amd64,linux/arm64` FROM the multi-arch busybox with RUN steps: amd64's
/// run natively, arm64's through qemu (binfmt_misc); None after printing why it cannot.
fn emulation_and_podman_or_skip() -> Option<&'static crate::build_support::Bases> {
    if let Some(why) = crate::build_support::missing(&["podman"]) {
        println!("{why}");
        return None;
    }
    crate::build_support::arm64_emulation_or_skip()
}

/// What `podman run --platform PLATFORM IMAGE` prints, each platform in its own storage (so
/// one platform's pull is never taken for the other's).
fn podman_run(tmp: &Path, platform: &str, image: &str) -> String {
    let dir = tmp.join(platform.replace('/', "-"));
    let run = run_ok(
        crate::common::podman()
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["run", "--rm", "--network", "none", "--tls-verify=false"])
            .args(["--platform", platform, image]),
    );
    String::from_utf8(run.stdout).unwrap()
}

#[test]
fn a_run_step_executes_per_platform_natively_and_through_qemu_into_one_pushed_index() {
    let Some(bases) = emulation_and_podman_or_skip() else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
        bases.busybox_multiarch()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{}/kiln-test/multi-run:1", bases.addr());
    let args = [
        "--platform",
        TWO,
        "-t",
        &dest,
        "--push",
        "--progress",
        "plain",
    ];
    let log = succeeded(&kiln_build(&tmp.path().join("store"), &args, ctx.path()));
    let runs: Vec<_> = steps(&log)
        .into_iter()
        .filter(|s| s.instruction.starts_with("RUN"))
        .map(|s| s.position)
        .collect();
    assert_eq!(runs.len(), 2, "{log}");

    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]))
    .unwrap();
    assert_eq!(raw["mediaType"], OCI_INDEX, "{raw}");
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2, "{raw}");
    assert_eq!(podman_run(tmp.path(), "linux/amd64", &dest), "x86_64\n");
    assert_eq!(podman_run(tmp.path(), "linux/arm64", &dest), "aarch64\n");
}

#[test]
fn a_platform_that_fails_stops_the_others_and_its_error_is_the_builds() {
    let Some(bases) = emulation_and_podman_or_skip() else {
        return;
    };
    // Both platforms start at once; arm64 fails at its first RUN, while amd64 is in its first
    // or its second (a RUN in progress is left to finish): amd64 must not start its third.
    let dockerfile = format!(
        "FROM {}\nRUN [ \"$(uname -m)\" != aarch64 ]\nRUN sleep 5\nRUN touch /after\n",
        bases.busybox_multiarch()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let args = [
        "--platform",
        TWO,
        "--jobs",
        "2",
        "-t",
        "fails:1",
        "--progress",
        "plain",
    ];
    let err = failed(&kiln_build(&store, &args, ctx.path()));
    assert!(
        err.contains("Dockerfile:2") && err.contains("exited with code 1"),
        "{err}"
    );
    assert!(
        !err.contains("stopped because another stage failed"),
        "{err}"
    );
    let started: Vec<String> = steps(&err).into_iter().map(|s| s.position).collect();
    for platform in ["linux/amd64", "linux/arm64"] {
        let first = format!("{platform} stage-0 1/3");
        assert!(started.contains(&first), "{err}");
    }
    assert!(
        !started.iter().any(|p| p.ends_with(" 3/3")),
        "amd64 went on after arm64 failed: {err}"
    );
    // No index was made or named.
    let inspect = kiln(&store).args(["inspect", "fails:1"]).output().unwrap();
    assert!(
        !inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
}

#[test]
fn a_no_change_rebuild_from_a_multi_arch_base_pulls_nothing() {
    let Some(bases) = crate::build_support::arm64_emulation_or_skip() else {
        return;
    };
    let base = bases.busybox_multiarch();
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nCOPY Dockerfile /\n"))]);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // One platform after the other: each pull then sees what the one before stored.
    let args = ["--platform", TWO, "--jobs", "1", "--progress", "plain"];
    let first = succeeded(&kiln_build(&store, &args, ctx.path()));
    assert_eq!(first.matches("pulling ").count(), 2, "{first}");
    // The base is named by its index, which holds both platforms' images.
    let inspect: Value = serde_json::from_str(&kiln_ok(&store, &["inspect", &base])).unwrap();
    assert_eq!(inspect["Index"]["mediaType"], OCI_INDEX, "{inspect}");
    let again = succeeded(&kiln_build(&store, &args, ctx.path()));
    assert!(!again.contains("pulling "), "{again}");
}
