//! The Docker conformance corpus: every case in `testdata/conformance/` (format in its
//! README.md) built by `kiln build` as root, into one store, FROM the busybox base in the test
//! binary's loopback registry, and its image compared with the reference:
//!
//! - by default, buildah's build of the same case (`buildah bud --isolation chroot --layers`,
//!   cached under `$CARGO_TARGET_TMPDIR/conformance-buildah` so reruns are fast): the whole file
//!   tree (kinds, link targets, modes, owners, content) and the config fields Docker's builder
//!   sets ([`CONFIG_FIELDS`]);
//! - `"reference": "docker"` cases, where buildah 1.28 lags docker: the paths and config fields
//!   the case's `expect.json` records from docker's behaviour;
//! - bad-input cases (`"error"`): the build fails, naming `Dockerfile:LINE` and the given text.
//!
//! A case kiln gets wrong today carries `"known_failure": "why"`: it prints KNOWN FAILURE and
//! the reason, and fails the test once it passes (so the mark gets removed).
//! `KILN_CONFORMANCE_CASE=SUBSTRING` runs only the cases whose name contains it.
//!
//! Needs root, buildah, skopeo, docker-registry, jq and runc; without them it prints SKIPPED.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::build_support::{BuildahBuild, Node, Storage};
use serde::Deserialize;
use serde_json::Value;

/// The config fields Docker's builder sets from a Dockerfile.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// buildah stamps its own version into every image it builds; Docker and kiln do not.
const BUILDAH_ONLY_LABELS: &[&str] = &["io.buildah.version"];

/// Cases built at once: kiln and buildah both use the 2 cores of CI while a RUN waits.
const PARALLEL: usize = 3;

/// A case's `expect.json` (every field optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// What this case checks, for the reader.
    #[serde(default)]
    checks: String,
    /// `buildah` (default) or `docker`: where the expected result comes from.
    #[serde(default)]
    reference: Reference,
    /// Extra build arguments, given to kiln and buildah (`--target=x`, `--build-arg=K=V`).
    #[serde(default)]
    args: Vec<String>,
    /// Why kiln fails this case today.
    known_failure: Option<String>,
    /// The build must fail so.
    error: Option<ExpectError>,
    /// Config fields and their exact values (`null`: absent).
    #[serde(default)]
    config: BTreeMap<String, Value>,
    /// Paths (no leading `/`) and what they must be.
    #[serde(default)]
    files: BTreeMap<String, ExpectFile>,
    /// Paths the image must not have.
    #[serde(default)]
    absent: Vec<String>,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum Reference {
    #[default]
    Buildah,
    Docker,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectError {
    /// The Dockerfile line the error names (`Dockerfile:LINE`); none for errors about the
    /// command line (`--target`) or the whole file.
    line: Option<u32>,
    /// Texts the error output contains.
    #[serde(default)]
    contains: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    /// As [`Node::kind`]: `file`, `dir`, `symlink -> TARGET`, `hardlink -> PATH`.
    kind: Option<String>,
    /// A regular file's exact content.
    content: Option<String>,
    /// Octal permission bits, e.g. `"0755"`.
    mode: Option<String>,
    /// `UID:GID`.
    owner: Option<String>,
}

struct Case {
    name: String,
    dir: PathBuf,
    expect: Expect,
}

impl Case {
    fn dockerfile(&self) -> PathBuf {
        self.dir.join("Dockerfile")
    }
}

fn corpus_dir() -> PathBuf {
    crate::common::repo_root().join("testdata/conformance")
}

fn load_cases() -> Vec<Case> {
    let only = std::env::var("KILN_CONFORMANCE_CASE").unwrap_or_default();
    let mut cases: Vec<Case> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let file = dir.join("expect.json");
            let expect = match std::fs::read(&file) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display())),
                Err(_) => Expect::default(),
            };
            Case { name, dir, expect }
        })
        .filter(|c| c.name.contains(&only))
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// What running a case found: Ok, or the mismatches.
type Outcome = Result<(), Vec<String>>;

/// Everything the cases share: the scratch space, kiln's store and buildah's storage.
struct Run {
    tmp: tempfile::TempDir,
    storage: Storage,
    empty_context: PathBuf,
}

impl Run {
    fn context(&self, case: &Case) -> PathBuf {
        let dir = case.dir.join("context");
        if dir.is_dir() {
            dir
        } else {
            self.empty_context.clone()
        }
    }

