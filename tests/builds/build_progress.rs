//! `kiln build --progress plain|json|tty` and `-q`: the BuildKit-like step lines, CACHED markers
//! on a rebuild, the final summary, JSON events line by line, and the live display under a
//! pseudo-terminal leaving nothing half-drawn. Builds FROM scratch need no registry; the RUN
//! checks pull the busybox base from a loopback registry (root only, as in build_examples.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::build_support::{bases_or_skip, have, kiln};
use regex::Regex;

/// A context dir holding `files` (the Dockerfile among them) and a store beside it.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, body) in files {
        let path = t.path().join("ctx").join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    t
}

fn build(t: &Path, args: &[&str]) -> Output {
    let out = kiln(&t.join("root"))
        .arg("build")
        .args(args)
        .arg(t.join("ctx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln build {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SCRATCH: &str = "FROM scratch\nCOPY a.txt /a.txt\nENV MODE=prod\nCOPY src/ /src/\n";

fn scratch_project() -> tempfile::TempDir {
    project(&[
        ("Dockerfile", SCRATCH),
        ("a.txt", "a\n"),
        ("src/main.sh", "echo hi\n"),
    ])
}

/// The summary's `  image id   sha256:…` value.
fn summary_field(stderr: &str, field: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("  {field}")))
        .unwrap_or_else(|| panic!("no {field} line in {stderr}"))
        .trim()
        .to_string()
}

#[test]
fn plain_progress_has_buildkit_structure_and_a_rebuild_is_all_cached() {
    let t = scratch_project();
    let first = build(t.path(), &["-t", "progress/app:1", "--progress", "plain"]);
    let err = text(&first.stderr);
    let id = text(&first.stdout).trim().to_string();
    let want = [
        r"(?m)^#1 \[stage-0 1/3\] COPY a\.txt /a\.txt$",
        r"(?m)^#1 COPY a\.txt /a\.txt: cache miss, not built before$",
        r"(?m)^#1 DONE \d+\.\ds$",
        r"(?m)^#2 \[stage-0 2/3\] ENV MODE=prod$",
        r"(?m)^#2 DONE \d+\.\ds$",
        r"(?m)^#3 \[stage-0 3/3\] COPY src/ /src/$",
        r"(?m)^#3 DONE \d+\.\ds$",
        r"(?m)^built in \d+\.\ds: 2 layer\(s\) written, 0 reused$",
        r"(?m)^  size       \d+ B compressed in 2 layer\(s\)$",
        r"(?m)^  stored as  docker\.io/progress/app:1$",
    ];
    for re in want {
        assert!(Regex::new(re).unwrap().is_match(&err), "{re} in:\n{err}");
    }
    assert_eq!(summary_field(&err, "image id"), id);
    let manifest = summary_field(&err, "manifest");
    assert!(
        Regex::new("^sha256:[0-9a-f]{64}$")
            .unwrap()
            .is_match(&manifest)
    );
    assert_ne!(manifest, id);
    // Steps appear in order, each number once as a header.
    let headers: Vec<&str> = err.lines().filter(|l| l.contains("] ")).collect();
    assert_eq!(headers.len(), 3, "{err}");

    let again = build(t.path(), &["-t", "progress/app:1", "--progress", "plain"]);
    let err = text(&again.stderr);
    assert_eq!(
        text(&again.stdout).trim(),
        id,
        "an unchanged rebuild is the same image"
    );
    for re in [
        r"(?m)^#1 CACHED$",
        r"(?m)^#3 CACHED$",
        r"(?m)^built in \d+\.\ds: 0 layer\(s\) written, 2 reused$",
    ] {
        assert!(Regex::new(re).unwrap().is_match(&err), "{re} in:\n{err}");
    }
    assert!(!err.contains("cache miss"), "{err}");
    assert_eq!(summary_field(&err, "manifest"), manifest);

    std::fs::write(t.path().join("ctx/src/main.sh"), "echo changed\n").unwrap();
    let edited = text(&build(t.path(), &["-t", "progress/app:1", "--progress", "plain"]).stderr);
    assert!(
        edited.contains("#3 COPY src/ /src/: cache miss, 1 file changed (src/main.sh)"),
        "{edited}"
    );
    assert!(edited.contains("1 layer(s) written, 1 reused"), "{edited}");
}

#[test]
fn json_progress_is_one_event_per_line_with_time() {
    let t = scratch_project();
    let out = build(t.path(), &["-t", "j", "--progress", "json"]);
    let err = text(&out.stderr);
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "step_started",
            "cache_miss",
            "step_done",
            "step_started",
            "step_done",
            "step_started",
            "cache_miss",
            "step_done"
        ],
        "{err}"
    );
    assert_eq!(events[0]["id"], "0.1");
    assert_eq!(events[0]["name"], "[stage-0 1/3] COPY a.txt /a.txt");
    assert_eq!(events[2]["cached"], false);
    let times: Vec<u64> = events
        .iter()
        .map(|e| e["time_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(!err.contains("built in"), "no summary for tools: {err}");
    assert!(text(&out.stdout).trim().starts_with("sha256:"));
}

#[test]
fn quiet_prints_only_the_image_id() {
    let t = scratch_project();
    let out = build(t.path(), &["-q", "-t", "q"]);
    let stdout = text(&out.stdout);
    assert!(
        Regex::new("^sha256:[0-9a-f]{64}\n$")
            .unwrap()
            .is_match(&stdout),
        "{stdout:?}"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn build_arg_values_never_appear_in_progress_output() {
    let t = project(&[(
        "Dockerfile",
        "FROM scratch\nARG TOKEN\nCOPY <<EOF /note\n$TOKEN\nEOF\nLABEL token=$TOKEN\n",
    )]);
    for mode in ["plain", "json"] {
        let out = build(
            t.path(),
            &["--build-arg", "TOKEN=hunter2-xyz", "--progress", mode],
        );
        let err = text(&out.stderr);
        assert!(err.contains("LABEL token=$TOKEN"), "{mode}: {err}");
        assert!(!err.contains("hunter2-xyz"), "{mode}: {err}");
    }
}

/// Runs `kiln build` under a pseudo-terminal.
fn build_in_pty(t: &Path, extra: &str) -> (bool, String) {
    let args = format!("build {extra} {}", t.join("ctx").display());
    kiln_in_pty(t, &args)
}

/// Runs `kiln ARGS` under a pseudo-terminal (util-linux `script`) of 100 columns.
fn kiln_in_pty(t: &Path, args: &str) -> (bool, String) {
    let kiln = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    let cmd = format!(
        "stty cols 100 rows 30; env -u SOURCE_DATE_EPOCH KILN_ROOT={} {} {args}",
        t.join("root").display(),
        kiln.display(),
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    (out.status.success(), text(&out.stdout))
}

/// Everything printed after the live display ended: plain text, no escape sequences and no
/// spinner or bar left behind.
fn after<'a>(screen: &'a str, marker: &str) -> &'a str {
    let at = screen
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {screen:?}"));
    &screen[at..]
}

/// The last live line drawn (a spinner) before the summary was erased again (`ESC[2K`).
fn assert_live_lines_cleared(before_summary: &str) {
    const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    if let Some(at) = before_summary.rfind(SPINNER) {
        assert!(
            before_summary[at..].contains("\x1b[2K"),
            "a live line is left drawn: {:?}",
            &before_summary[at..]
        );
    }
}

#[test]
fn tty_progress_shows_steps_and_ends_with_the_summary_and_no_bars() {
    if !have("script") {
        println!("SKIPPED: needs script (util-linux)");
        return;
    }
    let t = scratch_project();
    let (ok, screen) = build_in_pty(t.path(), "-t tty:1");
    assert!(ok, "{screen}");
    for step in [
        "[stage-0 1/3] COPY a.txt /a.txt",
        "[stage-0 2/3] ENV MODE=prod",
        "[stage-0 3/3] COPY src/ /src/",
    ] {
        assert!(
            screen.contains(&format!("=> {step}  ")),
            "{step}: {screen:?}"
        );
    }
    let tail = after(&screen, "built in ");
    assert!(
        !tail.contains('\x1b'),
        "drawing after the summary: {tail:?}"
    );
    assert_live_lines_cleared(&screen[..screen.len() - tail.len()]);
    assert!(tail.contains("2 layer(s) written, 0 reused"), "{tail:?}");
    assert!(
        Regex::new(r"sha256:[0-9a-f]{64}\s*$")
            .unwrap()
            .is_match(tail),
        "ends with the image ID: {tail:?}"
    );

    let (ok, screen) = build_in_pty(t.path(), "-t tty:1");
    assert!(ok, "{screen}");
    assert!(
        screen.contains("=> CACHED [stage-0 1/3] COPY a.txt /a.txt"),
        "{screen:?}"
    );
    assert!(
        screen.contains("=> CACHED [stage-0 3/3] COPY src/ /src/"),
        "{screen:?}"
    );
    assert!(
        after(&screen, "built in ").contains("0 layer(s) written, 2 reused"),
        "{screen:?}"
    );
}

#[test]
fn run_output_pulls_and_failures_in_plain_and_tty() {
    // RUN needs a base image: busybox, in the shared loopback registry.
    let Some(bases) = bases_or_skip() else { return };
    let (registry, busybox) = (bases.addr(), bases.busybox());
    let dockerfile = format!("FROM {busybox}\nRUN echo one && echo two >&2\nRUN echo fine\n");
    let t = project(&[("Dockerfile", &dockerfile)]);
    let dest = format!("{registry}/progress/r:1");
    let err = text(&build(t.path(), &["-t", &dest, "--push", "--progress", "plain"]).stderr);
    for re in [
        r"(?m)^#\d+ sha256:[0-9a-f]{12} .* done$",
        r"(?m)^#\d+ \[stage-0 1/2\] RUN echo one && echo two >&2$",
        r"(?m)^#\d+ \d+\.\d{3} one$",
        r"(?m)^#\d+ \d+\.\d{3} two$",
        r"(?m)^built in \d+\.\ds: 2 layer\(s\) written, 0 reused$",
    ] {
        assert!(Regex::new(re).unwrap().is_match(&err), "{re} in:\n{err}");
    }
    let pushed = format!("  pushed     {registry}/progress/r@sha256:");
    assert!(err.contains(&pushed), "{err}");

    if have("script") {
        // Pull bars under a terminal: each blob ends as a `done` line, no bar left drawn.
        let fresh = tempfile::tempdir().unwrap();
        let (ok, screen) = kiln_in_pty(fresh.path(), &format!("pull {dest}"));
        assert!(ok, "{screen}");
        let done = Regex::new(r"=> sha256:[0-9a-f]{12} [\d.]+ \w+ done  \d+\.\ds").unwrap();
        // The config, busybox's layer and the RUN layers (both RUNs may leave the same diff).
        assert!(done.find_iter(&screen).count() >= 3, "{screen:?}");
        let tail = after(&screen, "progress/r:1: sha256:");
        assert!(!tail.contains('\x1b'), "{tail:?}");
    }

    // A failing step: plain marks it ERROR; the live display shows it again with all of its
    // output, then the error, and leaves no bar behind.
    let failing =
        format!("FROM {busybox}\nRUN for i in 1 2 3 4 5 6 7 8 9; do echo line$i; done; exit 4\n");
    std::fs::write(t.path().join("ctx/Dockerfile"), failing).unwrap();
    let out = kiln(&t.path().join("root"))
        .args(["build", "--progress", "plain"])
        .arg(t.path().join("ctx"))
        .output()
        .unwrap();
    let err = crate::build_support::failed(&out);
    assert!(
        Regex::new(r"(?m)^#\d+ ERROR after \d+\.\ds$")
            .unwrap()
            .is_match(&err),
        "{err}"
    );
    if !have("script") {
        return;
    }
    let (ok, screen) = build_in_pty(t.path(), "");
    assert!(!ok, "{screen}");
    let failed = after(&screen, "=> ERROR [stage-0 1/1] RUN for i in");
    assert_live_lines_cleared(&screen[..screen.len() - failed.len()]);
    let tail = after(failed, "line1");
    assert!(!tail.contains('\x1b'), "{tail:?}");
    for i in 1..=9 {
        assert!(tail.contains(&format!("   line{i}")), "line{i}: {tail:?}");
    }
    assert!(tail.contains("exited with code 4"), "{tail:?}");
}
