//! `kiln build --isolation auto` inside the containers CI jobs run in (issue 16, item 1): the
//! host's kiln binary, bind-mounted read-only into a real `podman run`, builds a small
//! Dockerfile with RUN steps against the loopback registry's busybox base, and the image
//! (config and file tree) must be the one the same build gives as root on the host. In each
//! container a hostile step also checks that RUN still gets no more than runc's defaults
//! there (capabilities, no_new_privs, seccomp, no device nodes).
//!
//! - a. podman's default container: root, no CAP_SYS_ADMIN/CAP_MKNOD, user namespaces allowed;
//! - b. Docker's and containerd's default: root with CAP_MKNOD, a seccomp profile that refuses
//!   every namespace (`testdata/seccomp/docker-default.json`, see its README);
//! - c. a non-root user (`--user 1000`), no /etc/subuid entry: a single-id user namespace;
//! - d. everything dropped: `--cap-drop=all --security-opt no-new-privileges` as a non-root
//!   user (Kubernetes' "restricted" profile) runs in a single-id user namespace; as root it
//!   cannot (mapping uid 0 needs CAP_SETFCAP, chroot needs CAP_SYS_CHROOT);
//! - where nothing can isolate RUN (that last one, and b's profile with every capability
//!   dropped), the build fails at its first RUN naming what is missing and the setting that
//!   allows it, while a COPY-only build works.
//!
//! The container image is made here from nothing but a few directories and symlinks: the
//! host's `/usr` is bound read-only into it, so kiln (dynamic, glibc) finds its libraries.
//! Rootful podman, `--network host` (the registry listens on 127.0.0.1).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::build_support::{Node, bases, file_tree, kiln_build, read_layout, succeeded, tree_diff};

const EPOCH: &str = "1700000000";
/// The container image kiln runs in (made by [`host_usr_image`]).
const IMAGE: &str = "localhost/kiln-ci-host-usr:1";
/// containers-common's default capabilities: the most a RUN step may have.
const DEFAULT_CAPS: u64 = 0x8004_05fb;

fn skip_reason() -> Option<String> {
    crate::build_support::missing_for_bases()
        .or_else(|| crate::build_support::missing(&["podman", "tar"]))
}

/// The build under test: files written, one deleted from the base and from an earlier
/// step, `id` recorded; the last step prints what it was given and tries what it must not.
fn dockerfile(base: &str) -> String {
    format!(
        r#"FROM {base}
COPY hello.txt /out/hello.txt
RUN mkdir -p /out/sub /gone && echo one > /out/one && echo two > /out/sub/two \
    && echo x > /gone/x && id -u > /out/uid && id -g > /out/gid \
    && chmod 600 /out/sub/two && ln -s one /out/link
RUN rm /out/one && rm -r /gone && rmdir /root && echo three > /out/three
RUN p=probe; echo "$p-id: $(id)"; \
    if [ -r /proc/self/status ]; then \
      grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | sed "s/^/$p-/"; \
    else echo "$p-status: no /proc"; fi; \
    mknod /tmp/disk b 8 0 2>/dev/null && echo "$p-mknod: allowed" || echo "$p-mknod: refused"; \
    chroot / /bin/true 2>/dev/null && echo "$p-chroot: allowed" || echo "$p-chroot: refused"; \
    mkdir /tmp/suid && cp /bin/busybox /tmp/suid/id && chmod 4755 /tmp/suid/id \
    && echo "$p-setuid: euid=$(su -s /bin/sh -c '/tmp/suid/id -u' nobody 2>/dev/null)"; \
    env() {{ cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c "^$1="; }}; \
    echo "$p-environ: $(env KILN_ROOT) $(env HOSTNAME)"; \
    rm -rf /tmp/suid /tmp/disk
ENV BUILT=yes
"#
    )
}

/// A build context with the Dockerfile and one file to COPY.
fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        dockerfile(&bases().busybox()),
    )
    .unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "hello\n").unwrap();
    make_readable(ctx.path());
    ctx
}

