//! `kiln debug dump-ast`: file and stdin input, BuildKit's format, errors with place and caret.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn dumps_a_file() {
    let file = crate::common::repo_root().join("testdata/dockerfile/heredocs.Dockerfile");
    Command::cargo_bin("kiln")
        .unwrap()
        .args(["debug", "dump-ast"])
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "(from \"alpine\")\n(run \"<<EOF\")\n",
        ))
        .stdout(predicate::str::contains(
            "(onbuild (run \"<<X\"))\n(cmd \"done\")\n",
        ));
}

#[test]
fn reads_stdin_for_dash() {
    Command::cargo_bin("kiln")
        .unwrap()
        .args(["debug", "dump-ast", "-"])
        .write_stdin("FROM a\nCOPY --from=b [\"x y\", \"/z\"]\nENV k=v\n")
        .assert()
        .success()
        .stdout("(from \"a\")\n(copy [\"--from=b\"] \"x y\" \"/z\")\n(env \"k\" \"v\" \"=\")\n");
}

#[test]
fn parse_error_names_file_line_and_column() {
    Command::cargo_bin("kiln")
        .unwrap()
        .args(["debug", "dump-ast", "-"])
        .write_stdin("FROM a\nRUN <<EOF\nno end\n")
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "<stdin>:2:1: unterminated heredoc: no line `EOF` ends it before the end of the file\n 2 | RUN <<EOF\n   | ^",
        ));
}

#[test]
fn missing_file_is_a_clear_error() {
    Command::cargo_bin("kiln")
        .unwrap()
        .args(["debug", "dump-ast", "/nonexistent/Dockerfile"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("reading /nonexistent/Dockerfile"));
}
