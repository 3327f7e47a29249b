//! Shared by the end-to-end `kiln build` tests (`build_*.rs`) and the buildah reference run
//! (`examples_buildah.rs`): the kiln command, one loopback registry with the test base images per
//! test binary, container storage for buildah/podman, buildah's reference builds of the examples
//! (built once, reused by every binary while their inputs are unchanged), and a reader for OCI
//! image layouts that flattens an image into its file tree for comparisons.
//!
//! A test binary (`tests/<group>/main.rs`) includes it with `#[path = "../build_support/mod.rs"]
//! mod build_support;`, beside `common` and `registry_support`, which it uses.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use sha2::{Digest as _, Sha256};

use crate::common;
use crate::registry_support::TestRegistry;

/// Every project in `testdata/examples/`.
pub const EXAMPLES: &[&str] = &[
    "hello",
    "static-site",
    "shell-app",
    "multi-stage",
    "node-app",
];

// ---- prerequisites and commands ------------------------------------------------------------

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why a test that needs root and `tools` cannot run here (print it as `SKIPPED: …` and return).
pub fn missing(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("SKIPPED: needs root (base images, podman, buildah)".into());
    }
    tools
        .iter()
        .find(|t| !have(t))
        .map(|t| format!("SKIPPED: {t} is not installed (tests/scripts/install-deps.sh)"))
}

/// The prerequisites of a test that builds FROM the base images: root, skopeo (base-images.sh
/// pushes with it) and docker-registry.
pub fn missing_for_bases() -> Option<String> {
    missing(&["skopeo", "docker-registry", "jq"])
}

/// `kiln` with its store at `root`, without a `SOURCE_DATE_EPOCH` from the caller's environment.
pub fn kiln(root: &Path) -> Command {
    let mut c = Command::cargo_bin("kiln").unwrap();
    c.env("KILN_ROOT", root).env_remove("SOURCE_DATE_EPOCH");
    c
}

/// `kiln build --progress plain ARGS… CONTEXT` with its store at `root`, which must succeed:
/// its stderr (the plain progress log).
pub fn kiln_build_ok(root: &Path, args: &[&str], context: &Path) -> String {
    let out = kiln(root)
        .args(["build", "--progress", "plain"])
        .args(args)
        .arg(context)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build {args:?}: {stderr}");
    stderr
}

/// `kiln build ARGS… CONTEXT` with its store at `root`; stdin is empty.
pub fn kiln_build(root: &Path, args: &[&str], context: &Path) -> Output {
    kiln(root)
        .arg("build")
        .args(args)
        .arg(context)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// stderr of a build that must have succeeded (panics with it otherwise).
pub fn succeeded(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build failed:\n{err}");
    err
}

/// stderr of a build that must have failed (panics with its output otherwise).
pub fn failed(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kiln build succeeded:\n{err}");
    err
}

/// Runs a command, panicking with the command line and its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch dir with a lowercase name: podman names `oci:` images after their path, and image
/// names must be lowercase.
pub fn lowercase_tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-")
        .rand_bytes(0)
        .suffix(&format!("{}-{name}", std::process::id()))
        .tempdir()
        .unwrap()
}

pub fn example_dir(name: &str) -> PathBuf {
    common::repo_root().join("testdata/examples").join(name)
}

pub fn expected_output(name: &str) -> String {
    std::fs::read_to_string(example_dir(name).join("expected-output"))
        .unwrap_or_else(|e| panic!("testdata/examples/{name}/expected-output: {e}"))
}

/// A build context in a temporary directory holding `files` (path, content).
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, body) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    dir
}

// ---- the base images in a loopback registry --------------------------------------------------

/// The loopback registry of this test binary, holding the test base images under
/// `<addr>/kiln-test/`. Started once and stopped when the binary exits.
pub struct Bases {
    registry: TestRegistry,
    node: OnceLock<()>,
    arm64: OnceLock<()>,
}

static BASES: OnceLock<Bases> = OnceLock::new();

/// The shared registry with the busybox base, or None after printing why the test is skipped:
/// `let Some(bases) = build_support::bases_or_skip() else { return };`.
pub fn bases_or_skip() -> Option<&'static Bases> {
    match missing_for_bases() {
        Some(skip) => {
            println!("{skip}");
            None
        }
        None => Some(bases()),
    }
}