/// World-readable (and traversable) from the root down, for `--user 1000`.
fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir, mode).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// A root file system of a few directories, `/etc/passwd` and `/etc/group`, and the
/// merged-/usr symlinks, as a tar; the host's /usr is bound over its empty `/usr` at run time.
fn host_usr_rootfs_tar() -> &'static Path {
    static TAR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = TAR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for d in [
            "etc", "tmp", "root", "usr", "proc", "sys", "dev", "run", "var/tmp",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&root, 0o755);
        // /tmp and /var/tmp are sticky and world-writable, as in any image.
        mode(&root.join("tmp"), 0o1777);
        mode(&root.join("var/tmp"), 0o1777);
        crate::build_support::run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .args(["--owner=0", "--group=0", "-cf"])
                .arg(dir.path().join("rootfs.tar"))
                .arg("."),
        );
        dir
    });
    Box::leak(dir.path().join("rootfs.tar").into_boxed_path())
}

/// The image kiln runs in, imported into podman once.
fn podman_image() -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let exists = crate::common::podman()
            .args(["image", "exists", IMAGE])
            .status()
            .unwrap();
        if !exists.success() {
            let tar = host_usr_rootfs_tar();
            crate::build_support::run_ok(crate::common::podman().arg("import").arg(tar).arg(IMAGE));
        }
    });
    IMAGE
}

/// A Docker daemon of this test binary's own (no iptables, no bridge, its data in a temp
/// dir, stopped when the binary exits), with the image imported; or why there is none.
struct Dockerd {
    socket: String,
}

impl Dockerd {
    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.socket]);
        c
    }
}

fn dockerd() -> Result<&'static Dockerd, String> {
    static DOCKERD: OnceLock<Result<Dockerd, String>> = OnceLock::new();
    DOCKERD
        .get_or_init(start_dockerd)
        .as_ref()
        .map_err(Clone::clone)
}

fn start_dockerd() -> Result<Dockerd, String> {
    if !crate::build_support::have("dockerd") || !crate::build_support::have("docker") {
        return Err("SKIPPED: dockerd or docker is not installed (Debian: docker.io)".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("kiln-dockerd-")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let socket = format!("unix://{}/docker.sock", dir.display());
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let started = Command::new("dockerd")
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
        ])
        .arg(format!("--data-root={}/data", dir.display()))
        .arg(format!("--exec-root={}/exec", dir.display()))
        .arg(format!("--pidfile={}/pid", dir.display()))
        .args(["-H", &socket])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn();
    let child = started.map_err(|e| format!("SKIPPED: dockerd cannot start: {e}"))?;
    stop_when_this_process_exits(child.id(), &dir);
    let daemon = Dockerd { socket };
    // Readiness, not timing: ask until it answers (dockerd starts in about a second).
    for _ in 0..150 {
        let mut ready = daemon.docker();
        ready
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if ready.status().is_ok_and(|s| s.success()) {
            let tar = host_usr_rootfs_tar();
            crate::build_support::run_ok(daemon.docker().arg("import").arg(tar).arg(IMAGE));
            return Ok(daemon);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    Err(format!(
        "SKIPPED: dockerd did not answer; its log ends: {tail:?}"
    ))
}

/// Stops dockerd (and removes its mounts and data) once this test binary has exited.
fn stop_when_this_process_exits(pid: u32, dir: &Path) {
    let script = r#"(tail --pid="$1" -f /dev/null; kill "$2"; tail --pid="$2" -f /dev/null;
        grep -o " $3/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l;
        rm -rf "$3") </dev/null >/dev/null 2>&1 &"#;
    crate::build_support::run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("stop-dockerd")
            .arg(std::process::id().to_string())
            .arg(pid.to_string())
            .arg(dir),
    );
}