    fn check(&self, case: &Case) -> Outcome {
        let layout = self.tmp.path().join("layouts").join(&case.name);
        let mut args = vec![
            "--progress=plain".to_string(),
            format!(
                "--build-arg=BASE={}/kiln-test",
                crate::build_support::bases().addr()
            ),
            format!("--output=type=oci,dest={}", layout.display()),
            "-f".into(),
            case.dockerfile().to_string_lossy().into_owned(),
        ];
        args.extend(case.expect.args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::build_support::kiln_build(
            &self.tmp.path().join("store"),
            &args,
            &self.context(case),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(error) = &case.expect.error {
            return check_error(error, out.status.success(), &stderr);
        }
        if !out.status.success() {
            return Err(vec![format!("kiln build failed:\n{}", tail(&stderr))]);
        }
        let ours = crate::build_support::read_layout(&layout, "latest");
        let mut problems = check_expectations(&case.expect, &ours);
        if case.expect.reference == Reference::Buildah {
            problems.extend(self.compare_with_buildah(case, &ours));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// [`Run::check`], with a panic (a reference build that failed, an unreadable image) as a
    /// mismatch of this case rather than the end of the run.
    fn check_or_panic(&self, case: &Case) -> Outcome {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.check(case))).unwrap_or_else(
            |panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(vec![format!("panicked: {message}")])
            },
        )
    }

    fn compare_with_buildah(
        &self,
        case: &Case,
        ours: &crate::build_support::LayoutImage,
    ) -> Vec<String> {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-buildah");
        let context = self.context(case);
        let dockerfile = case.dockerfile();
        let reference = crate::build_support::buildah_cached_build(
            &self.storage,
            &cache,
            &BuildahBuild {
                name: &case.name,
                dockerfile: &dockerfile,
                context: &context,
                args: &case.expect.args,
            },
        );
        let theirs = crate::build_support::read_dir_image(&reference);
        let mut problems = Vec::new();
        let (a, b) = (
            config_fields(&ours.config),
            buildah_config_fields(&theirs.config),
        );
        for field in CONFIG_FIELDS {
            if a[field] != b[field] {
                problems.push(format!(
                    "config {field}: kiln {}  vs  buildah {}",
                    a[field], b[field]
                ));
            }
        }
        let kiln_tree = crate::build_support::file_tree(ours);
        let mut buildah_tree = crate::build_support::file_tree(&theirs);
        crate::build_support::drop_buildah_mount_stubs(&kiln_tree, &mut buildah_tree);
        let diff = crate::build_support::tree_diff(&kiln_tree, &buildah_tree);
        if !diff.is_empty() {
            problems.push(format!(
                "file tree, kiln (-) vs buildah (+):\n{}",
                diff.join("\n")
            ));
        }
        problems
    }
}

/// The last lines of a build's output, for a failure message.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn check_error(error: &ExpectError, succeeded: bool, stderr: &str) -> Outcome {
    if succeeded {
        return Err(vec!["the build succeeded; it must fail".into()]);
    }
    let mut problems = Vec::new();
    if let Some(line) = error.line {
        let place = format!("Dockerfile:{line}");
        let names_line = stderr
            .match_indices(&place)
            .any(|(i, _)| !stderr[i + place.len()..].starts_with(|c: char| c.is_ascii_digit()));
        if !names_line {
            problems.push(format!("the error does not name {place}"));
        }
    }
    for text in &error.contains {
        if !stderr.contains(text.as_str()) {
            problems.push(format!("the error does not say {text:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.push(format!("kiln said:\n{}", tail(stderr)));
        Err(problems)
    }
}

fn config_fields(config: &Value) -> BTreeMap<&'static str, Value> {
    let mut fields: BTreeMap<_, _> = CONFIG_FIELDS
        .iter()
        .map(|f| (*f, config["config"][f].clone()))
        .collect();
    for (_, v) in fields.iter_mut() {
        // An empty map or list is what an absent field means.
        let empty = v.as_object().is_some_and(|o| o.is_empty())
            || v.as_array().is_some_and(|a| a.is_empty())
            || v.as_str() == Some("");
        if empty {
            *v = Value::Null;
        }
    }
    fields
}

/// buildah's config fields, without what only buildah adds.
fn buildah_config_fields(config: &Value) -> BTreeMap<&'static str, Value> {
    let mut config = config.clone();
    if let Some(labels) = config["config"]["Labels"].as_object_mut() {
        for l in BUILDAH_ONLY_LABELS {
            labels.remove(*l);
        }
    }
    config_fields(&config)
}

/// The case's own expectations (`config`, `files`, `absent`) against kiln's image.
fn check_expectations(expect: &Expect, image: &crate::build_support::LayoutImage) -> Vec<String> {
    let mut problems = Vec::new();
    let config = &image.config["config"];
    for (field, want) in &expect.config {
        let got = config.get(field).cloned().unwrap_or(Value::Null);
        if got != *want {
            problems.push(format!("config {field}: {got}, expected {want}"));
        }
    }
    if expect.files.is_empty() && expect.absent.is_empty() {
        return problems;
    }
    let tree = crate::build_support::file_tree(image);
    for (path, want) in &expect.files {
        match tree.get(path.as_str()) {
            None => problems.push(format!("/{path} is missing")),
            Some(node) => problems.extend(check_file(image, path, node, want)),
        }
    }
    for path in &expect.absent {
        if let Some(node) = tree.get(path.as_str()) {
            problems.push(format!("/{path} must be absent: {node}"));
        }
    }
    problems
}

fn check_file(
    image: &crate::build_support::LayoutImage,
    path: &str,
    node: &Node,
    want: &ExpectFile,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(kind) = &want.kind {
        if node.kind != *kind {
            problems.push(format!("/{path}: {}, expected {kind}", node.kind));
        }
    }
    if let Some(mode) = &want.mode {
        let mode = u32::from_str_radix(mode, 8).unwrap_or_else(|_| panic!("mode {mode}"));
        if node.mode != mode {
            problems.push(format!(
                "/{path}: mode {:04o}, expected {mode:04o}",
                node.mode
            ));
        }
    }
    if let Some(owner) = &want.owner {
        let got = format!("{}:{}", node.uid, node.gid);
        if got != *owner {
            problems.push(format!("/{path}: owner {got}, expected {owner}"));
        }
    }
    if let Some(content) = &want.content {
        let got = crate::build_support::file_content(image, path)
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if got.as_deref() != Some(content.as_str()) {
            problems.push(format!("/{path}: content {got:?}, expected {content:?}"));
        }
    }
    problems
}

/// How a case ended, against its `known_failure` mark.
enum Verdict {
    Pass,
    Fail(Vec<String>),
    KnownFailure(String, Vec<String>),
    /// Marked as a known failure, yet passes.
    Fixed(String),
}

fn verdict(case: &Case, outcome: Outcome) -> Verdict {
    match (outcome, &case.expect.known_failure) {
        (Ok(()), None) => Verdict::Pass,
        (Ok(()), Some(why)) => Verdict::Fixed(why.clone()),
        (Err(p), None) => Verdict::Fail(p),
        (Err(p), Some(why)) => Verdict::KnownFailure(why.clone(), p),
    }
}

#[test]
fn every_case_builds_like_docker() {
    if let Some(skip) =
        crate::build_support::missing(&["buildah", "skopeo", "docker-registry", "jq", "runc"])
    {
        return println!("{skip}");
    }
    let cases = load_cases();
    assert!(!cases.is_empty(), "no case in testdata/conformance");
    crate::build_support::bases();
    let tmp = crate::build_support::lowercase_tempdir("conformance");
    let empty_context = tmp.path().join("empty-context");
    std::fs::create_dir(&empty_context).unwrap();
    std::fs::create_dir(tmp.path().join("layouts")).unwrap();
    let run = Run {
        storage: Storage::new(None),
        tmp,
        empty_context,
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Verdict)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let v = verdict(case, run.check_or_panic(case));
                    results.lock().unwrap().push((i, v));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    let mut known = 0;
    for (i, v) in results {
        let name = &cases[i].name;
        match v {
            Verdict::Pass => println!("ok {name}"),
            Verdict::KnownFailure(why, problems) => {
                known += 1;
                println!(
                    "KNOWN FAILURE {name}: {why}\n    {}",
                    problems.join("\n    ")
                );
            }
            Verdict::Fail(problems) => {
                let checks = &cases[i].expect.checks;
                println!("FAILED {name} ({checks}):\n    {}", problems.join("\n    "));
                failures.push(format!("{name}: {}", problems.join("; ")));
            }
            Verdict::Fixed(why) => {
                println!("FIXED {name}: passes; remove its known_failure ({why})");
                failures.push(format!("{name} passes: remove its known_failure mark"));
            }
        }
    }
    println!(
        "{} cases: {} failed, {known} known failures",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