/// The shared registry with the busybox base (call [`missing_for_bases`] first).
pub fn bases() -> &'static Bases {
    BASES.get_or_init(|| {
        // podman and buildah need the machine set-up (runc, ulimits, device modes).
        let _ = common::podman();
        let registry = TestRegistry::start("plain");
        stop_when_this_process_exits(registry.dir.path());
        push_base_images(&registry.addr, &["busybox"]);
        Bases {
            registry,
            node: OnceLock::new(),
            arm64: OnceLock::new(),
        }
    })
}

/// A `static` is never dropped, so a watcher process stops the shared registry (and removes
/// its directory) once this test binary has exited, however it exits.
fn stop_when_this_process_exits(dir: &Path) {
    let script = common::repo_root().join("tests/scripts/registry.sh");
    // The outer shell only puts the watcher in the background and exits, so nothing is left
    // for this process to wait on.
    run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(r#"(tail --pid="$1" -f /dev/null; bash "$2" stop "$3"; rm -rf "$3") </dev/null >/dev/null 2>&1 &"#)
            .arg("watch-registry")
            .arg(std::process::id().to_string())
            .arg(script)
            .arg(dir),
    );
}

/// The shared registry with the busybox and node bases (node is made once per machine and
/// cached under `$CARGO_TARGET_TMPDIR/base-images`).
pub fn bases_with_node() -> &'static Bases {
    let b = bases();
    b.node
        .get_or_init(|| push_base_images(&b.registry.addr, &["node"]));
    b
}

/// The shared registry with the busybox base plus the arm64 busybox, alone and with the amd64
/// one in an image index (made once per machine from Debian's arm64 `busybox-static`; needs
/// `qemu-aarch64-static`, which `tests/scripts/binfmt.sh` installs).
pub fn bases_with_arm64() -> &'static Bases {
    let b = bases();
    b.arm64.get_or_init(|| {
        push_base_images(&b.registry.addr, &["busybox-arm64", "busybox-multiarch"])
    });
    b
}

/// [`bases_with_arm64`] with qemu-aarch64 registered with the F flag (`tests/scripts/binfmt.sh`,
/// once per test binary), so RUN steps for linux/arm64 execute; None after printing why not
/// (not root, not an amd64 machine, or a tool of the bases missing).
pub fn arm64_emulation_or_skip() -> Option<&'static Bases> {
    if std::env::consts::ARCH != "x86_64" {
        println!(
            "SKIPPED: emulates arm64 on x86_64; this machine is {}",
            std::env::consts::ARCH
        );
        return None;
    }
    if let Some(why) = missing_for_bases() {
        println!("{why}");
        return None;
    }
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        run_ok(
            Command::new("bash")
                .arg(common::repo_root().join("tests/scripts/binfmt.sh"))
                .arg("aarch64"),
        );
    });
    Some(bases_with_arm64())
}

fn push_base_images(registry: &str, only: &[&str]) {
    let mut cmd = Command::new("bash");
    cmd.arg(common::repo_root().join("tests/scripts/base-images.sh"))
        .arg(base_images_dir())
        .args(["--push", registry]);
    for name in only {
        cmd.args(["--only", name]);
    }
    run_ok(&mut cmd);
}

/// Where base-images.sh keeps the base images it made (shared by every test binary).
pub fn base_images_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("base-images")
}

impl Bases {
    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.registry.addr
    }

    /// The `BASE` build argument the examples take (`testdata/examples/README.md`).
    pub fn base_arg(&self) -> String {
        format!("--build-arg=BASE={}/kiln-test", self.addr())
    }

    /// The busybox base image's reference.
    pub fn busybox(&self) -> String {
        format!("{}/kiln-test/busybox:latest", self.addr())
    }

    /// The linux/arm64/v8 busybox image (after [`bases_with_arm64`]).
    pub fn busybox_arm64(&self) -> String {
        format!("{}/kiln-test/busybox-arm64:latest", self.addr())
    }

    /// An image index holding the busybox image (linux/amd64) and the arm64 one (after
    /// [`bases_with_arm64`]).
    pub fn busybox_multiarch(&self) -> String {
        format!("{}/kiln-test/busybox-multiarch:latest", self.addr())
    }
}

// ---- buildah and podman ------------------------------------------------------------------------

