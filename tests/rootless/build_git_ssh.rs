//! `ADD` of git repositories (served by a loopback `git daemon`) and `RUN --mount=type=ssh`
//! (a real `ssh-agent` holding a fresh key, reached from the step by the host's `ssh-add`
//! copied into the image with its libraries).
//!
//! Every base here is Debian's static busybox, so no registry is needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::build_support::{
    failed, file_content, file_tree, have, raw_entries, read_layout, steps, succeeded,
};

const BASE: &str = "FROM scratch AS base\n\
                    COPY busybox /bin/busybox\n\
                    RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// A context dir holding `busybox` and a Dockerfile.
fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn build(root: &Path, args: &[&str], ctx: &Path, ssh_auth_sock: Option<&Path>) -> Output {
    let mut c = crate::build_support::kiln(root);
    c.env("SOURCE_DATE_EPOCH", "0").env_remove("SSH_AUTH_SOCK");
    if let Some(s) = ssh_auth_sock {
        c.env("SSH_AUTH_SOCK", s);
    }
    c.args(["build", "--progress", "plain"])
        .args(args)
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn skip_unless(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !have(t)).collect();
    if missing.is_empty() && Path::new("/bin/busybox").exists() {
        return false;
    }
    println!("SKIPPED: needs {tools:?} and busybox-static (tests/scripts/install-deps.sh)");
    true
}

/// A child process killed when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- RUN --mount=type=ssh ------------------------------------------------------------------

/// An ssh-agent on a socket in `dir` holding a new ed25519 key; returns the agent, its
/// socket and the key's fingerprint.
fn agent_with_key(dir: &Path) -> (Killed, PathBuf, String) {
    let key = dir.join("id_test");
    crate::build_support::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
            .arg(&key),
    );
    let socket = dir.join("agent.sock");
    let agent = Killed(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // ssh-agent binds its socket before serving: wait for it to appear.
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    crate::build_support::run_ok(
        Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket),
    );
    let fp = crate::build_support::run_ok(Command::new("ssh-keygen").arg("-lf").arg(&key));
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    (agent, socket, fp)
}

/// Copies the host's `ssh-add`, its loader and libraries into `ctx/sshadd/` at their paths.
fn ssh_add_into(ctx: &Path) {
    let bin = Path::new("/usr/bin/ssh-add");
    let ldd = crate::build_support::run_ok(Command::new("ldd").arg(bin));
    let mut files = vec![bin.to_path_buf()];
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        if let Some(p) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from)
        {
            files.push(p);
        }
    }
    for f in files {
        let dest = ctx.join("sshadd").join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(&f).unwrap(), &dest).unwrap();
    }
}

