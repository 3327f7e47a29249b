//! Property test: no input makes the parser (or the typing of instructions, the dumper, the
//! planner and its shell-word expansion) panic, and every case finishes in well under a second. Run longer with PROPTEST_CASES.

use std::time::{Duration, Instant};

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

fn check(src: &str) {
    let start = Instant::now();
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
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?} on {src:?}",
        start.elapsed()
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
    check(&format!("FROM a\nRUN {}\n", "x \\\n".repeat(20_000)));
    check(&format!("FROM a\nCMD {}\n", "[".repeat(100_000)));
}