/// The unprivileged user rootless runs use (made by `tests/scripts/containers-config.sh`).
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl TestUser {
    pub fn lookup() -> TestUser {
        let name = std::env::var("KILN_TEST_USER").unwrap_or_else(|_| "kilntest".into());
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {name} missing after containers-config.sh"));
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        }
    }
}

/// buildah and podman pointed at one temporary storage, so a test neither reads nor pollutes
/// the machine's images; run as root, or as an unprivileged user (rootless). Cleans up when
/// dropped.
pub struct Storage {
    dir: tempfile::TempDir,
    user: Option<TestUser>,
}

impl Storage {
    pub fn new(user: Option<TestUser>) -> Storage {
        let _ = common::podman(); // the machine set-up, once per binary
        let dir = tempfile::Builder::new()
            .prefix("kiln-e2e-storage")
            .tempdir()
            .unwrap();
        if let Some(u) = &user {
            std::os::unix::fs::chown(dir.path(), Some(u.uid), Some(u.gid)).unwrap();
        }
        Storage { dir, user }
    }

    /// `program` with the storage options, run as the storage's user.
    fn command(&self, program: &str) -> Command {
        let d = self.dir.path();
        let mut cmd = match &self.user {
            None => Command::new(program),
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &u.name, "--", "env"])
                    .arg(format!("HOME={}", u.home.display()))
                    .arg(format!("XDG_RUNTIME_DIR=/run/user/{}", u.uid))
                    .arg(program);
                c.current_dir("/tmp");
                c
            }
        };
        cmd.arg(format!("--root={}", d.join("root").display()))
            .arg(format!("--runroot={}", d.join("runroot").display()));
        cmd
    }

    pub fn buildah(&self) -> Command {
        self.command("buildah")
    }

    pub fn podman(&self) -> Command {
        let mut cmd = self.command("podman");
        cmd.arg(format!(
            "--tmpdir={}",
            self.dir.path().join("libpod").display()
        ));
        cmd
    }

    /// Builds an example with buildah (`isolation`: chroot, oci or rootless) from the bases in
    /// `registry`; returns the image name in this storage.
    pub fn buildah_build(&self, registry: &str, name: &str, isolation: &str) -> String {
        let image = format!("localhost/kiln-examples/{name}:buildah");
        run_ok(
            self.buildah()
                .args(["bud", "--quiet", "--tls-verify=false"])
                .arg(format!("--isolation={isolation}"))
                .arg(format!("--build-arg=BASE={registry}/kiln-test"))
                .args(["-t", &image])
                .arg(example_dir(name)),
        );
        image
    }

    /// Pulls `image` (a registry reference over plain HTTP, or `oci:DIR:TAG`) into this storage.
    pub fn pull(&self, image: &str) {
        run_ok(
            self.podman()
                .args(["pull", "--quiet", "--tls-verify=false", image]),
        );
    }

    /// What example `name` prints when `image` (in this storage) runs: its own CMD's output
    /// (`podman run --rm --network none`), or for servers, the output of the example's
    /// `exec-check` command once the server answers.
    pub fn output_of(&self, name: &str, image: &str) -> String {
        let check = example_dir(name).join("exec-check");
        if !check.exists() {
            let out = run_ok(
                self.podman()
                    .args(["run", "--rm", "--network", "none", image]),
            );
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let expected = expected_output(name);
        let script = std::fs::read_to_string(check).unwrap();
        let cid = run_ok(
            self.podman()
                .args(["run", "-d", "--network", "none", image]),
        );
        let cid = String::from_utf8_lossy(&cid.stdout).trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self
                .podman()
                .args(["exec", &cid, "sh", "-c", script.trim()])
                .output()
                .unwrap();
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && last == expected {
                break;
            }
            sleep(Duration::from_millis(200));
        }
        run_ok(self.podman().args(["rm", "--force", "--time=0", &cid]));
        last
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = self.podman().args(["rm", "--all", "--force"]).output();
        let _ = self.buildah().args(["rm", "--all"]).output();
        let _ = self.podman().args(["rmi", "--all", "--force"]).output();
        // Rootless podman keeps a pause process holding its user namespace; its pid file lives
        // in our --tmpdir, so stop it rather than leave it running.
        if self.user.is_some() {
            for entry in walkdir::WalkDir::new(self.dir.path())
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_name() == "pause.pid")
            {
                if let Some(pid) = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // containers/storage keeps its overlay directory bind-mounted (as root; a rootless
        // user's mounts die with its namespace); undo it, deepest first, so the temporary
        // directory can be removed.
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).output();
        }
    }
}

