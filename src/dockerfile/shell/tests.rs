//! Unit tests: every operator and every error, plus BuildKit's own `lex_test.go` cases.

use std::collections::{BTreeMap, HashMap};

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word(input: &str, pairs: &[(&str, &str)]) -> String {
    ShellLex::new('\\')
        .process_word(input, &env(pairs))
        .unwrap_or_else(|e| panic!("{input:?}: {e}"))
        .value
}

fn err(input: &str, pairs: &[(&str, &str)]) -> ExpandError {
    match ShellLex::new('\\').process_word(input, &env(pairs)) {
        Ok(got) => panic!("{input:?} should fail, gave {:?}", got.value),
        Err(e) => e,
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn plain_and_braced_variables() {
    let e = [("A", "x y"), ("EMPTY", "")];
    assert_eq!(word("$A", &e), "x y");
    assert_eq!(word("${A}b", &e), "x yb");
    assert_eq!(word("$Ab", &e), "");
    assert_eq!(word("pre$EMPTY.post", &e), "pre.post");
    assert_eq!(word("$", &e), "$");
    assert_eq!(word("a$ b", &e), "a$ b");
    assert_eq!(word("$1$@$#x", &e), "x");
}

#[test]
fn default_operators() {
    let e = [("SET", "v"), ("EMPTY", "")];
    assert_eq!(word("${SET:-d}|${EMPTY:-d}|${NONE:-d}", &e), "v|d|d");
    assert_eq!(word("${SET-d}|${EMPTY-d}|${NONE-d}", &e), "v||d");
    assert_eq!(word("${NONE:-$SET and ${NONE2:-deep}}", &e), "v and deep");
    assert_eq!(word("${NONE:-'q}' \"$SET\"}", &e), "q} v");
}

#[test]
fn alternative_operators() {
    let e = [("SET", "v"), ("EMPTY", "")];
    assert_eq!(word("${SET:+a}|${EMPTY:+a}|${NONE:+a}", &e), "a||");
    assert_eq!(word("${SET+a}|${EMPTY+a}|${NONE+a}", &e), "a|a|");
    assert_eq!(word("${SET:+[$SET]}", &e), "[v]");
}

#[test]
fn required_operators() {
    let e = [("VAR", "plain"), ("EMPTY", ""), ("ARG", "x")];
    assert_eq!(word("${VAR:?m}${VAR?m}", &e), "plainplain");
    assert_eq!(word("${EMPTY?m}", &e), "");
    let failure = err("${EMPTY:?message here$ARG}", &e);
    assert_eq!(
        failure.kind,
        ExpandErrorKind::Required {
            name: "EMPTY".into(),
            message: "message herex".into()
        }
    );
    assert_eq!(
        err("${NONE?}", &e).kind.to_string(),
        "NONE: is not allowed to be unset"
    );
    assert_eq!(
        err("${EMPTY:?}", &e).kind.to_string(),
        "EMPTY: is not allowed to be empty"
    );
    assert_eq!(
        err("${NONE:?}", &e).kind.to_string(),
        "NONE: is not allowed to be unset"
    );
}

#[test]
fn trim_operators() {
    let e = [("P", "/usr/local/bin.tar.gz"), ("STARS", "a***yy*")];
    assert_eq!(word("${P#*/}", &e), "usr/local/bin.tar.gz");
    assert_eq!(word("${P##*/}", &e), "bin.tar.gz");
    assert_eq!(word("${P%.*}", &e), "/usr/local/bin.tar");
    assert_eq!(word("${P%%.*}", &e), "/usr/local/bin");
    assert_eq!(word("${P#nomatch}", &e), "/usr/local/bin.tar.gz");
    assert_eq!(word("${P#?usr}", &e), "/local/bin.tar.gz");
    assert_eq!(word("${STARS%%\\**\\*}", &e), "a");
    assert_eq!(word("${NONE#x}", &e), "");
    assert_eq!(word("${P:#*/}", &e), "usr/local/bin.tar.gz");
}

#[test]
fn substitution_operators() {
    let e = [("F", "/tmp/tmp/bar.txt"), ("U", "http://x.de")];
    assert_eq!(word("${F/tmp/T}", &e), "/T/tmp/bar.txt");
    assert_eq!(word("${F//tmp/T}", &e), "/T/T/bar.txt");
    assert_eq!(word("${F//\\//_}", &e), "_tmp_tmp_bar.txt");
    assert_eq!(word("${F/*\\//}", &e), "bar.txt");
    assert_eq!(
        word("${U/http:\\/\\//https:\\/\\/}", &e),
        "https:\\/\\/x.de"
    );
    assert_eq!(word("${F/nomatch/x}", &e), "/tmp/tmp/bar.txt");
    assert_eq!(word("${NONE//a/b}", &e), "");
}

#[test]
fn quotes_and_escapes() {
    let e = [("A", "v")];
    assert_eq!(word("'$A' \"$A\" \\$A", &e), "$A v $A");
    assert_eq!(word("\"a\\\"b\\\\c\\d\"", &e), "a\"b\\c\\d");
    assert_eq!(word("a\\ b\\", &e), "a b");
    let backtick = ShellLex::new('`');
    let got = backtick
        .process_word("C:\\dir `$A \"`\"\"", &env(&e))
        .unwrap();
    assert_eq!(got.value, "C:\\dir $A \"");
}

#[test]
fn errors_name_the_construct_and_its_column() {
    let cases: &[(&str, ExpandErrorKind, usize)] = &[
        ("ab'cd", ExpandErrorKind::UnterminatedSingleQuote, 3),
        ("a\"b", ExpandErrorKind::UnterminatedDoubleQuote, 2),
        ("x${A", ExpandErrorKind::MissingBrace, 2),
        ("x${", ExpandErrorKind::MissingBrace, 2),
        ("x${A:-b", ExpandErrorKind::MissingBrace, 2),
        ("x${A/b", ExpandErrorKind::MissingSlash, 2),
        ("x${A/b/c", ExpandErrorKind::MissingBrace, 2),
        ("한${}", ExpandErrorKind::BadSubstitution, 2),
        ("${:-a}", ExpandErrorKind::BadSubstitution, 1),
        ("${{a}", ExpandErrorKind::BadSubstitution, 1),
        (
            "${A:=x}",
            ExpandErrorKind::UnsupportedModifier(":=".into()),
            1,
        ),
        (
            "${A=x}",
            ExpandErrorKind::UnsupportedModifier("=".into()),
            1,
        ),
        ("${A.}", ExpandErrorKind::UnsupportedModifier(".".into()), 1),
    ];
    for (input, kind, column) in cases {
        let e = err(input, &[]);
        assert_eq!(&e.kind, kind, "{input:?}");
        assert_eq!(e.column, *column, "{input:?}");
        assert_eq!(e.word, *input);
    }
    let e = err("ab${A#\\x}", &[("A", "v")]);
    assert!(
        matches!(e.kind, ExpandErrorKind::InvalidPattern { .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "failed to process \"ab${A#\\\\x}\": invalid pattern (\\x) in substitution: \
         invalid escape '\\x' (at column 3 of the word)"
    );
    assert_eq!(e.offset, 2);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = "${a:-".repeat(5000) + &"}".repeat(5000);
    assert!(matches!(err(&deep, &[]).kind, ExpandErrorKind::TooDeep(_)));
    let fine = "${a:-".repeat(50) + "x" + &"}".repeat(50);
    assert_eq!(word(&fine, &[]), "x");
}

#[test]
fn an_expansion_larger_than_1_mib_is_an_error_naming_the_variable() {
    let half = "x".repeat(MAX_EXPANDED / 2);
    assert_eq!(word("$H$H", &[("H", &half)]).len(), MAX_EXPANDED);
    let large = |input: &str| match err(input, &[("H", &half), ("S", "s")]).kind {
        ExpandErrorKind::TooLarge { name } => name,
        other => panic!("{input}: {other:?}"),
    };
    assert_eq!(large("$S$H$H").as_deref(), Some("H"));
    assert_eq!(large("\"$H$H$S\"").as_deref(), Some("S"));
    assert_eq!(large("${S:-x}${H}${H}").as_deref(), Some("H"));
    assert_eq!(large("${U:-$H$H$H}").as_deref(), Some("H"));
    // A replacement that multiplies the value.
    assert_eq!(large("${H//x/yyy}").as_deref(), Some("H"));
    // Heredoc bodies and split words have the same limit.
    let lex = ShellLex::new('\\');
    let e = env(&[("H", &half)]);
    assert!(lex.process_heredoc("$H $H", &e).is_err());
    assert!(lex.process_words("$H $H", &e).is_err());
    let shown = err("$H$H$H", &[("H", &half)]).to_string();
    assert!(
        shown.contains("larger than 1 MiB after adding $H"),
        "{shown}"
    );
    assert!(shown.len() < 500, "the value is not shown");
}

#[test]
fn pattern_matching_has_a_budget_per_word() {
    let value = "a".repeat(128 * 1024);
    let e = [("V", value.as_str())];
    // 64 characters over 128 KiB: 8 Mi steps, well inside the budget.
    let fine = "?".repeat(64);
    assert_eq!(word(&format!("${{V#{fine}}}"), &e).len(), value.len() - 64);
    let costly = format!("${{V##{}b}}", "*a".repeat(300));
    match err(&costly, &e).kind {
        ExpandErrorKind::PatternTooCostly {
            name,
            pattern_chars,
            value_bytes,
        } => assert_eq!(
            (name.as_str(), pattern_chars, value_bytes),
            ("V", 601, 128 * 1024)
        ),
        other => panic!("{other:?}"),
    }
    let p = format!("{}b", "*a".repeat(300));
    for costly in [
        format!("${{V%%{p}}}"),
        format!("${{V/{p}/x}}"),
        format!("${{V//{p}/x}}"),
    ] {
        assert!(
            matches!(
                err(&costly, &e).kind,
                ExpandErrorKind::PatternTooCostly { .. }
            ),
            "{costly}"
        );
    }
    // Each match is affordable; ten of them in one word are not.
    let each = format!("${{V%{}}}", "?".repeat(250));
    assert!(!word(&each, &e).is_empty());
    assert!(matches!(
        err(&each.repeat(10), &e).kind,
        ExpandErrorKind::PatternTooCostly { .. }
    ));
}

#[test]
fn words_split_on_unquoted_whitespace() {
    let lex = ShellLex::new('\\');
    let e = env(&[("S", " a  b "), ("E", "")]);
    assert_eq!(
        lex.process_words("x$S\"$S\"y", &e).unwrap(),
        ["x", "a", "b", " a  b y"]
    );
    assert_eq!(
        lex.process_words("  one\\ two   three ", &e).unwrap(),
        ["one two", "three"]
    );
    assert_eq!(
        lex.process_words("\"\" $E ''", &e).unwrap(),
        Vec::<String>::new()
    );
    let (words, expansion) = lex.process_words_with_matches("k=$S $NOPE", &e).unwrap();
    assert_eq!(words, ["k=", "a", "b"]);
    assert_eq!(expansion.value, "k= a  b  ");
    assert_eq!(expansion.matched, set(&["S"]));
    assert_eq!(expansion.unmatched, set(&["NOPE"]));
}

#[test]
fn heredoc_keeps_quotes_and_expands_variables() {
    let lex = ShellLex::new('`');
    let e = env(&[("NAME", "kiln")]);
    let got = lex
        .process_heredoc("echo '$NAME' \"${NAME}\" \\$HOME ${X:-d}\nline2\n", &e)
        .unwrap();
    assert_eq!(got.value, "echo 'kiln' \"kiln\" $HOME d\nline2\n");
    assert_eq!(got.matched, set(&["NAME"]));
    assert_eq!(got.unmatched, set(&["X"]));
    // Unbalanced quotes are plain text in a heredoc body.
    assert_eq!(lex.process_heredoc("it's", &e).unwrap().value, "it's");
}

#[test]
fn env_implementations_and_matches() {
    let mut hash = HashMap::new();
    hash.insert("FOO".to_string(), "y".to_string());
    let got = ShellLex::default()
        .process_word("x ${FOO} ${UNUSED}", &hash)
        .unwrap();
    assert_eq!(got.value, "x y ");
    assert_eq!(got.matched, set(&["FOO"]));
    assert_eq!(got.unmatched, set(&["UNUSED"]));
}

/// BuildKit's `TestProcessWithMatches` cases (frontend/dockerfile/shell/lex_test.go).
#[test]
fn buildkit_process_with_matches_cases() {
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );
    let fb: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let cases: &[Case] = &[
        ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
        (
            "x ${UNUSED}",
            &[("DUMMY", "dummy")],
            Some("x "),
            &[],
            &["UNUSED"],
        ),
        ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            fb,
            Some("xxx  ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            fb,
            Some("xxx bbb ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO:-}", fb, Some("xxx"), &["FOO"], &[]),
        ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            fb,
            Some("aaa bbb "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            fb,
            Some("aaa  "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO?aaa}", fb, Some("xxx"), &["FOO"], &[]),
        ("${BAR?bbb}", fb, Some(""), &["BAR"], &[]),
        ("${BAZ?ccc}", fb, None, &[], &[]),
        ("${FOO:?aaa}", fb, Some("xxx"), &["FOO"], &[]),
        ("${BAR:?bbb}", fb, None, &[], &[]),
        ("${BAZ:?ccc}", fb, None, &[], &[]),
        ("${BAZ:?}", fb, None, &[], &[]),
        ("${FOO=aaa}", fb, None, &[], &[]),
        ("${FOO=:aaa}", fb, None, &[], &[]),
        ("${FOO=}", &[], None, &[], &[]),
        (
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO%%\\**}",
            &[("FOO", "xx**")],
            Some("xx"),
            &["FOO"],
            &[],
        ),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "x")],
            Some("xyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
            &["FOO"],
            &["ABC"],
        ),
        (
            "${FOO%%\\**\\*}",
            &[("FOO", "a***yy*")],
            Some("a"),
            &["FOO"],
            &[],
        ),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO//\\//\\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some("\\/tmp\\/foo.txt"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO///}", &[], Some(""), &[], &["FOO"]),
    ];
    let lex = ShellLex::new('\\');
    for (input, pairs, expected, matched, unmatched) in cases {
        let result = lex.process_word(input, &env(pairs));
        match expected {
            None => assert!(result.is_err(), "{input:?} should fail: {result:?}"),
            Some(expected) => {
                let got = result.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                assert_eq!(got.value, *expected, "{input:?}");
                assert_eq!(got.matched, set(matched), "{input:?}");
                assert_eq!(got.unmatched, set(unmatched), "{input:?}");
            }
        }
    }
}

#[test]
fn buildkit_release_filename_example() {
    let e = [
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "arm"),
    ];
    let w =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    assert_eq!(word(w, &e), "something-v1.2.3.linux-arm.tar.gz");
    let mut with_variant = e.to_vec();
    with_variant.push(("TARGETVARIANT", "v7"));
    assert_eq!(
        word(w, &with_variant),
        "something-v1.2.3.linux-arm-v7.tar.gz"
    );
}
