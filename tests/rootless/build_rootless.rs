//! `kiln build` as an unprivileged user with a subordinate id range (`kilntest`, made by
//! `tests/scripts/unprivileged-user.sh`), end to end: base layers unpacked with their owners
//! (so `USER app` can write its home), files of sub-uids with modes 0600/0700 written into the
//! layer with their image owners, the store cleaned by `rmi` + `prune` as that user, and the
//! example projects giving the same images as root builds. Also the single-id fallback (no `newuidmap`: one warning, files
//! owned by root in the image).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build_support::{
    bases, kiln, missing, missing_for_bases, read_layout, run_ok, succeeded,
};

const EPOCH: &str = "1700000000";

/// Root is needed to become `kilntest` and to run podman; the bases need their registry.
fn skip_reason() -> Option<String> {
    missing_for_bases().or_else(|| missing(&["podman", "newuidmap", "setpriv"]))
}

/// The unprivileged user: (uid, gid).
fn user() -> (u32, u32) {
    let runner = crate::sandbox_support::runner();
    let (_, uid, gid) = runner.user.expect("tests run as root here");
    (uid, gid)
}

/// `kiln ARGS` as `kilntest` with the store `store`, from `/`.
fn kiln_as_user(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = crate::sandbox_support::kiln_as_test_user(store);
    cmd.args(args).envs(env.iter().copied());
    cmd
}

/// A dir under /tmp owned by `kilntest` (its store, context and outputs go there).
fn user_tempdir() -> tempfile::TempDir {
    crate::sandbox_support::runner().tempdir()
}

/// `tar -tvv` of a gzip'd layer blob (GNU tar, numeric owners): `(mode, owner, path)` rows.
fn tar_listing(blob: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("tar")
        .args(["-tvvz", "--numeric-owner", "-f"])
        .arg(blob)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tvv {}", blob.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[5..].join(" "))
        })
        .collect()
}

/// Runs `cmd` (stdin empty) for its output, whatever its status.
fn run(mut cmd: Command) -> std::process::Output {
    cmd.stdin(std::process::Stdio::null()).output().unwrap()
}

fn entry<'a>(rows: &'a [(String, String, String)], path: &str) -> (&'a str, &'a str) {
    rows.iter()
        .find(|r| r.2 == path)
        .map(|r| (r.0.as_str(), r.1.as_str()))
        .unwrap_or_else(|| panic!("{path} not in the layer: {rows:?}"))
}

/// Files under the store that are not bookkeeping (image list, lock files), and entries not
/// owned by the user (sub-uid files an unprivileged remove would have left).
fn store_leftovers(store: &Path, uid: u32) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut foreign = Vec::new();
    for e in walkdir::WalkDir::new(store).into_iter().flatten() {
        let p = e.path().to_path_buf();
        if e.metadata().unwrap().uid() != uid {
            foreign.push(p.clone());
        }
        // Bookkeeping that holds no image data: the image records, locks, the store's marker,
        // and the bounded record of which registry repositories hold which blobs (a hint for
        // push mounts).
        let bookkeeping = p.file_name().is_some_and(|n| {
            n == "images.json"
                || n == "kiln-store"
                || n == "blob-locations.json"
                || n.to_string_lossy().ends_with(".lock")
        });
        if !e.file_type().is_dir() && !bookkeeping {
            files.push(p);
        }
    }
    (files, foreign)
}

const DOCKERFILE: &str = r#"FROM {BASE}/busybox:latest
# Debian's busybox-static has no adduser applet: add the user the way it would.
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd \
 && echo 'app:x:1000:' >> /etc/group \
 && mkdir -p /home/app && chown app:app /home/app \
 && su app -c 'umask 077; echo secret > /home/app/f; mkdir /home/app/private; echo p > /home/app/private/g' \
 && mkdir /data && echo owned > /data/owned && chown -R 1000:1000 /data
USER app
RUN test "$(stat -c %u:%g:%a /home/app)" = 1000:1000:755 \
 && test "$(stat -c %u:%a /home/app/private)" = 1000:700 \
 && echo hello > /home/app/hello && cat /home/app/f /home/app/private/g
CMD ["cat", "/home/app/hello", "/home/app/f", "/home/app/private/g", "/data/owned"]
"#;

