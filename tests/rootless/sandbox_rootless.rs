//! The rootless sandbox, run as an unprivileged user (`kilntest` when the tests run as root):
//! what a RUN step leaves in its upper dir, exit codes, Ctrl-C, secrets (`RUN --mount`: `mount.rs`).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::sandbox_support::*;
use kiln::sandbox::{Isolation, MountSpec, Network, SecretBytes};

#[test]
fn changes_land_in_the_upper_dir_and_nothing_else_does() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let script = "echo new > /etc/motd && rm /etc/gone && mkdir -p /srv/app && echo hi > /srv/app/created \
                  && ln /data/orig /data/link && chown 1000:1000 /srv/app/created \
                  && echo $(hostname) $(id -u) && cat /etc/hosts";
    let mut spec = runner.spec("changes", dir.path(), &lower, script);
    spec.hostname = Some("builder".into());
    let (outcome, events) = runner.run(&spec, dir.path());
    let out = output_lines(&events);
    assert_eq!(outcome.exit_code, 0, "output: {out:?}");
    assert_eq!(outcome.isolation, Isolation::Rootless);
    assert!(out.contains(&"builder 0".to_string()), "{out:?}");
    assert!(
        out.iter().any(|l| l.ends_with("builder")),
        "generated /etc/hosts: {out:?}"
    );

    let up = &spec.upper_dir;
    assert_eq!(
        tree(up),
        [
            "data",
            "data/link",
            "data/orig",
            "etc",
            "etc/gone",
            "etc/motd",
            "srv",
            "srv/app",
            "srv/app/created"
        ],
        "only the step's own changes: no /proc, /dev, /sys, /etc/hosts, /etc/resolv.conf stubs"
    );
    assert_eq!(
        std::fs::read_to_string(up.join("etc/motd")).unwrap(),
        "new\n"
    );
    assert!(
        is_whiteout(&up.join("etc/gone")),
        "deleted file is a 0/0 char device"
    );
    let (orig, link) = (
        up.join("data/orig").metadata().unwrap(),
        up.join("data/link").metadata().unwrap(),
    );
    assert_eq!(
        (orig.ino(), orig.nlink()),
        (link.ino(), 2),
        "hardlink kept in the upper dir"
    );
    let created = up.join("srv/app/created").metadata().unwrap();
    assert_eq!(
        outcome.id_map.image_uid(created.uid()),
        Some(1000),
        "chown 1000 inside"
    );
    assert_eq!(outcome.id_map.image_gid(created.gid()), Some(1000));
    if runner.user.is_some() {
        assert!(
            !outcome.id_map.is_single(),
            "kilntest has a subuid range: {:?}",
            outcome.id_map
        );
        assert_ne!(
            created.uid(),
            1000,
            "ids above 0 land in the subordinate range"
        );
    }
    assert!(
        leftover_state_dirs(dir.path()).is_empty(),
        "scratch dir removed"
    );
}

#[test]
fn a_failing_command_reports_its_exit_code_and_last_lines() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let spec = runner.spec(
        "fails",
        dir.path(),
        &lower,
        "for i in 1 2 3 4 5; do echo line$i; done; echo boom >&2; exit 7",
    );
    let (outcome, events) = runner.run(&spec, dir.path());
    assert_eq!(outcome.exit_code, 7);
    assert!(!outcome.success());
    assert!(
        outcome.tail.contains(&"boom".to_string()),
        "{:?}",
        outcome.tail
    );
    assert_eq!(output_lines(&events).len(), 6);
    assert!(
        events
            .iter()
            .all(|e| e["event"] != "step_output" || e["id"] == "fails")
    );

    let killed = spec_in(&dir, &lower, "killed", "kill -9 $$");
    assert_eq!(
        runner.run(&killed, dir.path()).0.exit_code,
        137,
        "128 + SIGKILL"
    );
    let missing = spec_in(&dir, &lower, "missing", "unused");
    let mut missing = missing;
    missing.argv = vec!["no-such-program".into()];
    let out = runner.command(&missing, dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-program: command not found"), "{err}");
}

fn spec_in(
    dir: &tempfile::TempDir,
    lower: &std::path::Path,
    id: &str,
    script: &str,
) -> kiln::sandbox::StepSpec {
    runner().spec(id, dir.path(), lower, script)
}

