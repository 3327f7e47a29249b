//! Containment gaps closed after the first round (issue 12): each test feeds kiln a hostile
//! input that the earlier code let through.
//!
//! - The Dockerfile and the ignore files, when inside the context, are read with the context
//!   as `/`: a symlink to a host file reads nothing of the host (and shows nothing of it).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::build_support::{failed, kiln, kiln_build, succeeded};

/// Held by each test that runs steps in-process: the pids test checks that no step cgroup
/// is left, which a step of another test starting meanwhile would make untrue for a moment.
static STEPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A host file outside every context whose text is a hostile Dockerfile and ignore file:
/// read, its first line is a parse error that quotes it.
fn host_secret(dir: &Path) -> (std::path::PathBuf, String) {
    let secret = format!("KILN-HOST-SECRET-{}", std::process::id());
    let path = dir.join("shadow");
    fs::write(&path, format!("[{secret}\n")).unwrap();
    (path, secret)
}

#[test]
fn a_dockerfile_symlinked_out_of_the_context_is_not_read() {
    let host = tempfile::tempdir().unwrap();
    let (secret_file, secret) = host_secret(host.path());
    let ctx = tempfile::tempdir().unwrap();
    symlink(&secret_file, ctx.path().join("Dockerfile")).unwrap();
    let work = tempfile::tempdir().unwrap();
    for cmd in ["plan", "build"] {
        let out = kiln(work.path())
            .arg(cmd)
            .arg(ctx.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = failed(&out);
        let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
        assert!(
            !all.contains(&secret),
            "kiln {cmd} read the host file:\n{all}"
        );
        assert!(err.contains("Dockerfile"), "kiln {cmd}: {err}");
    }
    // Named with -f from outside the context, the same file is the user's choice: read.
    let out = kiln(work.path())
        .args(["plan", "-f"])
        .arg(&secret_file)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&secret));
}