#[test]
fn a_user_build_keeps_owners_and_modes_runs_under_podman_and_leaves_a_clean_store() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let (uid, _) = user();
    let registry = bases().addr();
    let tmp = user_tempdir();
    let (store, ctx, out) = (
        tmp.path().join("store"),
        tmp.path().join("ctx"),
        tmp.path().join("out"),
    );
    for d in [&ctx, &out] {
        std::fs::create_dir(d).unwrap();
    }
    let base = format!("{registry}/kiln-test");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE.replace("{BASE}", &base)).unwrap();
    crate::sandbox_support::runner().give(tmp.path());

    let layout = out.join("layout");
    let dest = format!("--output=type=oci,dest={}", layout.display());
    let stderr = succeeded(&run(kiln_as_user(
        &store,
        &["build", "-t", "rootless-app", &dest, ctx.to_str().unwrap()],
        &[],
    )));
    assert!(stderr.contains("rootless isolation"), "{stderr}");
    // Each step's scratch (overlay's own mode-000 work dirs included) is removed by the
    // unprivileged user itself, right after the step.
    assert!(!stderr.contains("could not remove"), "{stderr}");
    assert!(
        !stderr.contains("maps only uid"),
        "kilntest has a range: {stderr}"
    );

    // The owners and modes in the layers, as GNU tar reads them.
    let layers = read_layout(&layout, "latest").layers;
    assert_eq!(layers.len(), 3, "base + two RUN layers");
    let first = tar_listing(&layers[1]);
    assert_eq!(entry(&first, "home/app/"), ("drwxr-xr-x", "1000/1000"));
    assert_eq!(entry(&first, "home/app/f"), ("-rw-------", "1000/1000"));
    assert_eq!(
        entry(&first, "home/app/private/"),
        ("drwx------", "1000/1000")
    );
    assert_eq!(
        entry(&first, "home/app/private/g"),
        ("-rw-------", "1000/1000")
    );
    assert_eq!(entry(&first, "data/owned"), ("-rw-r--r--", "1000/1000"));
    assert_eq!(entry(&first, "etc/passwd"), ("-rw-r--r--", "0/0"));
    let second = tar_listing(&layers[2]);
    assert_eq!(
        entry(&second, "home/app/hello"),
        ("-rw-r--r--", "1000/1000")
    );

    // Pushed by the user, run by podman.
    let target = format!("{registry}/rootless/app:latest");
    run_ok(&mut kiln_as_user(
        &store,
        &["push", "-q", "rootless-app", &target],
        &[],
    ));
    let run = run_ok(
        crate::common::podman()
            .arg("--root")
            .arg(tmp.path().join("podman-root"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
            .args(["run", "--rm", "--network", "none", "--tls-verify=false"])
            .arg(&target),
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello\nsecret\np\nowned\n"
    );

    // Nothing of the build is left running or mounted; no step scratch dir stays.
    let marker = store.to_string_lossy().into_owned();
    assert_eq!(
        crate::sandbox_support::processes_with(&marker),
        Vec::<u32>::new()
    );
    assert_eq!(
        crate::sandbox_support::mounts_mentioning(&store),
        Vec::<String>::new()
    );
    let scratch: Vec<_> = std::fs::read_dir(store.join("scratch"))
        .unwrap()
        .flatten()
        .collect();
    assert!(scratch.is_empty(), "RUN scratch dirs left: {scratch:?}");

    // rmi + prune as the user remove everything, sub-uid files included.
    for name in ["rootless-app", &bases().busybox()] {
        run_ok(&mut kiln_as_user(&store, &["rmi", name], &[]));
    }
    run_ok(&mut kiln_as_user(
        &store,
        &["prune", "--keep-duration", "0s"],
        &[],
    ));
    let (files, foreign) = store_leftovers(&store, uid);
    assert_eq!(files, Vec::<PathBuf>::new(), "files left in the store");
    assert_eq!(
        foreign,
        Vec::<PathBuf>::new(),
        "entries not owned by kilntest"
    );
}

#[test]
fn the_examples_built_by_the_user_are_the_root_builds_images() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let base = bases().base_arg();
    let tmp = user_tempdir();
    for name in ["shell-app", "multi-stage"] {
        let example = crate::build_support::example_dir(name);
        let build = |who: &str| -> (serde_json::Value, String) {
            let dir = tmp.path().join(format!("{name}-{who}"));
            std::fs::create_dir(&dir).unwrap();
            crate::sandbox_support::runner().give(&dir);
            let (layout, store) = (dir.join("layout"), dir.join("store"));
            let dest = format!("--output=type=oci,dest={}", layout.display());
            let args = ["build", "-t", name, &base, &dest, example.to_str().unwrap()];
            let mut cmd = if who == "root" {
                let mut c = kiln(&store);
                c.args(args).env("SOURCE_DATE_EPOCH", EPOCH);
                c
            } else {
                kiln_as_user(&store, &args, &[("SOURCE_DATE_EPOCH", EPOCH)])
            };
            run_ok(&mut cmd);
            let image = read_layout(&layout, "latest");
            (image.config, image.manifest_digest)
        };
        let (root_config, root_manifest) = build("root");
        let (user_config, user_manifest) = build("kilntest");
        assert_eq!(user_config, root_config, "{name}: image config");
        assert_eq!(
            user_manifest, root_manifest,
            "{name}: same layers (owners, modes, times) as the root build"
        );
    }
}

