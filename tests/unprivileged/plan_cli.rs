//! `kiln plan`: finding the Dockerfile, -f -, build args, --target, text and JSON output.

use assert_cmd::Command;
use predicates::prelude::*;

fn kiln() -> Command {
    Command::cargo_bin("kiln").unwrap()
}

fn testdata(dir: &str) -> std::path::PathBuf {
    crate::common::repo_root().join("testdata/plan").join(dir)
}

#[test]
fn text_outline_of_a_multistage_build() {
    let out = kiln()
        .arg("plan")
        .arg(testdata("multistage"))
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let file = testdata("multistage")
        .join("Dockerfile")
        .display()
        .to_string();
    assert!(
        text.starts_with("target: stage 2 (final)\nglobal args:\n  GO_VERSION=1.22\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\nstage 0 (build): FROM golang:1.22  [{file}:3]\n"
        )),
        "{text}"
    );
    assert!(text.contains("   5. RUN --mount=type=cache,target=/root/.cache/go-build [\"/bin/sh\", \"-c\", \"go build -o /out/app .\"]"), "{text}");
    assert!(text.contains("      args: GO_VERSION=1.22\n"), "{text}");
    assert!(
        text.contains("   4. COPY go.mod go.sum -> /src/  ["),
        "{text}"
    );
    assert!(
        text.contains("   1. COPY --from=stage 0 (build) /out/app -> /app"),
        "{text}"
    );
    assert!(
        text.contains("skipped stages (not needed for the target): 1 (test)\n"),
        "{text}"
    );
}

#[test]
fn json_with_build_arg_and_target() {
    let out = kiln()
        .args([
            "plan",
            "--format",
            "json",
            "--build-arg",
            "GO_VERSION=1.23",
            "--target",
            "test",
        ])
        .arg(testdata("multistage"))
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["target"], 1);
    assert_eq!(v["order"], serde_json::json!([0, 1]));
    assert_eq!(v["stages"][0]["base"]["value"], "golang:1.23");
    assert_eq!(v["stages"][2]["needed"], false);
    assert_eq!(
        v["stages"][1]["steps"][0]["args_used"]["GO_VERSION"],
        "1.23"
    );
}

#[test]
fn containerfile_is_found_and_stdin_works() {
    kiln()
        .arg("plan")
        .arg(testdata("containerfile"))
        .assert()
        .success()
        .stdout(predicate::str::contains("FROM busybox"))
        .stdout(predicate::str::contains("echo from-containerfile"));
    kiln()
        .args(["plan", "-f", "-"])
        .write_stdin("FROM scratch\nCOPY a /a\n")
        .assert()
        .success()
        .stdout(predicate::str::contains("1. COPY a -> /a  [<stdin>:2]"));
}

#[test]
fn errors_name_the_place_and_warnings_are_not_fatal() {
    kiln()
        .args(["plan", "-f", "-", "--target", "nope"])
        .write_stdin("FROM scratch AS a\n")
        .assert()
        .code(1)
        .stderr("error: <stdin>: target stage \"nope\" could not be found (stages: a)\n");
    kiln()
        .args(["plan", "-f", "-"])
        .write_stdin("FROM scratch\nCOPY a b /c\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: <stdin>:2:1: When using COPY with more than one source file",
        ))
        .stderr(predicate::str::contains(" 2 | COPY a b /c\n   | ^"));
    kiln()
        .args(["plan", "-f", "-", "--build-arg", "UNUSED=1"])
        .write_stdin("FROM scratch\nCMD run\n")
        .assert()
        .success()
        .stdout(predicate::str::contains("<stdin>:2:1: JSONArgsRecommended"))
        .stdout(predicate::str::contains(
            "UnusedBuildArg: One or more build-args [UNUSED] were not consumed",
        ));
}

#[test]
fn missing_dockerfile_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    kiln()
        .arg("plan")
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no Dockerfile or Containerfile in",
        ))
        .stderr(predicate::str::contains("use -f FILE"));
}
