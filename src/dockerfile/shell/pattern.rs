//! Shell glob patterns of `${v#p}`, `${v%p}` and `${v/p/r}`: `*` (any string), `?` (any
//! character) and `\` escapes, no bracket expressions. They compile to regular expressions as
//! in BuildKit; the `regex` crate guarantees linear-time matching, so no pattern can hang a
//! build, and [`MATCH_BUDGET`](super::MATCH_BUDGET) bounds the pattern and value sizes it is given. The caller
//! wraps errors with the variable, pattern and position.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;

use super::MAX_EXPANDED;
use super::chars::{is_digit, is_letter};

/// Why a pattern operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PatternError {
    /// Not a pattern this syntax accepts.
    Invalid(InvalidPattern),
    /// Matching would cost more than [`MATCH_BUDGET`](super::MATCH_BUDGET) steps.
    TooCostly { pattern_chars: usize },
    /// The result would be larger than [`MAX_EXPANDED`].
    TooLarge,
}

/// Why a pattern is not one this syntax accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPattern {
    #[error("invalid escape '\\{0}'")]
    Escape(char),
    #[error("invalid escape '\\' at the end")]
    TrailingEscape,
    /// The regular expression it compiles to is refused (too large); `regex::Error` is not
    /// `Eq`, so its words are kept.
    #[error("{0}")]
    Regex(String),
}

/// Takes a match's worst-case cost out of `budget` (what is left of [`MATCH_BUDGET`](super::MATCH_BUDGET) for the
/// word), or refuses it: a linear-time engine takes at most about (pattern length) steps per
/// byte of the value, and compiling costs about the pattern's length again per character.
fn afford(pattern: &str, value: &str, budget: &mut u64) -> Result<(), PatternError> {
    let pattern_chars = pattern.chars().count();
    let cost = pattern_chars as u64 * (value.len() as u64 + pattern_chars as u64);
    *budget = budget
        .checked_sub(cost)
        .ok_or(PatternError::TooCostly { pattern_chars })?;
    Ok(())
}

fn fits(out: &str) -> Result<(), PatternError> {
    if out.len() > MAX_EXPANDED {
        return Err(PatternError::TooLarge);
    }
    Ok(())
}

/// A compiled shell pattern. Patterns without wildcards are plain strings, which spares
/// compiling a regular expression for the common `${v#v}`, `${v%.tar.gz}`, `${v//:/ }`.
enum Glob {
    Literal(String),
    Regex(Regex),
}

/// Compiles a shell pattern. `greedy` picks whether `*` takes the longest or the shortest
/// string; `anchored` ties the match to the start of the value.
fn compile(pattern: &str, greedy: bool, anchored: bool) -> Result<Glob, PatternError> {
    let (source, literal) =
        regex_source(pattern, greedy, anchored).map_err(PatternError::Invalid)?;
    match literal {
        Some(literal) => Ok(Glob::Literal(literal)),
        None => cached_regex(&source)
            .map(Glob::Regex)
            .map_err(PatternError::Invalid),
    }
}

/// Compiling a regular expression costs far more than matching one (hundreds of
/// microseconds), and a Dockerfile tends to repeat the same few patterns, so compiled ones are
/// kept per thread. The cache is small and simply emptied when full.
fn cached_regex(source: &str) -> Result<Regex, InvalidPattern> {
    const CAPACITY: usize = 64;
    thread_local! {
        static CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        if let Some(re) = cache.borrow().get(source) {
            return Ok(re.clone());
        }
        let re = Regex::new(source).map_err(|err| InvalidPattern::Regex(err.to_string()))?;
        let mut cache = cache.borrow_mut();
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(source.to_string(), re.clone());
        Ok(re)
    })
}

/// The regular expression for a pattern, and the plain string it stands for when it has no
/// wildcards.
fn regex_source(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<(String, Option<String>), InvalidPattern> {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut literal = String::with_capacity(pattern.len());
    let mut wildcards = false;
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern
        .strip_prefix('\u{feff}')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => {
                out.push_str(star);
                wildcards = true;
            }
            '?' => {
                out.push('.');
                wildcards = true;
            }
            '\\' => {
                // `\}` and `\/` only protect the delimiters of `${...}`; the escape is not
                // part of the pattern.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(escaped);
                        literal.push(escaped);
                    }
                    Some(other) => return Err(InvalidPattern::Escape(other)),
                    None => return Err(InvalidPattern::TrailingEscape),
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(ch);
                literal.push(ch);
            }
            _ => {
                out.push(ch);
                literal.push(ch);
            }
        }
    }
    Ok((out, (!wildcards).then_some(literal)))
}

