//! The reference run: builds every project in `testdata/examples/` with buildah (the peer kiln is
//! compared with) from the test base images in a loopback registry, runs each image with podman
//! and checks it prints the example's `expected-output`.
//!
//! It also leaves each built image as an OCI layout under
//! `$CARGO_TARGET_TMPDIR/examples-buildah/<example>` (tag `latest`), the reference that kiln's own
//! end-to-end tests can compare configs and file trees with.
//!
//! Needs root (the base images are built as root), buildah, podman, skopeo, docker-registry and
//! jq; without them it prints SKIPPED and returns. Everything else is temporary: its own registry
//! on a free port, its own container storage.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const EXAMPLES: &[&str] = &[
    "hello",
    "static-site",
    "shell-app",
    "multi-stage",
    "node-app",
];

/// Why the reference run cannot happen here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root (base images are built as root)".into());
    }
    [
        "buildah",
        "podman",
        "skopeo",
        "docker-registry",
        "jq",
        "runc",
    ]
    .iter()
    .find(|tool| which(tool).is_none())
    .map(|tool| format!("{tool} is not installed (tests/scripts/install-deps.sh)"))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// Runs a command and returns its output, panicking with the command line and stderr on failure.
fn run(cmd: &mut Command) -> Output {
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

/// A `docker-registry` on a free loopback port, killed when dropped.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        // Binding port 0 and closing it again leaves a small race with other processes; the
        // readiness check below would catch a registry that failed to bind.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start docker-registry");
        let registry = Registry { child, addr };
        registry.wait_ready(dir);
        registry
    }

    fn wait_ready(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if http_status(&self.addr, "/v2/") == Some(200) {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        panic!(
            "registry on {} did not answer /v2/ within 15 s:\n{log}",
            self.addr
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain HTTP GET, or None when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// buildah and podman pointed at one temporary storage, so the test neither reads nor pollutes
/// the machine's images. Unmounts whatever the storage left mounted when dropped.
struct Storage {
    dir: tempfile::TempDir,
}

impl Storage {
    fn new() -> Storage {
        Storage {
            dir: tempfile::Builder::new()
                .prefix("kiln-examples-storage")
                .tempdir()
                .unwrap(),
        }
    }

    fn global_args(&self) -> Vec<String> {
        let d = self.dir.path();
        vec![
            format!("--root={}", d.join("root").display()),
            format!("--runroot={}", d.join("runroot").display()),
        ]
    }

    fn buildah(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.args(self.global_args());
        cmd
    }

    fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(self.global_args()).arg(format!(
            "--tmpdir={}",
            self.dir.path().join("libpod").display()
        ));
        cmd
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = self.podman().args(["rm", "--all", "--force"]).output();
        let _ = self.buildah().args(["rm", "--all"]).output();
        let _ = self.podman().args(["rmi", "--all", "--force"]).output();
        // containers/storage keeps its overlay directory bind-mounted; undo it (deepest first) so
        // the temporary directory can be removed.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
    }
}

/// Builds (or reuses, the script is idempotent) the base images and pushes them to `registry`.
fn base_images(registry: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("base-images");
    let root = common::repo_root();
    run(Command::new("bash")
        .arg(root.join("tests/scripts/containers-config.sh"))
        .stdout(Stdio::null()));
    run(Command::new("bash")
        .arg(root.join("tests/scripts/base-images.sh"))
        .arg(&out)
        .args(["--push", registry]));
    out
}

fn example_dir(name: &str) -> PathBuf {
    common::repo_root().join("testdata/examples").join(name)
}

/// Builds one example with buildah and saves it as an OCI layout for later comparison.
fn build(storage: &Storage, registry: &str, name: &str) -> String {
    let image = format!("localhost/kiln-examples/{name}:buildah");
    run(storage
        .buildah()
        .args([
            "bud",
            "--quiet",
            "--isolation=chroot",
            "--tls-verify=false",
            "--build-arg",
            &format!("BASE={registry}/kiln-test"),
            "-t",
            &image,
        ])
        .arg(example_dir(name)));
    let layout = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-buildah");
    std::fs::create_dir_all(&layout).unwrap();
    let _ = std::fs::remove_dir_all(layout.join(name));
    run(storage
        .buildah()
        .args(["push", "--quiet", &image])
        .arg(format!("oci:{}:latest", layout.join(name).display())));
    image
}

/// What the image prints: its own CMD's output, or for servers the `exec-check` command's output
/// once the server answers.
fn output_of(storage: &Storage, name: &str, image: &str, expected: &str) -> String {
    let check = example_dir(name).join("exec-check");
    if !check.exists() {
        let out = run(storage.podman().args(["run", "--rm", image]));
        return String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let script = std::fs::read_to_string(check).unwrap();
    let cid = run(storage.podman().args(["run", "-d", image]));
    let cid = String::from_utf8_lossy(&cid.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = storage
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
    run(storage.podman().args(["rm", "--force", "--time=0", &cid]));
    last
}

/// The image config buildah wrote, as JSON.
fn config_of(storage: &Storage, image: &str) -> serde_json::Value {
    let out = run(storage.buildah().args(["inspect", "--type=image", image]));
    let inspect: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("buildah inspect printed no JSON");
    inspect["OCIv1"]["config"].clone()
}

#[test]
fn examples_build_with_buildah_and_print_their_expected_output() {
    if let Some(why) = missing_prerequisite() {
        println!("SKIPPED: {why}");
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("kiln-examples-registry")
        .tempdir()
        .unwrap();
    let registry = Registry::start(scratch.path());
    base_images(&registry.addr);
    let storage = Storage::new();

    let mut failures = Vec::new();
    for name in EXAMPLES {
        let expected = std::fs::read_to_string(example_dir(name).join("expected-output"))
            .unwrap_or_else(|e| panic!("testdata/examples/{name}/expected-output: {e}"));
        let image = build(&storage, &registry.addr, name);
        let got = output_of(&storage, name, &image, &expected);
        if got != expected {
            failures.push(format!("{name}: expected\n{expected}\ngot\n{got}"));
        }
        if *name == "hello" {
            check_hello_config(&config_of(&storage, &image));
        }
    }
    assert!(
        failures.is_empty(),
        "examples printed the wrong thing:\n{}",
        failures.join("\n")
    );
}

/// The metadata steps of `hello` (its Dockerfile has no RUN) land in the config as Docker
/// defines them; kiln's config is compared with this one.
fn check_hello_config(config: &serde_json::Value) {
    assert_eq!(config["WorkingDir"], "/srv/hello", "{config}");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["/usr/local/bin/hello"]),
        "{config}"
    );
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"], "hello",
        "{config}"
    );
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("no Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"GREETING=Hello from kiln!"), "{env:?}");
    assert!(env.contains(&"HELLO_EXAMPLE=1"), "{env:?}");
}
