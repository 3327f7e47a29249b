//! COPY and ADD end to end: `kiln build` into a temp store, the image written as an OCI
//! layout and unpacked with umoci, the file tree inspected (and compared with buildah's
//! build of the same Dockerfile where buildah is installed).
//!
//! Needs root (umoci keeps the layers' owners only as root) and umoci; without them each test
//! prints SKIPPED and returns.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::build_support::{have, kiln, missing, run_ok};

/// Builds `ctx` (with its Dockerfile) with kiln; the stderr on failure.
fn kiln_build(work: &Path, ctx: &Path, extra: &[&str]) -> Result<Output, String> {
    let layout = work.join("layout");
    let _ = fs::remove_dir_all(&layout);
    let out = kiln(&work.join("store"))
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "copytest:latest",
            "-o",
        ])
        .arg(format!("type=oci,dest={}", layout.display()))
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The root filesystem of the image in the OCI layout `layout` (tag `latest`).
fn unpack(layout: &Path, bundle: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(bundle);
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:latest", layout.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}

/// Builds with kiln and returns the unpacked root filesystem.
fn build_tree(work: &Path, ctx: &Path) -> PathBuf {
    kiln_build(work, ctx, &[]).unwrap_or_else(|e| panic!("kiln build failed:\n{e}"));
    unpack(&work.join("layout"), &work.join("bundle"))
}

/// One line per path below `root`: type, mode, owner, and symlink target or file content.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_file() {
            format!(
                "{:?}",
                String::from_utf8_lossy(&fs::read(e.path()).unwrap())
            )
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:o} {}:{} {what}",
            m.mode(),
            m.uid(),
            m.gid()
        ));
    }
    out
}

fn line<'a>(list: &'a [String], path: &str) -> &'a str {
    list.iter()
        .find(|l| l.split(' ').next() == Some(path))
        .unwrap_or_else(|| panic!("{path} not in the image:\n{}", list.join("\n")))
}

fn write(path: &Path, body: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
}

/// A tar of `t/a` (0640) and `t/sub/b`, owned 1234:5678, with a `./` root entry.
fn owned_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let entries: [(&str, &[u8], u32, tar::EntryType); 4] = [
        ("./", b"", 0o755, tar::EntryType::Directory),
        ("./a", b"a\n", 0o640, tar::EntryType::Regular),
        ("./sub/", b"", 0o755, tar::EntryType::Directory),
        ("./sub/b", b"b\n", 0o644, tar::EntryType::Regular),
    ];
    for (p, body, mode, kind) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        h.set_path(p).unwrap();
        h.set_cksum();
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    crate::registry_support::gzip_layer(bytes).0
}

fn bzip(bytes: &[u8]) -> Vec<u8> {
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(bytes).unwrap();
    bz.finish().unwrap()
}

/// The context of the buildah comparison: a base tree with symlinks, passwd and group.
fn symlink_context(ctx: &Path) {
    fs::create_dir_all(ctx.join("base/srv/app")).unwrap();
    fs::create_dir_all(ctx.join("base/srv/abs")).unwrap();
    symlink("srv/app", ctx.join("base/app")).unwrap();
    symlink("/srv/abs", ctx.join("base/abslink")).unwrap();
    symlink("../../../../srv/app", ctx.join("base/up")).unwrap();
    symlink("/etc/group", ctx.join("base/grouplink")).unwrap();
    write(
        &ctx.join("base/etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnog:x:1001:4242::/:/bin/sh\n",
    );
    write(&ctx.join("base/etc/group"), b"root:x:0:\napp:x:1000:\n");
    write(&ctx.join("x"), b"hi\n");
    write(&ctx.join("arch.tgz"), &gzip(&owned_tar()));
    write(&ctx.join("arch.tbz"), &bzip(&owned_tar()));
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch
COPY base/ /
COPY x /app/
COPY x /abslink/
COPY x /up/viaup
COPY x /app/deep/er/
COPY --chown=app --chmod=0700 x /newp/q/r/
COPY --chown=nog x /nog
ADD arch.tgz /ext/
ADD --chown=app arch.tbz /extc
ADD --chmod=0700 arch.tgz /extm/
COPY x /etc
COPY x /grouplink
",
    );
}