/// Which engine runs the container.
enum Engine {
    Podman,
    Docker(&'static Dockerd),
}

/// How one container is run.
struct Case {
    name: &'static str,
    engine: Engine,
    /// `podman run` options.
    options: Vec<String>,
    /// Where the store lives in the container: `None` for its own overlay root, else a
    /// host directory bound there (overlay then works for the step).
    store_volume: bool,
    /// The uid kiln runs as (owner of the output and store volumes).
    uid: u32,
}

fn docker_seccomp() -> String {
    let profile = crate::common::repo_root().join("testdata/seccomp/docker-default.json");
    format!("seccomp={}", profile.display())
}

/// `kiln ARGS /ctx` in the container of `case`; the context is `/ctx`, `/out` is
/// `out` on the host.
fn kiln_in_container(case: &Case, ctx: &Path, out: &Path, args: &[&str]) -> Output {
    let kiln = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    let store = out.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::os::unix::fs::chown(out, Some(case.uid), Some(case.uid)).unwrap();
    std::os::unix::fs::chown(&store, Some(case.uid), Some(case.uid)).unwrap();
    let kiln_root = if case.store_volume {
        "/out/store"
    } else {
        "/tmp/kiln-store"
    };
    let (mut cmd, image) = match case.engine {
        Engine::Podman => (crate::common::podman(), podman_image()),
        Engine::Docker(d) => (d.docker(), IMAGE),
    };
    cmd.args(["run", "--rm", "--network", "host"])
        .args(&case.options)
        .arg("-v=/usr:/usr:ro")
        .arg(format!("-v={}:/kiln:ro", kiln.display()))
        .arg(format!("-v={}:/ctx:ro", ctx.display()))
        .arg(format!("-v={}:/out", out.display()))
        .args(["-e=HOME=/tmp", "-e=XDG_RUNTIME_DIR=/tmp"])
        .arg(format!("-e=KILN_ROOT={kiln_root}"))
        .arg(format!("-e=SOURCE_DATE_EPOCH={EPOCH}"))
        .arg(image)
        .args(["/kiln", "build", "--progress", "plain"])
        .args(args)
        .arg("/ctx");
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// An image as the comparison sees it: its config without the layer digests (the copy
/// fallback may order a layer's entries differently) and its file tree.
fn image_of(layout: &Path) -> (serde_json::Value, BTreeMap<String, Node>) {
    let image = read_layout(layout, "latest");
    let mut config = image.config.clone();
    config["rootfs"]["diff_ids"] = serde_json::Value::Null;
    (config, file_tree(&image))
}

/// The same build as root on the host (chroot isolation), once.
fn reference() -> &'static (serde_json::Value, BTreeMap<String, Node>) {
    static REF: OnceLock<(serde_json::Value, BTreeMap<String, Node>)> = OnceLock::new();
    REF.get_or_init(|| {
        let ctx = context();
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let dest = format!("--output=type=oci,dest={}", layout.display());
        let out = crate::build_support::kiln(&dir.path().join("store"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "--progress", "plain", &dest])
            .arg(ctx.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = succeeded(&out);
        assert!(log.contains("chroot isolation"), "{log}");
        image_of(&layout)
    })
}

/// Builds in the container of `case` and checks the image and the hostile step's report.
/// Returns the build's log.
fn build_and_compare(case: &Case) -> String {
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let run = kiln_in_container(
        case,
        ctx.path(),
        out.path(),
        &["--output=type=oci,dest=/out/layout"],
    );
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        run.status.success(),
        "{}: kiln build in the container failed:\n{log}",
        case.name
    );
    let (config, tree) = image_of(&out.path().join("layout"));
    let (ref_config, ref_tree) = reference();
    let diff = tree_diff(ref_tree, &tree);
    assert!(
        diff.is_empty(),
        "{}: file tree differs from the host root build:\n{}\n{log}",
        case.name,
        diff.join("\n")
    );
    assert_eq!(&config, ref_config, "{}: image config", case.name);
    log
}

/// The value the hostile step printed as `probe-KEY: VALUE`.
fn probed<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("probe-{key}:");
    log.lines()
        .rev()
        .find_map(|l| l.split_once(&needle).map(|(_, v)| v.trim()))
}

