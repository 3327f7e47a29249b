//! The mount plan of every mode, checked without privileges.

use super::*;
use crate::sandbox::Network;

const ID: FileId = FileId { dev: 7, ino: 42 };
const OTHER_ID: FileId = FileId { dev: 7, ino: 43 };

/// How the step runs: what the probe chose and what the step asked for.
#[derive(Clone, Copy, Debug)]
struct Mode {
    user_namespace: bool,
    mount_namespace: bool,
    copy: bool,
    security: Security,
}

const ROOTLESS: Mode = Mode {
    user_namespace: true,
    mount_namespace: true,
    copy: false,
    security: Security::Sandbox,
};
const CHROOT: Mode = Mode {
    user_namespace: false,
    ..ROOTLESS
};
const PLAIN_CHROOT: Mode = Mode {
    mount_namespace: false,
    copy: true,
    ..CHROOT
};

fn spec(mode: Mode, mounts: Vec<InitMount>) -> InitSpec {
    let state = PathBuf::from("/store/tmp/.kiln-step-1");
    InitSpec {
        step: "step-1".into(),
        user_namespace: mode.user_namespace,
        single_id: false,
        mount_namespace: mode.mount_namespace,
        copy: mode.copy,
        lowers: vec!["/store/layers/b".into(), "/store/layers/a".into()],
        upper: "/store/tmp/upper".into(),
        work: state.join("work"),
        merged: state.join("merged"),
        scratch: state.join("scratch"),
        etc_files: ["hosts", "resolv.conf", "hostname"]
            .map(|n| (state.join("etc").join(n), n.to_string()))
            .into(),
        argv: vec!["true".into()],
        env: Vec::new(),
        user: None,
        workdir: "/".into(),
        network: Network::Host,
        hostname: "kiln".into(),
        mounts,
        security: mode.security,
    }
}

