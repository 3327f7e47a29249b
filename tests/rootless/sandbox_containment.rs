//! What a RUN command may do, in every mode kiln runs steps in (issue 12): the default
//! capability set, no_new_privs, the seccomp filter, runc's masked and read-only /proc
//! paths, a nodev root, no descriptor of kiln's, no status line kiln would believe, signals
//! at their defaults, and `--security=insecure` only with `--allow security.insecure`.
//!
//! Modes: `chroot` (root, overlay), `chroot-copy` (root, the overlay-less copy),
//! `plain` (root, plain chroot without namespaces), `rootless` and `rootless-copy` (the
//! unprivileged test user through `kiln __sandbox-run`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::sandbox_support::*;
use kiln::progress::{Event, Progress};
use kiln::sandbox::{Force, Isolation, Sandbox, Security, StepSpec};

/// The containers-common default set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
/// SETPCAP NET_BIND_SERVICE SYS_CHROOT SETFCAP).
const DEFAULT_CAPS: &str = "00000000800405fb";
/// The same without SYS_CHROOT: plain chroot (a chroot(2) there leaves the root).
const PLAIN_CAPS: &str = "00000000800005fb";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Chroot,
    ChrootCopy,
    Plain,
    Rootless,
    RootlessCopy,
}

const NAMESPACED: [Mode; 4] = [
    Mode::Chroot,
    Mode::ChrootCopy,
    Mode::Rootless,
    Mode::RootlessCopy,
];

impl Mode {
    fn force(self) -> Force {
        Force {
            no_overlay: matches!(self, Mode::ChrootCopy | Mode::RootlessCopy),
            no_mount_namespace: self == Mode::Plain,
        }
    }

    fn rootless(self) -> bool {
        matches!(self, Mode::Rootless | Mode::RootlessCopy)
    }

    /// `false` (after printing why) when this mode cannot run here.
    fn available(self, test: &str) -> bool {
        if !self.rootless() && !nix::unistd::geteuid().is_root() {
            println!("SKIPPED {test} ({self:?}): chroot modes need root (CI runs as root)");
            return false;
        }
        true
    }
}

/// A busybox root in a directory the step's user owns.
struct Setup {
    dir: tempfile::TempDir,
    lower: std::path::PathBuf,
}

fn setup() -> Setup {
    let runner = runner();
    let dir = runner.tempdir();
    let lower = busybox_rootfs(dir.path());
    runner.give(dir.path());
    Setup { dir, lower }
}

impl Setup {
    fn spec(&self, mode: Mode, id: &str, script: &str) -> StepSpec {
        let id = format!("{id}-{mode:?}").to_lowercase();
        runner().spec(&id, self.dir.path(), &self.lower, script)
    }
}

/// Runs `spec` to its end in `mode`: exit code and output lines (stdout and stderr).
fn run(mode: Mode, setup: &Setup, spec: &StepSpec) -> (i32, Vec<String>) {
    if mode.rootless() {
        let mut cmd = runner().command(spec, setup.dir.path());
        if mode == Mode::RootlessCopy {
            cmd.env("KILN_SANDBOX_FORCE", "no-overlay");
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let events = events(&out);
        assert!(
            out.status.success(),
            "kiln __sandbox-run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: kiln::sandbox::StepOutcome = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(outcome.isolation, Isolation::Rootless);
        return (outcome.exit_code, output_lines(&events));
    }
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(mode.force());
    let (progress, rx) = Progress::channel();
    let outcome = sandbox.run_step(spec, &progress).unwrap();
    drop(progress);
    let events: Vec<Event> = rx.iter().collect();
    (outcome.exit_code, output_of(&events))
}

/// The `Name:\tvalue` fields of a /proc status file.
fn field<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
}

fn assert_confined(mode: Mode, status: &[String]) {
    let caps = if mode == Mode::Plain {
        PLAIN_CAPS
    } else {
        DEFAULT_CAPS
    };
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh"] {
        assert_eq!(field(status, set), caps, "{mode:?} {set}: {status:?}");
    }
    assert_eq!(field(status, "CapAmb"), "0000000000000000", "{mode:?}");
    assert_eq!(field(status, "Seccomp"), "2", "{mode:?}: {status:?}");
    assert_eq!(field(status, "NoNewPrivs"), "1", "{mode:?}");
    assert_eq!(field(status, "SigIgn"), "0000000000000000", "{mode:?}");
    assert_eq!(field(status, "SigBlk"), "0000000000000000", "{mode:?}");
}

