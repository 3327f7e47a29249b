//! BuildKit's parser vectors: every `parser/testfiles/*/Dockerfile` must dump exactly as its
//! `result`, and `parser/testfile-line` must give BuildKit's line numbers.

use kiln::dockerfile;

#[test]
fn every_buildkit_testfile_dumps_identically() {
    let dir = match crate::common::conformance_dir() {
        Ok(d) => d.join("buildkit/parser/testfiles"),
        Err(reason) => {
            println!("{reason}");
            return;
        }
    };
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading the testfiles folder")
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "expected BuildKit's ~33 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let source =
            String::from_utf8_lossy(&std::fs::read(case.join("Dockerfile")).unwrap()).into_owned();
        let expected = std::fs::read_to_string(case.join("result")).unwrap();
        match dockerfile::parse(&source) {
            Ok(ast) if ast.dump() == expected => {}
            Ok(ast) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{}",
                case.display(),
                ast.dump()
            )),
            Err(e) => failures.push(format!(
                "{}: {}",
                case.display(),
                e.render("Dockerfile", &source)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn testfile_line_numbers_match_buildkit() {
    let dir = match crate::common::conformance_dir() {
        Ok(d) => d.join("buildkit/parser/testfile-line"),
        Err(reason) => {
            println!("{reason}");
            return;
        }
    };
    let source = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let ast = dockerfile::parse(&source).unwrap();
    let lines: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.span.line, n.span.end_line))
        .collect();
    // The start/end lines BuildKit's TestParseLineInformation expects for this file.
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
}
