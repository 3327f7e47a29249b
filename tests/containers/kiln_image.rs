//! The static release binary and kiln's own image (issue 16).
//!
//! - `.ci/release.sh` gives a binary with no program interpreter and no shared library, which
//!   runs `--version` and a COPY-only build (base from the loopback registry, pushed back to it)
//!   inside a scratch image holding nothing but that binary, and inside busybox.
//! - `.ci/image/build.sh` builds kiln's image with kiln; the documented Kubernetes Job command
//!   (docs/ci.md) then runs in it under podman with the restricted settings
//!   (`--cap-drop=all --security-opt no-new-privileges --user 1000`) on a context with COPY and RUN, and
//!   the image it pushes holds what the Containerfile says.
//!
//! Slow the first time: the release binary is built with the `dist` profile (minutes); later
//! runs reuse it (cargo finds it fresh). Needs root (podman), podman, skopeo, docker-registry.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::build_support::{Bases, Storage, file_tree, missing, read_layout, run_ok};

fn skip_reason() -> Option<String> {
    missing(&[
        "podman",
        "skopeo",
        "docker-registry",
        "jq",
        "readelf",
        "tar",
    ])
}

/// The static binary `.ci/release.sh` builds (once per test binary; cargo makes it a no-op when
/// the binary is up to date). Without LTO and with many codegen units: what is tested (static
/// linking, running in scratch and busybox) does not depend on them, and a thin-LTO build took
/// most of CI's time budget on 2 cores.
fn release_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = run_ok(
            Command::new(crate::common::repo_root().join(".ci/release.sh"))
                .env("CARGO_PROFILE_DIST_LTO", "off")
                .env("CARGO_PROFILE_DIST_CODEGEN_UNITS", "16"),
        );
        // Last line: "PATH SIZE bytes".
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().last().expect("release.sh prints the binary");
        let path = crate::common::repo_root().join(line.split(' ').next().unwrap());
        assert!(path.is_file(), "release.sh printed {line:?}");
        path
    })
}

/// stdout of a command that must succeed, as text.
fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
}

