//! The layer writer checked with real tools: GNU tar lists and extracts what we write,
//! gzip/zstd decompress it to the tar whose sha256 is the diffID, and the bytes are the
//! same on every run and every thread count.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::layer_fixture as fx;
use kiln::layer::{Compression, DiffKind, Encoding, LayerBlob, LayerOptions, write_layer};

fn write_to(root: &Path, kind: DiffKind, opts: &LayerOptions, out: &Path) -> LayerBlob {
    let f = fs::File::create(out).unwrap();
    write_layer(root, kind, opts, f).unwrap()
}

fn plain() -> LayerOptions {
    LayerOptions {
        encoding: Encoding::plain(),
        ..LayerOptions::default()
    }
}

fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn gnu_tar_lists_the_entries_with_numeric_ids_links_and_xattrs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fx::build(&src);
    let tar_path = t.path().join("layer.tar");
    let blob = write_to(&src, DiffKind::Directory, &plain(), &tar_path);
    assert_eq!(blob.diff_id, blob.digest, "a plain tar is its own blob");
    assert_eq!(blob.size, fs::metadata(&tar_path).unwrap().len());

    let (list, stderr) = run(Command::new("tar")
        .args([
            "-tvv",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-f",
        ])
        .arg(&tar_path));
    assert!(stderr.is_empty(), "GNU tar complained: {stderr}");
    let line = |name: &str| {
        list.lines()
            .find(|l| l.ends_with(name) || l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} not listed in:\n{list}"))
            .to_string()
    };
    // Parents before children, siblings in byte order, no "./" prefix.
    let names: Vec<&str> = list
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    let order = [
        "bin/",
        "bin/tool",
        "data/",
        "data/big.bin",
        "empty",
        "etc/",
        "etc/conf",
    ];
    assert!(order.windows(2).all(|w| pos(w[0]) < pos(w[1])), "{list}");
    assert!(line("hard2").contains("hard2 link to hard1"), "{list}");
    assert!(
        line("etc/link-abs").contains("etc/link-abs -> /etc/conf"),
        "{list}"
    );
    assert!(line("setuid").starts_with("-rwsr-xr-x"), "{list}");
    assert!(line("readonly/").starts_with("dr-xr-xr-x"), "{list}");
    assert!(line("fifo").starts_with("p"), "{list}");
    assert!(
        list.contains(&fx::long_file()),
        "PAX long path missing:\n{list}"
    );
    assert!(
        list.contains(&format!("long/far-link -> /{}", fx::long_file())),
        "{list}"
    );
    assert!(list.contains("user.comment"), "xattr not listed:\n{list}");
    if fx::is_root() {
        assert!(line("etc/conf").contains(" 1234/5678 "), "{list}");
        assert!(line("bin/null").starts_with("c"), "{list}");
        assert!(list.contains("security.capability"), "{list}");
    }
}

#[test]
fn gnu_tar_extracts_exactly_the_input_tree() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fx::build(&src);
    let tar_path = t.path().join("layer.tar");
    write_to(&src, DiffKind::Directory, &plain(), &tar_path);
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&out));
    fx::assert_same(&fx::snapshot(&src), &fx::snapshot(&out));
}

#[test]
fn gzip_and_zstd_blobs_decompress_with_the_system_tools_to_the_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fx::build(&src);
    let tar_blob = write_to(&src, DiffKind::Directory, &plain(), &t.path().join("l.tar"));
    for (encoding, tool) in [
        (Encoding::new(Compression::Gzip, Some(6)).unwrap(), "gzip"),
        (Encoding::new(Compression::Zstd, Some(3)).unwrap(), "zstd"),
    ] {
        let path = t.path().join(format!("l.{tool}"));
        let opts = LayerOptions {
            encoding,
            ..LayerOptions::default()
        };
        let blob = write_to(&src, DiffKind::Directory, &opts, &path);
        assert_eq!(blob.diff_id, tar_blob.diff_id, "{tool}: same tar inside");
        let (digest, size) = kiln::Digest::of_reader(fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(
            (blob.digest, blob.size),
            (digest, size),
            "{tool}: digest of the file"
        );
        assert!(blob.size < tar_blob.size / 2, "{tool}: {} bytes", blob.size);
        let out = Command::new(tool).arg("-dc").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            kiln::Digest::of(&out.stdout),
            tar_blob.diff_id,
            "{tool} -d output"
        );
    }
}