#[test]
fn user_workdir_and_env_resolve_through_the_rootfs() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let mut spec = runner.spec(
        "user",
        dir.path(),
        &lower,
        "echo $(id -u):$(id -g):$(id -G) $(pwd) $HOME $GREETING; umask; touch f",
    );
    spec.user = Some("app".into());
    spec.workdir = Some("/home/app/work".into());
    spec.env.push("GREETING=hello".into());
    let (outcome, events) = runner.run(&spec, dir.path());
    let out = output_lines(&events);
    assert_eq!(outcome.exit_code, 0, "{out:?}");
    assert_eq!(out[0], "1000:1000:1000 2000 /home/app/work /home/app hello");
    assert_eq!(out[1], "0022");
    let file = spec.upper_dir.join("home/app/work/f").metadata().unwrap();
    assert_eq!(outcome.id_map.image_uid(file.uid()), Some(1000));
}

#[test]
fn network_none_has_only_loopback_and_host_keeps_the_hosts_interfaces() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let mut spec = runner.spec(
        "netnone",
        dir.path(),
        &lower,
        // IFF_UP in lo's flags (ping needs CAP_NET_RAW, which steps no longer get).
        "ls /sys/class/net; [ $(( $(cat /sys/class/net/lo/flags) & 1 )) = 1 ] && echo lo-up",
    );
    spec.network = Network::None;
    let (outcome, events) = runner.run(&spec, dir.path());
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(output_lines(&events), ["lo", "lo-up"]);
    let host = spec_in(&dir, &lower, "nethost", "ls /sys/class/net | wc -l");
    let (_, events) = runner.run(&host, dir.path());
    let count: usize = output_lines(&events)[0].trim().parse().unwrap();
    let on_host = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(count, on_host);
}

#[test]
fn sigint_kills_the_whole_step_and_leaves_nothing_mounted() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let marker = "987654"; // sleep's argument identifies the step's processes in /proc
    let script = format!("(sleep {marker}) & sleep {marker} & echo ready; wait");
    let spec = runner.spec("interrupt", dir.path(), &lower, &script);
    let mut child = runner
        .command(&spec, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("\"ready\"") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the step never got ready"
        );
    }
    assert!(processes_with(&format!("sleep {marker}")).len() >= 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "step processes survived the interrupt"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        mounts_mentioning(dir.path()).is_empty(),
        "{:?}",
        mounts_mentioning(dir.path())
    );
    assert!(
        leftover_state_dirs(dir.path()).is_empty(),
        "scratch dir removed after interrupt"
    );
}

#[test]
fn a_secret_is_readable_but_never_lands_in_the_upper_dir_or_the_output() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let secret = b"s3cr3t-value-0xC0FFEE";
    let mut spec = runner.spec(
        "secret",
        dir.path(),
        &lower,
        "test \"$(cat /run/secrets/token)\" = s3cr3t-value-0xC0FFEE && echo SECRET_OK; stat -c %a /run/secrets/token; echo x 2>/dev/null > /run/secrets/token || echo read-only",
    );
    spec.mounts.push(MountSpec::Secret {
        target: "/run/secrets/token".into(),
        data: SecretBytes(secret.to_vec()),
        mode: 0o400,
        uid: 0,
        gid: 0,
    });
    let (outcome, events) = runner.run(&spec, dir.path());
    let out = output_lines(&events);
    assert_eq!(outcome.exit_code, 0, "{out:?}");
    assert_eq!(out[0], "SECRET_OK");
    assert_eq!(out[1], "400");
    assert_eq!(out.last().unwrap(), "read-only");
    assert!(
        tree(&spec.upper_dir).is_empty(),
        "no /run stub left: {:?}",
        tree(&spec.upper_dir)
    );
    assert!(
        files_containing(dir.path(), secret)
            .into_iter()
            .all(|p| p.extension().is_some_and(|e| e == "json")),
        "secret only in the test's own spec file"
    );
}

#[test]
fn bad_specs_are_refused_with_the_reason() {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    let mut spec = runner.spec("bad", dir.path(), &lower, "true");
    std::fs::write(spec.upper_dir.join("junk"), "").unwrap();
    runner.give(dir.path());
    let out = runner.command(&spec, dir.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be empty"));
    spec.upper_dir = dir.path().join("a,b");
    std::fs::create_dir(&spec.upper_dir).unwrap();
    runner.give(dir.path());
    let out = runner.command(&spec, dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a,b: overlay cannot take paths with ','"),
        "{err}"
    );
}