/// Mount points (from `/proc/self/mountinfo`) at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

// ---- buildah's reference images ----------------------------------------------------------------

/// buildah's image of example `name` as an OCI layout (tag `latest`) under
/// `$CARGO_TARGET_TMPDIR/examples-buildah/<name>`. buildah is slow, so the image is built once
/// and reused (by every test binary, across runs) while its inputs are unchanged: the example's
/// files, the base images and buildah's version (a stamp file records them). Needs
/// [`bases_with_node`]'s prerequisites plus buildah and podman.
pub fn buildah_reference(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-buildah");
    std::fs::create_dir_all(&dir).unwrap();
    // Several test binaries may ask at once: one builds, the others wait and reuse.
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    fs4::fs_std::FileExt::lock_exclusive(&lock).unwrap();
    let layout = dir.join(name);
    let stamp_file = dir.join(format!("{name}.stamp"));
    let stamp = reference_stamp(name);
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
        && layout.join("index.json").is_file()
    {
        return layout;
    }
    let _ = std::fs::remove_file(&stamp_file);
    let _ = std::fs::remove_dir_all(&layout);
    let storage = Storage::new(None);
    let image = storage.buildah_build(bases_with_node().addr(), name, "chroot");
    run_ok(
        storage
            .buildah()
            .args(["push", "--quiet", &image])
            .arg(format!("oci:{}:latest", layout.display())),
    );
    std::fs::write(&stamp_file, stamp).unwrap();
    layout
}

/// A digest of what buildah's image of `name` depends on.
fn reference_stamp(name: &str) -> String {
    let mut h = Sha256::new();
    let version = run_ok(Command::new("buildah").arg("--version")).stdout;
    h.update(&version);
    for base in ["busybox", "node"] {
        h.update(
            std::fs::read(base_images_dir().join(base).join("index.json")).unwrap_or_default(),
        );
    }
    let root = example_dir(name);
    for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let entry = entry.unwrap();
        h.update(
            entry
                .path()
                .strip_prefix(&root)
                .unwrap()
                .as_os_str()
                .as_encoded_bytes(),
        );
        h.update([0]);
        if entry.file_type().is_file() {
            h.update(std::fs::read(entry.path()).unwrap());
        }
    }
    hex::encode(h.finalize())
}

// ---- OCI layouts ------------------------------------------------------------------------------

/// An image read from an OCI layout: its config and its layer blobs, bottom first.
pub struct LayoutImage {
    pub manifest_digest: String,
    pub config: serde_json::Value,
    pub layers: Vec<PathBuf>,
}

impl LayoutImage {
    /// The layers' digests (`sha256:…`), bottom first.
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|p| format!("sha256:{}", p.file_name().unwrap().to_string_lossy()))
            .collect()
    }
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image an OCI layout's index names `tag` (or its only image).
pub fn read_layout(layout: &Path, tag: &str) -> LayoutImage {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json: manifests");
    let desc = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))
        .unwrap_or_else(|| panic!("{}: no image tagged {tag}", layout.display()));
    let digest = desc["digest"].as_str().unwrap().to_string();
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
    LayoutImage {
        manifest_digest: digest,
        config,
        layers,
    }
}

/// One path of an image's file tree, as a comparison sees it (no mtimes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `file`, `dir`, `symlink -> TARGET`, `hardlink -> PATH`, `char`, `block`, `fifo`.
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// sha256 of a regular file's content.
    pub content: Option<String>,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(c) = &self.content {
            write!(f, " {}", &c[..12])?;
        }
        Ok(())
    }
}

