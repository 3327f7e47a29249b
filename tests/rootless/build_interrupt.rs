//! Ctrl-C (SIGINT) and SIGTERM during a RUN step: kiln stops promptly with an "interrupted"
//! error, kills the step's processes, leaves no mount and no RUN scratch dir behind, and the
//! store keeps working. SIGKILL cleans nothing: the next build removes what it left (but not a
//! running build's dirs), and so does `kiln prune`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sandbox_support::{mounts_mentioning, processes_with};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    let Some(bases) = crate::build_support::bases_or_skip() else {
        return;
    };
    let marker = format!("kiln-e2e-{}-{}", signal.as_str(), std::process::id());
    let dockerfile = format!(
        "FROM {}\nRUN echo step-started && sleep 30 && echo {marker}\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mut build = Build(
        crate::build_support::kiln(&store)
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
    let scratch: Vec<_> = std::fs::read_dir(store.join("scratch"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(scratch.is_empty(), "RUN scratch dirs left: {scratch:?}");

    check_store_works(&store);
}

/// A following build, `kiln images` and `kiln prune` succeed in the interrupted store.
fn check_store_works(store: &Path) {
    let dockerfile = format!(
        "FROM {}\nRUN echo after > /after\n",
        crate::build_support::bases().busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let out = crate::build_support::kiln_build(store, &["-t", "after:latest"], ctx.path());
    crate::build_support::succeeded(&out);
    let images = crate::build_support::run_ok(crate::build_support::kiln(store).arg("images"));
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(listing.contains("after"), "{listing}");
    assert!(!listing.contains("interrupted"), "{listing}");
    crate::build_support::run_ok(crate::build_support::kiln(store).arg("prune"));
}

#[test]
fn ctrl_c_during_a_run_step_stops_promptly_and_leaves_the_store_usable() {
    interrupt_a_run_step(Signal::SIGINT);
}

#[test]
fn sigterm_during_a_run_step_stops_promptly_and_leaves_the_store_usable() {
    interrupt_a_run_step(Signal::SIGTERM);
}

// ---- SIGKILL: scratch dirs left behind, found and removed later ---------------------------------

/// `pid` and all its descendants (walked before any dies, so none is reparented yet).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: comm may hold spaces, so split after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// A build of busybox and `run`, which prints `ready` (then sleeps) once it has written what
/// it should; returns when it is there.
fn start_sleeping_build(mut kiln: Command, ctx: &Path, run: &str, ready: &str) -> Build {
    let dockerfile = format!(
        "FROM {}\nRUN {run} && echo {ready} && sleep 60\n",
        crate::build_support::bases().busybox()
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let mut build = Build(
        kiln.args(["build", "--progress=plain"])
            .arg(ctx)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines(&mut build.0);
    let mut log = Vec::new();
    wait_for(&rx, &format!(" {ready}"), &mut log);
    build
}

/// [`start_sleeping_build`] as root, whose RUN writes 16 MiB to `/big`.
fn start_root_build(store: &Path, tmp: &Path, ready: &str) -> Build {
    let ctx = tempfile::tempdir_in(tmp).unwrap();
    let mut kiln = crate::build_support::kiln(store);
    kiln.env("TMPDIR", tmp);
    let big = "dd if=/dev/zero of=/big bs=1M count=16 2>/dev/null";
    start_sleeping_build(kiln, ctx.path(), big, ready)
}

/// SIGKILLs the build and its whole tree (the step's init and command too): nothing cleans.
fn kill_hard(build: &mut Build) {
    for pid in process_tree(build.0.id()) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    build.0.wait().unwrap();
}

/// The store's scratch dirs whose step wrote `/big` (the sleeping builds' RUN dirs).
fn scratch_with_big_file(store: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(store.join("scratch"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("upper/big").is_file())
        .collect()
}

#[test]
fn sigkilled_builds_scratch_is_removed_by_the_next_build_and_by_prune_but_not_a_running_ones() {
    let Some(_) = crate::build_support::bases_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");

    // One build killed, one still running.
    let mut killed = start_root_build(&store, tmp.path(), "killed-ready");
    let mut dirs = scratch_with_big_file(&store);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let killed_dir = dirs.remove(0);
    let mut running = start_root_build(&store, tmp.path(), "running-ready");
    kill_hard(&mut killed);
    let running_dir = scratch_with_big_file(&store)
        .into_iter()
        .find(|d| *d != killed_dir)
        .expect("the running build's scratch dir");
    assert!(killed_dir.join("upper/big").is_file(), "left behind");

    // The next build removes the killed build's dir and leaves the running one's.
    let ctx = crate::build_support::context(&[(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN true\n",
            crate::build_support::bases().busybox()
        ),
    )]);
    let out = crate::build_support::kiln_build(&store, &["--progress=plain"], ctx.path());
    let log = crate::build_support::succeeded(&out);
    assert!(
        log.contains("removed 1 scratch dir(s) of interrupted builds"),
        "{log}"
    );
    assert!(!killed_dir.exists(), "{log}");
    assert!(
        running_dir.join("upper/big").is_file(),
        "a running build's dir was touched"
    );
    assert_eq!(
        running.0.try_wait().unwrap(),
        None,
        "the running build went on"
    );

    // `kiln prune` does the same for a dir killed while nothing else runs.
    kill_hard(&mut running);
    let out = crate::build_support::run_ok(crate::build_support::kiln(&store).arg("prune"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("1 scratch dirs of interrupted builds"),
        "{report}"
    );
    assert!(!running_dir.exists(), "{report}");
    let left: Vec<_> = std::fs::read_dir(store.join("scratch"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        mounts_mentioning(&store),
        Vec::<String>::new(),
        "mounts left"
    );
}

#[test]
fn a_sigkilled_rootless_builds_scratch_of_sub_uid_files_is_removed_by_prune() {
    let skip = crate::build_support::missing_for_bases()
        .or_else(|| crate::build_support::missing(&["setpriv", "newuidmap"]));
    if let Some(why) = skip {
        println!("{why}");
        return;
    }
    let runner = crate::sandbox_support::runner();
    let (_, uid, _) = runner.user.clone().expect("tests run as root here");
    let tmp = runner.tempdir();
    let (store, ctx) = (tmp.path().join("store"), tmp.path().join("ctx"));
    std::fs::create_dir(&ctx).unwrap();
    runner.give(tmp.path());
    let as_user = |args: &[&str]| {
        let mut c = crate::sandbox_support::kiln_as_test_user(&store);
        c.args(args);
        c
    };
    // A 0700 dir of a sub-uid: only root of the user's id map can remove it.
    let run = "mkdir /d && dd if=/dev/zero of=/d/big bs=1M count=16 2>/dev/null \
               && chown -R 1000:1000 /d && chmod 700 /d";
    let mut build = start_sleeping_build(as_user(&[]), &ctx, run, "sub-uid-ready");
    kill_hard(&mut build);
    let big: Vec<_> = walkdir::WalkDir::new(store.join("scratch"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "big")
        .map(|e| e.metadata().unwrap().uid())
        .collect();
    assert!(
        big.len() == 1 && big[0] != uid,
        "a sub-uid's file is left: {big:?}"
    );

    let out = crate::build_support::run_ok(&mut as_user(&["prune"]));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("1 scratch dirs of interrupted builds"),
        "{report}"
    );
    let left: Vec<_> = std::fs::read_dir(store.join("scratch"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