/// The hostile step got no more than runc's defaults: a subset of the default capabilities
/// (bounding set too), no_new_privs (a setuid-root binary run as nobody stays nobody),
/// the seccomp filter, no device node for the host's disk, and no process's environment
/// but its own.
fn assert_contained(name: &str, log: &str, with_proc: bool) {
    let hex = |key: &str| {
        let v = probed(log, key).unwrap_or_else(|| panic!("{name}: no {key} line:\n{log}"));
        u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{name}: {key} {v:?}: {e}"))
    };
    if with_proc {
        for key in ["CapEff", "CapBnd"] {
            let caps = hex(key);
            assert_eq!(
                caps & !DEFAULT_CAPS,
                0,
                "{name}: {key} {caps:#x} exceeds the default set"
            );
        }
        assert_eq!(
            probed(log, "NoNewPrivs"),
            Some("1"),
            "{name}: no_new_privs\n{log}"
        );
        assert_eq!(
            probed(log, "Seccomp"),
            Some("2"),
            "{name}: seccomp filter\n{log}"
        );
    } else {
        assert_eq!(probed(log, "status"), Some("no /proc"), "{name}\n{log}");
    }
    assert_eq!(
        probed(log, "mknod"),
        Some("refused"),
        "{name}: CAP_MKNOD\n{log}"
    );
    // kiln's environment (it has KILN_ROOT; steps never do) is out of reach, even where
    // the step sees the container's /proc; the step's own (HOSTNAME) is readable.
    let environ = probed(log, "environ").unwrap_or_default();
    let (kiln, own) = environ.split_once(' ').unwrap_or_default();
    assert_eq!(kiln, "0", "{name}: read kiln's environ\n{log}");
    let own: u32 = own.parse().unwrap_or_default();
    assert_eq!(
        own > 0,
        with_proc,
        "{name}: the step's own environ: {environ}\n{log}"
    );
    let euid = probed(log, "setuid").unwrap_or_else(|| panic!("{name}: no setuid line\n{log}"));
    assert_ne!(
        euid, "euid=0",
        "{name}: a setuid binary raised nobody to root\n{log}"
    );
}

/// The line `auto` printed about the mode it took.
fn isolation_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("run steps use"))
        .unwrap_or_else(|| panic!("auto did not say which mode it took:\n{log}"))
}

#[test]
fn a_podman_default_container_runs_rootless_and_builds_the_host_image() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let case = Case {
        engine: Engine::Podman,
        name: "podman default",
        options: vec![],
        store_volume: false,
        uid: 0,
    };
    let log = build_and_compare(&case);
    let line = isolation_line(&log);
    assert!(
        line.contains("rootless isolation") && line.contains("refuses mount namespaces"),
        "{line}"
    );
    assert_contained(case.name, &log, true);
    // Every id of the container is mapped: the step's `nobody` exists there.
    assert_eq!(probed(&log, "setuid"), Some("euid=65534"), "{log}");
    assert!(
        !log.contains("maps only uid"),
        "a full map, no warning:\n{log}"
    );
    // runc masks parts of the container's /proc: the step gets that one, masks and all,
    // and the build says so once.
    assert_eq!(log.matches("refuses a fresh /proc").count(), 1, "{log}");
}

#[test]
fn b_docker_default_seccomp_runs_plain_chroot_and_builds_the_host_image() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    // Docker's default capabilities are podman's plus MKNOD, NET_RAW and AUDIT_WRITE.
    let case = Case {
        engine: Engine::Podman,
        name: "docker default",
        options: vec![
            "--cap-add=MKNOD,NET_RAW,AUDIT_WRITE".into(),
            format!("--security-opt={}", docker_seccomp()),
        ],
        store_volume: false,
        uid: 0,
    };
    let log = build_and_compare(&case);
    let line = isolation_line(&log);
    assert!(line.contains("plain chroot"), "{line}");
    assert_contained(case.name, &log, false);
    // Without a mount namespace chroot(2) would leave the chroot: the step has no
    // CAP_SYS_CHROOT. And no_new_privs holds: nobody stays nobody through a setuid binary.
    assert_eq!(probed(&log, "chroot"), Some("refused"), "{log}");
    assert_eq!(probed(&log, "setuid"), Some("euid=65534"), "{log}");
}

#[test]
fn c_a_non_root_user_runs_in_a_single_id_user_namespace() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let case = Case {
        engine: Engine::Podman,
        name: "--user 1000",
        options: vec!["--user=1000:1000".into()],
        store_volume: false,
        uid: 1000,
    };
    let log = build_and_compare(&case);
    let line = isolation_line(&log);
    assert!(line.contains("rootless isolation"), "{line}");
    assert_contained(case.name, &log, true);
    assert_eq!(
        log.matches("maps only uid").count(),
        1,
        "one warning:\n{log}"
    );
}

#[test]
fn d_everything_dropped_as_a_non_root_user_runs_in_a_single_id_user_namespace() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    // Kubernetes' "restricted" profile: runAsNonRoot, drop ALL, no privilege escalation.
    let case = Case {
        engine: Engine::Podman,
        name: "--user 1000 --cap-drop=all, no-new-privileges",
        options: vec![
            "--user=1000:1000".into(),
            "--cap-drop=all".into(),
            "--security-opt=no-new-privileges".into(),
        ],
        store_volume: true,
        uid: 1000,
    };
    let log = build_and_compare(&case);
    let line = isolation_line(&log);
    assert!(line.contains("rootless isolation"), "{line}");
    assert_contained(case.name, &log, true);
}