#[test]
fn without_newuidmap_a_user_build_warns_once_and_owns_every_file_as_root() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let tmp = user_tempdir();
    let (store, ctx) = (tmp.path().join("store"), tmp.path().join("ctx"));
    std::fs::create_dir(&ctx).unwrap();
    let dockerfile = format!(
        "FROM {}\nRUN mkdir -p /srv/a && echo one > /srv/a/one\n\
         RUN echo two > /srv/a/two && stat -c %u /srv/a/one\n",
        bases().busybox()
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    crate::sandbox_support::runner().give(tmp.path());
    let layout = tmp.path().join("layout");
    let dest = format!("--output=type=oci,dest={}", layout.display());
    // A PATH without newuidmap/newgidmap is how a machine without the `uidmap` package looks.
    let stderr = succeeded(&run(kiln_as_user(
        &store,
        &["build", &dest, ctx.to_str().unwrap()],
        &[("PATH", "/nonexistent")],
    )));
    assert_eq!(
        stderr.matches("maps only uid").count(),
        1,
        "one warning: {stderr}"
    );
    let layers = read_layout(&layout, "latest").layers;
    assert_eq!(
        entry(&tar_listing(&layers[1]), "srv/a/one"),
        ("-rw-r--r--", "0/0")
    );
    assert_eq!(
        entry(&tar_listing(&layers[2]), "srv/a/two"),
        ("-rw-r--r--", "0/0")
    );
}

#[test]
fn an_owner_beyond_the_subordinate_range_is_a_clear_error_and_leaves_nothing() {
    if let Some(skip) = skip_reason() {
        return println!("{skip}");
    }
    let registry = bases().addr();
    let tmp = user_tempdir();
    let ctx = |name: &str, text: String| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), text).unwrap();
        dir
    };
    // Root (chroot isolation) can own a file by uid 70000; kilntest's map has 65537 ids.
    let image = format!("{registry}/rootless/big-uid:latest");
    let big = ctx(
        "big",
        format!(
            "FROM {}\nRUN touch /big && chown 70000:70000 /big\n",
            bases().busybox()
        ),
    );
    let root_store = tmp.path().join("root-store");
    for args in [
        vec!["build", "-q", "-t", &image, big.to_str().unwrap()],
        vec!["push", "-q", &image],
    ] {
        run_ok(kiln(&root_store).args(args));
    }
    let user_ctx = ctx("user", format!("FROM {image}\nRUN ls -ln /big\n"));
    let store = tmp.path().join("store");
    crate::sandbox_support::runner().give(&user_ctx);
    let out = run(kiln_as_user(
        &store,
        &["build", user_ctx.to_str().unwrap()],
        &[],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("beyond the 65537 ids of the rootless map")
            && stderr.contains("/etc/subuid"),
        "{stderr}"
    );
    let tmp_left: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        tmp_left.is_empty(),
        "half-unpacked layer left: {tmp_left:?}"
    );
}

/// COPY --from a stage keeps the owners the stage's files have (issue 15 item 8) in a rootless
/// build too, where the stage is unpacked without the right to chown: the owners come from
/// the layers' headers.
#[test]
fn a_user_build_copies_from_a_stage_with_the_stages_owners() {
    if let Some(why) = skip_reason() {
        return println!("{why}");
    }
    let dir = user_tempdir();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("d")).unwrap();
    std::fs::write(ctx.join("d/f"), "f\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS s\nCOPY --chown=5:6 d /d/\n\
         FROM scratch\nCOPY --from=s /d /kept/\nCOPY --from=s --chown=7:8 /d /chowned/\n",
    )
    .unwrap();
    crate::sandbox_support::runner().give(dir.path());
    let layout = dir.path().join("layout");
    let store = dir.path().join("store");
    let dest = format!("--output=type=oci,dest={}", layout.display());
    let ctx_arg = ctx.display().to_string();
    succeeded(&run(kiln_as_user(
        &store,
        &["build", "-t", "owners", &dest, &ctx_arg],
        &[],
    )));
    let tree = crate::build_support::file_tree(&read_layout(&layout, "latest"));
    let owner = |p: &str| (tree[p].uid, tree[p].gid);
    assert_eq!(owner("kept/f"), (5, 6));
    assert_eq!(owner("chowned/f"), (7, 8));
}
