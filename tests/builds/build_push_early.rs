//! `kiln build --push` uploads the image's layers while the build goes on, and puts the
//! manifest only after the build succeeded: a COPY layer is in the registry while a later RUN
//! still runs and the tag is not; a build that fails pushes no tag; an upload that failed
//! during the build is redone by the push after it; credentials never show in the output.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::build_support::{bases_or_skip, kiln, read_layout};
use crate::registry_support::proxy::{Fault, Proxy, Rule};
use crate::registry_support::{PASS, TestRegistry, USER, noise, skopeo, test_config};
use kiln::Digest;
use kiln::registry::{Credential, Registry, RegistryError};

/// A context holding `big.bin` (4 MB of noise), a `Dockerfile` that copies it and then runs
/// `run`, and `copy-only.Dockerfile` that only copies it (the same COPY layer).
fn project(registry: &str, run: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), noise(7, 4 << 20)).unwrap();
    let from = format!("FROM {registry}/kiln-test/busybox:latest\n");
    let copy = "COPY big.bin /big.bin\n";
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("{from}{copy}{run}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("copy-only.Dockerfile"),
        format!("{from}{copy}"),
    )
    .unwrap();
    dir
}

/// The digest of the project's COPY layer, from a build of `copy-only.Dockerfile` with a
/// store of its own (the layer's bytes depend only on the copied file).
fn copy_layer_digest(ctx: &Path) -> Digest {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let out = kiln(&tmp.path().join("store"))
        .args(["build", "--progress", "plain", "-f"])
        .arg(ctx.join("copy-only.Dockerfile"))
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::build_support::succeeded(&out);
    let layers = read_layout(&layout, "latest").layer_digests();
    layers.last().unwrap().parse().unwrap()
}

/// A `kiln build --progress json` running in the background; its event lines arrive as they
/// are written.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(store: &Path, args: &[&str], ctx: &Path) -> Running {
        let mut child = kiln(store)
            .args(["build", "--progress", "json"])
            .args(args)
            .arg(ctx)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to a minute) for an event that `want` accepts.
    /// `kiln build --push -t DEST`, also writing the image to the OCI layout `layout`, with
    /// its store in `dir`.
    fn push_with_layout(dir: &Path, dest: &str, layout: &Path, ctx: &Path) -> Running {
        let output = format!("--output=type=oci,dest={}", layout.display());
        Running::start(&dir.join("store"), &["--push", "-t", dest, &output], ctx)
    }

    fn wait_for(&mut self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no such event within a minute; output so far:\n{}",
                    self.seen.join("\n")
                )
            });
            self.seen.push(line.clone());
            if let Ok(event) = serde_json::from_str(&line) {
                if want(&event) {
                    return event;
                }
            }
        }
    }

    /// Whether an event that `want` accepts has been written by now.
    fn has_written(&mut self, want: impl Fn(&serde_json::Value) -> bool) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .any(|e| want(&e))
    }

    /// Waits for kiln to exit: its status, and all it wrote to stderr and stdout.
    fn finish(mut self) -> (ExitStatus, String) {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status, format!("{}\n{stdout}", self.seen.join("\n")))
    }
}

fn step_started(text: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |e| e["event"] == "step_started" && e["name"].as_str().unwrap().contains(text)
}

fn step_done(id: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |e| e["event"] == "step_done" && e["id"] == id
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The tag's manifest is not in the registry (the registry answers 404).
fn assert_no_tag(rt: &tokio::runtime::Runtime, reg: &Registry, repo: &str, tag: &str) {
    match rt.block_on(reg.get_manifest(repo, tag, None)) {
        Err(RegistryError::Status { status: 404, .. }) => {}
        other => panic!("{repo}:{tag} should not exist: {other:?}"),
    }
}

/// Pulls `image` with skopeo (every blob fetched and verified) and returns its layers, for
/// comparison with kiln's own image.
fn pulled_layers(image: &str, extra: &[&str]) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:pulled", tmp.path().display());
    let src = format!("docker://{image}");
    let mut args = vec!["copy", "--quiet"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&src, &dest]);
    skopeo(&args);
    read_layout(tmp.path(), "pulled").layer_digests()
}

