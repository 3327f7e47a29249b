//! Ctrl-C (SIGINT) and SIGTERM during a RUN step: kiln stops promptly with an "interrupted"
//! error, kills the step's processes, leaves no mount and no RUN scratch dir behind, and the
//! store keeps working.

mod build_support;
mod common;
mod registry_support;
mod sandbox_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandbox_support::{mounts_mentioning, processes_with};

/// Kills the build if the test fails before it exits.
struct Build(Child);

impl Drop for Build {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// stderr lines of the build, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line ending with `needle` (the step's own output, not the RUN line naming it).
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, log: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.ends_with(needle);
                log.push(line);
                if found {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {needle:?} in the build's output:\n{}", log.join("\n"));
}

fn interrupt_a_run_step(signal: Signal) {
    let Some(bases) = build_support::bases_or_skip() else {
        return;
    };
    let marker = format!("kiln-e2e-{}-{}", signal.as_str(), std::process::id());
    let dockerfile = format!(
        "FROM {}\nRUN echo step-started && sleep 30 && echo {marker}\n",
        bases.busybox()
    );
    let ctx = build_support::context(&[("Dockerfile", &dockerfile)]);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mut build = Build(
        build_support::kiln(&store)
            .env("TMPDIR", tmp.path())
            .args(["build", "-t", "interrupted", "--progress=plain"])
            .arg(ctx.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines(&mut build.0);
    let mut log = Vec::new();
    wait_for(&rx, " step-started", &mut log);
    assert!(
        !processes_with(&marker).is_empty(),
        "the step should be running"
    );

    let sent = Instant::now();
    kill(Pid::from_raw(build.0.id() as i32), signal).unwrap();
    let status = loop {
        if let Some(status) = build.0.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            log.extend(rx.try_iter());
            panic!(
                "kiln still running 5 s after {signal}:\n{}\nprocesses: {:?}",
                log.join("\n"),
                processes_with(&marker)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    log.extend(rx.iter());
    let log = log.join("\n");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(": interrupted; its processes were killed"),
        "{log}"
    );
    // Nothing of the step is left: processes, mounts, scratch dirs.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "step processes left running"
    );
    assert_eq!(
        mounts_mentioning(&store),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(
        mounts_mentioning(tmp.path()),
        Vec::<String>::new(),
        "mounts left"
    );
    let scratch: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-"))
        .collect();
    assert!(scratch.is_empty(), "RUN scratch dirs left: {scratch:?}");

    check_store_works(&store);
}

/// A following build, `kiln images` and `kiln prune` succeed in the interrupted store.
fn check_store_works(store: &Path) {
    let dockerfile = format!(
        "FROM {}\nRUN echo after > /after\n",
        build_support::bases().busybox()
    );
    let ctx = build_support::context(&[("Dockerfile", &dockerfile)]);
    let out = build_support::kiln_build(store, &["-t", "after:latest"], ctx.path());
    build_support::succeeded(&out);
    let images = build_support::run_ok(build_support::kiln(store).arg("images"));
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(listing.contains("after"), "{listing}");
    assert!(!listing.contains("interrupted"), "{listing}");
    build_support::run_ok(build_support::kiln(store).arg("prune"));
}

#[test]
fn ctrl_c_during_a_run_step_stops_promptly_and_leaves_the_store_usable() {
    interrupt_a_run_step(Signal::SIGINT);
}

#[test]
fn sigterm_during_a_run_step_stops_promptly_and_leaves_the_store_usable() {
    interrupt_a_run_step(Signal::SIGTERM);
}