/// One of each `RUN --mount`, with hostile targets that climb out of the root.
fn every_mount() -> Vec<InitMount> {
    vec![
        InitMount::Bind {
            source: "/ctx/src".into(),
            source_id: ID,
            target: "/../../../etc".into(),
            readonly: true,
        },
        InitMount::Overlay {
            source: "/ctx/rw".into(),
            source_id: OTHER_ID,
            target: "work/../../../../rw".into(),
        },
        InitMount::Tmpfs {
            target: "/tmp/../..//scratch".into(),
            size_bytes: Some(1 << 20),
        },
        InitMount::Secret {
            target: "/run/secrets/../../../../token".into(),
            data: SecretBytes(b"s3cret".to_vec()),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
        InitMount::Ssh {
            socket: "/store/tmp/ssh-1/agent.sock".into(),
            target: "/run/buildkit/ssh_agent.0".into(),
            mode: 0o600,
            uid: 1000,
            gid: 1000,
        },
    ]
}

/// Every op, flattened (the ops nested in `Sys` follow it).
fn flat(ops: &[MountOp]) -> Vec<&MountOp> {
    let mut all = Vec::new();
    for op in ops {
        all.push(op);
        if let MountOp::Sys { then, .. } = op {
            all.extend(flat(then));
        }
    }
    all
}

fn target(op: &MountOp) -> Option<&InRoot> {
    match op {
        MountOp::Mount { at, .. }
        | MountOp::Proc { at, .. }
        | MountOp::Sys { at, .. }
        | MountOp::Bind { at, .. }
        | MountOp::WritableBind { at, .. }
        | MountOp::MakeDir { at }
        | MountOp::MakeFile { at }
        | MountOp::Symlink { at, .. }
        | MountOp::Mask { at }
        | MountOp::ReadOnly { at }
        | MountOp::Secret { at, .. }
        | MountOp::Mknod { at, .. } => Some(at),
        MountOp::PrivateMounts
        | MountOp::RootOverlay { .. }
        | MountOp::RootSelfBind
        | MountOp::OwnSocket { .. }
        | MountOp::Chroot
        | MountOp::Pivot => None,
    }
}

/// One line per op: its kind and where it goes.
fn line(op: &MountOp) -> String {
    let at = target(op).map_or(String::new(), |a| a.absolute().display().to_string());
    let kind = match op {
        MountOp::Mount { fstype, .. } => format!("mount {fstype}"),
        MountOp::Proc {
            or_bind_container, ..
        } => format!("proc or_bind={or_bind_container}"),
        MountOp::Bind { flags, .. } => format!("bind {flags:?}"),
        MountOp::RootOverlay { data, .. } => format!("overlay {data}"),
        other => format!("{other:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap()
            .to_string(),
    };
    format!("{kind} {at}").trim_end().to_string()
}

fn lines(ops: &[MountOp]) -> Vec<String> {
    flat(ops).into_iter().map(line).collect()
}

#[test]
fn rootless_plan_is_runcs_sequence() {
    let ops = plan(&spec(ROOTLESS, Vec::new())).unwrap();
    let dev_nodes = ["null", "zero", "full", "random", "urandom", "tty"]
        .into_iter()
        .flat_map(|n| [format!("MakeFile /dev/{n}"), format!("bind AsIs /dev/{n}")]);
    let mut want: Vec<String> = vec![
        "PrivateMounts".into(),
        "overlay lowerdir=0:1,upperdir=/store/tmp/upper,\
         workdir=/store/tmp/.kiln-step-1/work,userxattr,volatile"
            .into(),
        "proc or_bind=true /proc".into(),
        "mount tmpfs /dev".into(),
    ];
    want.extend(dev_nodes);
    want.extend(
        [
            "MakeDir /dev/pts",
            "MakeDir /dev/shm",
            "mount devpts /dev/pts",
            "mount tmpfs /dev/shm",
            "Symlink /dev/ptmx",
            "Symlink /dev/fd",
            "Symlink /dev/stdin",
            "Symlink /dev/stdout",
            "Symlink /dev/stderr",
            "Sys /sys",
            "Mask /sys/firmware",
            "Mask /sys/devices/virtual/powercap",
        ]
        .map(String::from),
    );
    want.extend(MASKED_PROC.map(|p| format!("Mask /proc/{p}")));
    want.extend(READ_ONLY_PROC.map(|p| format!("ReadOnly /proc/{p}")));
    want.extend(
        [
            "bind ReadOnly /etc/hosts",
            "bind ReadOnly /etc/resolv.conf",
            "bind ReadOnly /etc/hostname",
            "Pivot",
        ]
        .map(String::from),
    );
    assert_eq!(lines(&ops), want);
}

#[test]
fn each_mode_and_probe_result_gives_its_root_proc_and_end() {
    let insecure = Mode {
        security: Security::Insecure,
        ..ROOTLESS
    };
    // (mode, root op, proc op, last op, masks and read-only paths)
    let table: [(Mode, &str, Option<&str>, &str, usize); 6] = [
        (
            ROOTLESS,
            "overlay lowerdir=0:1,upperdir=/store/tmp/upper,\
             workdir=/store/tmp/.kiln-step-1/work,userxattr,volatile",
            Some("proc or_bind=true /proc"),
            "Pivot",
            16,
        ),
        (
            Mode {
                copy: true,
                ..ROOTLESS
            },
            "RootSelfBind",
            Some("proc or_bind=true /proc"),
            "Pivot",
            16,
        ),
        (
            CHROOT,
            "overlay lowerdir=0:1,upperdir=/store/tmp/upper,\
             workdir=/store/tmp/.kiln-step-1/work,volatile",
            Some("proc or_bind=false /proc"),
            "Pivot",
            16,
        ),
        (
            Mode {
                copy: true,
                ..CHROOT
            },
            "RootSelfBind",
            Some("proc or_bind=false /proc"),
            "Pivot",
            16,
        ),
        (
            insecure,
            "overlay lowerdir=0:1,upperdir=/store/tmp/upper,\
             workdir=/store/tmp/.kiln-step-1/work,userxattr,volatile",
            Some("proc or_bind=true /proc"),
            "Pivot",
            0,
        ),
        (PLAIN_CHROOT, "Mknod /dev/null", None, "Chroot", 0),
    ];
    for (mode, root, proc, last, masks) in table {
        let got = lines(&plan(&spec(mode, every_mount())).unwrap());
        let first = usize::from(mode.mount_namespace); // PrivateMounts comes first
        assert_eq!(got[first], root, "{mode:?}");
        let procs: Vec<&String> = got.iter().filter(|l| l.starts_with("proc")).collect();
        assert_eq!(procs.first().map(|s| s.as_str()), proc, "{mode:?}");
        assert_eq!(got.last().unwrap(), last, "{mode:?}");
        let masking = got
            .iter()
            .filter(|l| l.starts_with("Mask ") || l.starts_with("ReadOnly "))
            .count();
        assert_eq!(masking, masks, "{mode:?}");
    }
}

#[test]
fn masked_paths_come_with_every_proc_kiln_mounts() {
    let modes = [ROOTLESS, CHROOT]
        .into_iter()
        .flat_map(|m| [m, Mode { copy: true, ..m }]);
    for mode in modes {
        let ops = plan(&spec(mode, every_mount())).unwrap();
        let got = lines(&ops);
        for p in MASKED_PROC {
            assert!(got.contains(&format!("Mask /proc/{p}")), "{mode:?}: {p}");
        }
        for p in READ_ONLY_PROC {
            assert!(
                got.contains(&format!("ReadOnly /proc/{p}")),
                "{mode:?}: {p}"
            );
        }
        // The /sys masks go with the /sys mount (skipped with it), the /proc masks after
        // the /proc mount, and all of them before the step's own mounts.
        let sys = ops.iter().find(|op| matches!(op, MountOp::Sys { .. }));
        let Some(MountOp::Sys { then, .. }) = sys else {
            panic!("{mode:?}: no /sys")
        };
        assert_eq!(then.len(), MASKED_SYS.len(), "{mode:?}");
        let pos = |l: &str| got.iter().position(|g| g.starts_with(l)).unwrap();
        assert!(pos("proc") < pos("Mask /proc/kcore"), "{mode:?}");
        assert!(
            pos("ReadOnly /proc/sys") < pos("bind ReadOnly /etc/hosts"),
            "{mode:?}"
        );
        assert!(
            pos("ReadOnly /proc/sys") < pos("WritableBind /rw"),
            "{mode:?}"
        );
    }
}

#[test]
fn no_op_targets_outside_the_root() {
    let modes = [ROOTLESS, CHROOT, PLAIN_CHROOT]
        .into_iter()
        .flat_map(|m| [m, Mode { copy: true, ..m }]);
    for mode in modes {
        let s = spec(mode, every_mount());
        for op in flat(&plan(&s).unwrap()) {
            if let Some(at) = target(op) {
                let normal = at
                    .as_path()
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
                assert!(normal, "{mode:?}: {op:?}");
            }
            // Host paths an op writes to are kiln's own scratch.
            let host = match op {
                MountOp::RootOverlay { links, .. } => Some(links),
                MountOp::WritableBind { tmp, .. } => Some(tmp),
                MountOp::Secret { staging, .. } => Some(staging),
                _ => None,
            };
            if let Some(host) = host {
                assert!(host.starts_with(&s.scratch), "{mode:?}: {op:?}");
            }
        }
    }
    // `..` is clamped at the root, as BuildKit cleans a mount target.
    let got = lines(&plan(&spec(ROOTLESS, every_mount())).unwrap());
    for want in [
        "bind ReadOnly /etc",
        "WritableBind /rw",
        "mount tmpfs /scratch",
        "Secret /token",
        "bind ReadOnly /run/buildkit/ssh_agent.0",
    ] {
        assert!(got.contains(&want.to_string()), "{want} in {got:#?}");
    }
}

#[test]
fn bind_sources_are_checked_files_or_kilns_own() {
    let s = spec(ROOTLESS, every_mount());
    let ops = plan(&s).unwrap();
    let mut checked = Vec::new();
    for op in flat(&ops) {
        match op {
            MountOp::Bind {
                source: BindSource::Checked { path, id },
                flags,
                ..
            } => {
                assert_ne!(*flags, BindFlags::AsIs, "a step's bind is nodev");
                checked.push((path.clone(), *id));
            }
            MountOp::WritableBind { path, id, .. } => checked.push((path.clone(), *id)),
            MountOp::Bind {
                source: BindSource::Kiln(path),
                flags,
                ..
            } => {
                let device = path.parent() == Some(Path::new("/dev"));
                let etc = s.etc_files.iter().any(|(p, _)| p == path);
                let ssh = path == Path::new("/store/tmp/ssh-1/agent.sock");
                assert!(device || etc || ssh, "{path:?} is not kiln's");
                // Only the device nodes keep their flags (and so may be opened).
                assert_eq!(*flags == BindFlags::AsIs, device, "{path:?}");
            }
            _ => {}
        }
    }
    // Each step-given source travels with the id the parent checked.
    assert_eq!(
        checked,
        [("/ctx/src".into(), ID), ("/ctx/rw".into(), OTHER_ID)]
    );
}

#[test]
fn step_mounts_are_nodev_and_their_staging_is_their_own() {
    let ops = plan(&spec(CHROOT, every_mount())).unwrap();
    let tmpfs = ops.iter().find_map(|op| match op {
        MountOp::Mount {
            at, flags, data, ..
        } if at.as_path() == Path::new("scratch") => Some((*flags, data.clone())),
        _ => None,
    });
    let (flags, data) = tmpfs.expect("the tmpfs mount");
    assert!(flags.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID));
    assert_eq!(data.as_deref(), Some("size=1048576"));
    let staging: Vec<&PathBuf> = ops
        .iter()
        .filter_map(|op| match op {
            MountOp::WritableBind { tmp, userxattr, .. } => {
                assert!(!userxattr, "no user namespace: trusted xattrs");
                Some(tmp)
            }
            MountOp::Secret { staging, data, .. } => {
                assert_eq!(data.0, b"s3cret");
                Some(staging)
            }
            _ => None,
        })
        .collect();
    let scratch = Path::new("/store/tmp/.kiln-step-1/scratch");
    assert_eq!(
        staging,
        [&scratch.join("bind-1"), &scratch.join("secret-3")]
    );
    // The ssh socket gets its owner before it is bound.
    let got = lines(&ops);
    let own = got.iter().position(|l| l == "OwnSocket").unwrap();
    assert_eq!(got[own + 1], "bind ReadOnly /run/buildkit/ssh_agent.0");
}

#[test]
fn plain_chroot_mounts_nothing() {
    let ops = plan(&spec(PLAIN_CHROOT, Vec::new())).unwrap();
    let want: Vec<String> = ["null", "zero", "full", "random", "urandom", "tty"]
        .map(|n| format!("Mknod /dev/{n}"))
        .into_iter()
        .chain(["Chroot".to_string()])
        .collect();
    assert_eq!(lines(&ops), want);
    assert!(ops.contains(&MountOp::Mknod {
        at: InRoot::new("/dev/tty"),
        major: 5,
        minor: 0
    }));
}

#[test]
fn overlay_options_over_a_page_are_refused_before_anything_is_mounted() {
    let mut s = spec(ROOTLESS, Vec::new());
    s.upper = PathBuf::from(format!("/{}", "u".repeat(MAX_MOUNT_DATA)));
    let Err(err) = plan(&s) else {
        panic!("options over a page were accepted")
    };
    assert!(
        matches!(err, PlanError::OverlayOptionsTooLong { lowers: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("fewer layers"), "{err}");
    // 127 layers (Docker's limit) fit, thanks to the short link names.
    s.upper = "/store/tmp/upper".into();
    s.lowers = (0..127)
        .map(|i| format!("/store/layers/{i:064}").into())
        .collect();
    let Ok(ops) = plan(&s) else {
        panic!("127 layers")
    };
    let Some(MountOp::RootOverlay { lowers, links, .. }) = ops.get(1) else {
        panic!("{:?}", ops.get(1))
    };
    assert_eq!((lowers.len(), links), (127, &s.scratch.join("lower")));
}

#[test]
fn in_root_paths_are_cleaned_against_the_root() {
    let cases = [
        ("/", ""),
        ("/a/b/", "a/b"),
        ("../../a", "a"),
        ("/a/./b/../../../c", "c"),
        ("a//b", "a/b"),
    ];
    for (given, want) in cases {
        let got = InRoot::new(given);
        assert_eq!(got.as_path(), Path::new(want), "{given}");
        assert_eq!(got.absolute(), Path::new("/").join(want), "{given}");
    }
    assert_eq!(
        InRoot::new("/proc").join("../../etc").as_path(),
        Path::new("etc")
    );
}
