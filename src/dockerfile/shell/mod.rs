//! Docker's shell-word lexer and variable expansion: a port of BuildKit's
//! `frontend/dockerfile/shell/lex.go`, behaving like it on every vector of its test suite.
//!
//! Public API:
//! - [`Env`]: where variable values come from (implemented for `HashMap` and `BTreeMap`).
//! - [`ShellLex::new`]`(escape)` with the Dockerfile's escape character (`\` or `` ` ``), then
//!   - [`ShellLex::process_word`]: one word, quotes removed (FROM, COPY, WORKDIR, USER …);
//!   - [`ShellLex::process_words`]: split into words after expansion (ENV, LABEL, ARG, exec);
//!   - [`ShellLex::process_words_with_matches`]: the same plus which names were looked up;
//!   - [`ShellLex::process_heredoc`]: `$` expansion only, quotes kept literal (unquoted heredocs).
//! - [`Expansion`]: the value and which variable names were found / not found (cache keys,
//!   "undefined variable" warnings).
//! - [`ExpandError`]: what went wrong and where (byte offset and 1-based column in the word).
//!
//! Supported: single and double quotes, the escape character, `$v`, `${v}`, `${v:-w}`, `${v-w}`,
//! `${v:+w}`, `${v+w}`, `${v:?msg}`, `${v?msg}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`,
//! `${v/p/r}`, `${v//p/r}` (glob patterns `*`, `?`, `\`-escapes), nested words, positional and
//! special parameters (`$1`, `$@` …, which are never set in a Dockerfile).
//!
//! Limits (BuildKit has none; Go just grows until the machine runs out of memory or time):
//! - an expanded word is at most [`MAX_EXPANDED`] bytes, so `ARG a=$a$a` repeated cannot
//!   double its way to gigabytes;
//! - a pattern of `${v#p}`, `${v%p}`, `${v/p/r}` is matched with a linear-time engine, and
//!   one word's matches together may cost at most [`MATCH_BUDGET`] steps, a match costing
//!   pattern length × (value length + pattern length): a second or so of work at most,
//!   decided before the work, the same on every machine.

mod chars;
mod lex;
mod pattern;

pub use pattern::InvalidPattern;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

/// The largest expanded word or value: 1 MiB. Real values (a PATH, a list of packages, a
/// URL) are a few KiB; a larger one is a runaway expansion, not a configuration.
pub const MAX_EXPANDED: usize = 1024 * 1024;

/// The most engine steps the pattern matches of one word may cost (see the module
/// documentation): one 64-character pattern over a 1 MiB value, or a 5 KiB one over 8 KiB.
pub const MATCH_BUDGET: u64 = 1 << 26;

/// Where the lexer looks variables up. Names are case-sensitive (Linux semantics).
pub trait Env {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word with quotes and escapes removed.
    pub value: String,
    /// Variable names that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variable names that were referenced but not set.
    pub unmatched: BTreeSet<String>,
}

/// Why an expansion failed. The messages follow BuildKit's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${name?message}` / `${name:?message}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        pattern: String,
        reason: pattern::InvalidPattern,
    },
    /// A guard against unbounded recursion; BuildKit has no limit (Go stacks grow).
    #[error("more than {0} nested ${{...}} expansions")]
    TooDeep(usize),
    /// The expansion grew past [`MAX_EXPANDED`]; `name` is the variable being expanded then.
    #[error(
        "the expanded value is larger than {} MiB{}; a value that doubles itself (ARG a=$a$a) or repeats a large one grows without end",
        MAX_EXPANDED / (1024 * 1024),
        name.as_ref().map(|n| format!(" after adding ${n}")).unwrap_or_default()
    )]
    TooLarge { name: Option<String> },
    /// Matching would take the word's matches over [`MATCH_BUDGET`] steps.
    #[error(
        "matching a {pattern_chars}-character pattern against the {value_bytes}-byte value of ${name} takes this word over its pattern-matching budget of {} steps; use a shorter pattern or value",
        MATCH_BUDGET
    )]
    PatternTooCostly {
        name: String,
        pattern_chars: usize,
        value_bytes: usize,
    },
}

/// A failed expansion: the word, where in it the failing construct starts, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind} (at column {column} of the word)")]
pub struct ExpandError {
    /// The whole word that was being expanded.
    pub word: String,
    /// Byte offset in `word` of the construct that failed (a quote, `$`, `${`).
    pub offset: usize,
    /// The same position as a 1-based column counted in characters.
    pub column: usize,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// Docker's word lexer for one escape character. Cheap to copy; holds no state between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLex {
    escape: char,
}

impl ShellLex {
    /// A lexer using `escape` (the Dockerfile's `# escape=` directive; `\` by default).
    pub fn new(escape: char) -> Self {
        ShellLex { escape }
    }

    /// The escape character this lexer uses.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` as a single word: quotes and escapes are removed, spaces kept.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        lex::run(word, env, self.escape, true, false).map(|(expansion, _)| expansion)
    }

    /// Expands `word` and splits it into words on unquoted whitespace. Whitespace coming from
    /// an unquoted variable splits too; quoted text never does; empty words are dropped.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.process_words_with_matches(word, env)
            .map(|(words, _)| words)
    }

    /// Like [`process_words`](Self::process_words), also reporting which variables were used.
    /// The returned [`Expansion::value`] is the unsplit word.
    pub fn process_words_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<(Vec<String>, Expansion), ExpandError> {
        lex::run(word, env, self.escape, true, true).map(|(expansion, words)| (words, expansion))
    }

    /// Expands `$` variables in a heredoc body (unquoted delimiter), keeping quotes literal.
    ///
    /// As in BuildKit, heredoc bodies are always processed with `\` as the escape character,
    /// whatever the Dockerfile's `# escape=` is, and an escape before any character is removed
    /// (`\$HOME` gives `$HOME`, `\n` gives `n`).
    pub fn process_heredoc(&self, body: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        lex::run(body, env, '\\', false, false).map(|(expansion, _)| expansion)
    }
}

impl Default for ShellLex {
    fn default() -> Self {
        ShellLex::new('\\')
    }
}

#[cfg(test)]
mod tests;
