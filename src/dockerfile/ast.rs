//! The raw syntax tree: one [`Node`] per instruction, arguments split the way BuildKit's
//! parser splits them (nothing expanded, quotes kept where BuildKit keeps them).

use super::span::Span;

/// A parsed Dockerfile before instructions are typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    /// Non-fatal findings of the parser itself (e.g. empty continuation lines).
    pub warnings: Vec<ParserWarning>,
}

/// The parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=` value, if any (kiln records it but always uses its own parser).
    pub syntax: Option<String>,
    /// `# check=` value, if any (e.g. `skip=JSONArgsRecommended;error=true`).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// A warning the parser noticed (the plan adds the semantic ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParserWarning {
    pub span: Span,
    /// BuildKit's rule name, e.g. `NoEmptyContinuation`.
    pub rule: &'static str,
    pub message: String,
}

/// One instruction as written: keyword, flags and arguments, with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (case kept, so `FromAsCasing` can compare).
    pub keyword: String,
    /// `--name=value` flags in order, as written after flag unquoting.
    pub flags: Vec<String>,
    pub body: Body,
    /// True when the arguments were a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies attached to this instruction, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined) the node was parsed from.
    pub original: String,
    pub span: Span,
}

impl Node {
    /// The keyword in lower case (`run`, `copy`, ...).
    pub fn command(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// The plain arguments (empty for a nested ONBUILD trigger).
    pub fn args(&self) -> &[String] {
        match &self.body {
            Body::Words(w) => w,
            Body::Trigger(_) => &[],
        }
    }
}

/// What follows the keyword and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Arguments as BuildKit's line parser splits them. ENV/LABEL give `key value sep`
    /// triples (sep is `=` or empty for the legacy `KEY name value` form).
    Words(Vec<String>),
    /// ONBUILD's nested instruction.
    Trigger(Box<Node>),
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The leading file descriptor digits of `3<<EOF`, 0 when absent.
    pub fd: u32,
    /// False when the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from each body line (see [`Heredoc::body`]).
    pub chomp: bool,
    /// The raw body, every line with its line ending, the delimiter line excluded.
    pub content: String,
}

impl Heredoc {
    /// The body as it will be used: with leading tabs removed for `<<-`.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}