/// The image's file tree after applying its layers in order (whiteouts and opaque directories
/// remove what lower layers had), keyed by path without a leading `/`.
pub fn file_tree(image: &LayoutImage) -> BTreeMap<String, Node> {
    let mut tree = BTreeMap::new();
    for layer in &image.layers {
        let mut entries = Vec::new();
        let mut whiteouts = Vec::new();
        let mut archive = tar::Archive::new(decompress(layer));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = normalize(&entry.path().unwrap().to_string_lossy());
            let (parent, base) = match path.rsplit_once('/') {
                Some((p, b)) => (format!("{p}/"), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                whiteouts.push((parent, true));
            } else if let Some(gone) = base.strip_prefix(".wh.") {
                whiteouts.push((format!("{parent}{gone}"), false));
            } else {
                entries.push((path, node_of(&mut entry)));
            }
        }
        for (path, opaque) in whiteouts {
            if opaque {
                tree.retain(|p: &String, _| !p.starts_with(&path));
            } else {
                let below = format!("{path}/");
                tree.retain(|p: &String, _| *p != path && !p.starts_with(&below));
            }
        }
        for (path, node) in entries {
            tree.insert(path, node);
        }
    }
    tree
}

fn normalize(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn node_of<R: Read>(entry: &mut tar::Entry<R>) -> Node {
    use tar::EntryType as T;
    let h = entry.header();
    let (mode, uid, gid) = (
        h.mode().unwrap() & 0o7777,
        h.uid().unwrap(),
        h.gid().unwrap(),
    );
    let link = || {
        entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (kind, content) = match h.entry_type() {
        T::Regular | T::Continuous => ("file".to_string(), Some(sha256_of(entry))),
        T::Directory => ("dir".into(), None),
        T::Symlink => (format!("symlink -> {}", link()), None),
        T::Link => (format!("hardlink -> {}", normalize(&link())), None),
        T::Char => ("char".into(), None),
        T::Block => ("block".into(), None),
        T::Fifo => ("fifo".into(), None),
        other => (format!("{other:?}"), None),
    };
    Node {
        kind,
        mode,
        uid,
        gid,
        content,
    }
}

fn sha256_of(r: &mut impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).unwrap() {
            0 => return hex::encode(h.finalize()),
            n => h.update(&buf[..n]),
        }
    }
}

/// A layer blob's tar stream: gzip, zstd or plain, told by its first bytes.
fn decompress(path: &Path) -> Box<dyn Read> {
    let mut f = BufReader::new(std::fs::File::open(path).unwrap());
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).unwrap();
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
    match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(head)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(head).unwrap()),
        _ => Box::new(head),
    }
}

/// The lines that differ between two file trees (`-` only in `a`, `+` only in `b`, `~` both but
/// different), for assertion messages.
pub fn tree_diff(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in a {
        match b.get(p) {
            None => out.push(format!("- /{p}: {n}")),
            Some(m) if m != n => out.push(format!("~ /{p}: {n}  vs  {m}")),
            Some(_) => {}
        }
    }
    for (p, n) in b {
        if !a.contains_key(p) {
            out.push(format!("+ /{p}: {n}"));
        }
    }
    out
}

/// The content of the regular file at `path` (no leading `/`) in the image, or None when the
/// image has no regular file there.
pub fn file_content(image: &LayoutImage, path: &str) -> Option<Vec<u8>> {
    if file_tree(image).get(path)?.kind != "file" {
        return None;
    }
    // The topmost layer holding the path has the content the tree shows.
    image.layers.iter().rev().find_map(|layer| {
        let mut archive = tar::Archive::new(decompress(layer));
        let entries = archive.entries().unwrap();
        for entry in entries {
            let mut entry = entry.unwrap();
            if normalize(&entry.path().unwrap().to_string_lossy()) == path {
                let mut body = Vec::new();
                entry.read_to_end(&mut body).unwrap();
                return Some(body);
            }
        }
        None
    })
}

/// Copies a directory tree (an example project) to `dest`, keeping modes and symlinks.
pub fn copy_tree(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    run_ok(Command::new("cp").arg("-a").arg(src).arg(dest));
}

// ---- progress output ---------------------------------------------------------------------------

/// A step as the plain progress output shows it: its header (`[stage-0 3/12] RUN …`, without
/// the bracket part) and the lines printed under it.
#[derive(Debug)]
pub struct StepLog {
    /// `stage-0 3/12`, `build 1/4`.
    pub position: String,
    pub instruction: String,
    pub lines: Vec<String>,
}

impl StepLog {
    pub fn cached(&self) -> bool {
        self.lines.iter().any(|l| l.trim() == "CACHED")
    }

