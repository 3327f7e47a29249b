//! The sandbox's fallbacks, forced: the copy + snapshot-diff root when overlay cannot be
//! mounted (its upper dir must come out as overlay's would for the same step), and plain
//! chroot where mount namespaces are forbidden.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sandbox_support::*;
use kiln::progress::{Event, Progress};
use kiln::sandbox::{Force, Isolation, MountSpec, Sandbox, StepOutcome, StepSpec};

fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("SKIPPED {test}: needs root (CI runs these as root)");
    }
    root
}

const NO_OVERLAY: Force = Force {
    no_overlay: true,
    no_mount_namespace: false,
};
const NO_MOUNTNS: Force = Force {
    no_overlay: false,
    no_mount_namespace: true,
};

/// Every change a step can make to a base, on two lower layers (the top one hides
/// `/data/hidden` by a whiteout).
const SCRIPT: &str = "test ! -e /data/hidden && echo hidden-ok; \
    echo new > /etc/motd; rm /etc/gone; rm -r /olddir; rm -r /swapdir; mkdir /swapdir; \
    echo y > /swapdir/y; mkdir -p /new/deep; echo n > /new/deep/f; ln /data/orig /data/link; \
    touch /owned; chown 1000:2000 /owned; chmod 600 /etc/extra; ln -s /etc/motd /sym; \
    touch /data/keep; echo done";

/// `dir/lower` (busybox) under `dir/top`; returns the lower dirs, top first.
fn two_layers(dir: &Path) -> Vec<std::path::PathBuf> {
    let bottom = busybox_rootfs(dir);
    for d in ["olddir/a", "swapdir"] {
        std::fs::create_dir_all(bottom.join(d)).unwrap();
    }
    for f in ["olddir/a/b", "swapdir/x", "data/hidden", "data/keep"] {
        std::fs::write(bottom.join(f), f).unwrap();
    }
    let top = dir.join("top");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::create_dir_all(top.join("data")).unwrap();
    std::fs::write(top.join("etc/extra"), "extra\n").unwrap();
    let whiteout = top.join("data/hidden");
    nix::sys::stat::mknod(
        &whiteout,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    vec![top, bottom]
}

/// The upper dir as overlay semantics see it: path, kind, mode, owner, content or link
/// target, opaque marker, and which paths share an inode.
fn describe(upper: &Path) -> Vec<String> {
    let mut first_of_inode = std::collections::HashMap::new();
    tree(upper)
        .into_iter()
        .map(|rel| {
            let p = upper.join(&rel);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let link = if m.nlink() > 1 && !m.is_dir() {
                first_of_inode.entry(m.ino()).or_insert(rel.clone()).clone()
            } else {
                String::new()
            };
            let kind = if is_whiteout(&p) {
                return format!("{rel} whiteout");
            } else if m.is_dir() {
                let opaque = ["user.overlay.opaque", "trusted.overlay.opaque"]
                    .iter()
                    .any(|n| xattr::get(&p, n).ok().flatten().as_deref() == Some(b"y"));
                format!("dir opaque={opaque}")
            } else if m.file_type().is_symlink() {
                format!("symlink {}", std::fs::read_link(&p).unwrap().display())
            } else if m.file_type().is_char_device() {
                format!("chr {}", m.rdev())
            } else {
                format!("file {:?}", std::fs::read_to_string(&p).unwrap())
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            format!("{rel} {kind} {mode:o} {}:{} {link}", m.uid(), m.gid())
        })
        .collect()
}

fn run(sandbox: &Sandbox, spec: &StepSpec) -> (StepOutcome, Vec<Event>) {
    let (progress, rx) = Progress::channel();
    let outcome = sandbox.run_step(spec, &progress).unwrap();
    drop(progress);
    (outcome, rx.iter().collect())
}

fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { .. } => Some(format!("{e:?}")),
            _ => None,
        })
        .collect()
}

fn layered_spec(id: &str, dir: &Path, lowers: &[std::path::PathBuf]) -> StepSpec {
    let mut s = spec(id, dir, &lowers[1], SCRIPT);
    s.lower_dirs = lowers.to_vec();
    s
}

/// The changes every variant must find (so equal descriptions are not equally empty).
fn assert_expected_changes(upper: &Path) {
    let d = describe(upper);
    for needle in [
        "etc/gone whiteout",
        "olddir whiteout",
        "swapdir dir opaque=true",
        "swapdir/y file \"y\\n\"",
        "new/deep/f file \"n\\n\"",
        "etc/motd file \"new\\n\"",
        "etc/extra file \"extra\\n\" 600",
        "sym symlink /etc/motd",
        "data/keep file",
        "owned file \"\" 644 1000:2000",
    ] {
        assert!(d.iter().any(|l| l.contains(needle)), "{needle}: {d:#?}");
    }
    assert!(!d.iter().any(|l| l.starts_with("data/hidden")), "{d:#?}");
    let link = d.iter().find(|l| l.starts_with("data/link")).unwrap();
    assert!(
        link.ends_with(" data/link") || link.ends_with(" data/orig"),
        "{d:#?}"
    );
}