#[test]
fn an_ignore_file_symlinked_out_of_the_context_is_not_read() {
    let host = tempfile::tempdir().unwrap();
    let (secret_file, secret) = host_secret(host.path());
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    fs::write(ctx.path().join("a"), "a").unwrap();
    for name in [
        ".dockerignore",
        ".containerignore",
        "Dockerfile.dockerignore",
    ] {
        symlink(&secret_file, ctx.path().join(name)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let out = kiln_build(work.path(), &[], ctx.path());
    let err = succeeded(&out);
    assert!(!err.contains(&secret), "{err}");
}

/// RUN --mount=type=bind sources are resolved by the caller; the sandbox refuses a source
/// with a symlink on its path (a component swapped after that resolution) instead of
/// mounting what it leads to, and mounts the checked file itself (by descriptor).
#[test]
fn a_bind_source_with_a_symlink_on_its_path_is_refused() {
    let _steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    use crate::sandbox_support::{KILN, busybox_rootfs, spec};
    use kiln::progress::Progress;
    use kiln::sandbox::{Isolation, MountSpec, Sandbox};
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED a_bind_source_with_a_symlink_on_its_path_is_refused: needs root");
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let (_, secret) = host_secret(host.path());
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let ctx = dir.path().join("context");
    fs::create_dir_all(ctx.join("real")).unwrap();
    fs::write(ctx.join("real/in"), "ctx\n").unwrap();
    symlink(host.path(), ctx.join("link")).unwrap();
    let sandbox = Sandbox::new(KILN, Isolation::Chroot);
    for (n, readonly) in [(0, true), (1, false)] {
        let bind = |source: &Path| MountSpec::Bind {
            source: source.to_path_buf(),
            target: "/src".into(),
            readonly,
        };
        let script = "cat /src/* 2>&1";
        let mut ok = spec(&format!("real{n}"), dir.path(), &lower, script);
        ok.mounts.push(bind(&ctx.join("real")));
        let (progress, rx) = Progress::channel();
        let outcome = sandbox.run_step(&ok, &progress).unwrap();
        drop(progress);
        assert_eq!(outcome.exit_code, 0, "{:?}", rx.iter().collect::<Vec<_>>());
        assert_eq!(outcome.tail, ["ctx"]);

        let mut hostile = spec(&format!("link{n}"), dir.path(), &lower, script);
        hostile.mounts.push(bind(&ctx.join("link")));
        let err = sandbox
            .run_step(&hostile, &Progress::none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no symlink"), "{err}");
        assert!(!err.contains(&secret), "{err}");
    }
}

/// The step's cgroups under the pids hierarchy's `kiln` dir (v1 hybrid or v2).
fn kiln_step_cgroups() -> Vec<std::path::PathBuf> {
    [
        "/sys/fs/cgroup/pids/kiln",
        "/sys/fs/cgroup/kiln",
        "/sys/fs/cgroup/unified/kiln",
    ]
    .iter()
    .filter_map(|d| fs::read_dir(d).ok())
    .flat_map(|e| e.flatten().map(|e| e.path()))
    .filter(|p| p.is_dir())
    .collect()
}

/// As root, a step gets at most `--pids-limit` processes: a fork bomb-ish loop fails to
/// fork past it (and succeeds without the limit), and the step's cgroup is gone afterwards.
#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let _steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    use crate::sandbox_support::{KILN, busybox_rootfs, spec};
    use kiln::progress::Progress;
    use kiln::sandbox::{Isolation, Sandbox};
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED a_fork_bomb_stops_at_the_pids_limit: needs root");
        return;
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    if !mounts
        .lines()
        .any(|l| l.contains(" cgroup2 ") || l.contains(",pids"))
    {
        println!("SKIPPED a_fork_bomb_stops_at_the_pids_limit: no pids cgroup hierarchy");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    // 300 sleepers: well past a limit of 50, harmless without one.
    let script = "for i in $(seq 300); do sleep 2 & done; echo forked-all; wait";
    let run = |id: &str, limit: u32| {
        let sandbox = Sandbox::new(KILN, Isolation::Chroot).with_pids_limit(limit);
        let (progress, rx) = Progress::channel();
        let outcome = sandbox
            .run_step(&spec(id, dir.path(), &lower, script), &progress)
            .unwrap();
        drop(progress);
        let events: Vec<_> = rx.iter().collect();
        (outcome, events)
    };
    let (limited, events) = run("limited", 50);
    if events
        .iter()
        .any(|e| format!("{e:?}").contains("no pids limit"))
    {
        println!("SKIPPED a_fork_bomb_stops_at_the_pids_limit: {events:?}");
        return;
    }
    assert_ne!(limited.exit_code, 0, "{:?}", limited.tail);
    assert!(
        !limited.tail.iter().any(|l| l == "forked-all"),
        "{:?}",
        limited.tail
    );
    assert!(
        limited.tail.iter().any(|l| l.contains("fork")),
        "{:?}",
        limited.tail
    );
    // No other step runs (STEPS): a step cgroup left is one kiln failed to remove (a
    // running build elsewhere would hold processes in its own).
    let empty: Vec<_> = kiln_step_cgroups()
        .into_iter()
        .filter(|p| fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|s| s.is_empty()))
        .collect();
    assert!(empty.is_empty(), "{empty:?}");
    let (free, _) = run("free", 0);
    assert_eq!(free.exit_code, 0, "{:?}", free.tail);
    assert_eq!(free.tail, ["forked-all"]);
}

/// Root's store serves chroot and rootless steps: a layer's opaque directory (here `/d`,
/// replaced in the upper layer) hides the lower layer's files in both modes. Before, root
/// marked it `trusted.` only, which a rootless (`userxattr`) overlay cannot read: `a`
/// showed through. And the `user.` mark a chroot step's overlay copies up is not taken
/// for a deletion of that step.
#[test]
fn opaque_dirs_of_roots_store_hold_in_rootless_steps_too() {
    let _steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    use crate::sandbox_support::{KILN, busybox_rootfs, spec};
    use kiln::layer::{Deletions, OpaqueXattr, UnpackOptions, is_opaque_dir, unpack_layer};
    use kiln::progress::Progress;
    use kiln::sandbox::{Isolation, Sandbox};
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED opaque_dirs_of_roots_store_hold_in_rootless_steps_too: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = busybox_rootfs(dir.path());
    fs::create_dir(base.join("d")).unwrap();
    fs::write(base.join("d/a"), "a").unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, data) in [
        ("d/", tar::EntryType::Directory, &b""[..]),
        ("d/.wh..wh..opq", tar::EntryType::Regular, b""),
        ("d/b", tar::EntryType::Regular, b"b"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        tar.append_data(&mut h, name, data).unwrap();
    }
    let top = dir.path().join("top");
    fs::create_dir(&top).unwrap();
    let opts = UnpackOptions {
        deletions: Deletions::Overlay(OpaqueXattr::for_this_process()),
        ..UnpackOptions::default()
    };
    unpack_layer(&tar.into_inner().unwrap()[..], &top, &opts).unwrap();
    for (id, isolation) in [
        ("rootless", Isolation::Rootless),
        ("chroot", Isolation::Chroot),
    ] {
        let mut step = spec(id, dir.path(), &base, "ls /d && touch /d/c");
        step.lower_dirs = vec![top.clone(), base.clone()];
        let (progress, rx) = Progress::channel();
        let outcome = Sandbox::new(KILN, isolation)
            .run_step(&step, &progress)
            .unwrap();
        drop(progress);
        assert_eq!(outcome.exit_code, 0, "{:?}", rx.iter().collect::<Vec<_>>());
        assert_eq!(outcome.tail, ["b"], "{id}");
        assert!(!is_opaque_dir(&step.upper_dir.join("d")), "{id}");
    }
}

/// `kiln build --pids-limit N` reaches the steps: as root the loop cannot fork past it, and
/// the build fails at that RUN (the same build passes with `--pids-limit 0`).
#[test]
fn kiln_build_pids_limit_reaches_the_steps() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED kiln_build_pids_limit_reaches_the_steps: needs root");
        return;
    }
    let Some(bases) = crate::build_support::bases_or_skip() else {
        return;
    };
    let _steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {}\nRUN for i in $(seq 300); do sleep 2 & done; wait\n",
        bases.busybox()
    );
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let work = tempfile::tempdir().unwrap();
    let build = |limit: &str| {
        let args = ["--isolation", "chroot", "--no-cache", "--pids-limit", limit];
        kiln_build(work.path(), &args, ctx.path())
    };
    let err = failed(&build("50"));
    assert!(err.contains("fork"), "{err}");
    succeeded(&build("0"));
}
