//! Parse errors: each names its place in the Dockerfile and says what is wrong.

use super::span::{Span, render_at};

/// A Dockerfile that could not be parsed, with the place it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}: {kind}", span.line)]
pub struct ParseError {
    pub span: Span,
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(span: Span, kind: ParseErrorKind) -> ParseError {
        ParseError { span, kind }
    }

    /// `Dockerfile:12:5: <message>` followed by the source line and a caret under the column.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        render_at(file_name, source, self.span, &self.kind.to_string())
    }
}

/// What went wrong. Messages follow BuildKit's where one exists, so users can search for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    #[error("unterminated heredoc: no line `{0}` ends it before the end of the file")]
    UnterminatedHeredoc(String),
    #[error("file with no instructions")]
    NoInstructions,
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    #[error("{0} must have two arguments")]
    NeedsTwoArguments(String),
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    #[error("unknown flag: --{flag} ({instruction} accepts {allowed})")]
    UnknownFlag {
        instruction: String,
        flag: String,
        allowed: String,
    },
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    #[error("missing a value on flag: --{0}")]
    MissingFlagValue(String),
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    BadBoolFlag { flag: String, value: String },
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(String),
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(String),
    #[error(
        "{0} requires at least two arguments, but only one was provided. Destination could not be determined."
    )]
    NoDestination(String),
    #[error("{0} names can not be blank")]
    BlankName(String),
    #[error("{instruction} cannot accept a heredoc as {what}")]
    BadHeredoc { instruction: String, what: String },
    #[error("FROM requires either one or three arguments (FROM image [AS name])")]
    FromArguments,
    #[error(
        "invalid name for build stage: {0:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName(String),
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildForbidden(String),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    #[error("Unknown type {0:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    #[error("invalid duration {value:?} for --{flag} (use e.g. 30s, 1m30s, 500ms)")]
    BadDuration { flag: String, value: String },
    #[error("Interval {0:?} cannot be less than 1ms")]
    DurationTooSmall(String),
    #[error("invalid value {0:?} for --retries (a whole number >= 0)")]
    BadRetries(String),
    #[error("SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]")]
    ShellNotJson,
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}