#[test]
fn the_copy_layer_is_in_the_registry_while_the_run_step_runs_and_the_tag_comes_last() {
    let Some(bases) = bases_or_skip() else { return };
    let addr = bases.addr();
    let ctx = project(addr, "RUN sleep 3");
    let copy_layer = copy_layer_digest(ctx.path());
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let dest = format!("{addr}/early/app:1");
    let mut build = Running::push_with_layout(tmp.path(), &dest, &layout, ctx.path());
    let run = build.wait_for(step_started("RUN sleep 3"));
    let run_id = run["id"].as_str().unwrap().to_string();

    let rt = runtime();
    let reg = Registry::new(addr, test_config(), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt
        .block_on(reg.blob_exists("early/app", &copy_layer))
        .unwrap()
        .is_none()
    {
        assert!(
            !build.has_written(step_done(&run_id)),
            "the RUN step ended before the COPY layer {copy_layer} was in the registry"
        );
        assert!(Instant::now() < deadline, "the COPY layer never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_tag(&rt, &reg, "early/app", "1");
    assert!(
        !build.has_written(step_done(&run_id)),
        "the checks above must run while the RUN step runs (it sleeps 3 s)"
    );

    let (status, output) = build.finish();
    assert!(status.success(), "{output}");
    let built = read_layout(&layout, "latest").layer_digests();
    assert!(built.contains(&copy_layer.to_string()), "{built:?}");
    assert_eq!(pulled_layers(&dest, &["--src-tls-verify=false"]), built);
    assert!(
        output.contains("of them during the build"),
        "the summary says what went up early: {output}"
    );
}

#[test]
fn a_layer_of_a_stage_the_image_only_copies_from_is_never_uploaded() {
    let Some(bases) = bases_or_skip() else { return };
    let addr = bases.addr();
    let ctx = project(addr, "");
    let builder_layer = copy_layer_digest(ctx.path());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {addr}/kiln-test/busybox:latest AS builder\n\
             COPY big.bin /big.bin\n\
             FROM {addr}/kiln-test/busybox:latest\n\
             COPY --from=builder /big.bin /copied.bin\n"
        ),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let dest = format!("{addr}/early/stages:1");
    let build = Running::push_with_layout(tmp.path(), &dest, &layout, ctx.path());
    let (status, output) = build.finish();
    assert!(status.success(), "{output}");
    let built = read_layout(&layout, "latest").layer_digests();
    assert!(!built.contains(&builder_layer.to_string()), "{built:?}");
    let rt = runtime();
    let reg = Registry::new(addr, test_config(), None).unwrap();
    let there = rt.block_on(reg.blob_exists("early/stages", &builder_layer));
    assert!(
        matches!(there, Ok(None)),
        "the builder stage's layer was uploaded: {there:?}"
    );
    assert_eq!(pulled_layers(&dest, &["--src-tls-verify=false"]), built);
}

#[test]
fn a_build_that_fails_after_the_copy_pushes_no_tag() {
    let Some(bases) = bases_or_skip() else { return };
    let addr = bases.addr();
    let ctx = project(addr, "RUN false");
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{addr}/early/broken:1");
    let build = Running::start(
        &tmp.path().join("store"),
        &["--push", "-t", &dest],
        ctx.path(),
    );
    let (status, output) = build.finish();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("Dockerfile:3"),
        "names the RUN line: {output}"
    );
    let rt = runtime();
    let reg = Registry::new(addr, test_config(), None).unwrap();
    assert_no_tag(&rt, &reg, "early/broken", "1");
}

#[test]
fn an_interrupted_build_pushes_no_tag() {
    let Some(bases) = bases_or_skip() else { return };
    let addr = bases.addr();
    let ctx = project(addr, "RUN sleep 60");
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{addr}/early/interrupted:1");
    let mut build = Running::start(
        &tmp.path().join("store"),
        &["--push", "-t", &dest],
        ctx.path(),
    );
    build.wait_for(step_started("RUN sleep 60"));
    let started = Instant::now();
    let pid = nix::unistd::Pid::from_raw(build.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let (status, output) = build.finish();
    assert!(!status.success(), "{output}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "kiln stopped promptly, not after the RUN step: {output}"
    );
    assert!(output.contains("interrupted"), "{output}");
    let rt = runtime();
    let reg = Registry::new(addr, test_config(), None).unwrap();
    assert_no_tag(&rt, &reg, "early/interrupted", "1");
}

#[test]
fn an_upload_that_failed_during_the_build_is_redone_by_the_push_after_it() {
    let Some(bases) = bases_or_skip() else { return };
    let ctx = project(bases.addr(), "RUN true");
    let copy_layer = copy_layer_digest(ctx.path());
    let rt = runtime();
    // The first PUT of the COPY layer (the one made during the build) fails; with no
    // retries, only the push after the build can bring it.
    let proxy = rt.block_on(Proxy::start(
        bases.addr(),
        vec![Rule {
            method: "PUT",
            path_contains: copy_layer.hex().to_string(),
            times: 1,
            fault: Fault::Status(500, None),
        }],
    ));
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{}/early/redo:1", proxy.addr);
    let build = Running::start(
        &tmp.path().join("store"),
        &["--push", "--retries", "0", "-t", &dest],
        ctx.path(),
    );
    let (status, output) = build.finish();
    assert!(status.success(), "{output}");
    let puts: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT ") && r.contains(&copy_layer.hex()))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(puts[0].contains("Status(500"), "{puts:?}");
    assert!(puts[1].ends_with("-> None"), "{puts:?}");
    assert!(
        !output.contains("\"warning\""),
        "a failed early upload is a debug log, not a warning: {output}"
    );
    let registry_name = format!("{}/early/redo:1", bases.addr());
    assert!(
        pulled_layers(&registry_name, &["--src-tls-verify=false"])
            .contains(&copy_layer.to_string())
    );
}

#[test]
fn credentials_never_appear_in_the_output() {
    let Some(bases) = bases_or_skip() else { return };
    let ctx = project(bases.addr(), "RUN true");
    let reg = TestRegistry::start("tls");
    let cert_dir = reg.cert_dir().join(&reg.addr);
    let cert_dir = cert_dir.to_str().unwrap();
    let creds = format!("{USER}:{PASS}");
    let encoded = base64_of(&creds);
    let dest = format!("{}/early/secret:1", reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    for (given, ok) in [
        (creds.clone(), true),
        (format!("{USER}:wrong-pass-q7"), false),
    ] {
        let mut cmd = kiln(&store);
        let out = cmd
            .env("KILN_LOG", "kiln=debug")
            .args(["build", "--progress", "json", "--no-cache", "--push"])
            .args(["--creds", &given, "--cert-dir", cert_dir, "-t", &dest])
            .arg(ctx.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), ok, "{text}");
        for secret in [PASS, "wrong-pass-q7", &encoded, &base64_of(&given)] {
            assert!(!text.contains(secret), "{secret:?} in the output:\n{text}");
        }
        if !ok {
            assert!(text.contains("401"), "says the registry refused: {text}");
        }
    }
    let cred = Credential::parse_user_pass(&creds);
    let mut config = test_config();
    config.cert_dirs = vec![reg.cert_dir()];
    let client = Registry::new(&reg.addr, config, cred).unwrap();
    let rt = runtime();
    rt.block_on(client.get_manifest("early/secret", "1", None))
        .expect("the first build pushed its image");
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
