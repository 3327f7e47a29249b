//! Hostile layers against the unpacker: a directory a later entry replaces with a symlink to
//! the host (the deferred directory chmod must not follow it), entries going "through" that
//! symlink, hard links aimed outside the root. Nothing outside the target directory may
//! change, as root and as an unprivileged user (in-process, and through the rootless id map's
//! helper). Also: the overlay form of deletions, stacked by a real overlay mount.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::layer::{
    Deletions, OpaqueXattr, Ownership, UnpackOptions, is_opaque_dir, is_whiteout, unpack_layer,
    visible_layers,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Tar entries written by hand, so they can be as hostile as wanted.
struct Raw(tar::Builder<Vec<u8>>);

impl Raw {
    fn new() -> Raw {
        Raw(tar::Builder::new(Vec::new()))
    }
    fn entry(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> &mut Raw {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(data.len() as u64);
        if link.is_empty() {
            self.0.append_data(&mut h, name, data).unwrap();
        } else {
            self.0.append_link(&mut h, name, link).unwrap();
        }
        self
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Raw {
        self.entry(tar::EntryType::Directory, name, "", mode, b"")
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Raw {
        self.entry(tar::EntryType::Regular, name, "", 0o644, data)
    }
    fn symlink(&mut self, name: &str, to: &str) -> &mut Raw {
        self.entry(tar::EntryType::Symlink, name, to, 0o777, b"")
    }
    fn hardlink(&mut self, name: &str, to: &str) -> &mut Raw {
        self.entry(tar::EntryType::Link, name, to, 0o644, b"")
    }
    fn bytes(&mut self) -> Vec<u8> {
        self.0
            .get_mut()
            .clone()
            .into_iter()
            .chain([0u8; 1024])
            .collect()
    }
}

/// (mode, uid, gid, nlink, content) of a host path, to prove it did not change.
fn host_state(p: &Path) -> (u32, u32, u32, u64, Vec<u8>) {
    let m = fs::symlink_metadata(p).unwrap();
    let content = if m.is_file() {
        fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    (m.mode(), m.uid(), m.gid(), m.nlink(), content)
}

/// A host dir (0700) holding a file (0600), both owned by `owner`, and an empty target dir.
struct Scene {
    _t: tempfile::TempDir,
    host_dir: PathBuf,
    host_file: PathBuf,
    dest: PathBuf,
}

impl Scene {
    fn new(owner: u32) -> Scene {
        let t = tempfile::Builder::new()
            .prefix("kiln-hostile-")
            .tempdir()
            .unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let host_dir = t.path().join("host");
        let host_file = host_dir.join("secret");
        let dest = t.path().join("dest");
        fs::create_dir(&host_dir).unwrap();
        fs::write(&host_file, b"precious").unwrap();
        fs::create_dir(&dest).unwrap();
        fs::set_permissions(&host_dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&host_file, fs::Permissions::from_mode(0o600)).unwrap();
        for p in [&host_dir, &host_file, &dest] {
            std::os::unix::fs::lchown(p, Some(owner), Some(owner)).unwrap();
        }
        Scene {
            _t: t,
            host_dir,
            host_file,
            dest,
        }
    }

    fn state(&self) -> Vec<(u32, u32, u32, u64, Vec<u8>)> {
        vec![host_state(&self.host_dir), host_state(&self.host_file)]
    }

    /// `d/` and `f/` (0777 and 06777), then `d` → the host dir and `f` → the host file,
    /// then entries through `d`: issue 12.3's layer.
    fn dir_then_symlink_layer(&self) -> Vec<u8> {
        let dir = self.host_dir.display().to_string();
        let file = self.host_file.display().to_string();
        Raw::new()
            .dir("d/", 0o777)
            .dir("f/", 0o6777)
            .dir("d/sub/", 0o777)
            .symlink("d", &dir)
            .symlink("f", &file)
            .file("d/x", b"through the link")
            .file("d/secret", b"overwritten")
            .bytes()
    }

    /// Hard links to `../../host/secret`, through a symlinked parent, and to the symlink.
    fn hardlink_layer(&self) -> Vec<u8> {
        let dir = self.host_dir.display().to_string();
        Raw::new()
            .hardlink("h1", "../../host/secret")
            .symlink("s", &dir)
            .hardlink("h2", "s/secret")
            .hardlink("h3", &format!("{dir}/secret"))
            .file("h1", b"overwritten")
            .file("h2", b"overwritten")
            .bytes()
    }

    /// Checks what landed inside the root after [`Scene::dir_then_symlink_layer`].
    fn check_inside(&self) {
        let inside = self.dest.join(self.host_dir.strip_prefix("/").unwrap());
        assert_eq!(fs::read(inside.join("x")).unwrap(), b"through the link");
        assert_eq!(fs::read(inside.join("secret")).unwrap(), b"overwritten");
        assert!(
            fs::symlink_metadata(self.dest.join("d"))
                .unwrap()
                .is_symlink()
        );
    }
}

fn opts(ownership: Ownership) -> UnpackOptions {
    UnpackOptions {
        ownership,
        xattrs: false,
        deletions: Deletions::Overlay(OpaqueXattr::for_this_process()),
    }
}

#[test]
fn a_directory_replaced_by_a_symlink_to_the_host_is_not_chmoded_through() {
    if !is_root() {
        println!(
            "SKIPPED: needs root (host files of another owner; the unprivileged run is a child)"
        );
        return;
    }
    let s = Scene::new(4321);
    let before = s.state();
    unpack_layer(
        &s.dir_then_symlink_layer()[..],
        &s.dest,
        &opts(Ownership::Preserve),
    )
    .unwrap();
    assert_eq!(s.state(), before, "the host dir and file changed");
    s.check_inside();
}

#[test]
fn hard_links_out_of_the_root_are_skipped_or_kept_inside() {
    if !is_root() {
        println!("SKIPPED: needs root");
        return;
    }
    let s = Scene::new(4321);
    let before = s.state();
    let report =
        unpack_layer(&s.hardlink_layer()[..], &s.dest, &opts(Ownership::Preserve)).unwrap();
    assert_eq!(s.state(), before, "the host file was linked or changed");
    let skipped = report
        .warnings
        .iter()
        .filter(|w| w.contains("skipped hardlink"))
        .count();
    assert_eq!(skipped, 3, "{:?}", report.warnings);
    assert_eq!(fs::read(s.dest.join("h1")).unwrap(), b"overwritten");
}

const CHILD_ENV: &str = "KILN_TEST_HOSTILE_CHILD";

/// The same layers unpacked by the unprivileged test user: in-process (files owned by the
/// user) and through the rootless id map's helper (`MappedFs`, root of a user namespace).
#[test]
fn an_unprivileged_unpack_leaves_the_users_own_host_files_alone() {
    if !is_root()
        || !Path::new("/usr/bin/setpriv").exists()
        || !Path::new("/usr/bin/newuidmap").exists()
    {
        println!("SKIPPED: needs root, setpriv and newuidmap to run as the unprivileged test user");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/unprivileged-user.sh"
    );
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let gid = nix::unistd::User::from_uid(uid.into())
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let out = Command::new("/usr/bin/setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ])
        .arg(std::env::current_exe().unwrap())
        .arg("--exact")
        .arg(crate::common::test_name(
            module_path!(),
            "unprivileged_child",
        ))
        .args(["--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("HOME", "/tmp")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("CHILD CHECKED"),
        "child failed:\n{text}"
    );
}

#[test]
#[ignore = "run by an_unprivileged_unpack_leaves_the_users_own_host_files_alone"]
fn unprivileged_child() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "run by the parent test"
    );
    let me = nix::unistd::getuid().as_raw();
    // In this process, as the user (no id map).
    let s = Scene::new(me);
    let before = s.state();
    unpack_layer(
        &s.dir_then_symlink_layer()[..],
        &s.dest,
        &opts(Ownership::Ignore),
    )
    .unwrap();
    assert_eq!(
        s.state(),
        before,
        "in-process: the host dir and file changed"
    );
    s.check_inside();
    let s = Scene::new(me);
    let before = s.state();
    unpack_layer(&s.hardlink_layer()[..], &s.dest, &opts(Ownership::Ignore)).unwrap();
    assert_eq!(s.state(), before, "in-process: hard links reached the host");

    // As root of the user's subordinate id map.
    let mapped = kiln::sandbox::MappedFs::detect(env!("CARGO_BIN_EXE_kiln"))
        .expect("the test user has a subordinate id range");
    for layer in [Scene::dir_then_symlink_layer, Scene::hardlink_layer] {
        let s = Scene::new(me);
        let before = s.state();
        let blob = layer(&s);
        mapped.unpack(&mut &blob[..], &s.dest).unwrap();
        assert_eq!(s.state(), before, "mapped: the host dir or file changed");
    }

    // Deletions in overlay form need no privilege: in-process and as root of the map.
    let deletions = Raw::new()
        .file(".wh.gone", b"")
        .dir("o/", 0o755)
        .file("o/.wh..wh..opq", b"")
        .bytes();
    for mapped_run in [false, true] {
        let s = Scene::new(me);
        if mapped_run {
            mapped.unpack(&mut &deletions[..], &s.dest).unwrap();
        } else {
            unpack_layer(&deletions[..], &s.dest, &opts(Ownership::Ignore)).unwrap();
        }
        let gone = fs::symlink_metadata(s.dest.join("gone")).unwrap();
        assert!(is_whiteout(&gone), "mapped: {mapped_run}");
        assert!(is_opaque_dir(&s.dest.join("o")), "mapped: {mapped_run}");
    }
    println!("CHILD CHECKED");
}

/// Three layers unpacked in overlay form and stacked by a real overlay mount show exactly
/// what the layers applied one over another show.
#[test]
fn unpacked_layers_stacked_by_overlay_are_the_image() {
    if !is_root() || !Path::new("/usr/bin/unshare").exists() {
        println!("SKIPPED: needs root and unshare to mount overlay");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let layers: Vec<Vec<u8>> = vec![
        Raw::new()
            .file("a/old", b"1")
            .file("o/sub/f", b"1")
            .file("o/lower", b"1")
            .file("gone", b"1")
            .dir("gone-dir/", 0o755)
            .file("gone-dir/f", b"1")
            .file("keep", b"1")
            .bytes(),
        Raw::new()
            .file(".wh.gone", b"")
            .file(".wh.gone-dir", b"")
            .file("gone-dir/new", b"2")
            .dir("o/", 0o755)
            .file("o/.wh..wh..opq", b"")
            .file("o/new", b"2")
            .file("a/.wh.old", b"")
            .bytes(),
    ];
    let dirs: Vec<PathBuf> = (0..layers.len())
        .map(|i| t.path().join(format!("l{i}")))
        .collect();
    let applied = t.path().join("applied");
    fs::create_dir(&applied).unwrap();
    for (blob, dir) in layers.iter().zip(&dirs) {
        fs::create_dir(dir).unwrap();
        unpack_layer(&blob[..], dir, &opts(Ownership::Preserve)).unwrap();
        unpack_layer(&blob[..], &applied, &UnpackOptions::default()).unwrap();
    }
    assert!(is_whiteout(
        &fs::symlink_metadata(dirs[1].join("gone")).unwrap()
    ));
    assert!(is_opaque_dir(&dirs[1].join("o")));
    assert!(
        is_opaque_dir(&dirs[1].join("gone-dir")),
        "a dir of the same layer replaces the deleted one"
    );

    let top_first: Vec<&Path> = dirs.iter().rev().map(PathBuf::as_path).collect();
    let merged = overlay_listing(t.path(), &top_first);
    assert_eq!(merged, listing(&applied));
    assert_eq!(
        merged,
        ["a", "gone-dir", "gone-dir/new", "keep", "o", "o/new"]
    );

    // An opaque marker at a layer's root hides every layer below: the stack stops there.
    let top = t.path().join("top");
    fs::create_dir(&top).unwrap();
    let blob = Raw::new()
        .file(".wh..wh..opq", b"")
        .file("only", b"3")
        .bytes();
    unpack_layer(&blob[..], &top, &opts(Ownership::Preserve)).unwrap();
    let mut stack = vec![top.as_path()];
    stack.extend(&top_first);
    assert_eq!(visible_layers(&stack), [top.as_path()]);
    unpack_layer(&blob[..], &applied, &UnpackOptions::default()).unwrap();
    assert_eq!(listing(&applied), ["only"]);
}

/// The sorted relative paths under `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// The listing of an overlay of `lowers` (top first), mounted in a private mount namespace.
fn overlay_listing(work: &Path, lowers: &[&Path]) -> Vec<String> {
    let mnt = work.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let script = format!(
        "mount -t overlay overlay -o ro,lowerdir={} {} && cd {} && find . -mindepth 1 | sort",
        lowerdir.join(":"),
        mnt.display(),
        mnt.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}
