//! Property tests for the shell lexer: random words never panic, never take a second, and
//! the results are self-consistent. Run longer with `PROPTEST_CASES=<n>`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln::dockerfile::shell::ShellLex;
use proptest::prelude::*;

/// Pieces that exercise every branch of the lexer, glued together at random.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "`", "'", "\"", " ",
            "\t", "\n", "=", "[", "]", "^", ".", "(", ")", "|", "0", "@", "!", "_",
        ])
        .prop_map(String::from),
        2 => prop::sample::select(vec![
            "${", "${A", "${A:-", "${A:+", "${A:?", "${A#", "${A##", "${A%", "${A%%", "${A/",
            "${A//", "${EMPTY", "${NONE", "$A", "$NONE", "\\$", "\\\\", "}", "\\}", "\\/",
        ])
        .prop_map(String::from),
        2 => "[a-zA-Z0-9_]{1,4}",
        1 => "\\PC{1,3}",
    ]
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(piece(), 0..40).prop_map(|p| p.concat()),
        1 => prop::collection::vec(piece(), 0..400).prop_map(|p| p.concat()),
    ]
}

fn env() -> BTreeMap<String, String> {
    [
        ("A", "a*b/c d"),
        ("EMPTY", ""),
        ("SP", "  x  y "),
        ("STAR", "\\*/?"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

const LIMIT: Duration = Duration::from_secs(1);

/// 2000 cases by default; `PROPTEST_CASES` overrides (for the long fuzzing run).
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 2000;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_words_never_panic_or_hang(w in word(), backtick in any::<bool>()) {
        let lex = ShellLex::new(if backtick { '`' } else { '\\' });
        let env = env();

        let start = Instant::now();
        let single = lex.process_word(&w, &env);
        prop_assert!(start.elapsed() < LIMIT, "process_word took {:?}", start.elapsed());

        let start = Instant::now();
        let split = lex.process_words_with_matches(&w, &env);
        prop_assert!(start.elapsed() < LIMIT, "process_words took {:?}", start.elapsed());

        let start = Instant::now();
        let heredoc = lex.process_heredoc(&w, &env);
        prop_assert!(start.elapsed() < LIMIT, "process_heredoc took {:?}", start.elapsed());

        // Both entry points run the same scan: same verdict, same value, same names.
        match (&single, &split) {
            (Ok(one), Ok((words, many))) => {
                prop_assert_eq!(one, many);
                prop_assert!(words.iter().all(|w| !w.is_empty()));
                prop_assert!(one.matched.is_disjoint(&one.unmatched));
                prop_assert!(one.matched.iter().all(|name| env.contains_key(name)));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            _ => prop_assert!(false, "process_word and process_words disagree"),
        }
        for err in [single.err(), heredoc.err()].into_iter().flatten() {
            prop_assert!(err.offset <= w.len() && w.is_char_boundary(err.offset));
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn words_without_specials_are_unchanged(w in "[a-zA-Z0-9_./,=:-]{0,60}") {
        let got = ShellLex::new('\\').process_word(&w, &env()).unwrap();
        prop_assert_eq!(got.value, w);
    }
}