    /// The cache-miss line (`<instruction>: cache miss, <reason>`), if any.
    pub fn miss(&self) -> Option<&str> {
        self.lines
            .iter()
            .map(|l| l.trim())
            .find(|l| l.contains(": cache miss, "))
    }
}

/// The steps in a build's plain progress output (`#N [stage i/n] INSTR`, then `#N …` lines,
/// which may interleave when stages run in parallel), in the order they started.
pub fn steps(stderr: &str) -> Vec<StepLog> {
    let header = regex::Regex::new(r"^#([0-9]+) \[([^\]]+ [0-9]+/[0-9]+)\] (.*)$").unwrap();
    let body = regex::Regex::new(r"^#([0-9]+) (.*)$").unwrap();
    let mut steps: Vec<(String, StepLog)> = Vec::new();
    for line in stderr.lines() {
        if let Some(c) = header.captures(line) {
            steps.push((
                c[1].to_string(),
                StepLog {
                    position: c[2].to_string(),
                    instruction: c[3].to_string(),
                    lines: Vec::new(),
                },
            ));
        } else if let Some(c) = body.captures(line) {
            if let Some((_, s)) = steps.iter_mut().rev().find(|(n, _)| *n == c[1]) {
                s.lines.push(c[2].to_string());
            }
        }
    }
    steps.into_iter().map(|(_, s)| s).collect()
}

/// Whether any layer of the image holds `needle` anywhere in its tar stream (names, link
/// targets or content): for asserting that a host file never reached an image.
pub fn layers_contain(image: &LayoutImage, needle: &[u8]) -> bool {
    image.layers.iter().any(|layer| {
        let mut body = Vec::new();
        decompress(layer).read_to_end(&mut body).unwrap();
        body.windows(needle.len()).any(|w| w == needle)
    })
}

/// Every entry of every layer, bottom layer first: the tar path as raw bytes (names need not
/// be UTF-8) and a regular file's content or a link's target (empty for the rest).
pub fn raw_entries(image: &LayoutImage) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for layer in &image.layers {
        let mut archive = tar::Archive::new(decompress(layer));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let mut body = match entry.link_name_bytes() {
                Some(link) => link.into_owned(),
                None => Vec::new(),
            };
            entry.read_to_end(&mut body).unwrap();
            out.push((path, body));
        }
    }
    out
}

// ---- buildah's reference builds of other contexts ----------------------------------------------

/// buildah's stubs of what it bind-mounts into a RUN step: empty `/etc/hosts`, `/etc/hostname`,
/// `/etc/resolv.conf` and an empty `/run` (for `/run/.containerenv`) stay in its image. Docker's
/// builder (BuildKit) removes the mount stubs it created, and so does kiln, so these are dropped
/// from buildah's tree when they are empty stubs that kiln's image lacks.
pub fn drop_buildah_mount_stubs(
    kiln: &BTreeMap<String, Node>,
    buildah: &mut BTreeMap<String, Node>,
) {
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    for file in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let stub = buildah
            .get(file)
            .is_some_and(|n| n.content.as_deref() == Some(EMPTY));
        if stub && !kiln.contains_key(file) {
            buildah.remove(file);
        }
    }
    let empty_run = buildah.get("run").is_some_and(|n| n.kind == "dir")
        && !buildah.keys().any(|p| p.starts_with("run/"));
    if empty_run && !kiln.contains_key("run") {
        buildah.remove("run");
    }
}

/// One buildah build of a Dockerfile and context, cached by [`buildah_cached_build`].
pub struct BuildahBuild<'a> {
    /// Names the cache entry (`<cache>/<name>`, `<cache>/<name>.stamp`).
    pub name: &'a str,
    pub dockerfile: &'a Path,
    pub context: &'a Path,
    /// Extra `buildah bud` arguments (`--target=…`, `--build-arg=…`).
    pub args: &'a [String],
}

