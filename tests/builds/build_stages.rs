//! `kiln build` across stages: independent stages run in parallel (`--jobs`), a failing stage
//! stops the build cleanly, and `--platform` picks the base from an index and sets the config.
//! The busybox stage and the helpers here also serve `secrets.rs` and `onbuild.rs`.
//!
//! Every base here is made from Debian's static busybox (COPY from the context, then
//! `busybox --install`), so no registry is needed except for the `--platform` test.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A busybox stage named `base` (lines 1-3 of every Dockerfile here).
pub(super) const BASE: &str = "FROM scratch AS base\n\
                    COPY busybox /bin/busybox\n\
                    RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// [`crate::build_support::kiln`] with a fixed `SOURCE_DATE_EPOCH`, so images compare by digest.
pub(super) fn kiln(root: &Path) -> Command {
    let mut c = crate::build_support::kiln(root);
    c.env("SOURCE_DATE_EPOCH", "0");
    c
}

/// A context dir holding `busybox` and a Dockerfile.
pub(super) fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

pub(super) fn build(root: &Path, args: &[&str], ctx: &Path) -> Output {
    kiln(root)
        .arg("build")
        .args(args)
        .arg(ctx)
        .output()
        .unwrap()
}

pub(super) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kiln build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

/// The `--progress json` events, in order.
pub(super) fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Where in `events` the step `id` had event `kind` (`step_started`, `step_done`).
fn position(events: &[serde_json::Value], kind: &str, id: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| e["event"] == kind && e["id"] == id)
}

/// Whether steps `a` and `b` ran at the same time: each started before the other ended.
fn overlapped(events: &[serde_json::Value], a: &str, b: &str) -> bool {
    let p = |k, id| position(events, k, id).unwrap_or_else(|| panic!("no {k} for {id}"));
    p("step_started", a) < p("step_done", b) && p("step_started", b) < p("step_done", a)
}

/// An image written with `-o type=oci,dest=...`: its config and every layer's files.
pub(super) struct LayoutImage {
    pub(super) config: serde_json::Value,
    /// One map per layer: path → content (regular files only).
    pub(super) layers: Vec<BTreeMap<String, Vec<u8>>>,
    /// Every layer's uncompressed tar, for searching raw bytes.
    pub(super) tars: Vec<Vec<u8>>,
}

pub(super) fn read_layout(dir: &Path) -> LayoutImage {
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap();
    let json = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    let index = json(std::fs::read(dir.join("index.json")).unwrap());
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(blob(manifest["config"]["digest"].as_str().unwrap()));
    let mut layers = Vec::new();
    let mut tars = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob(l["digest"].as_str().unwrap())[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        layers.push(files);
        tars.push(tar);
    }
    LayoutImage {
        config,
        layers,
        tars,
    }
}

impl LayoutImage {
    /// The file at `path` in the topmost layer that has it.
    pub(super) fn file(&self, path: &str) -> Option<&[u8]> {
        self.layers
            .iter()
            .rev()
            .find_map(|l| l.get(path).map(Vec::as_slice))
    }
}

#[test]
fn independent_stages_overlap_with_two_jobs_and_not_with_one_and_give_the_same_image() {
    let t = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "{BASE}\nFROM base AS a\nRUN sleep 2 && echo a > /a\n\n\
         FROM base AS b\nRUN sleep 2 && echo b > /b\n\n\
         FROM base\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
    );
    let ctx = context(t.path(), &dockerfile);
    let root = t.path().join("root");
    let parallel = build(&root, &["--progress", "json", "--jobs", "2"], &ctx);
    let id_parallel = ok(&parallel);
    assert!(
        overlapped(&events(&parallel), "1.1", "2.1"),
        "with --jobs 2 the two RUN sleep steps should overlap: {}",
        String::from_utf8_lossy(&parallel.stderr)
    );
    // --no-cache: both RUNs really run again, one after the other.
    let serial = build(
        &root,
        &["--progress", "json", "--jobs", "1", "--no-cache"],
        &ctx,
    );
    let id_serial = ok(&serial);
    assert!(
        !overlapped(&events(&serial), "1.1", "2.1"),
        "with --jobs 1 the stages must run one after the other: {}",
        String::from_utf8_lossy(&serial.stderr)
    );
    assert_eq!(
        id_parallel, id_serial,
        "the schedule must not change the image"
    );
}

#[test]
fn a_failing_stage_stops_the_others_and_leaves_the_store_usable() {
    let t = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "{BASE}\nFROM base AS slow\nRUN sleep 4 && echo slow > /slow\nRUN echo next > /next\n\n\
         FROM base AS bad\nRUN echo going down && exit 3\n\n\
         FROM base\nCOPY --from=slow /slow /slow\nCOPY --from=bad /etc /etc\n"
    );
    let ctx = context(t.path(), &dockerfile);
    let root = t.path().join("root");
    let out = build(&root, &["--progress", "json", "--jobs", "2"], &ctx);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Line 10 is `RUN echo going down && exit 3`.
    assert!(
        stderr.contains("Dockerfile:10") && stderr.contains("exited with code 3"),
        "the error names the failing step: {stderr}"
    );
    assert!(
        stderr.contains("going down"),
        "the error shows the step's output: {stderr}"
    );
    let ev = events(&out);
    assert!(
        position(&ev, "step_started", "1.2").is_none(),
        "the slow stage must stop before its next step: {stderr}"
    );
    assert!(
        position(&ev, "step_started", "3.1").is_none(),
        "the final stage must not start: {stderr}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "nothing under the store stays mounted: {mounts}"
    );
    let images = kiln(&root).arg("images").output().unwrap();
    assert!(images.status.success());
    // The store still builds: the good stages come from the cache.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("{BASE}\nFROM base\nRUN echo fine > /fine\n"),
    )
    .unwrap();
    ok(&build(&root, &["--jobs", "2"], &ctx));
}

