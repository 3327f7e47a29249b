//! Path globs as Docker reads them (moby/patternmatcher, Go's `filepath.Match` syntax): the
//! one glob compiler, used by `.dockerignore` ([`super::ignore`]) and meant for COPY source
//! wildcards, which BuildKit matches with the same code.
//!
//! `*` and `?` never match `/`, `[a-z]` and `[^a-z]` classes, `\` escapes, `**` any number of
//! directories. A pattern is compiled as patternmatcher classifies it: a literal compares as a
//! string, `lit**` and `**lit` as a prefix or suffix, anything else becomes an anchored
//! regular expression (the `regex` crate matches in linear time, so no pattern can hang a
//! build).
//!
//! (The `${v#pattern}` patterns of the Dockerfile shell are another language, BuildKit's shell
//! patterns, where `*` crosses `/` and there are no classes: `dockerfile::shell::pattern`.)

use regex::Regex;

/// Why a pattern is not valid `filepath.Match` syntax (as moby/patternmatcher checks it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("a trailing \\ escapes nothing")]
    TrailingEscape,
    #[error("unclosed character class '['")]
    UnclosedClass,
    #[error("'-' or ']' must be escaped inside a character class")]
    Unescaped,
    #[error("character range {0}-{1} is out of order")]
    RangeOrder(char, char),
    /// The regular expression it compiles to is refused (too large); its words are kept.
    #[error("{0}")]
    Regex(String),
}

/// A compiled path glob.
#[derive(Debug, Clone)]
pub struct Glob {
    /// The pattern as given (already cleaned by the caller).
    text: String,
    matcher: Matcher,
}

/// How a pattern matches, as moby/patternmatcher classifies it.
#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcards: the path must be equal.
    Exact,
    /// `literal**`: any path starting with `literal`.
    Prefix(String),
    /// `**literal`: any path ending with `literal` (and `**/x` also matches `x`).
    Suffix(String),
    Regex(Regex),
}

impl Glob {
    /// Compiles a cleaned pattern (see the module docs); the error says what is wrong.
    pub fn compile(pattern: &str) -> Result<Glob, GlobError> {
        Ok(Glob {
            text: pattern.to_string(),
            matcher: compile(pattern)?,
        })
    }

    /// The pattern text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `path` (`/`-separated, relative, clean) matches the whole pattern.
    pub fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.text,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }

    /// Whether the pattern's text may differ from the paths it matches: wildcards (`*`, `?`,
    /// `[`) and escapes (`\x` matches `x`).
    pub fn has_wildcards(&self) -> bool {
        self.text.contains(['*', '?', '[', '\\'])
    }
}

/// Classifies and compiles one cleaned pattern the way moby/patternmatcher does: literal
/// patterns compare as strings, `lit**` and `**lit` as prefix/suffix, anything else becomes
/// an anchored regular expression. Syntax follows Go's `filepath.Match` and is checked first.
fn compile(pattern: &str) -> Result<Matcher, GlobError> {
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is the same as `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(?:.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                let escaped = chars.get(i).ok_or(GlobError::TrailingEscape)?;
                i += 1;
                regex.push_str(&regex::escape(&escaped.to_string()));
                kind = Kind::Regex;
            }
            '[' => {
                i = class(&chars, i, &mut regex)?;
                kind = Kind::Regex;
            }
            _ => regex.push_str(&regex::escape(&ch.to_string())),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            regex.push('$');
            Matcher::Regex(Regex::new(&regex).map_err(|e| GlobError::Regex(e.to_string()))?)
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Parses a `filepath.Match` character class starting after its `[`, appends the equivalent
/// regex class and returns the index after the closing `]`.
fn class(chars: &[char], mut i: usize, regex: &mut String) -> Result<usize, GlobError> {
    regex.push('[');
    if chars.get(i) == Some(&'^') {
        regex.push('^');
        i += 1;
    }
    let mut ranges = 0;
    loop {
        match chars.get(i) {
            None => return Err(GlobError::UnclosedClass),
            Some(']') if ranges > 0 => {
                regex.push(']');
                return Ok(i + 1);
            }
            Some(_) => {}
        }
        let lo = class_char(chars, &mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = class_char(chars, &mut i)?;
            if hi < lo {
                return Err(GlobError::RangeOrder(lo, hi));
            }
        }
        regex.push_str(&format!("\\x{{{:x}}}-\\x{{{:x}}}", lo as u32, hi as u32));
        ranges += 1;
    }
}

/// One (possibly escaped) character inside a class; `-` and `]` must be escaped there.
fn class_char(chars: &[char], i: &mut usize) -> Result<char, GlobError> {
    let ch = match chars.get(*i) {
        None => return Err(GlobError::UnclosedClass),
        Some('-' | ']') => return Err(GlobError::Unescaped),
        Some('\\') => {
            *i += 1;
            *chars.get(*i).ok_or(GlobError::UnclosedClass)?
        }
        Some(&ch) => ch,
    };
    *i += 1;
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_patternmatcher_does() {
        for (pattern, path, want) in [
            ("a/b", "a/b", true),
            ("a/b", "a/bc", false),
            ("*.md", "README.md", true),
            ("*.md", "docs/README.md", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("*/*.md", "docs/a.md", true),
            ("**/*.log", "a.log", true),
            ("**/*.log", "x/y/a.log", true),
            ("**/node_modules", "node_modules", true),
            ("**/node_modules", "a/node_modules", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "b", false),
            ("build/**", "build/x", true),
            ("build/**", "build", false),
            ("file[0-9].txt", "file7.txt", true),
            ("file[0-9].txt", "filea.txt", false),
            ("x[^ab]y", "xcy", true),
            ("x[^ab]y", "xay", false),
            ("lit\\*star", "lit*star", true),
            ("lit\\*star", "litXstar", false),
            ("a.b+c(d)|e{f}$g", "a.b+c(d)|e{f}$g", true),
            ("*.b+c", "x.bbc", false),
        ] {
            let glob = Glob::compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(glob.matches(path), want, "{pattern} ~ {path}");
        }
    }

    #[test]
    fn bad_globs_say_why() {
        for (pattern, want) in [
            ("[abc", GlobError::UnclosedClass),
            ("x[]", GlobError::Unescaped),
            ("x[a-]", GlobError::Unescaped),
            ("x\\", GlobError::TrailingEscape),
            ("[z-a]", GlobError::RangeOrder('z', 'a')),
        ] {
            assert_eq!(Glob::compile(pattern).unwrap_err(), want, "{pattern}");
        }
        assert!(Glob::has_wildcards(&Glob::compile("a\\b").unwrap()));
        assert!(!Glob::compile("a/b").unwrap().has_wildcards());
    }
}
