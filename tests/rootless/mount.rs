//! `RUN --mount` in the rootless sandbox, run as an unprivileged user (`kilntest` when the tests
//! run as root): a cache mount persists between runs and stays out of the diff; bind mounts
//! (read-only and read-write) and tmpfs leave no trace in the upper dir or the source.

use crate::sandbox_support::*;
use kiln::sandbox::{CacheSharing, MountSpec};

#[test]
fn a_cache_mount_persists_between_two_runs_and_stays_out_of_the_diff() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    let cache_root = dir.path().join("cache");
    std::fs::create_dir(&cache_root).unwrap();
    runner.give(dir.path());
    let mount = MountSpec::Cache {
        id: "pkgs".into(),
        target: "/var/cache/pkgs".into(),
        cache_root: cache_root.clone(),
        sharing: CacheSharing::Locked,
        readonly: false,
    };
    let script =
        "cat /var/cache/pkgs/count 2>/dev/null || echo none; echo run >> /var/cache/pkgs/count";
    let mut first = runner.spec("cache1", dir.path(), &lower, script);
    first.mounts.push(mount.clone());
    let (o1, e1) = runner.run(&first, dir.path());
    let mut second = runner.spec("cache2", dir.path(), &lower, script);
    second.mounts.push(mount);
    let (o2, e2) = runner.run(&second, dir.path());
    assert_eq!((o1.exit_code, o2.exit_code), (0, 0));
    assert_eq!(output_lines(&e1), ["none"]);
    assert_eq!(
        output_lines(&e2),
        ["run"],
        "the second run sees the first run's file"
    );
    assert!(tree(&first.upper_dir).is_empty() && tree(&second.upper_dir).is_empty());
}

#[test]
fn bind_and_tmpfs_mounts_leave_no_trace() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    let ctx = dir.path().join("context");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("src.txt"), "from context\n").unwrap();
    runner.give(dir.path());
    let script = "cat /ctx/src.txt; echo changed > /rw/src.txt && cat /rw/src.txt; echo t > /scratch/t && ls /scratch; echo no 2>/dev/null > /ctx/x || echo ro";
    let mut spec = runner.spec("binds", dir.path(), &lower, script);
    spec.mounts = vec![
        MountSpec::Bind {
            source: ctx.clone(),
            target: "/ctx".into(),
            readonly: true,
        },
        MountSpec::Bind {
            source: ctx.clone(),
            target: "/rw".into(),
            readonly: false,
        },
        MountSpec::Tmpfs {
            target: "/scratch".into(),
            size_bytes: Some(1 << 20),
        },
    ];
    let (outcome, events) = runner.run(&spec, dir.path());
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(
        output_lines(&events),
        ["from context", "changed", "t", "ro"]
    );
    assert_eq!(
        std::fs::read_to_string(ctx.join("src.txt")).unwrap(),
        "from context\n",
        "rw bind writes are thrown away"
    );
    assert!(
        tree(&spec.upper_dir).is_empty(),
        "{:?}",
        tree(&spec.upper_dir)
    );
}