/// A directory anyone can read (and with `writable`, write), like a volume a pod mounts: the
/// containers below run as uid 1000 too.
fn open_dir(dir: &Path, writable: bool) {
    let mode = if writable { 0o777 } else { 0o755 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A COPY-only build context on `base`: one file and a CMD that prints it.
fn copy_only_context(base: &str, message: &str) -> tempfile::TempDir {
    context_with(
        base,
        message,
        "COPY hello.txt /srv/hello.txt\nCMD [\"cat\", \"/srv/hello.txt\"]\n",
    )
}

/// The same with a RUN step: the copy the image's CMD prints is made by the step.
fn run_context(base: &str, message: &str) -> tempfile::TempDir {
    context_with(
        base,
        message,
        "COPY hello.txt /srv/hello.txt\nRUN cp /srv/hello.txt /srv/ran.txt\n\
         CMD [\"cat\", \"/srv/ran.txt\"]\n",
    )
}

fn context_with(base: &str, message: &str, steps: &str) -> tempfile::TempDir {
    let ctx = crate::build_support::context(&[
        ("Containerfile", &format!("FROM {base}\n{steps}")),
        ("hello.txt", message),
    ]);
    open_dir(ctx.path(), false);
    for f in ["Containerfile", "hello.txt"] {
        std::fs::set_permissions(ctx.path().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    ctx
}

/// `podman run --rm --network host` (the loopback registry is on the host's 127.0.0.1).
fn podman_run(storage: &Storage) -> Command {
    let mut cmd = storage.podman();
    cmd.args(["run", "--rm", "--network", "host"]);
    cmd
}

/// Checks that `image` (a reference in the loopback registry) is `bases`' busybox plus one layer
/// and prints `message` when run.
fn assert_pushed_copy_only_image(bases: &Bases, storage: &Storage, image: &str, message: &str) {
    assert_pushed_image(bases, storage, image, message, 1)
}

/// `image` is the busybox base plus `added` layers, and running it prints `message`.
fn assert_pushed_image(bases: &Bases, storage: &Storage, image: &str, message: &str, added: usize) {
    let inspect: serde_json::Value = serde_json::from_str(&stdout_of(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{image}")),
    ))
    .unwrap();
    let base: serde_json::Value = serde_json::from_str(&stdout_of(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}", bases.busybox())),
    ))
    .unwrap();
    let layers = inspect["Layers"].as_array().unwrap();
    let base_layers = base["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers.len() + added, "{inspect}");
    assert_eq!(&layers[..base_layers.len()], &base_layers[..], "{inspect}");
    storage.pull(image);
    let out = stdout_of(podman_run(storage).arg(image));
    assert_eq!(out, message);
}

fn digest_of(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn release_binary_is_static_and_builds_in_scratch_and_busybox() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let bin = release_binary();
    let headers = stdout_of(
        Command::new("readelf")
            .args(["--program-headers", "--dynamic", "--sections", "--wide"])
            .arg(bin),
    );
    assert!(
        !headers.contains("INTERP"),
        "a program interpreter:\n{headers}"
    );
    assert!(
        !headers.contains("(NEEDED)"),
        "shared libraries:\n{headers}"
    );
    assert!(
        !headers.contains(".symtab") && !headers.contains(".debug_"),
        "not stripped:\n{headers}"
    );

    let bases = crate::build_support::bases();
    let storage = Storage::new(None);
    // A scratch image with nothing but the binary (distroless-like: no libc, no /etc, no /tmp).
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(bin, t.path().join("kiln")).unwrap();
    run_ok(
        Command::new("tar")
            .args(["-C"])
            .arg(t.path())
            .args(["--owner=0", "--group=0", "-cf"])
            .arg(t.path().join("only-kiln.tar"))
            .arg("kiln"),
    );
    run_ok(
        storage
            .podman()
            .args(["import", "--quiet"])
            .arg(t.path().join("only-kiln.tar"))
            .arg("localhost/kiln-test/only-kiln:latest"),
    );
    storage.pull(&bases.busybox());

    let busybox = bases.busybox();
    let cases = [
        ("scratch", "localhost/kiln-test/only-kiln:latest", "/kiln"),
        ("busybox", busybox.as_str(), "/usr/local/bin/kiln"),
    ];
    for (name, image, kiln) in cases {
        let mount = format!("{}:/usr/local/bin/kiln:ro", bin.display());
        let version = stdout_of(
            podman_run(&storage)
                .args(["-v", &mount])
                .arg(image)
                .args([kiln, "--version"]),
        );
        assert!(version.starts_with("kiln "), "{name}: {version}");

        let message = format!("copied by the static kiln in {name}\n");
        let ctx = copy_only_context(&bases.busybox(), &message);
        let store = tempfile::tempdir().unwrap();
        let pushed = format!("{}/kiln-test/static-{name}:1", bases.addr());
        run_ok(
            podman_run(&storage)
                .args(["-v", &mount])
                .arg("-v")
                .arg(format!("{}:/ctx:ro", ctx.path().display()))
                .arg("-v")
                .arg(format!("{}:/store", store.path().display()))
                .args(["-e", "KILN_ROOT=/store", image, kiln])
                .args(["build", "--progress=plain", "-t", &pushed, "--push", "/ctx"]),
        );
        assert_pushed_copy_only_image(bases, &storage, &pushed, &message);
    }
}

#[test]
fn kiln_image_runs_the_documented_job_restricted_and_pushes() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let bin = release_binary();
    let bases = crate::build_support::bases();
    let image = format!("{}/kiln-test/kiln:test", bases.addr());

    // Built by kiln itself (the static binary), pushed to the loopback registry.
    let store = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(crate::common::repo_root().join(".ci/image/build.sh"))
            .env("KILN_BINARY", bin)
            .env("KILN_ROOT", store.path())
            .args(["-t", &image, "--push"]),
    );

    // What the image holds: the binary, CA certificates, users, and directories any uid writes.
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:test", layout.display())),
    );
    let img = read_layout(&layout, "test");
    let cfg = &img.config["config"];
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kiln"])
    );
    assert_eq!(cfg["WorkingDir"], "/workspace");
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "HOME=/kiln",
        "KILN_ROOT=/kiln/store",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    let tree = file_tree(&img);
    let node = |p: &str| {
        tree.get(p)
            .unwrap_or_else(|| panic!("{p} not in the image: {:?}", tree.keys()))
    };
    let kiln = node("usr/local/bin/kiln");
    assert_eq!((kiln.mode, kiln.uid), (0o755, 0));
    assert_eq!(kiln.content.as_deref(), Some(digest_of(bin).as_str()));
    let ca = node("etc/ssl/certs/ca-certificates.crt");
    assert_eq!(
        ca.content.as_deref(),
        Some(digest_of(Path::new("/etc/ssl/certs/ca-certificates.crt")).as_str())
    );
    for dir in ["kiln", "tmp"] {
        assert_eq!(
            (node(dir).kind.as_str(), node(dir).mode),
            ("dir", 0o1777),
            "{dir}"
        );
    }
    assert!(node("etc/passwd").content.is_some());

    // The Kubernetes Job of docs/ci.md, restricted: no capabilities, no new privileges, uid 1000,
    // the context at /workspace (read-only) and an emptyDir-like volume at /kiln.
    let storage = Storage::new(None);
    storage.pull(&image);
    let message = "built by kiln's image as uid 1000 with every capability dropped\n";
    // The registry named `localhost`: the static binary resolves it through the container's
    // /etc/hosts (glibc's built-in `files` source; the image has no NSS module).
    let registry = bases.addr().replace("127.0.0.1", "localhost");
    let base = format!("{registry}/kiln-test/busybox:latest");
    // With a RUN: a single-id user namespace for uid 1000 (docs/ci.md, case d).
    let ctx = run_context(&base, message);
    let kiln_volume = tempfile::tempdir().unwrap();
    open_dir(kiln_volume.path(), true);
    let app = format!("{registry}/kiln-test/app:v1.2.3");
    let cache = format!("{registry}/kiln-test/app:buildcache");
    run_ok(
        podman_run(&storage)
            .args([
                "--cap-drop=all",
                "--security-opt",
                "no-new-privileges",
                "--user",
                "1000",
            ])
            .arg("-v")
            .arg(format!("{}:/workspace:ro", ctx.path().display()))
            .arg("-v")
            .arg(format!("{}:/kiln", kiln_volume.path().display()))
            .arg(&image)
            .args([
                "build",
                "--progress=plain",
                &format!("--cache-from={cache}"),
                &format!("--cache-to={cache}"),
                &format!("-t={app}"),
                "--push",
                "/workspace",
            ]),
    );
    assert_pushed_image(bases, &storage, &app, message, 2);
    run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{cache}")),
    );
    // The store went where the image says (the volume), owned by the job's uid.
    let store = kiln_volume.path().join("store");
    assert!(
        store.join("kiln-store").is_file(),
        "no store in the /kiln volume"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&store).unwrap().uid(), 1000);
}

/// The variant for CI systems that run a job's script with a shell (GitLab): the same image on a
/// busybox base, where `sh` finds kiln on PATH.
#[test]
fn kiln_image_on_busybox_has_a_shell_that_finds_kiln() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let bin = release_binary();
    let bases = crate::build_support::bases();
    let image = format!("{}/kiln-test/kiln:test-debug", bases.addr());
    let store = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(crate::common::repo_root().join(".ci/image/build.sh"))
            .env("KILN_BINARY", bin)
            .env("KILN_ROOT", store.path())
            .arg(format!("--build-arg=BASE={}", bases.busybox()))
            .args(["-t", &image, "--push"]),
    );
    let storage = Storage::new(None);
    storage.pull(&image);
    let out = stdout_of(
        podman_run(&storage)
            .args(["--user", "1000", "--entrypoint", "sh"])
            .arg(&image)
            .args(["-c", "echo $HOME; command -v kiln; kiln --version"]),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["/kiln", "/usr/local/bin/kiln"], "{out}");
    assert!(lines[2].starts_with("kiln "), "{out}");
}
