//! BuildKit's shell-lexer vectors (`<conformance>/buildkit/shell/{envVarTest,wordsTest}`),
//! run against `kiln::dockerfile::shell::ShellLex`. Skips (and says so) when absent.

use std::collections::BTreeMap;

use kiln::dockerfile::shell::ShellLex;

fn vectors(name: &str) -> Option<String> {
    match crate::common::conformance_dir() {
        Ok(dir) => {
            let path = dir.join("buildkit/shell").join(name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Some(text)
        }
        Err(skipped) => {
            println!("{skipped}");
            None
        }
    }
}

/// `KEY=VALUE` as BuildKit's `BuildEnvs` reads it: split at the first `=`.
fn insert_env(env: &mut BTreeMap<String, String>, entry: &str) {
    match entry.split_once('=') {
        Some((k, v)) => env.insert(k.to_string(), v.to_string()),
        None => env.insert(entry.to_string(), String::new()),
    };
}

#[test]
fn env_var_test() {
    let Some(text) = vectors("envVarTest") else {
        return;
    };
    let mut env = BTreeMap::new();
    for entry in ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="] {
        insert_env(&mut env, entry);
    }
    let lex = ShellLex::new('\\');
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(
            fields.len(),
            3,
            "envVarTest:{}: malformed line {line:?}",
            n + 1
        );
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        assert!(
            matches!(platform, "A" | "U" | "W"),
            "envVarTest:{}: platform {platform}",
            n + 1
        );
        if platform == "W" {
            continue;
        }
        ran += 1;
        let got = lex.process_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(got), expected) => expected != "error" && got.value == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "envVarTest:{}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran > 200, "only {ran} vectors ran");
}

#[test]
fn words_test() {
    let Some(text) = vectors("wordsTest") else {
        return;
    };
    let lex = ShellLex::new('\\');
    let mut env = BTreeMap::new();
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(entry) = line.strip_prefix("ENV ") {
            // The value is verbatim, trailing spaces included.
            insert_env(&mut env, entry.trim_start_matches(' '));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            2,
            "wordsTest:{}: malformed line {line:?}",
            n + 1
        );
        let input = fields[0].trim();
        let expected: Vec<String> = fields[1]
            .trim_start_matches(' ')
            .split(',')
            .map(String::from)
            .collect();
        ran += 1;
        let got = lex
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "wordsTest:{}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran > 20, "only {ran} vectors ran");
}
