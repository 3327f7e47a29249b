//! Overhead of one sandboxed `RUN true` on a 50,000-file base: setup (state dir, re-exec,
//! namespaces, id maps, overlay, /proc, /dev, /sys), teardown (scratch removal) and the diff
//! (walking the upper dir the layer writer will read). Target: < 50 ms.
//!
//! As root it measures chroot mode and rootless mode (root has no subuid range, so a single
//! id map), plus, when the `kilntest` user exists (tests/scripts/unprivileged-user.sh),
//! rootless with a full subuid range through `kiln __sandbox-run` (one more exec and
//! newuidmap/newgidmap). Unprivileged, it measures rootless mode only.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::progress::Progress;
use kiln::sandbox::{Force, Isolation, Sandbox, StepSpec};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const FILES: usize = 50_000;

fn base(dir: &Path) -> PathBuf {
    let root = dir.join("lower");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("apt-get install busybox-static");
    std::os::unix::fs::symlink("busybox", root.join("bin/true")).unwrap();
    for d in 0..FILES / 1000 {
        let sub = root.join(format!("usr/share/d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f:03}")), b"x").unwrap();
        }
    }
    root
}

fn spec(dir: &Path, lower: &Path, n: usize) -> StepSpec {
    let upper = dir.join(format!("upper-{n}"));
    std::fs::create_dir(&upper).unwrap();
    StepSpec {
        id: format!("bench-{n}"),
        lower_dirs: vec![lower.to_path_buf()],
        upper_dir: upper,
        argv: vec!["/bin/true".into()],
        env: vec![],
        user: None,
        workdir: None,
        network: Default::default(),
        hostname: None,
        mounts: vec![],
        security: Default::default(),
    }
}

/// What the layer writer does first with a step's diff.
fn walk_diff(upper: &Path) -> usize {
    walkdir::WalkDir::new(upper).into_iter().count()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    let lower = base(dir.path());
    let root = nix::unistd::geteuid().is_root();
    let modes: &[Isolation] = if root {
        &[Isolation::Chroot, Isolation::Rootless]
    } else {
        &[Isolation::Rootless]
    };
    let mut group = c.benchmark_group("sandbox_run_true_50k_files");
    group.sample_size(30);
    let mut n = 0;
    for &mode in modes {
        let sandbox = Sandbox::new(KILN, mode);
        sandbox.probe().unwrap();
        group.bench_function(format!("{mode:?}").to_lowercase(), |b| {
            b.iter(|| {
                n += 1;
                let spec = spec(dir.path(), &lower, n);
                let outcome = sandbox.run_step(&spec, &Progress::none()).unwrap();
                assert_eq!(outcome.exit_code, 0);
                let entries = walk_diff(&spec.upper_dir);
                std::fs::remove_dir_all(&spec.upper_dir).unwrap();
                entries
            })
        });
    }
    if let Some((uid, gid)) = root.then(kilntest).flatten() {
        chown_tree(dir.path(), uid, gid);
        group.bench_function("rootless_subuid_via_cli", |b| {
            b.iter(|| {
                n += 1;
                let spec = spec(dir.path(), &lower, n);
                let path = dir.path().join("spec.json");
                std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
                chown_tree(&spec.upper_dir, uid, gid);
                let out = Command::new("setpriv")
                    .args([
                        format!("--reuid={uid}"),
                        format!("--regid={gid}"),
                        "--clear-groups".into(),
                    ])
                    .arg(KILN)
                    .arg("__sandbox-run")
                    .arg(&path)
                    .arg("rootless")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let entries = walk_diff(&spec.upper_dir);
                std::fs::remove_dir_all(&spec.upper_dir).unwrap();
                entries
            })
        });
    }
    group.finish();
    if root {
        copy_fallback(c, dir.path(), &lower, &mut n);
    }
}

/// The overlay-less fallback for comparison: copying the 50,000-file base, snapshotting it,
/// running, diffing and removing the copy, per step.
fn copy_fallback(c: &mut Criterion, dir: &Path, lower: &Path, n: &mut usize) {
    let mut group = c.benchmark_group("sandbox_run_true_50k_files_no_overlay");
    group.sample_size(10);
    let force = Force {
        no_overlay: true,
        ..Force::default()
    };
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(force);
    sandbox.probe().unwrap();
    group.bench_function("chroot_copy", |b| {
        b.iter(|| {
            *n += 1;
            let spec = spec(dir, lower, *n);
            let outcome = sandbox.run_step(&spec, &Progress::none()).unwrap();
            assert_eq!(outcome.exit_code, 0);
            let entries = walk_diff(&spec.upper_dir);
            std::fs::remove_dir_all(&spec.upper_dir).unwrap();
            entries
        })
    });
    group.finish();
}

fn kilntest() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "kilntest"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let (uid, gid) = (id("-u")?, id("-g")?);
    // A checkout under /root is not executable for kilntest: skip that case then.
    let can_exec = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ])
        .args(["test", "-x", KILN])
        .status()
        .is_ok_and(|s| s.success());
    can_exec.then_some((uid, gid))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    for entry in walkdir::WalkDir::new(path) {
        let _ = std::os::unix::fs::lchown(entry.unwrap().path(), Some(uid), Some(gid));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
