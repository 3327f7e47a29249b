//! Bounds on what a Dockerfile or a step can make kiln spend (issue 12, items 6 and 8):
//! - a RUN printing 200 MB (short lines, or no newline at all) keeps kiln's peak RSS under
//!   100 MB in every progress mode, its log clipped and said so;
//! - an expansion that doubles itself, or a pattern too costly to match, fails at once with
//!   `Dockerfile:LINE` and the variable;
//! - SIGTERM while planning an endless expansion stops the build with "interrupted".

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::build_support::{bases_or_skip, context, failed, have, kiln, kiln_build};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// kiln's peak resident set allowed while a step floods its output.
const RSS_LIMIT_KB: u64 = 100 * 1024;

/// `Maximum resident set size (kbytes): N` of GNU time's `-v` report.
fn max_rss_kb(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .unwrap_or_else(|| panic!("no RSS in the report:\n{report}"))
        .trim()
        .parse()
        .unwrap()
}

/// Builds `dockerfile` under `/usr/bin/time -v` with `--progress MODE`; returns its combined
/// output (for tty, what the pseudo-terminal showed) and kiln's peak RSS.
fn build_measured(dockerfile: &str, mode: &str) -> (String, u64) {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let kiln_exe = env!("CARGO_BIN_EXE_kiln");
    let (ok, text) = if mode == "tty" {
        let cmd = format!(
            "stty cols 100 rows 30; env -u SOURCE_DATE_EPOCH KILN_ROOT={} /usr/bin/time -v {kiln_exe} build --progress tty {}",
            store.path().display(),
            ctx.path().display()
        );
        let out = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    } else {
        let out = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(kiln_exe)
            .args(["build", "--progress", mode])
            .arg(ctx.path())
            .env("KILN_ROOT", store.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Only the end of a failed build's output is worth showing.
    let end = &text[text.len().saturating_sub(4000)..];
    assert!(ok, "build failed ({mode}):\n{end}");
    (text.clone(), max_rss_kb(&text))
}

fn flood_stays_small(script: &str, said: &[&str]) {
    let Some(bases) = bases_or_skip() else {
        return;
    };
    if !have("script") {
        println!("SKIPPED: needs script (util-linux) for the tty mode");
        return;
    }
    let dockerfile = format!("FROM {}\nRUN {script}\n", bases.busybox());
    for mode in ["plain", "json", "tty"] {
        let t0 = Instant::now();
        let (text, rss) = build_measured(&dockerfile, mode);
        // Shown for the record, not asserted: the machine's load decides the time.
        println!("{mode}: peak RSS {rss} KiB, {:.1?}", t0.elapsed());
        for s in said {
            assert!(text.contains(s), "{mode}: {s:?} not said");
        }
        assert!(
            rss < RSS_LIMIT_KB,
            "{mode}: kiln's peak RSS was {rss} KiB (limit {RSS_LIMIT_KB})"
        );
    }
}

#[test]
fn a_step_printing_200_mb_of_short_lines_keeps_kiln_small() {
    flood_stays_small(
        "yes | head -c 200000000",
        &[
            "[output clipped, log limit 2 MiB reached]",
            "more line(s) not shown",
        ],
    );
}

#[test]
fn a_step_printing_200_mb_without_a_newline_keeps_kiln_small() {
    flood_stays_small(
        "head -c 200000000 /dev/zero | tr '\\0' x",
        &["[line cut at 64 KiB]"],
    );
}

#[test]
fn a_failing_step_after_a_flood_shows_its_last_lines() {
    let Some(bases) = bases_or_skip() else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nRUN yes | head -c 10000000; echo the-last-words; exit 3\n",
        bases.busybox()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let err = failed(&kiln_build(
        store.path(),
        &["--progress", "plain"],
        ctx.path(),
    ));
    let end = &err[err.len().saturating_sub(3000)..];
    assert!(end.contains("exited with code 3"), "{end}");
    assert!(end.contains("    the-last-words"), "{end}");
    // 5,000,000 lines of "y": the first 2 MiB of them (1,048,576 lines) are shown.
    let shown = err
        .lines()
        .filter(|l| l.starts_with('#') && l.ends_with(" y"))
        .count();
    assert_eq!(shown, 1024 * 1024);
    // The other 3,951,424 (and the last words, and whatever `yes` says on a broken pipe).
    let hidden: u64 = err
        .split_once(" more line(s) not shown; the last 20 are in the error")
        .and_then(|(before, _)| before.rsplit_once('[')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no count of hidden lines: {end}"));
    assert!((3_951_425..3_951_430).contains(&hidden), "{hidden}");
}

/// `ARG a=x` then `ARG a=$a$a` `times` times (global ARGs when `global`).
fn doubling(times: usize, global: bool) -> String {
    let mut d = String::new();
    if !global {
        d.push_str("FROM scratch\n");
    }
    d.push_str("ARG a=x\n");
    for _ in 0..times {
        d.push_str("ARG a=$a$a\n");
    }
    if global {
        d.push_str("FROM scratch\n");
    }
    d.push_str("LABEL done=1\n");
    d
}

#[test]
fn an_arg_doubling_itself_fails_at_the_line_passing_1_mib() {
    for global in [true, false] {
        let ctx = context(&[("Dockerfile", &doubling(33, global))]);
        let store = tempfile::tempdir().unwrap();
        let err = failed(&kiln_build(store.path(), &[], ctx.path()));
        // 2^20 bytes is still allowed; the 21st doubling is over.
        let line = if global { 22 } else { 23 };
        assert!(
            err.contains(&format!("Dockerfile:{line}:")),
            "global {global}: {err}"
        );
        assert!(
            err.contains("the expanded value is larger than 1 MiB after adding $a"),
            "{err}"
        );
        assert!(
            err.len() < 10_000,
            "the value is not printed: {}",
            err.len()
        );
    }
}

#[test]
fn a_pattern_too_costly_to_match_fails_naming_the_variable() {
    // $a is 128 KiB; a 600-character pattern over it is over the budget.
    let mut d = doubling(17, false).replace("LABEL done=1\n", "");
    let pattern = "*a".repeat(300);
    d.push_str(&format!("ARG b=${{a##{pattern}}}\n"));
    let line = d.lines().count();
    let ctx = context(&[("Dockerfile", &d)]);
    let store = tempfile::tempdir().unwrap();
    let err = failed(&kiln_build(store.path(), &[], ctx.path()));
    assert!(err.contains(&format!("Dockerfile:{line}:")), "{err}");
    assert!(
        err.contains("matching a 600-character pattern against the 131072-byte value of $a"),
        "{err}"
    );
    assert!(err.contains("pattern-matching budget"), "{err}");
}

/// CPU seconds `pid` has used (utime + stime from /proc).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

#[test]
fn sigterm_while_planning_a_long_expansion_stops_the_build() {
    // 64 KiB of a and b at random, and a pattern whose DFA would need 2^60 states (an `a`
    // 60 characters before a `c`): each match runs the engine's slow path, within the
    // budget; thousands of them plan for minutes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let value: String = (0..64 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed & 1 == 0 { 'a' } else { 'b' }
        })
        .collect();
    let mut d = format!("FROM scratch\nARG a={value}\n");
    let pattern = format!("*a{}c", "?".repeat(60));
    for i in 0..5000 {
        d.push_str(&format!("ARG b{i}=${{a##{pattern}}}\n"));
    }
    let ctx = context(&[("Dockerfile", &d)]);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mut child = kiln(&store)
        .env("TMPDIR", tmp.path())
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Planning is under way once kiln has spent CPU time (starting takes milliseconds).
    let started = Instant::now();
    while cpu_seconds(child.id()) < 0.5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln ended before the signal"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kiln is not planning"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln still planning 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("interrupted while expanding this instruction"),
        "{err}"
    );
    assert_no_leftovers(tmp.path(), &store);
}

/// Nothing but the store (and no temp file in it) is left in the build's TMPDIR.
fn assert_no_leftovers(tmp: &Path, store: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p != store)
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp") && !name.starts_with("run-"),
                "temp file left: {}",
                e.path().display()
            );
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
}
