//! The reference run: builds every project in `testdata/examples/` with buildah (the peer kiln is
//! compared with) from the test base images in a loopback registry, runs each image with podman
//! and checks it prints the example's `expected-output`.
//!
//! It also leaves each built image as an OCI layout under
//! `$CARGO_TARGET_TMPDIR/examples-buildah/<example>` (tag `latest`), the reference that kiln's own
//! end-to-end tests can compare configs and file trees with.
//!
//! A second test builds and runs the `shell-app` example rootless, as the unprivileged test user,
//! to prove the machine set-up (`tests/scripts/containers-config.sh`) works without root too.
//!
//! Needs root (the base images are built as root; the rootless run switches user with runuser),
//! buildah, podman, skopeo, docker-registry, jq and runc; without them it prints SKIPPED and
//! returns. Everything else is temporary: its own registry on a free port, its own container
//! storage.

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

/// The unprivileged user rootless runs use (made by `tests/scripts/containers-config.sh`).
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TestUser {
    fn lookup() -> TestUser {
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

/// buildah and podman pointed at one temporary storage, so the test neither reads nor pollutes
/// the machine's images; run as root, or as an unprivileged user (rootless). Cleans up when
/// dropped.
struct Storage {
    dir: tempfile::TempDir,
    user: Option<TestUser>,
}

impl Storage {
    fn new(user: Option<TestUser>) -> Storage {
        let dir = tempfile::Builder::new()
            .prefix("kiln-examples-storage")
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

    fn buildah(&self) -> Command {
        self.command("buildah")
    }

    fn podman(&self) -> Command {
        let mut cmd = self.command("podman");
        cmd.arg(format!(
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

/// Builds one example with buildah (`isolation`: chroot, oci or rootless) and returns its name.
fn build(storage: &Storage, registry: &str, name: &str, isolation: &str) -> String {
    let image = format!("localhost/kiln-examples/{name}:buildah");
    run(storage
        .buildah()
        .args(["bud", "--quiet", "--tls-verify=false"])
        .arg(format!("--isolation={isolation}"))
        .arg(format!("--build-arg=BASE={registry}/kiln-test"))
        .args(["-t", &image])
        .arg(example_dir(name)));
    image
}

/// Saves a built example as an OCI layout under `$CARGO_TARGET_TMPDIR/examples-buildah`.
fn save_reference(storage: &Storage, name: &str, image: &str) {
    let layout = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-buildah");
    std::fs::create_dir_all(&layout).unwrap();
    let _ = std::fs::remove_dir_all(layout.join(name));
    run(storage
        .buildah()
        .args(["push", "--quiet", image])
        .arg(format!("oci:{}:latest", layout.join(name).display())));
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

/// Starts a loopback registry holding the base images, or says why the run must be skipped.
fn registry_with_base_images() -> Result<(tempfile::TempDir, Registry), String> {
    if let Some(why) = missing_prerequisite() {
        return Err(format!("SKIPPED: {why}"));
    }
    let scratch = tempfile::Builder::new()
        .prefix("kiln-examples-registry")
        .tempdir()
        .unwrap();
    let registry = Registry::start(scratch.path());
    base_images(&registry.addr);
    Ok((scratch, registry))
}

fn expected_output(name: &str) -> String {
    std::fs::read_to_string(example_dir(name).join("expected-output"))
        .unwrap_or_else(|e| panic!("testdata/examples/{name}/expected-output: {e}"))
}

#[test]
fn examples_build_with_buildah_and_print_their_expected_output() {
    let (_scratch, registry) = match registry_with_base_images() {
        Ok(r) => r,
        Err(skip) => return println!("{skip}"),
    };
    let storage = Storage::new(None);
    let mut failures = Vec::new();
    for name in EXAMPLES {
        let expected = expected_output(name);
        let image = build(&storage, &registry.addr, name, "chroot");
        save_reference(&storage, name, &image);
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

/// The machine set-up works for an unprivileged user too: buildah's rootless isolation (user
/// namespace with the sub-id range, runc, slirp4netns, overlay) builds the example with RUN
/// steps and a `chown` to a non-root uid, and rootless podman runs it.
#[test]
fn shell_app_builds_and_runs_rootless() {
    let (_scratch, registry) = match registry_with_base_images() {
        Ok(r) => r,
        Err(skip) => return println!("{skip}"),
    };
    let storage = Storage::new(Some(TestUser::lookup()));
    let image = build(&storage, &registry.addr, "shell-app", "rootless");
    let out = run(storage.podman().args(["run", "--rm", &image]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected_output("shell-app")
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