#[test]
fn same_input_gives_the_same_bytes_across_runs_trees_and_thread_counts() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    fx::build(&a);
    fx::build(&b);
    // A file several compression blocks long, so the pool really works in parallel.
    for root in [&a, &b] {
        fs::write(root.join("data/huge.bin"), fx::data(9 * 1024 * 1024, 7)).unwrap();
        fx::set_mtimes(root, fx::MTIME);
    }
    for encoding in [
        Encoding::new(Compression::Gzip, Some(6)).unwrap(),
        Encoding::new(Compression::Zstd, Some(3)).unwrap(),
    ] {
        let opts = LayerOptions {
            encoding,
            ..LayerOptions::default()
        };
        let mut seen = Vec::new();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for root in [&a, &b] {
                let mut out = Vec::new();
                let blob = pool
                    .install(|| write_layer(root, DiffKind::Directory, &opts, &mut out).unwrap());
                assert_eq!(blob.digest, kiln::Digest::of(&out));
                seen.push(blob);
            }
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "{encoding:?}: {seen:#?}"
        );
    }
}

#[test]
fn source_date_epoch_clamps_only_later_mtimes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fx::build(&src);
    let epoch = 1_700_000_000;
    let opts = LayerOptions {
        source_date_epoch: Some(epoch),
        ..plain()
    };
    let mut out = Vec::new();
    write_layer(&src, DiffKind::Directory, &opts, &mut out).unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    let mut checked = 0;
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mtime = e.header().mtime().unwrap() as i64;
        let want = if path == "future" { epoch } else { fx::MTIME };
        assert_eq!(mtime, want, "{path}");
        assert_eq!(
            e.header().as_ustar().unwrap().uname,
            [0u8; 32],
            "{path}: no user names"
        );
        checked += 1;
    }
    assert!(checked > 15);
}

#[test]
fn an_id_map_turns_host_ids_into_image_ids_and_refuses_unmapped_ones() {
    if !fx::is_root() {
        println!("SKIPPED: chown to sub-ids needs root");
        return;
    }
    use kiln::layer::{IdMap, LayerIdMap};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    std::os::unix::fs::lchown(src.join("f"), Some(100_033), Some(100_044)).unwrap();
    let map = IdMap::parse("0 1000 1\n1 100000 65536").unwrap();
    let opts = LayerOptions {
        id_map: Some(LayerIdMap {
            uids: map.clone(),
            gids: map,
        }),
        ..plain()
    };
    let mut out = Vec::new();
    write_layer(&src, DiffKind::Directory, &opts, &mut out).unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    let e = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        (e.header().uid().unwrap(), e.header().gid().unwrap()),
        (34, 45)
    );

    std::os::unix::fs::lchown(src.join("f"), Some(5), None).unwrap();
    let err = write_layer(&src, DiffKind::Directory, &opts, std::io::sink()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("uid 5") && msg.contains("/f"), "{msg}");
}

/// The upper dir of a real overlay mount: whiteouts are 0/0 char devices (hard linked to one
/// shared inode) and a replaced directory is opaque.
#[test]
fn a_real_overlay_upper_dir_becomes_oci_whiteouts() {
    if !fx::is_root() {
        println!("SKIPPED: mounting overlayfs needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    for d in ["lower/gone-dir/sub", "upper", "work", "merged"] {
        fs::create_dir_all(p(d)).unwrap();
    }
    fs::write(p("lower/gone"), b"x").unwrap();
    fs::write(p("lower/gone2"), b"x").unwrap();
    fs::create_dir_all(p("lower/replaced")).unwrap();
    fs::write(p("lower/replaced/old"), b"x").unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        p("lower").display(),
        p("upper").display(),
        p("work").display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(p("merged"))
        .status()
        .unwrap();
    if !mounted.success() {
        println!("SKIPPED: overlay mount refused here");
        return;
    }
    let m = |s: &str| p("merged").join(s);
    let changed = (|| -> std::io::Result<()> {
        fs::remove_file(m("gone"))?;
        fs::remove_file(m("gone2"))?;
        fs::remove_dir_all(m("gone-dir"))?;
        fs::remove_dir_all(m("replaced"))?;
        fs::create_dir(m("replaced"))?;
        fs::write(m("replaced/new"), b"y")?;
        fs::write(m("added"), b"z")
    })();
    Command::new("umount").arg(p("merged")).status().unwrap();
    changed.unwrap();
    let upper = p("upper");
    xattr::set(upper.join("added"), "trusted.overlay.origin", b"junk").unwrap();

    let mut out = Vec::new();
    write_layer(&upper, DiffKind::OverlayUpper, &plain(), &mut out).unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        assert!(
            matches!(
                e.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Directory
            ),
            "{name}: whiteouts must not stay devices"
        );
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let key = r.unwrap().key().unwrap().to_string();
                assert!(
                    !key.contains("overlay."),
                    "{name}: overlay xattr {key} leaked"
                );
            }
        }
        names.push(name);
    }
    // Whiteouts sit where the deleted name sorts (as docker's and containerd's differs do).
    assert_eq!(
        names,
        [
            "added",
            ".wh.gone",
            ".wh.gone-dir",
            ".wh.gone2",
            "replaced/",
            "replaced/.wh..wh..opq",
            "replaced/new"
        ]
    );
}
