//! `.dockerignore` against results recorded with buildah: each `testdata/dockerignore/<case>/`
//! holds a build context and `expected.txt`, the paths buildah 1.28 copied for
//! `FROM scratch` + `COPY . /` (recorded by tests/scripts/record-dockerignore-buildah.sh).

use std::collections::BTreeSet;
use std::path::Path;

use kiln::plan::ignore::DockerIgnore;

/// What `COPY . /` would copy: files that are not excluded, directories that are not excluded
/// or hold something copied. With `prune`, directories `can_skip_dir` allows are not entered,
/// which must not change the result.
fn copied_paths(context: &Path, ignore: &DockerIgnore, prune: bool) -> BTreeSet<String> {
    let mut copied = BTreeSet::new();
    let mut walk = walkdir::WalkDir::new(context)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(context)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if entry.file_type().is_dir() {
            if prune && ignore.can_skip_dir(&rel) {
                walk.skip_current_dir();
            } else if !ignore.is_excluded(&rel) {
                copied.insert(rel);
            }
            continue;
        }
        if !ignore.is_excluded(&rel) {
            // Parents of a copied file are created even when excluded themselves.
            let mut parent = Path::new(&rel).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                copied.insert(dir.to_str().unwrap().to_string());
                parent = dir.parent();
            }
            copied.insert(rel);
        }
    }
    copied
}

#[test]
fn matches_buildah_on_every_recorded_case() {
    let root = crate::common::repo_root().join("testdata/dockerignore");
    let mut cases = 0;
    for case in std::fs::read_dir(&root).unwrap() {
        let case = case.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let context = case.join("context");
        let expected: BTreeSet<String> = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{name}: expected.txt: {e}"))
            .lines()
            .map(String::from)
            .collect();
        let ignore = DockerIgnore::load(&context, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            copied_paths(&context, &ignore, false),
            expected,
            "case {name}"
        );
        assert_eq!(
            copied_paths(&context, &ignore, true),
            expected,
            "case {name} (pruned walk)"
        );
        cases += 1;
    }
    assert!(
        cases >= 10,
        "only {cases} cases found under {}",
        root.display()
    );
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    // buildah 1.28 does not read <Dockerfile>.dockerignore; this follows BuildKit / the docs.
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(context.join(".dockerignore"), "general\n").unwrap();
    std::fs::write(
        dir.path().join("build.Dockerfile.dockerignore"),
        "specific\n",
    )
    .unwrap();
    let ignore = DockerIgnore::load(&context, Some(&dir.path().join("build.Dockerfile"))).unwrap();
    assert!(ignore.is_excluded("specific"));
    assert!(!ignore.is_excluded("general"));
    let fallback = DockerIgnore::load(&context, Some(&dir.path().join("Dockerfile"))).unwrap();
    assert!(fallback.is_excluded("general"));
}

mod properties {
    use kiln::plan::ignore::DockerIgnore;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = String> {
        "!?/?(\\.\\./)?[ab*?/.\\[\\]^\\\\-]{0,8}"
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "ab", "ba", "a.b", "*", "["]),
            1..5,
        )
        .prop_map(|parts| parts.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random ignore files never panic, and pruning is sound: a directory that may be
        /// skipped has nothing below it that would be copied.
        #[test]
        fn skipping_a_dir_never_loses_a_copied_path(
            lines in prop::collection::vec(line(), 0..6),
            dir in path(),
            below in prop::collection::vec(path(), 1..6),
        ) {
            let Ok(ignore) = DockerIgnore::parse(&lines.join("\n")) else { return Ok(()) };
            if ignore.can_skip_dir(&dir) {
                prop_assert!(ignore.is_excluded(&dir));
                for rest in below {
                    let child = format!("{dir}/{rest}");
                    prop_assert!(ignore.is_excluded(&child), "{child} would be copied");
                }
            }
        }
    }
}
