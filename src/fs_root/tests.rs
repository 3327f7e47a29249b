use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::*;

/// The real path of a walk's result, `/`-joined.
fn real(r: &Resolved) -> String {
    String::from_utf8(r.comps.join(&b'/')).unwrap()
}

fn dir_fd(p: &Path) -> std::fs::File {
    std::fs::File::open(p).unwrap()
}

#[test]
fn split_drops_dots_and_refuses_a_trailing_dotdot() {
    let (p, n) = split_entry(b"./a//b/./c").unwrap();
    assert_eq!(p, vec![&b"a"[..], b"b"]);
    assert_eq!(n, b"c");
    assert!(split_entry(b"./").is_none());
    assert!(split_entry(b"a/..").is_none());
    let (p, n) = split_entry(b"/../../etc/passwd").unwrap();
    assert_eq!(p, vec![&b".."[..], b"..", b"etc"]);
    assert_eq!(n, b"passwd");
}

#[test]
fn dotdot_and_symlinks_stay_inside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("real/sub")).unwrap();
    symlink("/", root.join("abs")).unwrap();
    symlink("../../../..", root.join("real/up")).unwrap();
    symlink("real/sub", root.join("rel")).unwrap();
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();
    symlink(t.path(), root.join("host")).unwrap();
    std::fs::write(root.join("file"), b"").unwrap();
    let fd = dir_fd(&root);

    let r = |p: &[&[u8]]| resolve_dir(fd.as_fd(), p, true).map(|d| real(&d));
    assert_eq!(r(&[b"..", b"..", b"etc"]).unwrap(), "etc");
    assert_eq!(r(&[b"abs", b"etc"]).unwrap(), "etc");
    assert_eq!(r(&[b"real", b"up", b"x"]).unwrap(), "x");
    assert_eq!(r(&[b"rel", b"new"]).unwrap(), "real/sub/new");
    // An absolute link to a host dir is that path inside the root, made there.
    let host_in_root = r(&[b"host"]).unwrap();
    assert!(root.join(&host_in_root).is_dir(), "{host_in_root}");
    assert!(!t.path().join("etc").exists());
    assert_eq!(
        r(&[b"loop1"]).unwrap_err().raw_os_error(),
        Some(libc::ELOOP)
    );
    assert_eq!(
        r(&[b"file", b"x"]).unwrap_err().raw_os_error(),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        r(&[b"file"]).unwrap_err().raw_os_error(),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        resolve_dir(fd.as_fd(), &[b"missing"], false)
            .err()
            .and_then(|e| e.raw_os_error()),
        Some(libc::ENOENT)
    );
}

#[test]
fn symlinks_and_dotdot_never_leave_the_root() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host").unwrap();
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/secret"), "inside").unwrap();
    symlink(outside.path(), r.join("out")).unwrap();
    symlink("/etc", r.join("abs")).unwrap();
    symlink("../../../../etc", r.join("up")).unwrap();
    let root = Root::open(r).unwrap();
    let read = |p: &str| {
        io::read_to_string(root.open_file(OsStr::new(p)).map_err(|e| e.kind())?)
            .map_err(|e| e.kind())
    };
    assert_eq!(read("abs/secret").unwrap(), "inside");
    assert_eq!(read("up/secret").unwrap(), "inside");
    assert_eq!(read("../../etc/secret").unwrap(), "inside");
    assert_eq!(read("/etc/secret").unwrap(), "inside");
    // `out` points at a host directory: inside the root that path does not exist.
    assert_eq!(read("out/secret"), Err(io::ErrorKind::NotFound));
    let real = root.resolve(OsStr::new("abs/secret"), true).unwrap();
    assert_eq!(real, root.path().join("etc/secret"));
    assert_eq!(
        root.resolve_rel(OsStr::new("abs"), false).unwrap(),
        Path::new("abs")
    );
    assert_eq!(
        root.resolve_rel(OsStr::new("abs"), true).unwrap(),
        Path::new("etc")
    );

    // The walk (kernels without openat2) resolves every path the same way.
    symlink("loop", r.join("loop")).unwrap();
    for (p, follow) in [
        ("abs/secret", true),
        ("up/secret", true),
        ("../../etc/secret", true),
        ("/etc/secret", true),
        ("out/secret", true),
        ("abs", false),
        ("abs", true),
        ("etc/..", true),
        ("", true),
        ("loop/x", true),
        ("etc/secret/x", true),
    ] {
        let p = if p.is_empty() { "." } else { p };
        let kernel = root.open_at(OsStr::new(p), OFlag::O_PATH, follow);
        let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        let flags = if follow {
            flags
        } else {
            flags | OFlag::O_NOFOLLOW
        };
        let walked = root.open_by_walk(OsStr::new(p), flags, follow);
        let path = |r: io::Result<OwnedFd>| r.map(|fd| fd_path(&fd).unwrap()).map_err(|e| e.kind());
        assert_eq!(path(kernel), path(walked), "{p:?}");
    }
    assert_eq!(
        root.open_by_walk(OsStr::new("loop/x"), OFlag::O_PATH, true)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ELOOP)
    );
}