#[test]
fn d_everything_dropped_as_root_fails_at_the_first_run_naming_the_fix() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    // Root without CAP_SETFCAP may not map uid 0 into a user namespace (Linux >= 5.12) and
    // without CAP_SYS_CHROOT cannot chroot: nothing can run a step.
    let case = Case {
        engine: Engine::Podman,
        name: "root, --cap-drop=all, no-new-privileges",
        options: vec![
            "--cap-drop=all".into(),
            "--security-opt=no-new-privileges".into(),
        ],
        store_volume: true,
        uid: 0,
    };
    refused_but_copy_works(&case, &["CAP_SETFCAP", "--user 1000", "CAP_SYS_CHROOT"]);
}

#[test]
fn where_nothing_can_isolate_run_the_build_names_the_setting_and_copy_still_works() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let case = Case {
        engine: Engine::Podman,
        name: "docker seccomp, no capabilities",
        options: vec![
            "--cap-drop=all".into(),
            format!("--security-opt={}", docker_seccomp()),
        ],
        store_volume: false,
        uid: 0,
    };
    refused_but_copy_works(&case, &["seccomp=unconfined", "CAP_SYS_CHROOT"]);
}

/// In `case`'s container the build fails at its first RUN (Dockerfile:3), before any step
/// ran, with an error holding each of `words`; a COPY-only build there works.
fn refused_but_copy_works(case: &Case, words: &[&str]) {
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let run = kiln_in_container(case, ctx.path(), out.path(), &[]);
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        !run.status.success(),
        "{}: the build must fail:\n{log}",
        case.name
    );
    let error = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{}: no error line:\n{log}", case.name));
    assert!(
        error.contains("Dockerfile:3"),
        "names the first RUN: {error}"
    );
    for word in words {
        assert!(
            error.contains(word),
            "{}: the error names {word}: {error}",
            case.name
        );
    }
    assert!(
        !log.contains("probe-mknod:"),
        "no RUN step ran (it failed before the first):\n{log}"
    );
    let copy_only = tempfile::tempdir().unwrap();
    std::fs::write(
        copy_only.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY hello.txt /hello.txt\nENV A=b\n",
            bases().busybox()
        ),
    )
    .unwrap();
    std::fs::write(copy_only.path().join("hello.txt"), "hello\n").unwrap();
    make_readable(copy_only.path());
    let out = tempfile::tempdir().unwrap();
    let run = kiln_in_container(
        case,
        copy_only.path(),
        out.path(),
        &["--output=type=oci,dest=/out/layout"],
    );
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "{}: COPY-only build:\n{log}",
        case.name
    );
    let image = read_layout(&out.path().join("layout"), "latest");
    assert_eq!(
        crate::build_support::file_content(&image, "hello.txt").as_deref(),
        Some(&b"hello\n"[..])
    );
}

/// The reference build itself must pass the hostile checks (else the comparison proves
/// little): chroot mode on the host, fresh /proc.
#[test]
fn the_host_reference_build_is_contained_too() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let out = kiln_build(
        &dir.path().join("store"),
        &["--progress", "plain"],
        ctx.path(),
    );
    let log = succeeded(&out);
    assert_contained("host root", &log, true);
    assert_eq!(probed(&log, "setuid"), Some("euid=65534"), "{log}");
}

#[test]
fn b_docker_itself_runs_plain_chroot_and_builds_the_host_image() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let docker = match dockerd() {
        Ok(d) => d,
        Err(skip) => return println!("{skip}"),
    };
    // `docker run` as it comes: root, Docker's capabilities and default seccomp profile.
    let case = Case {
        engine: Engine::Docker(docker),
        name: "docker run",
        options: vec![],
        store_volume: false,
        uid: 0,
    };
    let log = build_and_compare(&case);
    let line = isolation_line(&log);
    assert!(line.contains("plain chroot"), "{line}");
    assert_contained(case.name, &log, false);
    assert_eq!(probed(&log, "chroot"), Some("refused"), "{log}");
    assert_eq!(probed(&log, "setuid"), Some("euid=65534"), "{log}");
}
