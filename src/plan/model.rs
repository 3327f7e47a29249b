//! What a plan is: the contract between `kiln plan` / `kiln build` and the planner.

use std::collections::BTreeMap;

use crate::dockerfile::{CommandLine, Healthcheck, Span};

use super::mount::Mount;

/// A validated build: stages in Dockerfile order, which to build in which order, warnings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// Every stage of the Dockerfile, in source order (index = stage number).
    pub stages: Vec<Stage>,
    /// The stages to build, dependencies first; the last one is the target.
    pub order: Vec<usize>,
    /// The target stage (`--target`, else the last stage).
    pub target: usize,
    /// ARGs declared before the first FROM, with their resolved values (None: no value).
    pub global_args: Vec<(String, Option<String>)>,
    /// BuildKit-style findings, shown but not fatal.
    pub warnings: Vec<Warning>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    pub index: usize,
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=`, expanded.
    pub platform: Option<String>,
    pub span: Span,
    pub steps: Vec<Step>,
    /// Stages this one needs first (its base stage, `COPY --from`, `RUN --mount=from`).
    pub depends_on: Vec<usize>,
    /// False when the target does not need this stage: it is skipped.
    pub needed: bool,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Base {
    /// An image reference, expanded (e.g. `docker.io/library/alpine:3.20` as written).
    Image(String),
    Scratch,
    /// An earlier stage of this Dockerfile.
    Stage(usize),
}

/// One instruction, fully expanded, with the ARG values it depends on (for cache keys).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub span: Span,
    /// The source text of the instruction (continuations joined).
    pub original: String,
    pub kind: StepKind,
    /// Build ARGs (name → value) this step uses: every ARG in scope for RUN, the referenced
    /// ones for other instructions. Values that ENV overrides are not ARG uses.
    pub args_used: BTreeMap<String, String>,
}

/// Where COPY takes its files from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum CopyFrom {
    Context,
    Stage(usize),
    Image(String),
}

/// A COPY/ADD source after expansion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SourceSpec {
    /// A path or glob relative to the source root (context, stage or image); for ADD also
    /// a URL or git reference.
    Path { path: String },
    /// A file created from a heredoc (content expanded unless the delimiter was quoted).
    Inline { name: String, content: String },
}

/// What RUN executes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum RunProgram {
    /// The full argv (for shell form: the SHELL, then the command text).
    Argv { argv: Vec<String> },
    /// A sole heredoc starting with `#!`: written to a file (mode 0755) and executed.
    Script { name: String, content: String },
}

pub use crate::network::Network;

/// An instruction after expansion, with typed, validated values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "instruction")]
pub enum StepKind {
    Run {
        program: RunProgram,
        /// Whether the shell-form command text still needs a shell (false for exec form).
        shell_form: bool,
        mounts: Vec<Mount>,
        /// RUN `--network`; `None` (no flag or `default`) is the build's default network.
        network: Option<Network>,
        /// `--security=insecure`.
        insecure: bool,
        /// Undeclared proxy `--build-arg`s (HTTP_PROXY, ...): RUN environment, not cache key.
        proxy_env: Vec<(String, String)>,
    },
    Copy {
        sources: Vec<SourceSpec>,
        dest: String,
        from: CopyFrom,
        chown: Option<String>,
        chmod: Option<String>,
        link: bool,
        parents: bool,
        exclude: Vec<String>,
    },
    Add {
        sources: Vec<SourceSpec>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
        link: bool,
        keep_git_dir: bool,
        checksum: Option<String>,
        unpack: Option<bool>,
        exclude: Vec<String>,
    },
    Env {
        vars: Vec<(String, String)>,
    },
    Label {
        labels: Vec<(String, String)>,
    },
    Arg {
        /// Each declared name with the value it takes (None: declared without a value).
        args: Vec<(String, Option<String>)>,
    },
    Workdir {
        path: String,
    },
    User {
        user: String,
    },
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    Cmd {
        command: CommandLine,
    },
    Entrypoint {
        command: CommandLine,
    },
    Shell {
        shell: Vec<String>,
    },
    Stopsignal {
        signal: String,
    },
    Healthcheck {
        health: Healthcheck,
    },
    /// A trigger stored in the image for its children; not run here.
    Onbuild {
        expression: String,
    },
    Maintainer {
        name: String,
    },
}

/// A finding worth telling the user about, named after BuildKit's check rules.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub rule: &'static str,
    pub message: String,
    pub span: Option<Span>,
}