#[test]
fn ssh_mounts_reach_the_agent_read_only_and_never_a_layer() {
    if skip_unless(&["ssh-agent", "ssh-add", "ssh-keygen", "ldd"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (_agent, socket, fingerprint) = agent_with_key(t.path());
    let dockerfile = format!(
        "{BASE}\nFROM base\nCOPY sshadd/ /\n\
         RUN --mount=type=ssh ssh-add -l > /keys.txt; echo \"$SSH_AUTH_SOCK\" > /sock.txt; \
             test -S /run/buildkit/ssh_agent.0 && stat -c '%a %u' /run/buildkit/ssh_agent.0 >> /sock.txt\n\
         RUN --mount=type=ssh ssh-add -D; echo \"rc=$?\" > /remove.txt\n\
         RUN --mount=type=ssh,id=other,target=/tmp/agent.sock,mode=0666 \
             SSH_AUTH_SOCK=/tmp/agent.sock ssh-add -l > /other.txt; stat -c '%a' /tmp/agent.sock >> /other.txt\n\
         RUN --mount=type=ssh,id=keyed,target=/k.sock,required=true \
             SSH_AUTH_SOCK=/k.sock ssh-add -l > /keyed.txt\n\
         RUN --mount=type=ssh,id=absent test ! -e /run/buildkit/ssh_agent.0 && echo none > /absent.txt\n\
         RUN ls -A / > /after.txt; ls -A /run /tmp >> /after.txt 2>&1; true\n"
    );
    let ctx = context(t.path(), &dockerfile);
    ssh_add_into(&ctx);
    let layout = t.path().join("layout");
    let out = build(
        &t.path().join("root"),
        &[
            "--ssh",
            "default",
            "--ssh",
            &format!("other={}", socket.display()),
            // A key file: kiln loads it into an ssh-agent of its own.
            "--ssh",
            &format!("keyed={}", t.path().join("id_test").display()),
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        &ctx,
        Some(&socket),
    );
    succeeded(&out);
    let img = read_layout(&layout, "latest");
    let text = |p: &str| {
        String::from_utf8(file_content(&img, p).unwrap_or_else(|| panic!("/{p}"))).unwrap()
    };
    assert!(
        text("keys.txt").contains(&fingerprint),
        "{}",
        text("keys.txt")
    );
    assert_eq!(text("sock.txt"), "/run/buildkit/ssh_agent.0\n600 0\n");
    // The step asked the agent to drop every key: refused, and the host's agent still has it.
    assert_eq!(text("remove.txt"), "rc=1\n");
    let host = crate::build_support::run_ok(
        Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &socket),
    );
    assert!(String::from_utf8_lossy(&host.stdout).contains(&fingerprint));
    let other = text("other.txt");
    assert!(
        other.contains(&fingerprint) && other.ends_with("666\n"),
        "{other}"
    );
    assert!(
        text("keyed.txt").contains(&fingerprint),
        "{}",
        text("keyed.txt")
    );
    // An id kiln was not given, not required: no socket, the step still runs.
    assert_eq!(text("absent.txt"), "none\n");
    let after = text("after.txt");
    assert!(
        !after.contains("agent.sock") && !after.contains("buildkit") && !after.contains("k.sock"),
        "{after}"
    );
    for (path, _) in raw_entries(&img) {
        let path = String::from_utf8_lossy(&path);
        assert!(
            !path.contains("ssh_agent") && !path.contains("agent.sock") && !path.contains("k.sock"),
            "a layer stores the agent socket: {path}"
        );
    }
}

#[test]
fn a_required_ssh_mount_without_an_agent_names_the_line_and_the_flag() {
    if skip_unless(&[]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(
        t.path(),
        &format!("{BASE}\nFROM base\nRUN --mount=type=ssh,required=true true\n"),
    );
    let err = failed(&build(&t.path().join("root"), &[], &ctx, None));
    assert!(
        err.contains("Dockerfile:6") && err.contains("--ssh default"),
        "{err}"
    );
    // `--ssh default` with no agent in the environment is refused before the build.
    let err = failed(&build(
        &t.path().join("root"),
        &["--ssh", "default"],
        &ctx,
        None,
    ));
    assert!(err.contains("SSH_AUTH_SOCK"), "{err}");
}

// ---- ADD of git repositories ---------------------------------------------------------------

fn git(dir: &Path, args: &[&str]) -> String {
    let out = crate::build_support::run_ok(
        Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `git daemon` on a free loopback port exporting the repositories under `base`.
fn git_daemon(base: &Path) -> (Killed, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("git")
        .arg("daemon")
        .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Killed(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (daemon, port);
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("git daemon did not listen on port {port}");
}

#[test]
fn add_git_takes_a_tag_and_subdir_and_caches_by_commit() {
    if skip_unless(&["git"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("srv/repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "one\n").unwrap();
    std::fs::write(repo.join("sub/a.txt"), "tagged\n").unwrap();
    // Hostile: a symlink to the host's /etc, used as a subdir below.
    std::os::unix::fs::symlink("/etc", repo.join("sub/etc")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "-a", "-m", "v1", "v1"]);
    let (_daemon, port) = git_daemon(&t.path().join("srv"));
    let url = format!("git://127.0.0.1:{port}/repo");
    let dockerfile = format!(
        "{BASE}\nFROM base\n\
         ADD {url}#v1:sub /src\n\
         ADD --keep-git-dir {url} /full\n\
         RUN cat /full/README > /readme.txt\n"
    );
    let ctx = context(t.path(), &dockerfile);
    let root = t.path().join("root");
    let out_arg = |n: &str| format!("--output=type=oci,dest={}", t.path().join(n).display());
    succeeded(&build(&root, &[&out_arg("one")], &ctx, None));
    let img = read_layout(&t.path().join("one"), "latest");
    assert_eq!(file_content(&img, "src/a.txt").unwrap(), b"tagged\n");
    let files = file_tree(&img);
    assert!(
        !files.contains_key("src/README"),
        "only the subdir is added"
    );
    assert_eq!(files["src/etc"].kind, "symlink -> /etc");
    assert!(!files.keys().any(|p| p.starts_with("src/.git")));
    assert!(
        files.contains_key("full/.git/HEAD"),
        "--keep-git-dir keeps .git"
    );
    assert!(files.contains_key("full/sub/a.txt"));
    // Same commits: every ADD comes from the cache.
    let again = succeeded(&build(&root, &[], &ctx, None));
    let adds: Vec<_> = steps(&again)
        .into_iter()
        .filter(|s| s.instruction.starts_with("ADD"))
        .collect();
    assert_eq!(adds.len(), 2, "{again}");
    assert!(adds.iter().all(|s| s.cached()), "{again}");
    // A new commit on the branch: the tag's ADD still hits, HEAD's misses and sees it.
    std::fs::write(repo.join("README"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let third = succeeded(&build(&root, &[&out_arg("three")], &ctx, None));
    let adds: Vec<_> = steps(&third)
        .into_iter()
        .filter(|s| s.instruction.starts_with("ADD"))
        .collect();
    assert!(adds[0].cached() && !adds[1].cached(), "{third}");
    let img = read_layout(&t.path().join("three"), "latest");
    assert_eq!(file_content(&img, "readme.txt").unwrap(), b"two\n");
    // The repository's symlink to /etc resolves inside the checkout, never on the host.
    let hostile = context(
        &t.path().join("hostile"),
        &format!("{BASE}\nFROM base\nADD {url}#v1:sub/etc /stolen\n"),
    );
    let err = failed(&build(&root, &[], &hostile, None));
    assert!(
        err.contains("Dockerfile:6") && err.contains("not found in the git repository"),
        "{err}"
    );
    // A ref the remote does not have names the line and the ref.
    let missing = context(
        &t.path().join("missing"),
        &format!("{BASE}\nFROM base\nADD {url}#nope /x\n"),
    );
    let err = failed(&build(&root, &[], &missing, None));
    assert!(
        err.contains("Dockerfile:6") && err.contains("\"nope\""),
        "{err}"
    );
}

/// Unprivileged kiln (rootless isolation, sub-uids): `--ssh ID=KEY` starts kiln's own agent,
/// and a step running as `USER 1000` reaches it only when the mount gives it `uid=1000`.
#[test]
fn an_unprivileged_build_gives_the_socket_to_the_uid_the_mount_names() {
    if skip_unless(&[
        "ssh-agent",
        "ssh-add",
        "ssh-keygen",
        "ldd",
        "newuidmap",
        "setpriv",
    ]) {
        return;
    }
    let runner = crate::sandbox_support::runner();
    if runner.user.is_none() {
        println!("SKIPPED: needs root to run kiln as the unprivileged test user");
        return;
    }
    let t = runner.tempdir();
    let key = t.path().join("id_user");
    crate::build_support::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
    );
    let fp = crate::build_support::run_ok(Command::new("ssh-keygen").arg("-lf").arg(&key));
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fingerprint = fp.split_whitespace().nth(1).unwrap().to_string();
    let dockerfile = format!(
        "{BASE}\nFROM base\nCOPY sshadd/ /\nRUN mkdir /out && chown 1000:1000 /out\nUSER 1000:1000\n\
         RUN --mount=type=ssh,id=k,uid=1000,required=true ssh-add -l > /out/keys.txt\n\
         RUN --mount=type=ssh,id=k ssh-add -l > /out/denied.txt 2>&1; echo \"rc=$?\" >> /out/denied.txt\n"
    );
    let ctx = context(t.path(), &dockerfile);
    ssh_add_into(&ctx);
    runner.give(t.path());
    let layout = t.path().join("layout");
    let mut cmd = crate::sandbox_support::kiln_as_test_user(&t.path().join("root"));
    cmd.args(["build", "--progress", "plain", "--isolation", "rootless"])
        .args(["--ssh", &format!("k={}", key.display())])
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(&ctx)
        .env("SOURCE_DATE_EPOCH", "0")
        .env_remove("SSH_AUTH_SOCK")
        .current_dir("/")
        .stdin(Stdio::null());
    succeeded(&cmd.output().unwrap());
    let img = read_layout(&layout, "latest");
    let text = |p: &str| String::from_utf8(file_content(&img, p).unwrap()).unwrap();
    assert!(
        text("out/keys.txt").contains(&fingerprint),
        "{}",
        text("out/keys.txt")
    );
    // Without uid= the socket is root's and mode 0600: user 1000 cannot connect.
    let denied = text("out/denied.txt");
    assert!(
        !denied.contains(&fingerprint) && denied.ends_with("rc=2\n"),
        "{denied}"
    );
}