#[test]
fn copy_fallback_writes_the_same_upper_dir_as_overlay_in_chroot_mode() {
    if !root_or_skip("copy_fallback_writes_the_same_upper_dir_as_overlay_in_chroot_mode") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lowers = two_layers(dir.path());
    let overlay = layered_spec("overlay", dir.path(), &lowers);
    let (outcome, events) = run(&Sandbox::new(KILN, Isolation::Chroot), &overlay);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    assert!(warnings(&events).is_empty(), "{events:?}");

    let copy = layered_spec("copy", dir.path(), &lowers);
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(NO_OVERLAY);
    let (outcome, events) = run(&sandbox, &copy);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    assert_eq!(output_of(&events), ["hidden-ok", "done"]);
    let warned = warnings(&events);
    assert!(
        warned.len() == 1 && warned[0].contains("copy of their root"),
        "{warned:?}"
    );
    assert_eq!(describe(&copy.upper_dir), describe(&overlay.upper_dir));
    assert_expected_changes(&copy.upper_dir);
    assert!(leftover_state_dirs(dir.path()).is_empty());
    assert!(mounts_mentioning(dir.path()).is_empty());

    // Warned once per sandbox; a step that changes nothing leaves an empty upper dir.
    let quiet = spec("quiet", dir.path(), &lowers[1], "cat /etc/motd >/dev/null");
    let (outcome, events) = run(&sandbox, &quiet);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    assert!(warnings(&events).is_empty());
    assert!(
        tree(&quiet.upper_dir).is_empty(),
        "{:?}",
        tree(&quiet.upper_dir)
    );
}

