//! The scanner behind [`ShellLex`](super::ShellLex): one left-to-right pass over a word that
//! removes quotes and escapes, expands `$` references and splits words, as BuildKit's
//! `shellWord` does.

use std::collections::BTreeSet;

use super::chars::{is_digit, is_letter};
use super::pattern::{self, PatternError};
use super::{Env, ExpandError, ExpandErrorKind, Expansion, MATCH_BUDGET, MAX_EXPANDED};

/// Deepest `${...}` nesting accepted: each level costs stack frames, and real Dockerfiles
/// nest two or three deep.
const MAX_DEPTH: usize = 100;

/// A failure inside the scanner: what and at which byte offset of the word.
type Fail = (ExpandErrorKind, usize);

/// Expands `word`; returns the expansion and the split words.
pub(super) fn run(
    word: &str,
    env: &dyn Env,
    escape: char,
    process_quotes: bool,
    split: bool,
) -> Result<(Expansion, Vec<String>), ExpandError> {
    let mut lexer = Lexer {
        src: word,
        // Go's text/scanner drops a byte order mark at the very start of its input.
        pos: if word.starts_with('\u{feff}') { 3 } else { 0 },
        escape,
        process_quotes,
        raw_escapes: false,
        depth: 0,
        env,
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
        last_name: None,
        budget: MATCH_BUDGET,
    };
    match lexer.process_until(None, false, split) {
        Ok((value, words)) => Ok((
            Expansion {
                value,
                matched: lexer.matched,
                unmatched: lexer.unmatched,
            },
            words,
        )),
        Err((kind, offset)) => Err(ExpandError {
            word: word.to_string(),
            offset,
            column: word[..offset].chars().count() + 1,
            kind,
        }),
    }
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    escape: char,
    /// False for heredoc bodies, where quotes are ordinary characters.
    process_quotes: bool,
    /// Keep escape characters in the output (for glob patterns, which unescape themselves).
    raw_escapes: bool,
    depth: usize,
    env: &'a dyn Env,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// The variable looked up last: the one to name when a value grows too large.
    last_name: Option<String>,
    /// Pattern-matching steps this word may still spend (see [`MATCH_BUDGET`]).
    budget: u64,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    /// Processes up to `stop` (consumed) or the end of input when `stop` is `None`.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        split: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop, split);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
        split: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::new(split);
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let start = self.pos;
                    let value = self.dollar()?;
                    result.push_str(&value);
                    self.fits(&result, start)?;
                    // Unquoted variable values are subject to word splitting.
                    words.add_str(&value);
                }
                '\'' if self.process_quotes => {
                    let value = self.single_quoted()?;
                    result.push_str(&value);
                    words.add_raw_str(&value);
                }
                '"' if self.process_quotes => {
                    let start = self.pos;
                    let value = self.double_quoted()?;
                    result.push_str(&value);
                    self.fits(&result, start)?;
                    words.add_raw_str(&value);
                }
                _ if !words.enabled && ch != self.escape => {
                    // Nothing to split: copy the run of ordinary characters in one go.
                    let rest = &self.src[self.pos..];
                    let len = rest
                        .find(|c: char| self.is_special(c, stop))
                        .unwrap_or(rest.len());
                    result.push_str(&rest[..len]);
                    self.pos += len;
                }
                _ => {
                    self.next();
                    if ch != self.escape {
                        words.add_char(ch);
                        result.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // An escape at the very end is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                }
            }
        }
        match stop {
            // Callers turn this into "missing '}'" or "missing '/'": the input has ended.
            Some(_) => Err((ExpandErrorKind::MissingBrace, self.pos)),
            None => Ok((result, words.finish())),
        }
    }

    /// Refuses a result larger than [`MAX_EXPANDED`], naming the variable just added.
    fn fits(&self, result: &str, start: usize) -> Result<(), Fail> {
        if result.len() <= MAX_EXPANDED {
            return Ok(());
        }
        let name = self.last_name.clone();
        Err((ExpandErrorKind::TooLarge { name }, start))
    }

    /// Characters that end a run of ordinary text in `process_until`.
    fn is_special(&self, ch: char, stop: Option<char>) -> bool {
        ch == '$'
            || ch == self.escape
            || Some(ch) == stop
            || (self.process_quotes && (ch == '\'' || ch == '"'))
    }

    /// `'...'`: everything literal, no escapes.
    fn single_quoted(&mut self) -> Result<String, Fail> {
        let start = self.pos;
        self.next();
        let mut result = String::new();
        loop {
            match self.next() {
                None => return Err((ExpandErrorKind::UnterminatedSingleQuote, start)),
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character escapes only `"`, `$` and itself.
    fn double_quoted(&mut self) -> Result<String, Fail> {
        let start = self.pos;
        self.next();
        let mut result = String::new();
        loop {
            match self.peek() {
                None => return Err((ExpandErrorKind::UnterminatedDoubleQuote, start)),
                Some('"') => {
                    self.next();
                    return Ok(result);
                }
                Some('$') => {
                    let at = self.pos;
                    result.push_str(&self.dollar()?);
                    self.fits(&result, at)?;
                }
                Some(mut ch) => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `$name`, `${name}` or `${name<op>word}`; the scanner is on the `$`.
    fn dollar(&mut self) -> Result<String, Fail> {
        let start = self.pos;
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get_env(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err((ExpandErrorKind::MissingBrace, start)),
            Some('{' | '}' | ':') => return Err((ExpandErrorKind::BadSubstitution, start)),
            Some(_) => {}
        }
        if self.depth >= MAX_DEPTH {
            return Err((ExpandErrorKind::TooDeep(MAX_DEPTH), start));
        }
        self.depth += 1;
        let result = self.braced(start);
        self.depth -= 1;
        result
    }

    /// The part of `${...}` after the `{`.
    fn braced(&mut self, start: usize) -> Result<String, Fail> {
        let name = self.name();
        match self.next() {
            None => Err((ExpandErrorKind::MissingBrace, start)),
            Some('}') => Ok(self.get_env(&name).unwrap_or_default()),
            Some(':') => {
                let op = self.next();
                let shown = format!(":{}", op.map(String::from).unwrap_or_default());
                self.modifier(&name, op, true, shown, start)
            }
            Some(op @ ('+' | '-' | '?' | '#' | '%')) => {
                self.modifier(&name, Some(op), false, op.to_string(), start)
            }
            Some('/') => self.substitute(&name, start),
            Some(op) => Err((ExpandErrorKind::UnsupportedModifier(op.to_string()), start)),
        }
    }

    /// `${name<op>word}` for the default, alternative, required and trimming operators.
    /// `null_is_unset` is the `:` form.
    fn modifier(
        &mut self,
        name: &str,
        op: Option<char>,
        null_is_unset: bool,
        shown: String,
        start: usize,
    ) -> Result<String, Fail> {
        let trims = matches!(op, Some('#' | '%'));
        let word = self.nested(Some('}'), trims, ExpandErrorKind::MissingBrace, start)?;
        let value = self.get_env(name);
        let unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            Some('-') if unset => Ok(word),
            Some('-') => Ok(value.unwrap_or_default()),
            Some('+') if unset => Ok(String::new()),
            Some('+') => Ok(word),
            Some('?') if unset => {
                let default = if value.is_none() {
                    "is not allowed to be unset"
                } else {
                    "is not allowed to be empty"
                };
                let message = if word.is_empty() {
                    default.to_string()
                } else {
                    word
                };
                Err((
                    ExpandErrorKind::Required {
                        name: name.to_string(),
                        message,
                    },
                    start,
                ))
            }
            Some('?') => Ok(value.unwrap_or_default()),
            Some(op @ ('#' | '%')) => {
                // A doubled operator (`##`, `%%`) asks for the longest match.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let value = value.unwrap_or_default();
                let trimmed = if op == '%' {
                    pattern::trim_suffix(pattern, &value, greedy, &mut self.budget)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy, &mut self.budget)
                };
                trimmed.map_err(|e| (pattern_error(e, name, pattern, value.len()), start))
            }
            _ => Err((ExpandErrorKind::UnsupportedModifier(shown), start)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`; after the first `/`.
    fn substitute(&mut self, name: &str, start: usize) -> Result<String, Fail> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = self.nested(Some('/'), true, ExpandErrorKind::MissingSlash, start)?;
        let replacement = self.nested(Some('}'), true, ExpandErrorKind::MissingBrace, start)?;
        let value = self.get_env(name).unwrap_or_default();
        pattern::replace(&pattern, &value, &replacement, all, &mut self.budget)
            .map_err(|e| (pattern_error(e, name, &pattern, value.len()), start))
    }

    /// A nested word up to `stop`; running out of input reports `at_end` at `start`.
    fn nested(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        at_end: ExpandErrorKind,
        start: usize,
    ) -> Result<String, Fail> {
        match self.process_until(stop, raw_escapes, false) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err((at_end, start)),
            Err(err) => Err(err),
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits (positional parameter);
    /// or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.peek().filter(|c| is_digit(*c)) {
                    self.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        self.last_name = Some(name.to_string());
        match self.env.lookup(name) {
            Some(value) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_string());
                }
                Some(value.to_string())
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_string());
                }
                None
            }
        }
    }
}

fn pattern_error(
    e: PatternError,
    name: &str,
    pattern: &str,
    value_bytes: usize,
) -> ExpandErrorKind {
    match e {
        PatternError::Invalid(reason) => ExpandErrorKind::InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        },
        PatternError::TooCostly { pattern_chars } => ExpandErrorKind::PatternTooCostly {
            name: name.to_string(),
            pattern_chars,
            value_bytes,
        },
        PatternError::TooLarge => ExpandErrorKind::TooLarge {
            name: Some(name.to_string()),
        },
    }
}

/// POSIX special parameters (`$@`, `$#` …): never set in a Dockerfile, but they are names.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Word splitting as BuildKit does it: `add_char` splits on whitespace, the `raw` variants
/// (quoted text, escaped characters) never split. Disabled (a no-op) when nobody wants the
/// words: nested words and single-word expansion.
struct Words {
    enabled: bool,
    current: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new(enabled: bool) -> Self {
        Words {
            enabled,
            current: String::new(),
            words: Vec::new(),
            in_word: false,
        }
    }

    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if !ch.is_whitespace() {
            self.add_raw_char(ch);
        } else if self.in_word && !self.current.is_empty() {
            self.words.push(std::mem::take(&mut self.current));
            self.in_word = false;
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        self.current.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        s.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_str(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        self.current.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.words.push(self.current);
        }
        self.words
    }
}
