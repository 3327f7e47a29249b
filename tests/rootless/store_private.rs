//! The store is private to its user: another local user can neither reach nor run what an image
//! unpacked into it (a setuid-root binary of a pulled image would otherwise give them euid 0),
//! and a rootless store is `0700` too while `USER 1000` steps still see their lower dirs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::build_support::{bases, kiln_build, missing, missing_for_bases, succeeded};

/// Root builds; `kilntest` (tests/scripts/unprivileged-user.sh) is the other local user.
fn skip_reason() -> Option<String> {
    missing_for_bases().or_else(|| missing(&["setpriv", "newuidmap"]))
}

/// The unprivileged test user: (uid, gid).
fn user() -> (u32, u32) {
    let (_, uid, gid) = crate::sandbox_support::runner()
        .user
        .expect("tests run as root here");
    (uid, gid)
}

/// `setpriv` as `kilntest`, running `program ARGS`, from `/`.
fn as_user(program: &Path, args: &[&str]) -> Command {
    let (uid, gid) = user();
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
    ])
    .arg(program)
    .args(args)
    .env("HOME", "/tmp")
    .env("XDG_RUNTIME_DIR", "/tmp")
    .current_dir("/")
    .stdin(Stdio::null());
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Files named `name` anywhere under `dir` (walked as root).
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == name)
        .map(|e| e.into_path())
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn another_user_cannot_reach_or_run_a_setuid_binary_unpacked_in_the_store() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    // A parent every user may traverse (like /var/lib): only the store's own modes protect it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.path().join("store");
    // The second RUN has the first one's layer as a lower dir, so it is unpacked in the store.
    // Named `id`, busybox runs its `id` applet.
    let dockerfile = format!(
        "FROM {}\nRUN mkdir /suid && cp /bin/busybox /suid/id && chmod 4755 /suid/id\nRUN true\n",
        bases().busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    succeeded(&kiln_build(&store, &["-t", "suid"], ctx.path()));

    let unpacked: Vec<_> = find(&store.join("layers"), "id")
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("suid")))
        .collect();
    assert_eq!(unpacked.len(), 1, "{unpacked:?}");
    let suid = &unpacked[0];
    let meta = std::fs::metadata(suid).unwrap();
    assert_eq!(
        (meta.mode() & 0o4000, meta.uid()),
        (0o4000, 0),
        "setuid root"
    );

    // Run straight out of the store (through a shell: setpriv itself would still hold root's
    // capabilities while it looks the program up).
    let ran = as_user(Path::new("/bin/sh"), &["-c", "\"$0\" -u"])
        .arg(suid)
        .output()
        .unwrap();
    assert!(!ran.status.success(), "ran it: {}", text(&ran));
    assert!(text(&ran).contains("Permission denied"), "{}", text(&ran));
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("layers")), 0o700);
    let listed = as_user(Path::new("/bin/ls"), &[store.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!listed.status.success(), "listed it: {}", text(&listed));
}

#[test]
fn a_rootless_store_is_private_and_user_1000_steps_still_see_their_layers() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let (uid, gid) = user();
    let tmp = crate::sandbox_support::runner().tempdir();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.path().join("store");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let dockerfile = format!(
        "FROM {}\nRUN mkdir /data && echo from-a-lower > /data/f && chown -R 1000:1000 /data\n\
         USER 1000\nRUN cat /data/f && echo more >> /data/f && echo \"uid-$(id -u)\"\n",
        bases().busybox()
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    crate::sandbox_support::runner().give(tmp.path());
    let kiln = crate::sandbox_support::kiln_for(uid, gid);
    let out = as_user(&kiln, &["build", "-t", "private", "--progress=plain"])
        .arg(&ctx)
        .env("KILN_ROOT", &store)
        .output()
        .unwrap();
    let log = succeeded(&out);
    assert!(log.contains("rootless isolation"), "{log}");
    assert!(
        !log.contains("maps only uid"),
        "kilntest has a range: {log}"
    );
    assert!(log.contains("from-a-lower"), "{log}");
    assert!(log.contains("uid-1000"), "{log}");
    let meta = std::fs::metadata(&store).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o700, uid));
    for dir in ["layers", "tmp", "scratch", "cache", "blobs"] {
        assert_eq!(mode(&store.join(dir)), 0o700, "{dir}");
    }
}