/// `${v#p}` / `${v##p}`: removes the shortest (longest when `greedy`) matching prefix.
pub(super) fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
    budget: &mut u64,
) -> Result<String, PatternError> {
    afford(pattern, value, budget)?;
    let rest = match compile(pattern, greedy, true)? {
        Glob::Literal(literal) => value.strip_prefix(literal.as_str()).unwrap_or(value),
        Glob::Regex(re) => re.find(value).map_or(value, |m| &value[m.end()..]),
    };
    Ok(rest.to_string())
}

/// `${v%p}` / `${v%%p}`: removes the shortest (longest) matching suffix. Regular expressions
/// find leftmost matches, so both pattern and value are reversed and the prefix trimmed.
pub(super) fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
    budget: &mut u64,
) -> Result<String, PatternError> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy, budget)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each `\x` escape pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        pieces.push(&chars[i..i + len]);
        i += len;
    }
    pieces.iter().rev().flat_map(|piece| piece.iter()).collect()
}

/// `${v/p/r}` (first match) and `${v//p/r}` (every match); `*` is greedy.
pub(super) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
    budget: &mut u64,
) -> Result<String, PatternError> {
    afford(pattern, value, budget)?;
    let glob = compile(pattern, true, false)?;
    if !all {
        // The first match is replaced literally (BuildKit splices, it does not expand `$`).
        let found = match &glob {
            Glob::Literal(literal) => value.find(literal.as_str()).map(|i| (i, i + literal.len())),
            Glob::Regex(re) => re.find(value).map(|m| (m.start(), m.end())),
        };
        let out = match found {
            Some((start, end)) => format!("{}{replacement}{}", &value[..start], &value[end..]),
            None => value.to_string(),
        };
        fits(&out)?;
        return Ok(out);
    }
    match glob {
        Glob::Literal(literal) if !literal.is_empty() => {
            let mut out = String::with_capacity(value.len());
            let mut last = 0;
            for (i, matched) in value.match_indices(literal.as_str()) {
                out.push_str(&value[last..i]);
                expand_template(&mut out, replacement, matched);
                fits(&out)?;
                last = i + matched.len();
            }
            out.push_str(&value[last..]);
            Ok(out)
        }
        // An empty pattern matches between every character: the general rules apply.
        Glob::Literal(_) => replace_all(&Regex::new("").expect("valid"), value, replacement),
        Glob::Regex(re) => replace_all(&re, value, replacement),
    }
}

/// Go's `Regexp.ReplaceAllString`: an empty match right after a match is not replaced, and
/// `$` in the replacement is a template reference (`$0`/`${0}` is the match, `$$` a dollar).
/// Stops as soon as the result is larger than [`MAX_EXPANDED`].
fn replace_all(re: &Regex, value: &str, replacement: &str) -> Result<String, PatternError> {
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some(m) = re.find_at(value, search) else {
            break;
        };
        out.push_str(&value[last_end..m.start()]);
        if m.end() > last_end || m.start() == 0 {
            expand_template(&mut out, replacement, m.as_str());
            fits(&out)?;
        }
        last_end = m.end();
        // Always advance by at least one character.
        let width = value[search..].chars().next().map_or(1, char::len_utf8);
        search = if search + width > m.end() {
            search + width
        } else {
            m.end()
        };
    }
    if last_end <= value.len() {
        out.push_str(&value[last_end..]);
    }
    Ok(out)
}

