//! Plan errors: each names the instruction it is about and what to do.

use crate::dockerfile::shell::ExpandError;
use crate::dockerfile::{ParseError, Span, render_at};

/// Why a Dockerfile cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{kind}")]
    At { span: Span, kind: PlanErrorKind },
    #[error("{0}")]
    Global(PlanErrorKind),
}

impl PlanError {
    pub(crate) fn at(span: Span, kind: PlanErrorKind) -> PlanError {
        PlanError::At { span, kind }
    }

    /// Where the error is, if it is about one instruction.
    pub fn span(&self) -> Option<Span> {
        match self {
            PlanError::Parse(e) => Some(e.span),
            PlanError::At { span, .. } => Some(*span),
            PlanError::Global(_) => None,
        }
    }

    /// `Dockerfile:12:5: message` plus the source line and a caret (or just the message for
    /// errors about the whole build, like an unknown `--target`).
    pub fn render(&self, file_name: &str, source: &str) -> String {
        match self {
            PlanError::Parse(e) => e.render(file_name, source),
            PlanError::At { span, kind } => render_at(file_name, source, *span, &kind.to_string()),
            PlanError::Global(kind) => format!("{file_name}: {kind}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    #[error("the Dockerfile has no FROM: a build starts with FROM <image> (or FROM scratch)")]
    NoFrom,
    #[error(
        "RUN --security=insecure runs the command with every capability, no seccomp filter and an unmasked /proc: allow it with `kiln build --allow security.insecure`"
    )]
    InsecureNotAllowed,
    #[error("{0} before the first FROM: only ARG may come before FROM")]
    BeforeFrom(String),
    #[error("duplicate stage name {0:?}: give each stage its own name")]
    DuplicateStage(String),
    #[error(
        "{flag}={name}: no stage named {name:?} (stages: {stages}); to use an image, write a full reference such as docker.io/library/{name}:latest"
    )]
    UnknownStage {
        flag: String,
        name: String,
        stages: String,
    },
    #[error("{flag}={index}: stage index out of range (the Dockerfile has {count} stages)")]
    StageIndex {
        flag: String,
        index: usize,
        count: usize,
    },
    #[error(
        "cannot copy from stage {from:?}, it needs to be defined before current stage {current:?} (move that stage above this one)"
    )]
    CopyFromLaterStage { from: String, current: String },
    #[error(
        "cannot mount from stage {from:?} to {target:?}, stage needs to be defined before current command (move that stage above this one)"
    )]
    MountFromLaterStage { from: String, target: String },
    #[error("target stage {target:?} could not be found (stages: {stages})")]
    TargetNotFound { target: String, stages: String },
    #[error("circular dependency between stages: {0}")]
    Cycle(String),
    #[error(
        "When using {0} with more than one source file, the destination must be a directory and end with a /"
    )]
    MultiSourceDest(String),
    #[error("{0}")]
    Expand(ExpandError),
    #[error("FROM expands to an empty image name (is an ARG missing a value? pass --build-arg)")]
    EmptyBase,
    #[error("invalid {flag} value {value:?}: {message}")]
    BadFlagValue {
        flag: String,
        value: String,
        message: String,
    },
    #[error(
        "invalid containerPort: {0} (EXPOSE takes PORT[/tcp|udp|sctp] or a range such as 8000-8010/udp)"
    )]
    BadPort(String),
    #[error("{rule}: {message} (fatal because of `# check=error=true`)")]
    CheckFailed { rule: String, message: String },
    /// Ctrl-C or SIGTERM while planning (see [`crate::progress::interrupt`]).
    #[error("interrupted while expanding this instruction")]
    Interrupted,
}
