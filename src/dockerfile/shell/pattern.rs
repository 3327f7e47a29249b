//! Shell glob patterns of `${v#p}`, `${v%p}` and `${v/p/r}`: `*` (any string), `?` (any
//! character) and `\` escapes, no bracket expressions. They compile to regular expressions as
//! in BuildKit; the `regex` crate guarantees linear-time matching, so no pattern can hang a
//! build. Errors are plain strings: the caller wraps them with the pattern and position.

use regex::Regex;

use super::lex::{is_digit, is_letter};

/// Compiles a shell pattern. `greedy` picks whether `*` takes the longest or the shortest
/// string; `anchored` ties the match to the start of the value.
fn to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
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
            '*' => out.push_str(star),
            '?' => out.push('.'),
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
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\' at the end".to_string()),
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(ch);
            }
            _ => out.push(ch),
        }
    }
    Regex::new(&out).map_err(|err| err.to_string())
}

/// `${v#p}` / `${v##p}`: removes the shortest (longest when `greedy`) matching prefix.
pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${v%p}` / `${v%%p}`: removes the shortest (longest) matching suffix. Regular expressions
/// find leftmost matches, so both pattern and value are reversed and the prefix trimmed.
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
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
) -> Result<String, String> {
    let re = to_regex(pattern, true, false)?;
    if !all {
        // The first match is replaced literally (BuildKit splices, it does not expand `$`).
        return Ok(match re.find(value) {
            Some(m) => format!("{}{replacement}{}", &value[..m.start()], &value[m.end()..]),
            None => value.to_string(),
        });
    }
    Ok(replace_all(&re, value, replacement))
}

/// Go's `Regexp.ReplaceAllString`: an empty match right after a match is not replaced, and
/// `$` in the replacement is a template reference (`$0`/`${0}` is the match, `$$` a dollar).
fn replace_all(re: &Regex, value: &str, replacement: &str) -> String {
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
    out
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

    #[test]
    fn converts_patterns_like_buildkit() {
        let re = |p: &str| to_regex(p, true, true).map(|r| r.as_str().to_string());
        assert_eq!(re("*").unwrap(), "^.*");
        assert_eq!(re("?").unwrap(), "^.");
        assert_eq!(re("\\*").unwrap(), "^\\*");
        assert_eq!(
            re("(()[]{\\}^$.\\*\\?|\\\\").unwrap(),
            "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\"
        );
        assert_eq!(to_regex("a*", false, false).unwrap().as_str(), "a.*?");
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(
                to_regex(bad, true, true).is_err(),
                "{bad:?} must be rejected"
            );
        }
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
    fn replace_all_follows_go_empty_match_rules() {
        // Go: regexp.MustCompile("a*").ReplaceAllString("baaac", "-") == "-b-c-"
        let re = Regex::new("a*").unwrap();
        assert_eq!(replace_all(&re, "baaac", "-"), "-b-c-");
        let re = Regex::new(".*").unwrap();
        assert_eq!(replace_all(&re, "abc", "x"), "x");
        let re = Regex::new("").unwrap();
        assert_eq!(replace_all(&re, "ab", "-"), "-a-b-");
        assert_eq!(replace_all(&re, "", "-"), "-");
    }

    #[test]
    fn replacement_templates_follow_go() {
        let re = Regex::new("b").unwrap();
        assert_eq!(replace_all(&re, "abc", "[$0]"), "a[b]c");
        assert_eq!(replace_all(&re, "abc", "[${0}]"), "a[b]c");
        assert_eq!(replace_all(&re, "abc", "$$"), "a$c");
        assert_eq!(replace_all(&re, "abc", "$1x"), "ac");
        assert_eq!(replace_all(&re, "abc", "$"), "a$c");
        assert_eq!(replace_all(&re, "abc", "${x"), "a${xc");
        assert_eq!(replace_all(&re, "abc", "$-"), "a$-c");
    }
}