/// buildah's image of `build` (`buildah bud --isolation chroot --layers --format docker`, so
/// HEALTHCHECK, ONBUILD and SHELL stay in its config) in containers-image `dir:` form under
/// `cache/<name>`; read it with [`read_dir_image`]. Built once and reused while its inputs (the
/// Dockerfile, the context, the arguments, the busybox base and buildah's version) are
/// unchanged, so reruns are fast. `storage` may be shared by threads building at once.
pub fn buildah_cached_build(storage: &Storage, cache: &Path, build: &BuildahBuild) -> PathBuf {
    std::fs::create_dir_all(cache).unwrap();
    let out = cache.join(build.name);
    let stamp_file = cache.join(format!("{}.stamp", build.name));
    let stamp = build_stamp(build);
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
        && out.join("manifest.json").is_file()
    {
        return out;
    }
    let _ = std::fs::remove_file(&stamp_file);
    let _ = std::fs::remove_dir_all(&out);
    let image = format!("localhost/kiln-conformance/{}:buildah", build.name);
    run_ok(
        storage
            .buildah()
            .args(["bud", "--quiet", "--tls-verify=false", "--isolation=chroot"])
            .args(["--layers", "--format=docker"])
            .arg(format!("--build-arg=BASE={}/kiln-test", bases().addr()))
            .args(build.args)
            .args(["-t", &image, "-f"])
            .arg(build.dockerfile)
            .arg(build.context),
    );
    run_ok(
        storage
            .buildah()
            .args(["push", "--quiet", &image])
            .arg(format!("dir:{}", out.display())),
    );
    std::fs::write(&stamp_file, stamp).unwrap();
    out
}

/// A digest of what buildah's image of `build` depends on.
fn build_stamp(build: &BuildahBuild) -> String {
    let mut h = Sha256::new();
    h.update(run_ok(Command::new("buildah").arg("--version")).stdout);
    h.update(std::fs::read(base_images_dir().join("busybox/index.json")).unwrap_or_default());
    for arg in build.args {
        h.update(arg.as_bytes());
        h.update([0]);
    }
    h.update(std::fs::read(build.dockerfile).unwrap());
    for entry in walkdir::WalkDir::new(build.context).sort_by_file_name() {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        h.update(
            entry
                .path()
                .strip_prefix(build.context)
                .unwrap()
                .as_os_str()
                .as_encoded_bytes(),
        );
        h.update(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()).to_le_bytes());
        if meta.file_type().is_symlink() {
            h.update(
                std::fs::read_link(entry.path())
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if meta.is_file() {
            h.update(std::fs::read(entry.path()).unwrap());
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// The image in a containers-image `dir:` directory (`manifest.json`, blobs named by their hex
/// digest), as [`read_layout`] reads an OCI layout.
pub fn read_dir_image(dir: &Path) -> LayoutImage {
    let manifest = read_json(&dir.join("manifest.json"));
    let in_dir = |digest: &str| dir.join(digest.strip_prefix("sha256:").expect("sha256 digest"));
    let config = read_json(&in_dir(manifest["config"]["digest"].as_str().unwrap()));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| in_dir(l["digest"].as_str().unwrap()))
        .collect();
    let bytes = std::fs::read(dir.join("manifest.json")).unwrap();
    LayoutImage {
        manifest_digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        config,
        layers,
    }
}

// ---- the store -------------------------------------------------------------------------------

/// The diffIDs the build cache of the store at `store` records as kept only unpacked (no
/// blob).
pub fn unpacked_records(store: &Path) -> std::collections::BTreeSet<String> {
    let dir = store.join("cache/build/steps");
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        if let Some(d) = v["layer"]["unpacked_diff_id"].as_str() {
            out.insert(d.to_string());
        }
    }
    out
}

/// The diffID of every gzip blob in the store (every layer blob kiln writes here): what it
/// decompresses to.
pub fn blob_diff_ids(store: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut tar)
            .unwrap();
        out.insert(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
    }
    out
}

/// The store's unpacked dir of the layer `diff_id` (`sha256:…`).
pub fn layer_dir(store: &Path, diff_id: &str) -> PathBuf {
    store
        .join("layers")
        .join(diff_id.strip_prefix("sha256:").unwrap())
}

/// The store at `store` keeps `count` layers only unpacked: recorded without a blob, their
/// dirs present, and no blob of the store decompressing to any of them. Their diffIDs.
pub fn assert_kept_without_blobs(store: &Path, count: usize) -> std::collections::BTreeSet<String> {
    let lazy = unpacked_records(store);
    assert_eq!(lazy.len(), count, "{lazy:?}");
    let blobs = blob_diff_ids(store);
    for d in &lazy {
        assert!(layer_dir(store, d).is_dir(), "{d}");
        assert!(!blobs.contains(d), "the layer {d} was compressed");
    }
    lazy
}