/// Runs `f` on a thread whose seccomp filter answers `openat2` with EPERM, as the profiles
/// of some CI containers do.
fn with_openat2_refused<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    std::thread::scope(|s| {
        s.spawn(|| {
            let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
            let rules = [(libc::SYS_openat2, Vec::new())].into_iter().collect();
            let eperm = SeccompAction::Errno(libc::EPERM as u32);
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch).unwrap();
            let program: BpfProgram = filter.try_into().unwrap();
            // Only this thread: seccompiler sets no_new_privs and installs without TSYNC.
            seccompiler::apply_filter(&program).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn openat2_refused_by_seccomp_falls_back_to_the_walk() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/secret"), "inside").unwrap();
    symlink("/etc", r.join("abs")).unwrap();
    symlink("../../../../etc", r.join("up")).unwrap();
    std::fs::write(r.join("Dockerfile"), "FROM scratch\n").unwrap();
    let up = r.join("up");
    let (read, inside, opened, through_link) = with_openat2_refused(|| {
        let refused = nix::fcntl::openat2(
            nix::fcntl::AT_FDCWD,
            r,
            nix::fcntl::OpenHow::new().flags(OFlag::O_PATH),
        );
        assert_eq!(refused.unwrap_err(), nix::errno::Errno::EPERM);
        let root = Root::open(r).unwrap();
        let read = |p: &str| io::read_to_string(root.open_file(OsStr::new(p)).unwrap()).unwrap();
        (
            [read("abs/secret"), read("up/secret"), read("/etc/secret")],
            read_maybe_in(r, &r.join("Dockerfile")).unwrap(),
            open_no_symlinks(&r.join("etc/secret")).is_ok(),
            open_no_symlinks(&up.join("secret")).map_err(|e| e.raw_os_error()),
        )
    });
    assert_eq!(read, ["inside", "inside", "inside"].map(String::from));
    assert_eq!(inside, b"FROM scratch\n");
    assert!(opened);
    // The fallback of the no-symlink open refuses a link on the way just as openat2 does.
    assert_eq!(through_link.unwrap_err(), Some(libc::ENOTDIR));
}

/// Walks `rel` in create mode (missing parts as directories, the last as `leaf`), with the
/// real paths of what was made.
fn ensure(root: BorrowedFd<'_>, rel: &str, leaf: Leaf) -> (io::Result<Resolved>, Vec<String>) {
    let mut made = Vec::new();
    let mut record = |_: BorrowedFd<'_>, comps: &[Vec<u8>]| {
        made.push(String::from_utf8(comps.join(&b'/')).unwrap());
        Ok(())
    };
    let how = Walk {
        follow_last: true,
        create: Some(Create {
            leaf,
            made: &mut record,
        }),
    };
    let got = resolve(root, rel.as_bytes(), how);
    (got, made)
}

#[test]
fn symlinks_resolve_inside_the_root_and_never_escape() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/run")).unwrap();
    symlink("/var/run", r.join("run")).unwrap();
    symlink("../../../../etc", r.join("var/escape")).unwrap();
    symlink("loop", r.join("loop")).unwrap();
    let fd = dir_fd(r);
    let (got, made) = ensure(fd.as_fd(), "/run/secrets/x", Leaf::File);
    assert_eq!(real(&got.unwrap()), "var/run/secrets/x");
    assert_eq!(made, ["var/run/secrets", "var/run/secrets/x"]);
    assert!(r.join("var/run/secrets/x").is_file());
    let (got, _) = ensure(fd.as_fd(), "/var/escape/passwd", Leaf::Dir);
    assert_eq!(real(&got.unwrap()), "etc/passwd");
    let (got, made) = ensure(fd.as_fd(), "/loop/x", Leaf::Dir);
    assert_eq!(got.unwrap_err().raw_os_error(), Some(libc::ELOOP));
    assert!(made.is_empty());
}