#[test]
fn destinations_through_image_symlinks_archives_and_owners_match_buildah() {
    if let Some(skip) = missing(&["umoci"]) {
        return println!("{skip}");
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    symlink_context(&ctx);
    let kiln = listing(&build_tree(&t.path().join("kiln"), &ctx));

    // What buildah 1.28 produced for this Dockerfile (checked below against a live run): one
    // `path mode owner content` line per path.
    for want in [
        "app 120777 0:0 -> srv/app",
        "srv/app/x 100644 0:0 \"hi\\n\"",
        "srv/abs/x 100644 0:0 \"hi\\n\"",
        "srv/app/viaup 100644 0:0 \"hi\\n\"",
        "srv/app/deep/er/x 100644 0:0 \"hi\\n\"",
        "newp/q 40755 1000:1000 ",
        "newp/q/r/x 100700 1000:1000 \"hi\\n\"",
        "nog 100644 1001:4242 \"hi\\n\"",
        "ext 40755 1234:5678 ",
        "ext/a 100640 1234:5678 \"a\\n\"",
        "extc/sub/b 100644 1234:5678 \"b\\n\"",
        "extm/a 100640 1234:5678 \"a\\n\"",
        "etc/x 100644 0:0 \"hi\\n\"",
        // A file written at a symlink replaces the link; the link's target is untouched.
        "grouplink 100644 0:0 \"hi\\n\"",
        "etc/group 100644 0:0 \"root:x:0:\\napp:x:1000:\\n\"",
    ] {
        let path = want.split(' ').next().unwrap();
        assert_eq!(line(&kiln, path), want);
    }
    assert!(!kiln.iter().any(|l| l.starts_with("app/")), "{kiln:#?}");

    if !have("buildah") {
        println!("SKIPPED: the buildah comparison (buildah not installed)");
        return;
    }
    let bh = t.path().join("buildah");
    let b = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(bh.join("root"))
            .arg("--runroot")
            .arg(bh.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    run_ok(b(&["bud", "--isolation", "chroot", "-t", "copytest"]).arg(&ctx));
    let layout = format!("oci:{}:latest", bh.join("layout").display());
    run_ok(&mut b(&["push", "copytest", &layout]));
    let theirs = listing(&unpack(&bh.join("layout"), &bh.join("bundle")));
    let _ = b(&["rmi", "--all", "--force"]).output();
    assert_eq!(kiln, theirs, "kiln (left) and buildah (right) differ");
}

#[test]
fn add_extracts_every_archive_format_detected_by_content() {
    if let Some(skip) = missing(&["umoci"]) {
        return println!("{skip}");
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    let tar = owned_tar();
    let mut xz =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    xz.write_all(&tar).unwrap();
    write(&ctx.join("plain.bin"), &tar);
    write(&ctx.join("gz.bin"), &gzip(&tar));
    write(&ctx.join("bz.bin"), &bzip(&tar));
    write(&ctx.join("xz.bin"), &xz.finish().unwrap());
    write(
        &ctx.join("zst.bin"),
        &zstd::encode_all(&tar[..], 1).unwrap(),
    );
    // gzip of something that is not a tar: copied as it is, like Docker does.
    write(&ctx.join("notes.txt.gz"), &gzip(b"just text"));
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch
ADD plain.bin /plain/
ADD gz.bin /gz
ADD bz.bin xz.bin /multi/
ADD zst.bin /zst/
ADD notes.txt.gz /n/
ADD --unpack=false gz.bin /kept/
",
    );
    let list = listing(&build_tree(t.path(), &ctx));
    for dir in ["plain", "gz", "multi", "zst"] {
        assert_eq!(
            line(&list, &format!("{dir}/a")),
            format!("{dir}/a 100640 1234:5678 \"a\\n\""),
        );
        assert_eq!(
            line(&list, &format!("{dir}/sub/b")),
            format!("{dir}/sub/b 100644 1234:5678 \"b\\n\""),
        );
    }
    assert!(line(&list, "n/notes.txt.gz").starts_with("n/notes.txt.gz 100644 0:0"));
    assert!(line(&list, "kept/gz.bin").starts_with("kept/gz.bin 100644 0:0"));
}

/// A one-connection-at-a-time HTTP server for `files` (path, body; served with a
/// Last-Modified) that answers 404 to anything else, until the test ends.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let target = text.split(' ').nth(1).unwrap_or("");
            let path = target.split('?').next().unwrap_or("");
            let _ = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => conn
                    .write_all(format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
                        body.len()
                    ).as_bytes())
                    .and_then(|()| conn.write_all(body)),
                None => conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    addr
}