/// A one-layer image for `linux/<arch>` whose file `/arch` says which it is.
fn arch_image(layout: &crate::registry_support::Layout, arch: &str) -> kiln::registry::Manifest {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(arch.len() as u64);
    tar.append_data(&mut h, "arch", arch.as_bytes()).unwrap();
    crate::registry_support::make_one_layer_image(
        layout,
        &tar.into_inner().unwrap(),
        arch,
        serde_json::json!({"Env": ["PATH=/bin"]}),
    )
}

#[test]
fn platform_picks_the_base_from_an_index_and_sets_the_config() {
    if !crate::build_support::have("docker-registry") {
        println!("SKIPPED: needs docker-registry");
        return;
    }
    use crate::registry_support::{Layout, TestRegistry, make_index};
    let reg = TestRegistry::start("plain");
    let t = tempfile::tempdir().unwrap();
    let src = Layout::new(&t.path().join("src"));
    let amd = arch_image(&src, "amd64");
    let arm = arch_image(&src, "arm64");
    let index = make_index(&src, &[(&amd, "linux/amd64"), (&arm, "linux/arm64/v8")]);
    let client = reg.client(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(client.push_image(
        "kiln-test/multi",
        &["latest".to_string()],
        &index,
        &src,
        None,
        &kiln::progress::Progress::none(),
    ))
    .unwrap();

    let ctx = t.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/kiln-test/multi:latest\nARG TARGETARCH\nLABEL arch=$TARGETARCH\nCOPY f /f\n",
            reg.addr
        ),
    )
    .unwrap();
    let root = t.path().join("root");
    for (platform, arch) in [("linux/arm64", "arm64"), ("", "amd64")] {
        if platform.is_empty() && std::env::consts::ARCH != "x86_64" {
            continue; // the host build is checked on amd64 machines only
        }
        let layout = t.path().join(format!("layout-{arch}"));
        let mut args = vec!["--tls-verify=false".to_string()];
        if !platform.is_empty() {
            args.push(format!("--platform={platform}"));
        }
        args.push(format!("--output=type=oci,dest={}", layout.display()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&build(&root, &args, &ctx));
        let img = read_layout(&layout);
        assert_eq!(img.config["architecture"], arch);
        assert_eq!(img.config["os"], "linux");
        assert_eq!(img.config["config"]["Labels"]["arch"], arch, "TARGETARCH");
        assert_eq!(
            img.file("arch"),
            Some(arch.as_bytes()),
            "the base must be the index entry for {arch}"
        );
        assert_eq!(img.file("f"), Some(&b"x"[..]));
    }
    // A `--platform=$BUILDPLATFORM` stage takes the base for this machine.
    if std::env::consts::ARCH == "x86_64" {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM --platform=$BUILDPLATFORM {0}/kiln-test/multi:latest AS tools\n\
                 FROM {0}/kiln-test/multi:latest\nCOPY --from=tools /arch /build-arch\n",
                reg.addr
            ),
        )
        .unwrap();
        let layout = t.path().join("layout-cross");
        let dest = format!("--output=type=oci,dest={}", layout.display());
        ok(&build(
            &root,
            &["--tls-verify=false", "--platform=linux/arm64", &dest],
            &ctx,
        ));
        let img = read_layout(&layout);
        assert_eq!(img.config["architecture"], "arm64");
        assert_eq!(img.file("arch"), Some(&b"arm64"[..]));
        assert_eq!(img.file("build-arch"), Some(&b"amd64"[..]));
    }
    // RUN for a foreign platform needs an emulator; without one the error says what to install.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/kiln-test/multi:latest\nRUN true\n", reg.addr),
    )
    .unwrap();
    let binfmt = std::fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("qemu-aarch64"))
        })
        .unwrap_or(false);
    if !binfmt {
        let out = build(
            &root,
            &["--tls-verify=false", "--platform=linux/arm64"],
            &ctx,
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Dockerfile:2")
                && stderr.contains("qemu-user-static")
                && stderr.contains("linux/arm64"),
            "{stderr}"
        );
    }
}

#[test]
fn a_stored_base_for_another_platform_is_not_used_silently() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    // Nothing listens on port 1: a pull fails at once.
    let name = "127.0.0.1:1/kiln-test/local:1";
    let base = context(&t.path().join("base"), "FROM scratch\nCOPY busybox /b\n");
    ok(&build(&root, &["-t", name], &base));
    let child = context(
        &t.path().join("child"),
        &format!("FROM {name}\nCOPY busybox /c\n"),
    );
    ok(&build(&root, &["--retries", "0"], &child));
    let foreign = if std::env::consts::ARCH == "s390x" {
        "linux/amd64"
    } else {
        "linux/s390x"
    };
    let out = build(
        &root,
        &["--retries", "0", &format!("--platform={foreign}")],
        &child,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:1")
            && stderr.contains(&format!("in the store is not for {foreign}")),
        "{stderr}"
    );
}