/// Hostile roots where the sandbox's old path-string resolver was weaker (it followed
/// `read_link` on host paths, so a component could be swapped between the check and the
/// mount, and it kept what it could not read as a plain name).
#[test]
fn hostile_mount_targets_land_inside_the_root() {
    let host = tempfile::tempdir().unwrap();
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("a/b")).unwrap();
    // `..` through a symlink: `a/lnk/..` is `a/b/..` = `a`, not `a/lnk`'s lexical parent.
    symlink("b", r.join("a/lnk")).unwrap();
    // An absolute link to `/` inside the root.
    symlink("/", r.join("slash")).unwrap();
    // A target that is itself a symlink to a host path, absolute and relative.
    symlink(host.path(), r.join("to_host")).unwrap();
    let up = "../".repeat(r.components().count() + 2);
    symlink(
        format!("{up}{}", host.path().display()),
        r.join("a/rel_host"),
    )
    .unwrap();
    // A loop through a directory.
    symlink("../cycle/x", r.join("a/x")).unwrap();
    symlink("a", r.join("cycle")).unwrap();
    let fd = dir_fd(r);

    let (got, _) = ensure(fd.as_fd(), "a/lnk/../made", Leaf::Dir);
    assert_eq!(real(&got.unwrap()), "a/made");
    let (got, _) = ensure(fd.as_fd(), "slash/slash/proc", Leaf::Dir);
    assert_eq!(real(&got.unwrap()), "proc");
    let host_rel = host.path().strip_prefix("/").unwrap().to_str().unwrap();
    for link in ["to_host", "a/rel_host"] {
        let (got, _) = ensure(fd.as_fd(), link, Leaf::File);
        let got = got.unwrap();
        assert_eq!(real(&got), host_rel, "{link}");
        assert_eq!(got.kind, nix::sys::stat::SFlag::S_IFREG);
        assert!(r.join(host_rel).is_file());
        std::fs::remove_file(r.join(host_rel)).unwrap();
    }
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    let (got, made) = ensure(fd.as_fd(), "a/x/y", Leaf::Dir);
    assert_eq!(got.unwrap_err().raw_os_error(), Some(libc::ELOOP));
    assert!(made.is_empty());
    // Without create, a missing target is ENOENT and nothing is made.
    let missing = resolve(fd.as_fd(), b"to_host/x", Walk::FOLLOW);
    assert_eq!(missing.unwrap_err().raw_os_error(), Some(libc::ENOENT));
    // A last symlink not followed is the link itself, reopened by name without following.
    let how = Walk {
        follow_last: false,
        create: None,
    };
    let link = resolve(fd.as_fd(), b"a/lnk", how).unwrap();
    assert_eq!(link.kind, nix::sys::stat::SFlag::S_IFLNK);
    assert_eq!(link.in_root_path(), PathBuf::from("/a/lnk"));
    let reopened = link.reopen(fd.as_fd(), OFlag::O_RDONLY);
    assert_eq!(reopened.unwrap_err().raw_os_error(), Some(libc::ELOOP));
}

#[test]
fn open_real_refuses_any_symlink() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("d/e")).unwrap();
    symlink("d", r.join("l")).unwrap();
    symlink("e", r.join("d/le")).unwrap();
    let fd = dir_fd(r);
    let comps = |s: &str| -> Vec<Vec<u8>> { s.split('/').map(|c| c.as_bytes().to_vec()).collect() };
    assert!(open_real(fd.as_fd(), &comps("d/e")).is_ok());
    let err = |s: &str| open_real(fd.as_fd(), &comps(s)).unwrap_err().raw_os_error();
    assert_eq!(err("l/e"), Some(libc::ENOTDIR));
    assert_eq!(err("d/le"), Some(libc::ELOOP));
}