#[test]
fn a_real_overlay_refusal_falls_back_to_the_copy_and_says_so() {
    if !root_or_skip("a_real_overlay_refusal_falls_back_to_the_copy_and_says_so") {
        return;
    }
    // A real refusal: overlayfs does not take an upper dir that is itself on overlayfs
    // (as in a container whose root is an overlay, without a volume for kiln's store).
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let ro = dir.path().join("on-overlay");
    std::fs::create_dir(&ro).unwrap();
    let upper = ro.join("upper-ro");
    let mut spec = spec(
        "ro",
        dir.path(),
        &lower,
        "echo new > /etc/motd; rm /etc/gone",
    );
    std::fs::remove_dir(&spec.upper_dir).unwrap();
    spec.upper_dir = upper.clone();
    let (l, u, w) = (
        dir.path().join("ol"),
        dir.path().join("ou"),
        dir.path().join("ow"),
    );
    for d in [&l, &u, &w] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::create_dir(l.join("upper-ro")).unwrap(); // the step's upper dir, inside
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &ro,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let (progress, rx) = Progress::channel();
    let sandbox = Sandbox::new(KILN, Isolation::Chroot);
    let result = sandbox.run_step(&spec, &progress);
    drop(progress);
    let events: Vec<Event> = rx.iter().collect();
    let described = describe(&upper);
    nix::mount::umount2(&ro, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let outcome = result.unwrap();
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    let warned = warnings(&events);
    if warned.is_empty() {
        println!("SKIPPED: this kernel mounts overlay with an upper dir on overlay");
        return;
    }
    assert!(
        warned[0].contains("overlay cannot be mounted") && warned[0].contains("falling back"),
        "{warned:?}"
    );
    assert_eq!(
        described
            .iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        ["etc dir", "etc/gone whiteout", "etc/motd file"]
    );
}

#[test]
fn plain_chroot_without_a_mount_namespace_runs_and_diffs_like_overlay() {
    if !root_or_skip("plain_chroot_without_a_mount_namespace_runs_and_diffs_like_overlay") {
        return;
    }
    let sandbox = Sandbox::new(KILN, Isolation::Auto).forcing(NO_MOUNTNS);
    let probe = sandbox.probe().unwrap();
    assert_eq!(probe.isolation, Isolation::Chroot);
    assert!(!probe.mount_namespace);
    assert!(
        probe.reason.contains("no mount namespace") && probe.reason.contains("/proc"),
        "{}",
        probe.reason
    );
    assert!(
        Sandbox::new(KILN, Isolation::Chroot)
            .probe()
            .unwrap()
            .mount_namespace
    );

    let dir = tempfile::tempdir().unwrap();
    let lowers = two_layers(dir.path());
    let overlay = layered_spec("overlay", dir.path(), &lowers);
    let (outcome, _) = run(&Sandbox::new(KILN, Isolation::Chroot), &overlay);
    assert_eq!(outcome.exit_code, 0);

    let mut plain = layered_spec("plain", dir.path(), &lowers);
    plain.argv[2] = format!(
        "{SCRIPT}; test -c /dev/null && echo dev-ok; test -e /proc/1 || echo no-proc; \
         echo $(id -u) $(pwd)"
    );
    let (outcome, events) = run(&sandbox, &plain);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    assert_eq!(outcome.isolation, Isolation::Chroot);
    // No pid or user namespace stands between the step (root) and kiln, which runs the
    // sandbox in this process: it made itself non-dumpable, so the step cannot ptrace it.
    assert!(
        !nix::sys::prctl::get_dumpable().unwrap(),
        "kiln is still dumpable after a plain chroot step"
    );
    assert_eq!(
        output_of(&events),
        ["hidden-ok", "done", "dev-ok", "no-proc", "0 /"]
    );
    let warned = warnings(&events);
    assert!(
        warned.len() == 1 && warned[0].contains("without a fresh /proc"),
        "{warned:?}"
    );
    assert_eq!(describe(&plain.upper_dir), describe(&overlay.upper_dir));
    assert_expected_changes(&plain.upper_dir);
    assert!(leftover_state_dirs(dir.path()).is_empty());

    let mut mounting = spec("mounting", dir.path(), &lowers[1], "true");
    mounting.mounts.push(MountSpec::Tmpfs {
        target: "/scratch".into(),
        size_bytes: None,
    });
    let err = sandbox
        .run_step(&mounting, &Progress::none())
        .unwrap_err()
        .to_string();
    assert!(err.contains("RUN --mount needs a mount namespace"), "{err}");
}

#[test]
fn cancel_kills_a_plain_chroot_step_tree() {
    if !root_or_skip("cancel_kills_a_plain_chroot_step_tree") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(NO_MOUNTNS);
    let marker = "765432";
    let spec = spec(
        "cancel",
        dir.path(),
        &lower,
        &format!("sh -c 'sleep {marker}' & sleep {marker} & echo ready; wait"),
    );
    cancel_after_ready(&sandbox, &spec, marker);
    assert!(leftover_state_dirs(dir.path()).is_empty());
}

#[test]
fn rootless_copy_fallback_writes_the_same_upper_dir_as_overlay() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let script = "echo new > /etc/motd && rm /etc/gone && rm -r /data && mkdir /data \
                  && echo d > /data/d && mkdir -p /srv/app && echo hi > /srv/app/created \
                  && chown 1000:1000 /srv/app/created && ln -s motd /etc/sym && echo done";
    let overlay = runner.spec("overlay", dir.path(), &lower, script);
    let (outcome, events) = runner.run(&overlay, dir.path());
    assert_eq!(outcome.exit_code, 0, "{:?}", output_lines(&events));

    let copy = runner.spec("copy", dir.path(), &lower, script);
    let out = runner
        .command(&copy, dir.path())
        .env("KILN_SANDBOX_FORCE", "no-overlay")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: StepOutcome = serde_json::from_slice(&out.stdout).unwrap();
    let events = crate::sandbox_support::events(&out);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_lines(&events));
    assert_eq!(output_lines(&events), ["done"]);
    assert!(
        format!("{events:?}").contains("copy of their root"),
        "{events:?}"
    );
    let (a, b) = (describe(&copy.upper_dir), describe(&overlay.upper_dir));
    assert_eq!(a, b);
    for needle in [
        "etc/gone whiteout",
        "data dir opaque=true",
        "srv/app/created",
    ] {
        assert!(a.iter().any(|l| l.contains(needle)), "{needle}: {a:#?}");
    }
    assert!(leftover_state_dirs(dir.path()).is_empty());
}

#[test]
fn a_read_write_bind_without_overlay_writes_to_a_throwaway_copy() {
    if !root_or_skip("a_read_write_bind_without_overlay_writes_to_a_throwaway_copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let source = dir.path().join("context");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("in"), "ctx\n").unwrap();
    let mut spec = spec(
        "rwbind",
        dir.path(),
        &lower,
        "cat /src/in && echo scribble > /src/in && echo more > /src/new && cat /src/in",
    );
    spec.mounts.push(MountSpec::Bind {
        source: source.clone(),
        target: "/src".into(),
        readonly: false,
    });
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(NO_OVERLAY);
    let (outcome, events) = run(&sandbox, &spec);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    assert_eq!(output_of(&events), ["ctx", "scribble"]);
    assert_eq!(std::fs::read_to_string(source.join("in")).unwrap(), "ctx\n");
    assert!(!source.join("new").exists());
    assert!(
        tree(&spec.upper_dir).is_empty(),
        "{:?}",
        tree(&spec.upper_dir)
    );
}

#[test]
fn plain_chroot_kills_what_the_step_left_running() {
    if !root_or_skip("plain_chroot_kills_what_the_step_left_running") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let marker = "654321";
    let spec = spec(
        "bg",
        dir.path(),
        &lower,
        &format!("sleep {marker} >/dev/null 2>&1 & echo started"),
    );
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(NO_MOUNTNS);
    let (outcome, events) = run(&sandbox, &spec);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(Instant::now() < deadline, "a background process survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        tree(&spec.upper_dir).is_empty(),
        "{:?}",
        tree(&spec.upper_dir)
    );
}