/// Go's `Regexp.Expand` for a regex without capture groups: `$0`/`${0}` is the match, any
/// other name is empty, `$$` is `$`, and a malformed reference is a literal `$`.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_ref(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Parses `name` or `{name}` at the start of `s` (Go's `extract`): the name and what follows.
fn template_ref(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(body) => (body, true),
        None => (s, false),
    };
    let len: usize = body
        .chars()
        .take_while(|c| is_letter(*c) || is_digit(*c) || *c == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at(len);
    if braced {
        return after.strip_prefix('}').map(|after| (name, after));
    }
    Some((name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A match budget that never runs out.
    fn unlimited() -> u64 {
        u64::MAX
    }

    #[test]
    fn converts_patterns_like_buildkit() {
        let re = |p: &str| regex_source(p, true, true).map(|(source, _)| source);
        assert_eq!(re("*").unwrap(), "^.*");
        assert_eq!(re("?").unwrap(), "^.");
        assert_eq!(re("\\*").unwrap(), "^\\*");
        assert_eq!(
            re("(()[]{\\}^$.\\*\\?|\\\\").unwrap(),
            "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\"
        );
        assert_eq!(regex_source("a*", false, false).unwrap().0, "a.*?");
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(
                regex_source(bad, true, true).is_err(),
                "{bad:?} must be rejected"
            );
        }
        // Patterns without wildcards are plain strings.
        let literal = regex_source("a\\*.{", true, true).unwrap().1;
        assert_eq!(literal.as_deref(), Some("a*.{"));
        assert_eq!(regex_source("a?", true, true).unwrap().1, None);
    }

    #[test]
    fn reverses_patterns_keeping_escapes() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\\\ab"), "b\\a\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
        assert_eq!(reverse_pattern("\\\\b"), "b\\\\");
        assert_eq!(reverse_pattern(""), "");
    }

    #[test]
    fn literal_fast_path_agrees_with_the_regex_path() {
        let value = "a.b$c.b$c\nb$";
        for pattern in ["b$", ".", "", "\\\\", "x", "\\*", "b$c.b$c\nb$"] {
            let (source, literal) = regex_source(pattern, true, false).unwrap();
            assert!(literal.is_some(), "{pattern:?}");
            let re = Regex::new(&source).unwrap();
            for template in ["-", "[$0]", "$$", "$x"] {
                let want = replace_all(&re, value, template).unwrap();
                assert_eq!(
                    replace(pattern, value, template, true, &mut unlimited()).unwrap(),
                    want,
                    "{pattern:?}"
                );
            }
            let first = re
                .find(value)
                .map(|m| format!("{}R{}", &value[..m.start()], &value[m.end()..]));
            assert_eq!(
                replace(pattern, value, "R", false, &mut unlimited()).unwrap(),
                first.unwrap_or(value.into())
            );
            let anchored = Regex::new(&format!("^{source}")).unwrap();
            let trimmed = anchored.find(value).map_or(value, |m| &value[m.end()..]);
            assert_eq!(
                trim_prefix(pattern, value, false, &mut unlimited()).unwrap(),
                trimmed,
                "{pattern:?}"
            );
        }
    }

    #[test]
    fn replace_all_follows_go_empty_match_rules() {
        // Go: regexp.MustCompile("a*").ReplaceAllString("baaac", "-") == "-b-c-"
        let re = Regex::new("a*").unwrap();
        assert_eq!(replace_all(&re, "baaac", "-").unwrap(), "-b-c-");
        let re = Regex::new(".*").unwrap();
        assert_eq!(replace_all(&re, "abc", "x").unwrap(), "x");
        let re = Regex::new("").unwrap();
        assert_eq!(replace_all(&re, "ab", "-").unwrap(), "-a-b-");
        assert_eq!(replace_all(&re, "", "-").unwrap(), "-");
    }

    #[test]
    fn replacement_templates_follow_go() {
        let re = Regex::new("b").unwrap();
        assert_eq!(replace_all(&re, "abc", "[$0]").unwrap(), "a[b]c");
        assert_eq!(replace_all(&re, "abc", "[${0}]").unwrap(), "a[b]c");
        assert_eq!(replace_all(&re, "abc", "$$").unwrap(), "a$c");
        assert_eq!(replace_all(&re, "abc", "$1x").unwrap(), "ac");
        assert_eq!(replace_all(&re, "abc", "$").unwrap(), "a$c");
        assert_eq!(replace_all(&re, "abc", "${x").unwrap(), "a${xc");
        assert_eq!(replace_all(&re, "abc", "$-").unwrap(), "a$-c");
    }

    proptest::proptest! {
        #[test]
        fn literal_fast_path_matches_regex_semantics(
            pattern in "[ab$.\\n]{0,4}",
            value in "[ab$.\\n]{0,12}",
            template in "[a$0{}]{0,4}",
        ) {
            let (source, literal) = regex_source(&pattern, true, false).unwrap();
            proptest::prop_assume!(literal.is_some());
            let re = Regex::new(&source).unwrap();
            proptest::prop_assert_eq!(
                replace(&pattern, &value, &template, true, &mut unlimited()).unwrap(),
                replace_all(&re, &value, &template).unwrap()
            );
            let anchored = Regex::new(&format!("^{source}")).unwrap();
            let trimmed = anchored.find(&value).map_or(value.as_str(), |m| &value[m.end()..]);
            proptest::prop_assert_eq!(trim_prefix(&pattern, &value, true, &mut unlimited()).unwrap(), trimmed);
        }
    }
}