#[test]
fn the_command_starts_with_default_caps_seccomp_no_new_privs_and_default_signals() {
    let setup = setup();
    for mode in NAMESPACED {
        if !mode.available("status") {
            continue;
        }
        // Not the last command: busybox sh would exec it in place, with the SIGQUIT it
        // ignores itself.
        let spec = setup.spec(mode, "status", "cat /proc/self/status; exit 0");
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert_confined(mode, &lines);
    }
    if Mode::Plain.available("status") {
        // No /proc in plain chroot: the host reads the command's status while it waits.
        let lines = plain_chroot_status(&setup);
        assert_confined(Mode::Plain, &lines);
    }
}

/// Plain chroot: the host reads the status of the step's command (`sleep`, started without
/// a shell: busybox sh ignores SIGQUIT itself) from its own /proc, then cancels the step.
fn plain_chroot_status(setup: &Setup) -> Vec<String> {
    let marker = "86413";
    let mut spec = setup.spec(Mode::Plain, "status", "");
    spec.argv = vec!["/bin/sleep".into(), marker.into()];
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(Mode::Plain.force());
    let cancel = sandbox.cancel_handle();
    std::thread::scope(|s| {
        let step = s.spawn(|| sandbox.run_step(&spec, &Progress::none()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let pid = loop {
            if let Some(pid) = processes_with(&format!("sleep {marker}")).first() {
                break *pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the step never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        cancel.cancel();
        assert!(
            step.join().unwrap().is_err(),
            "a cancelled step is an error"
        );
        status.lines().map(str::to_string).collect()
    })
}

/// Waits for an output line starting with `prefix`; returns the rest of it.
fn wait_for_output(rx: &mpsc::Receiver<Event>, prefix: &str) -> String {
    for event in rx.iter() {
        if let Event::StepOutput { line, .. } = event
            && let Some(rest) = line.strip_prefix(prefix)
        {
            return rest.to_string();
        }
    }
    panic!("the step ended without printing {prefix:?}");
}

#[test]
fn mknod_mount_and_new_namespaces_are_refused() {
    let setup = setup();
    let script = "mkdir -p /mnt; \
        mknod /dev/x b 8 0 && echo MKNOD-WORKED; \
        mount -t tmpfs none /mnt && echo MOUNT-WORKED; \
        unshare -U true && echo USERNS-WORKED; \
        unshare -m true && echo MOUNTNS-WORKED; \
        echo end";
    for mode in NAMESPACED.into_iter().chain([Mode::Plain]) {
        if !mode.available("refused") {
            continue;
        }
        let spec = setup.spec(mode, "refused", script);
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert!(lines.contains(&"end".into()), "{mode:?}: {lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains("WORKED")),
            "{mode:?}: {lines:?}"
        );
    }
}

#[test]
fn device_nodes_shipped_in_a_base_layer_cannot_be_opened() {
    let setup = setup();
    if !Mode::Chroot.available("device nodes") {
        return;
    }
    // What an unpacked base layer holds for `mknod` entries (root unpacks them as nodes).
    let mknod = |name: &str, kind: nix::sys::stat::SFlag, major, minor| {
        nix::sys::stat::mknod(
            &setup.lower.join(name),
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
    };
    mknod("evil-null", nix::sys::stat::SFlag::S_IFCHR, 1, 3);
    mknod("evil-disk", nix::sys::stat::SFlag::S_IFBLK, 7, 0);
    let script = "head -c 1 /evil-null && echo NULL-OPENED; \
                  head -c 1 /evil-disk && echo DISK-OPENED; echo end";
    // Plain chroot mounts nothing, so it cannot make the root nodev (its warning says so).
    for mode in [Mode::Chroot, Mode::ChrootCopy] {
        let spec = setup.spec(mode, "nodes", script);
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains("OPENED")),
            "{mode:?}: {lines:?}"
        );
        let denied = lines
            .iter()
            .filter(|l| l.contains("Permission denied"))
            .count();
        // The copy fallback may not copy the nodes at all; overlay shows them.
        if mode == Mode::Chroot {
            assert_eq!(denied, 2, "{mode:?}: {lines:?}");
        }
    }
}

#[test]
fn proc_sys_is_read_only_and_kernel_paths_are_masked() {
    let setup = setup();
    let script = "echo evil > /proc/sys/kernel/hostname && echo WROTE-HOSTNAME; \
        echo h > /proc/sysrq-trigger && echo WROTE-SYSRQ; \
        echo kcore $(cat /proc/kcore 2>/dev/null | wc -c); \
        echo timer_list $(cat /proc/timer_list 2>/dev/null | wc -c); \
        echo hostname $(hostname); \
        grep -E ' /proc/(sys|bus|fs|irq|sysrq-trigger) ' /proc/self/mounts | grep -c ' ro,' | sed 's/^/ro /'";
    for mode in NAMESPACED {
        if !mode.available("proc") {
            continue;
        }
        let spec = setup.spec(mode, "proc", script);
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains("WROTE")),
            "{mode:?}: {lines:?}"
        );
        for expected in ["kcore 0", "timer_list 0", "hostname kiln"] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{mode:?}: {expected:?} in {lines:?}"
            );
        }
        let ro: usize = lines
            .iter()
            .find_map(|l| l.strip_prefix("ro "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(ro >= 3, "{mode:?}: read-only /proc paths: {lines:?}");
    }
}

#[test]
fn the_command_and_its_pid_1_hold_no_descriptor_of_kiln() {
    let setup = setup();
    // `ls` lists its own directory fd (3) too.
    let script = "echo self $(ls /proc/self/fd); echo init $(ls /proc/1/fd)";
    for mode in NAMESPACED {
        if !mode.available("fds") {
            continue;
        }
        let spec = setup.spec(mode, "fds", script);
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert!(
            lines.contains(&"self 0 1 2 3".into()),
            "{mode:?}: {lines:?}"
        );
        assert!(lines.contains(&"init 0 1 2".into()), "{mode:?}: {lines:?}");
    }
}

/// A host process the step's user may signal, and host files kiln must not remove.
struct Victims {
    process: Child,
    empty_dir: std::path::PathBuf,
    empty_file: std::path::PathBuf,
}

impl Victims {
    fn new(setup: &Setup, mode: Mode) -> Victims {
        let mut cmd = match (&runner().user, mode.rootless()) {
            (Some((_, uid, gid)), true) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                    "sleep".into(),
                ]);
                c
            }
            _ => Command::new("sleep"),
        };
        let process = cmd.arg("3600").spawn().unwrap();
        let empty_dir = setup.dir.path().join(format!("canary-dir-{mode:?}"));
        let empty_file = setup.dir.path().join(format!("canary-file-{mode:?}"));
        std::fs::create_dir(&empty_dir).unwrap();
        std::fs::write(&empty_file, b"").unwrap();
        Victims {
            process,
            empty_dir,
            empty_file,
        }
    }

    /// Status lines that would make kiln remove the canaries (the upper dir is a sibling
    /// of them) and, on cancel, kill the process.
    fn forgeries(&self) -> String {
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        [
            r#"{"Created":"/../NAME"}"#.replace("NAME", &name(&self.empty_dir)),
            r#"{"Created":"/../NAME"}"#.replace("NAME", &name(&self.empty_file)),
            format!(r#"{{"Pid1":{}}}"#, self.process.id()),
        ]
        .join("\\n")
    }

    fn assert_untouched(mut self, mode: Mode) {
        assert!(self.empty_dir.is_dir(), "{mode:?}: kiln removed a host dir");
        assert!(
            self.empty_file.is_file(),
            "{mode:?}: kiln removed a host file"
        );
        assert!(
            self.process.try_wait().unwrap().is_none(),
            "{mode:?}: kiln killed a host process"
        );
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn forged_status_lines_leave_host_files_and_processes_alone() {
    let setup = setup();
    // Plain chroot has no /proc to reach a descriptor through.
    for mode in NAMESPACED {
        if !mode.available("forged") {
            continue;
        }
        let victims = Victims::new(&setup, mode);
        let script = format!(
            "for f in /proc/[0-9]*/fd/*; do printf '{}\\n' > \"$f\"; done 2>/dev/null; \
             echo forged; exec sleep 3600",
            victims.forgeries()
        );
        let spec = setup.spec(mode, "forged", &script);
        if mode.rootless() {
            interrupt_rootless(&setup, mode, &spec);
        } else {
            let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(mode.force());
            let cancel = sandbox.cancel_handle();
            let (progress, rx) = Progress::channel();
            std::thread::scope(|s| {
                let step = s.spawn(|| sandbox.run_step(&spec, &progress));
                wait_for_output(&rx, "forged");
                cancel.cancel();
                assert!(step.join().unwrap().is_err(), "{mode:?}: cancelled");
            });
        }
        victims.assert_untouched(mode);
    }
}

/// Runs a rootless step until it prints `forged`, then Ctrl-C's it.
fn interrupt_rootless(setup: &Setup, mode: Mode, spec: &StepSpec) {
    let mut cmd = runner().command(spec, setup.dir.path());
    if mode == Mode::RootlessCopy {
        cmd.env("KILN_SANDBOX_FORCE", "no-overlay");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("\"forged\"") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "{mode:?}: no output"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert_eq!(child.wait().unwrap().code(), Some(130), "{mode:?}");
}

#[test]
fn sigpipe_ends_a_writer_quietly() {
    let setup = setup();
    let script = "yes | head -1; yes hello | head -c 20000000 | wc -c";
    for mode in NAMESPACED.into_iter().chain([Mode::Plain]) {
        if !mode.available("sigpipe") {
            continue;
        }
        let spec = setup.spec(mode, "sigpipe", script);
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert_eq!(lines, ["y", "20000000"], "{mode:?}");
    }
}

/// Every capability this test may hand on: an unconfined step as root, or as root of a
/// user namespace after exec, gets its bounding set.
fn own_bounding_set() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let lines: Vec<String> = status.lines().map(str::to_string).collect();
    field(&lines, "CapBnd").to_string()
}

#[test]
fn insecure_steps_get_every_capability_and_an_unmasked_proc() {
    let setup = setup();
    let full = own_bounding_set();
    let script = "grep -E '^(CapEff|Seccomp):' /proc/self/status; \
                  echo kcore-masked $(grep -c ' /proc/kcore ' /proc/self/mounts)";
    for mode in [Mode::Chroot, Mode::Rootless] {
        if !mode.available("insecure") {
            continue;
        }
        // A user namespace starts with every capability of the kernel in its bounding set.
        let full = if mode.rootless() {
            let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            format!("{:016x}", (1u64 << (last + 1)) - 1)
        } else {
            full.clone()
        };
        let mut spec = setup.spec(mode, "insecure", script);
        spec.security = Security::Insecure;
        let (code, lines) = run(mode, &setup, &spec);
        assert_eq!(code, 0, "{mode:?}: {lines:?}");
        assert_eq!(field(&lines, "CapEff"), full, "{mode:?}");
        assert_eq!(field(&lines, "Seccomp"), "0", "{mode:?}");
        assert!(
            lines.contains(&"kcore-masked 0".into()),
            "{mode:?}: {lines:?}"
        );
    }
}

#[test]
fn security_insecure_is_refused_without_the_allow_flag() {
    let ctx = crate::build_support::context(&[(
        "Dockerfile",
        "FROM scratch\n\nRUN --security=insecure touch /ran\n",
    )]);
    let store = tempfile::tempdir().unwrap();
    let out = crate::build_support::kiln_build(store.path(), &["-t", "x"], ctx.path());
    let err = crate::build_support::failed(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("--allow security.insecure"), "{err}");
}

#[test]
fn security_insecure_runs_with_full_caps_when_allowed() {
    let Some(bases) = crate::build_support::bases_or_skip() else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nRUN --security=insecure grep CapEff /proc/self/status\nRUN grep CapEff /proc/self/status\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let args = [
        "-t",
        "x",
        "--progress=plain",
        "--allow",
        "security.insecure",
    ];
    let err = crate::build_support::succeeded(&crate::build_support::kiln_build(
        store.path(),
        &args,
        ctx.path(),
    ));
    let full = own_bounding_set();
    assert!(err.contains(&format!("CapEff:\t{full}")), "{err}");
    assert!(err.contains(&format!("CapEff:\t{DEFAULT_CAPS}")), "{err}");
}

#[test]
fn plain_chroot_says_once_which_protections_it_lacks() {
    if !Mode::Plain.available("plain warning") {
        return;
    }
    let setup = setup();
    let sandbox = Sandbox::new(KILN, Isolation::Chroot).forcing(Mode::Plain.force());
    let (progress, rx) = Progress::channel();
    for id in ["first", "second"] {
        let spec = setup.spec(Mode::Plain, id, "true");
        assert_eq!(sandbox.run_step(&spec, &progress).unwrap().exit_code, 0);
    }
    drop(progress);
    let warnings: Vec<String> = rx
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for said in ["Protections in force", "seccomp", "nodev", "pid namespace"] {
        assert!(warnings[0].contains(said), "{said}: {warnings:?}");
    }
}
