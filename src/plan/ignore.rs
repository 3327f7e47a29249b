//! `.dockerignore`: which context paths a build may see.
//!
//! Public API: [`DockerIgnore::parse`] / [`DockerIgnore::load`], then
//! [`DockerIgnore::is_excluded`] for a context-relative path and [`DockerIgnore::can_skip_dir`]
//! to prune a walk. Errors are [`IgnoreError`].
//!
//! Semantics follow moby/patternmatcher (`ignorefile.ReadAll` + `MatchesOrParentMatches`):
//! - a line starting with `#` is a comment (only in the first column); blank lines are skipped;
//!   surrounding whitespace is trimmed; a UTF-8 BOM and CR line ends are accepted;
//! - patterns are cleaned like Go's `filepath.Clean` and a leading `/` is dropped, so `/a`,
//!   `./a` and `a/` all mean `a`; they are anchored at the context root (not gitignore-like:
//!   `foo` does not match `sub/foo`; write `**/foo` for that);
//! - Go `filepath.Match` syntax: `*` and `?` (never matching `/`), `[a-z]`, `[^a-z]`, `\`
//!   escapes; `**` matches any number of directories;
//! - a pattern matches a path or any of its parent directories;
//! - `!pattern` re-includes; the last matching pattern wins.
//!
//! Checked against buildah 1.28 (`testdata/dockerignore/`, `tests/unprivileged/dockerignore.rs`). Where
//! buildah differs from BuildKit we follow BuildKit: `<Dockerfile>.dockerignore` (buildah 1.28
//! ignores it) and patterns with `..` (BuildKit's `filepath.Clean` keeps a leading `../`, which
//! then never matches, and turns `/../a` into `a`; buildah does otherwise).

use std::io::ErrorKind::InvalidData;
use std::path::{Path, PathBuf};

use super::glob::{Glob, GlobError};
use crate::fs_root::read_maybe_in;
use crate::lexical_path::clean;

/// A `.dockerignore` file that could not be read or has a bad pattern.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The ignore file (".dockerignore" when parsed from text).
        file: String,
        /// 1-based line number.
        line: usize,
        pattern: String,
        reason: GlobError,
    },
    #[error("{file}:{line}: bad pattern \"!\": a lone \"!\" excludes nothing; remove the line")]
    LoneBang {
        /// The ignore file (".dockerignore" when parsed from text).
        file: String,
        /// 1-based line number.
        line: usize,
    },
}