#[test]
fn add_url_downloads_with_mode_0600_last_modified_and_a_verified_checksum() {
    if let Some(skip) = missing(&["umoci"]) {
        return println!("{skip}");
    }
    const BODY: &[u8] = b"downloaded content\n";
    let addr = serve(vec![
        ("/dir/data.txt", BODY.to_vec()),
        ("/dir/a.tgz", gzip(&owned_tar())),
    ]);
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    let sum = kiln::Digest::of(BODY);
    write(
        &ctx.join("Dockerfile"),
        format!(
            "FROM scratch
ADD http://{addr}/dir/data.txt /dl/
ADD --checksum={sum} http://{addr}/dir/data.txt /dl/named
ADD --chmod=0644 http://{addr}/dir/data.txt?x=1 /dl/
ADD http://{addr}/dir/a.tgz /remote/
ADD --unpack=true http://{addr}/dir/a.tgz /unpacked/
"
        )
        .as_bytes(),
    );
    let rootfs = build_tree(t.path(), &ctx);
    let list = listing(&rootfs);
    assert_eq!(
        line(&list, "dl/data.txt"),
        "dl/data.txt 100644 0:0 \"downloaded content\\n\"",
        "the last ADD (--chmod=0644) wrote it again"
    );
    assert_eq!(
        line(&list, "dl/named"),
        "dl/named 100600 0:0 \"downloaded content\\n\""
    );
    // A remote archive is not extracted unless --unpack=true.
    assert!(line(&list, "remote/a.tgz").starts_with("remote/a.tgz 100600 0:0"));
    assert_eq!(
        line(&list, "unpacked/sub/b"),
        "unpacked/sub/b 100644 1234:5678 \"b\\n\""
    );
    let mtime = fs::metadata(rootfs.join("dl/named")).unwrap().mtime();
    assert_eq!(mtime, 1_445_412_480, "mtime from Last-Modified");

    // A rebuild of the same content is served from the cache.
    let again = kiln_build(t.path(), &ctx, &[]).unwrap();
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(!log.contains("cache miss"), "{log}");

    let wrong = format!("sha256:{}", "0".repeat(64));
    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={wrong} http://{addr}/dir/data.txt /x\n").as_bytes(),
    );
    let err = kiln_build(t.path(), &ctx, &[]).unwrap_err();
    assert!(
        err.contains("Dockerfile:2")
            && err.contains("checksum mismatch")
            && err.contains(&sum.to_string()),
        "{err}"
    );

    write(
        &ctx.join("Dockerfile"),
        format!("FROM scratch\nADD http://{addr}/missing.txt /x\n").as_bytes(),
    );
    let err = kiln_build(t.path(), &ctx, &[]).unwrap_err();
    assert!(err.contains("Dockerfile:2") && err.contains("404"), "{err}");
}

