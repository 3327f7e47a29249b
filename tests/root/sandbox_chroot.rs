//! The sandbox through its library API as root: chroot isolation (no user namespace),
//! cancellation through [`Cancel`], the mode probe, and rootless mode's single-id fallback.

use std::os::unix::fs::MetadataExt;

use crate::sandbox_support::*;
use kiln::progress::{Event, Progress};
use kiln::sandbox::{Isolation, MountSpec, Sandbox, SandboxError, SecretBytes};

fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("SKIPPED {test}: chroot isolation needs root (CI runs these as root)");
    }
    root
}

fn run(
    sandbox: &Sandbox,
    spec: &kiln::sandbox::StepSpec,
) -> (kiln::sandbox::StepOutcome, Vec<Event>) {
    let (progress, rx) = Progress::channel();
    let outcome = sandbox.run_step(spec, &progress).unwrap();
    drop(progress);
    (outcome, rx.iter().collect())
}

#[test]
fn chroot_mode_records_changes_with_host_ids() {
    if !root_or_skip("chroot_mode_records_changes_with_host_ids") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let sandbox = Sandbox::new(KILN, Isolation::Chroot);
    let script = "echo new > /etc/motd; rm /etc/gone; ln /data/orig /data/link; touch /owned; chown 1000:2000 /owned; \
                  echo $(id -u) $(hostname); test -c /dev/null && test -d /proc/1 && echo ok";
    let mut spec = spec("chroot", dir.path(), &lower, script);
    spec.hostname = Some("jail".into());
    let (outcome, events) = run(&sandbox, &spec);
    assert_eq!(outcome.exit_code, 0, "{:?}", output_of(&events));
    assert_eq!(outcome.isolation, Isolation::Chroot);
    assert!(outcome.id_map.is_identity());
    assert_eq!(output_of(&events), ["0 jail", "ok"]);
    let up = &spec.upper_dir;
    assert_eq!(
        tree(up),
        [
            "data",
            "data/link",
            "data/orig",
            "etc",
            "etc/gone",
            "etc/motd",
            "owned"
        ]
    );
    assert!(is_whiteout(&up.join("etc/gone")));
    let owned = up.join("owned").metadata().unwrap();
    assert_eq!(
        (owned.uid(), owned.gid()),
        (1000, 2000),
        "no user namespace: ids are the host's"
    );
    let (a, b) = (
        up.join("data/orig").metadata().unwrap(),
        up.join("data/link").metadata().unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert!(leftover_state_dirs(dir.path()).is_empty());
    assert!(mounts_mentioning(dir.path()).is_empty());
}

#[test]
fn cancel_kills_the_step_tree_and_cleans_up() {
    if !root_or_skip("cancel_kills_the_step_tree_and_cleans_up") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let sandbox = Sandbox::new(KILN, Isolation::Chroot);
    let marker = "876543";
    let spec = spec(
        "cancel",
        dir.path(),
        &lower,
        &format!("sh -c 'sleep {marker}' & sleep {marker} & echo ready; wait"),
    );
    cancel_after_ready(&sandbox, &spec, marker);
    assert!(mounts_mentioning(dir.path()).is_empty());
    assert!(leftover_state_dirs(dir.path()).is_empty());
    let later = sandbox.run_step(&spec, &Progress::none());
    assert!(
        matches!(later, Err(SandboxError::Interrupted { .. })),
        "a cancelled sandbox starts nothing"
    );
}

#[test]
fn a_secret_in_chroot_mode_stays_out_of_the_upper_dir() {
    if !root_or_skip("a_secret_in_chroot_mode_stays_out_of_the_upper_dir") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let sandbox = Sandbox::new(KILN, Isolation::Chroot);
    let mut spec = spec(
        "secret",
        dir.path(),
        &lower,
        "cat /run/secrets/npm; echo; stat -c %u:%g:%a /run/secrets/npm",
    );
    spec.mounts.push(MountSpec::Secret {
        target: "/run/secrets/npm".into(),
        data: SecretBytes(b"tok-123".to_vec()),
        mode: 0o440,
        uid: 1000,
        gid: 1000,
    });
    let (outcome, events) = run(&sandbox, &spec);
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(output_of(&events), ["tok-123", "1000:1000:440"]);
    assert!(tree(&spec.upper_dir).is_empty());
    assert!(files_containing(dir.path(), b"tok-123").is_empty());
    assert!(
        !format!("{spec:?}").contains("tok-123"),
        "Debug redacts secrets"
    );
}

#[test]
fn probe_says_which_mode_auto_takes_and_why() {
    if !root_or_skip("probe_says_which_mode_auto_takes_and_why") {
        return;
    }
    let probe = Sandbox::new(KILN, Isolation::Auto).probe().unwrap();
    assert_eq!(probe.isolation, Isolation::Chroot);
    assert!(probe.reason.contains("root"), "{}", probe.reason);
    let rootless = Sandbox::new(KILN, Isolation::Rootless).probe().unwrap();
    assert_eq!(rootless.isolation, Isolation::Rootless);
    let broken = Sandbox::new("/nonexistent/kiln", Isolation::Rootless)
        .probe()
        .unwrap_err();
    assert!(broken.to_string().contains("/nonexistent/kiln"), "{broken}");
}

#[test]
fn rootless_without_a_subuid_range_maps_one_id_and_warns_once() {
    if !root_or_skip("rootless_without_a_subuid_range_maps_one_id_and_warns_once") {
        return;
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if subuid
        .lines()
        .any(|l| l.starts_with("root:") || l.starts_with("0:"))
    {
        println!("SKIPPED rootless_without_a_subuid_range…: root has a subuid range here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let sandbox = Sandbox::new(KILN, Isolation::Rootless);
    let first = spec(
        "single1",
        dir.path(),
        &lower,
        "touch /mine && chown 1000 /mine 2>/dev/null || echo chown-refused",
    );
    let (outcome, events) = run(&sandbox, &first);
    assert!(outcome.id_map.is_single());
    assert_eq!(output_of(&events), ["chown-refused"]);
    let warnings: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Warning { .. }))
        .collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert!(format!("{:?}", warnings[0]).contains("usermod --add-subuids"));
    let second = spec("single2", dir.path(), &lower, "true");
    let (_, events) = run(&sandbox, &second);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Warning { .. })),
        "warned only once"
    );
    let mut as_app = spec("single3", dir.path(), &lower, "true");
    as_app.user = Some("app".into());
    let (outcome, events) = run(&sandbox, &as_app);
    assert_ne!(outcome.exit_code, 0);
    assert!(
        output_of(&events).iter().any(|l| l.contains("subuid")),
        "{events:?}"
    );
}

#[test]
fn setup_errors_name_the_cause_and_leave_no_scratch_behind() {
    if !root_or_skip("setup_errors_name_the_cause_and_leave_no_scratch_behind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let sandbox = Sandbox::new(KILN, Isolation::Chroot);
    let mut ghost = spec("ghost", dir.path(), &lower, "true");
    ghost.user = Some("ghost".into());
    let err = sandbox
        .run_step(&ghost, &Progress::none())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step ghost")
            && err.contains("\"ghost\" not found in the image's /etc/passwd"),
        "{err}"
    );
    let mut missing = spec("missing", dir.path(), &lower, "true");
    missing.argv = vec!["nope".into()];
    let err = sandbox
        .run_step(&missing, &Progress::none())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope: command not found in PATH"), "{err}");
    assert!(leftover_state_dirs(dir.path()).is_empty());
    assert!(mounts_mentioning(dir.path()).is_empty());
}