/// The parsed exclusion rules of a build context.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// `!pattern`: re-includes what earlier patterns excluded.
    exception: bool,
    glob: Glob,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        Self::parse_named(text, ".dockerignore")
    }

    /// Reads the ignore file for a build, the first that exists of: beside the Dockerfile,
    /// `<name>.dockerignore` then `<name>.containerignore` (BuildKit's per-Dockerfile file;
    /// buildah's `.dockerignore`-wins order when both exist); in the context,
    /// `.containerignore` then `.dockerignore` (buildah and podman prefer the former, and
    /// kiln accepts the `Containerfile` name they go with). None: nothing is excluded.
    /// A file inside the context is resolved with the context as `/` (BuildKit reads it
    /// from the context it was sent): a symlink out of the context is not followed there.
    pub fn load(context: &Path, dockerfile: Option<&Path>) -> Result<Self, IgnoreError> {
        let beside = |suffix: &str| {
            dockerfile.and_then(|df| {
                let mut name = df.file_name()?.to_os_string();
                name.push(suffix);
                Some(df.with_file_name(name))
            })
        };
        let candidates = [
            beside(".dockerignore"),
            beside(".containerignore"),
            Some(context.join(".containerignore")),
            Some(context.join(".dockerignore")),
        ];
        for path in candidates.into_iter().flatten() {
            match read_maybe_in(context, &path)
                .and_then(|b| String::from_utf8(b).map_err(|e| std::io::Error::new(InvalidData, e)))
            {
                Ok(text) => return Self::parse_named(&text, &path.display().to_string()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(IgnoreError::Read { path, source }),
            }
        }
        Ok(Self::default())
    }

    fn parse_named(text: &str, file: &str) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let bad = |reason: GlobError| IgnoreError::BadPattern {
                file: file.to_string(),
                line: index + 1,
                pattern: raw.trim().to_string(),
                reason,
            };
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if exception && body.is_empty() {
                return Err(IgnoreError::LoneBang {
                    file: file.to_string(),
                    line: index + 1,
                });
            }
            let mut text = clean(body);
            if text.len() > 1 && text.starts_with('/') {
                text.remove(0);
            }
            let glob = Glob::compile(&text).map_err(bad)?;
            patterns.push(Pattern { exception, glob });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether `rel_path` (context-relative, `/`-separated) is excluded from the context.
    /// The context root itself is never excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path);
        let path = path.strip_prefix('/').unwrap_or(&path);
        if path.is_empty() || path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(end) => path[..end]
                .match_indices('/')
                .map(|(i, _)| &path[..i])
                .chain([&path[..end]])
                .collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the verdict needs evaluating.
            if pattern.exception != excluded {
                continue;
            }
            let hit =
                pattern.glob.matches(path) || parents.iter().any(|dir| pattern.glob.matches(dir));
            if hit {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether a walk may skip `rel_dir` entirely: it is excluded and no exception could
    /// re-include anything below it. Conservative: an exception with wildcards or escapes
    /// keeps every excluded directory walkable (BuildKit's fsutil does so for wildcards).
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return false;
        }
        let dir = clean(rel_dir);
        let dir_slash = format!("{}/", dir.trim_start_matches('/'));
        self.patterns.iter().filter(|p| p.exception).all(|p| {
            !p.glob.has_wildcards() && !format!("{}/", p.glob.text()).starts_with(&dir_slash)
        })
    }

    /// True when there are no patterns at all (nothing is ever excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn patterns_are_anchored_at_the_root_and_cover_children() {
        let ig = ignore("foo\n/bar/\n./baz/qux\n");
        assert!(ig.is_excluded("foo"));
        assert!(ig.is_excluded("foo/deep/file"));
        assert!(!ig.is_excluded("sub/foo"));
        assert!(!ig.is_excluded("foobar"));
        assert!(ig.is_excluded("bar/x"));
        assert!(ig.is_excluded("baz/qux/y"));
        assert!(!ig.is_excluded("baz/other"));
        assert!(!ig.is_excluded("."));
        assert!(!ig.is_excluded(""));
        assert!(ig.is_excluded("./foo"));
        // BuildKit cleans `/../a` to `a` and keeps `../a`, which can never match.
        let ig = ignore("/../a\n../b\n");
        assert!(ig.is_excluded("a"));
        assert!(!ig.is_excluded("b"));
    }

    #[test]
    fn single_star_and_question_stay_within_a_segment() {
        let ig = ignore("*.md\na?c\n");
        assert!(ig.is_excluded("README.md"));
        assert!(!ig.is_excluded("docs/README.md"));
        assert!(ig.is_excluded("abc"));
        assert!(!ig.is_excluded("a/c"));
        let ig = ignore("*/*.md");
        assert!(ig.is_excluded("docs/a.md"));
        assert!(!ig.is_excluded("a.md"));
        assert!(!ig.is_excluded("x/docs/a.md"));
    }

    #[test]
    fn double_star_matches_any_depth() {
        let ig = ignore("**/*.log\n");
        assert!(ig.is_excluded("a.log"));
        assert!(ig.is_excluded("x/y/a.log"));
        assert!(!ig.is_excluded("x/y/a.txt"));
        let ig = ignore("**/node_modules");
        assert!(ig.is_excluded("node_modules/x"));
        assert!(ig.is_excluded("a/node_modules"));
        let ig = ignore("a/**/b");
        assert!(ig.is_excluded("a/b"));
        assert!(ig.is_excluded("a/x/y/b"));
        assert!(!ig.is_excluded("b"));
        let ig = ignore("build/**");
        assert!(ig.is_excluded("build/x"));
        assert!(!ig.is_excluded("build"));
        let ig = ignore("**");
        assert!(ig.is_excluded("anything/at/all"));
    }

    #[test]
    fn exceptions_with_last_match_winning() {
        let ig = ignore("*.md\n!README.md\n");
        assert!(ig.is_excluded("CHANGES.md"));
        assert!(!ig.is_excluded("README.md"));
        let ig = ignore("!README.md\n*.md\n");
        assert!(ig.is_excluded("README.md"));
        let ig = ignore("docs\n!docs/keep\ndocs/keep/secret\n");
        assert!(ig.is_excluded("docs/a"));
        assert!(!ig.is_excluded("docs/keep/b"));
        assert!(ig.is_excluded("docs/keep/secret/c"));
        let ig = ignore("!  spaced\n");
        assert!(!ig.is_excluded("spaced"));
    }

    #[test]
    fn classes_and_escapes() {
        let ig = ignore("file[0-9].txt\nx[^ab]y\nlit\\*star\n[\\]]\n");
        assert!(ig.is_excluded("file7.txt"));
        assert!(!ig.is_excluded("filea.txt"));
        assert!(ig.is_excluded("xcy"));
        assert!(!ig.is_excluded("xay"));
        assert!(ig.is_excluded("lit*star"));
        assert!(!ig.is_excluded("litXstar"));
        assert!(ig.is_excluded("]"));
        let ig = ignore("a.b+c(d)|e{f}$g");
        assert!(ig.is_excluded("a.b+c(d)|e{f}$g"));
        assert!(!ig.is_excluded("aXb+c(d)|e{f}$g"));
        let ig = ignore("*.b+c");
        assert!(ig.is_excluded("x.b+c"));
        assert!(!ig.is_excluded("x.bbc"));
    }

    #[test]
    fn comments_blank_lines_bom_and_crlf() {
        let ig = ignore("\u{feff}# comment\r\n\r\n  \nsecret\r\n #notacomment\n");
        assert!(ig.is_excluded("secret"));
        assert!(ig.is_excluded("#notacomment"));
        assert!(!ig.is_excluded("# comment"));
        assert_eq!(ig.patterns.len(), 2);
    }

    #[test]
    fn bad_patterns_name_the_line() {
        for (text, line, reason) in [
            ("ok\n!\n", 2, "lone"),
            ("a\nb\n[abc\n", 3, "unclosed"),
            ("x[]\n", 1, "escaped"),
            ("x[a-]\n", 1, "escaped"),
            ("x\\\n", 1, "trailing"),
            ("[z-a]\n", 1, "out of order"),
        ] {
            let err = DockerIgnore::parse(text).expect_err(text);
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(".dockerignore:{line}: bad pattern")),
                "{msg}"
            );
            assert!(msg.contains(reason), "{msg}");
        }
    }

    #[test]
    fn can_skip_dir_only_when_no_exception_reaches_inside() {
        let ig = ignore("node_modules\nbuild\n!build/keep.txt\n");
        assert!(ig.can_skip_dir("node_modules"));
        assert!(!ig.can_skip_dir("build"));
        assert!(!ig.can_skip_dir("src"));
        let ig = ignore("vendor\n!**/*.go\n");
        assert!(!ig.can_skip_dir("vendor"));
        let ig = ignore("x\n!\\x/y\n");
        assert!(
            !ig.can_skip_dir("x"),
            "the escaped exception re-includes x/y"
        );
        assert!(!ig.is_excluded("x/y"));
        let ig = ignore("a\n!b\n");
        assert!(ig.can_skip_dir("a"));
        assert!(ig.can_skip_dir("a/deeper"));
    }

    #[test]
    fn load_prefers_the_dockerfile_specific_file() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        assert!(DockerIgnore::load(&ctx, None).unwrap().is_empty());
        std::fs::write(ctx.join(".dockerignore"), "general\n").unwrap();
        let df = dir.path().join("app.Dockerfile");
        let ig = DockerIgnore::load(&ctx, Some(&df)).unwrap();
        assert!(ig.is_excluded("general"));
        std::fs::write(dir.path().join("app.Dockerfile.dockerignore"), "specific\n").unwrap();
        let ig = DockerIgnore::load(&ctx, Some(&df)).unwrap();
        assert!(ig.is_excluded("specific"));
        assert!(!ig.is_excluded("general"));
        std::fs::write(ctx.join(".dockerignore"), "[\n").unwrap();
        let err = DockerIgnore::load(&ctx, None).unwrap_err().to_string();
        assert!(err.contains("ctx/.dockerignore:1: bad pattern"), "{err}");
    }

    #[test]
    fn containerignore_is_read_and_wins_in_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join(".containerignore"), "from-containerignore\n").unwrap();
        let ig = DockerIgnore::load(&ctx, None).unwrap();
        assert!(ig.is_excluded("from-containerignore"));
        std::fs::write(ctx.join(".dockerignore"), "from-dockerignore\n").unwrap();
        let ig = DockerIgnore::load(&ctx, None).unwrap();
        assert!(ig.is_excluded("from-containerignore"));
        assert!(!ig.is_excluded("from-dockerignore"));
        // Beside the Dockerfile: <name>.containerignore, unless <name>.dockerignore exists.
        let df = dir.path().join("Containerfile");
        std::fs::write(dir.path().join("Containerfile.containerignore"), "cf-ci\n").unwrap();
        let ig = DockerIgnore::load(&ctx, Some(&df)).unwrap();
        assert!(ig.is_excluded("cf-ci") && !ig.is_excluded("from-containerignore"));
        std::fs::write(dir.path().join("Containerfile.dockerignore"), "cf-di\n").unwrap();
        let ig = DockerIgnore::load(&ctx, Some(&df)).unwrap();
        assert!(ig.is_excluded("cf-di") && !ig.is_excluded("cf-ci"));
    }

    #[test]
    fn ignore_files_in_the_context_never_follow_a_symlink_out_of_it() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        // A host file whose first line is a bad pattern: read, it would fail the load and
        // its text would be in the error.
        let host = dir.path().join("host-secret");
        std::fs::write(&host, "[HOST-SECRET\n").unwrap();
        for name in [
            ".dockerignore",
            ".containerignore",
            "sub/Dockerfile.dockerignore",
        ] {
            symlink(&host, ctx.join(name)).unwrap();
        }
        let df = ctx.join("sub/Dockerfile");
        let ig = DockerIgnore::load(&ctx, Some(&df)).unwrap();
        assert!(ig.is_empty());
        // The same link followed with the context as `/` finds the context's own file.
        std::fs::create_dir_all(ctx.join(dir.path().strip_prefix("/").unwrap())).unwrap();
        std::fs::write(ctx.join(host.strip_prefix("/").unwrap()), "inside\n").unwrap();
        let ig = DockerIgnore::load(&ctx, Some(&df)).unwrap();
        assert!(ig.is_excluded("inside"));
        // A Dockerfile the user named outside the context keeps its ignore file as named.
        let outside_df = dir.path().join("app.Dockerfile");
        symlink(&host, dir.path().join("app.Dockerfile.dockerignore")).unwrap();
        let err = DockerIgnore::load(&ctx, Some(&outside_df)).unwrap_err();
        assert!(err.to_string().contains("bad pattern"), "{err}");
    }

    #[test]
    fn a_read_error_does_not_repeat_its_cause() {
        use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};
        let e = IgnoreError::Read {
            path: PathBuf::from("/ctx/.dockerignore"),
            source: io(),
        };
        assert_each_cause_once(&e, CAUSE);
    }
}