#[test]
fn copy_parents_symbolic_chmod_and_link() {
    if let Some(skip) = missing(&["umoci"]) {
        return println!("{skip}");
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write(&ctx.join("a/b/c.txt"), b"b");
    write(&ctx.join("a/d/c.txt"), b"d");
    write(&ctx.join("x/y/z"), b"z");
    write(&ctx.join("tool/run"), b"#!/bin/sh\n");
    fs::set_permissions(
        ctx.join("tool/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    write(&ctx.join("tool/data"), b"d");
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch
COPY --parents a/*/c.txt /out/
COPY --parents ./x/./y /piv/
COPY --link --chmod=u=rwX,go=rX tool /tool/
",
    );
    let list = listing(&build_tree(t.path(), &ctx));
    assert!(line(&list, "out/a/b/c.txt").ends_with("\"b\""));
    assert!(line(&list, "out/a/d/c.txt").ends_with("\"d\""));
    assert!(line(&list, "piv/y/z").ends_with("\"z\""));
    assert!(!list.iter().any(|l| l.starts_with("piv/x")), "{list:#?}");
    assert!(line(&list, "tool/run").starts_with("tool/run 100755 "));
    assert!(line(&list, "tool/data").starts_with("tool/data 100644 "));
}

#[test]
fn chown_to_a_missing_group_or_a_git_source_fails_naming_the_line() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write(
        &ctx.join("base/etc/passwd"),
        b"app:x:1000:1000::/:/bin/sh\n",
    );
    write(&ctx.join("base/etc/group"), b"app:x:1000:\n");
    write(&ctx.join("x"), b"x");
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch\nCOPY base/ /\nCOPY --chown=app:staff x /x\n",
    );
    let err = kiln_build(t.path(), &ctx, &[]).unwrap_err();
    assert!(
        err.contains("Dockerfile:3") && err.contains("group \"staff\""),
        "{err}"
    );
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch\nADD https://github.com/moby/buildkit.git#v0.10.1 /src\n",
    );
    let err = kiln_build(t.path(), &ctx, &[]).unwrap_err();
    assert!(err.contains("Dockerfile:2") && err.contains("git"), "{err}");
}

#[test]
fn paths_deleted_in_an_upper_layer_are_not_seen_by_copy() {
    if let Some(skip) = missing(&["umoci"]) {
        return println!("{skip}");
    }
    if !have("skopeo") {
        println!("SKIPPED: needs skopeo");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("base-layout");
    let bundle = t.path().join("base-bundle");
    let image = format!("{}:base", layout.display());
    let umoci = |args: &[&str]| {
        let mut c = Command::new("umoci");
        c.args(args);
        run_ok(&mut c);
    };
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    // Lower layer: /gone (0700, 77:77), /srv and the symlink /app -> /srv.
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    fs::create_dir(rootfs.join("gone")).unwrap();
    fs::set_permissions(
        rootfs.join("gone"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::chown(rootfs.join("gone"), Some(77), Some(77)).unwrap();
    fs::create_dir(rootfs.join("srv")).unwrap();
    symlink("/srv", rootfs.join("app")).unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    fs::remove_dir_all(&bundle).unwrap();
    // Upper layer: both deleted (whiteouts).
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    fs::remove_dir(bundle.join("rootfs/gone")).unwrap();
    fs::remove_file(bundle.join("rootfs/app")).unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);

    let registry = crate::registry_support::TestRegistry::start("plain");
    let base = format!("{}/kiln-test/whiteouts:latest", registry.addr);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{image}"))
            .arg(format!("docker://{base}")),
    );

    let ctx = t.path().join("ctx");
    write(&ctx.join("x"), b"x");
    write(
        &ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY x /gone/x\nCOPY x /app/\n").as_bytes(),
    );
    let list = listing(&build_tree(&t.path().join("kiln"), &ctx));
    assert_eq!(
        line(&list, "gone"),
        "gone 40755 0:0 ",
        "a fresh parent, not the deleted one"
    );
    assert_eq!(
        line(&list, "app"),
        "app 40755 0:0 ",
        "the deleted symlink is not followed"
    );
    assert!(line(&list, "app/x").ends_with("\"x\""));
    assert!(!list.iter().any(|l| l.starts_with("srv/x")), "{list:#?}");
}

/// Where kiln follows BuildKit rather than buildah 1.28: a copied directory that meets a
/// symlink to a directory in the image merges into the link's target (BuildKit's copier
/// stats the destination through the link); buildah replaces the link with a directory,
/// which on a usr-merged base (`/lib -> usr/lib`) would hide every library.
#[test]
fn a_copied_directory_merges_into_the_target_of_an_image_symlink() {
    if let Some(skip) = missing(&["umoci"]) {
        return println!("{skip}");
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(ctx.join("base/usr/lib")).unwrap();
    write(&ctx.join("base/usr/lib/libc.so"), b"libc");
    symlink("usr/lib", ctx.join("base/lib")).unwrap();
    write(&ctx.join("tree/lib/foo"), b"foo");
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch\nCOPY base/ /\nCOPY tree/ /\n",
    );
    let list = listing(&build_tree(t.path(), &ctx));
    assert_eq!(line(&list, "lib"), "lib 120777 0:0 -> usr/lib");
    assert!(line(&list, "usr/lib/foo").ends_with("\"foo\""));
    assert!(line(&list, "usr/lib/libc.so").ends_with("\"libc\""));
}

/// Builds `ctx` with kiln and returns the image's file tree as its layers give it.
fn image_tree(
    work: &Path,
    ctx: &Path,
) -> std::collections::BTreeMap<String, crate::build_support::Node> {
    kiln_build(work, ctx, &[]).unwrap_or_else(|e| panic!("kiln build failed:\n{e}"));
    crate::build_support::file_tree(&crate::build_support::read_layout(
        &work.join("layout"),
        "latest",
    ))
}

#[test]
fn a_copied_directory_lands_in_a_0755_destination_like_buildkit_makes_it() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write(&ctx.join("sub/f"), b"f\n");
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch\nCOPY sub /sub\nCOPY sub /a/b/\n",
    );
    fs::set_permissions(ctx.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
    let tree = image_tree(&t.path().join("kiln"), &ctx);
    for dir in ["sub", "a", "a/b"] {
        assert_eq!(tree[dir].mode, 0o755, "/{dir}: {}", tree[dir]);
    }
    assert_eq!(tree["sub/f"].kind, "file");
}

#[test]
fn hard_links_stay_one_file_within_a_copy_and_a_copy_from_a_stage() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write(&ctx.join("d/one"), b"shared\n");
    for name in ["d/two", "d/sub/three", "d/0-first"] {
        fs::create_dir_all(ctx.join(name).parent().unwrap()).unwrap();
        fs::hard_link(ctx.join("d/one"), ctx.join(name)).unwrap();
    }
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch AS s\nCOPY d /src/\nFROM s\nCOPY --from=s /src /dst/\n",
    );
    let tree = image_tree(&t.path().join("kiln"), &ctx);
    for top in ["src", "dst"] {
        // The name that sorts first holds the content; the three others link to it.
        let first = format!("{top}/0-first");
        assert_eq!(tree[&first].kind, "file", "{}", tree[&first]);
        for other in ["one", "two", "sub/three"] {
            let node = &tree[&format!("{top}/{other}")];
            assert_eq!(node.kind, format!("hardlink -> {first}"), "{top}/{other}");
        }
    }
}

#[test]
fn copy_from_a_stage_keeps_the_owners_files_have_there() {
    if !crate::build_support::is_root() {
        return println!("SKIPPED: needs root (an unprivileged unpack of the stage cannot chown)");
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write(&ctx.join("d/f"), b"f\n");
    write(
        &ctx.join("Dockerfile"),
        b"FROM scratch AS s\nCOPY --chown=5:6 d /d/\n\
          FROM scratch\nCOPY --from=s /d /kept/\nCOPY --from=s --chown=7:8 /d /chowned/\nCOPY d /ctx/\n",
    );
    let tree = image_tree(&t.path().join("kiln"), &ctx);
    let owner = |p: &str| (tree[p].uid, tree[p].gid);
    assert_eq!(owner("kept/f"), (5, 6));
    assert_eq!(owner("chowned/f"), (7, 8));
    // The context's owners are the host's: Docker never copies them.
    assert_eq!(owner("ctx/f"), (0, 0));
}
