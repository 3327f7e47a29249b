//! Property test: no input makes the parser (or the typing of instructions, the dumper, the
//! planner and its shell-word expansion) panic, and every case finishes in well under a second. Run longer with PROPTEST_CASES.

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

use kiln::dockerfile::{parse, parse_instructions};
use proptest::prelude::*;

/// Dockerfile-shaped fragments, so random input reaches the interesting paths.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM ".to_string()),
        Just("RUN ".to_string()),
        Just("COPY ".to_string()),
        Just("ONBUILD ".to_string()),
        Just("ENV ".to_string()),
        Just("HEALTHCHECK ".to_string()),
        Just("ARG ".to_string()),
        Just("$".to_string()),
        Just("${a:-".to_string()),
        Just("}".to_string()),
        Just("AS b\n".to_string()),
        Just("--mount=".to_string()),
        Just("# escape=`\n".to_string()),
        Just("\\\n".to_string()),
        Just("`\n".to_string()),
        Just("<<EOF".to_string()),
        Just("<<-'E'".to_string()),
        Just("\nEOF\n".to_string()),
        Just("[\"a\", ".to_string()),
        Just("--from=".to_string()),
        Just("=".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\r\n".to_string()),
        Just("\n".to_string()),
        Just("\t".to_string()),
        "[ -~]{0,12}",
        any::<String>(),
    ]
}

/// CPU time this thread has used: unlike wall time, it does not count the time other
/// processes on a busy machine take the core away from us.
fn thread_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

fn check(src: &str) {
    let start = thread_cpu();
    // The planner runs the parser and the shell lexer on every expandable word.
    let _ = kiln::plan::plan(src, &kiln::plan::PlanOptions::default())
        .map_err(|e| e.render("Dockerfile", src));
    if let Ok(ast) = parse(src) {
        let _ = ast.dump();
        if let Err(e) = parse_instructions(&ast) {
            let _ = e.render("Dockerfile", src);
        }
    } else if let Err(e) = parse(src) {
        let _ = e.render("Dockerfile", src);
    }
    let used = thread_cpu() - start;
    assert!(
        used < Duration::from_secs(1),
        "took {used:?} of CPU on {src:?}"
    );
}

proptest! {
    #[test]
    fn random_dockerfile_shaped_input_never_panics(parts in proptest::collection::vec(fragment(), 0..40)) {
        check(&parts.concat());
    }

    #[test]
    fn random_text_never_panics(src in any::<String>()) {
        check(&src);
    }
}

#[test]
fn large_inputs_stay_fast() {
    // Many heredoc markers with no terminator, a very long continued line, deep JSON.
    check(&format!("FROM a\nRUN {}\n", "<<E ".repeat(5_000)));
    check(&format!("FROM a\nRUN {}\n", "x \\\n".repeat(50_000)));
    check(&format!("FROM a\nCMD {}\n", "[".repeat(100_000)));
}
