//! Typed instructions on top of the raw nodes: one [`Command`] variant per instruction, flags
//! validated, arguments still unexpanded.

use std::time::Duration;

use super::ast::{Ast, Body, Heredoc, Node};
use super::error::{ParseError, ParseErrorKind};
use super::flags::{FlagKind, Flags};
use super::span::Span;
use super::words::parse_heredoc_marker;

use FlagKind::{Bool, List, Str};

/// One instruction of the Dockerfile with its place in the source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instruction {
    pub span: Span,
    /// The keyword as written (e.g. `from`, to compare casing).
    pub keyword: String,
    /// The logical source line, continuations joined.
    pub original: String,
    pub command: Command,
}

/// Every Dockerfile instruction with typed, unexpanded fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum Command {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Expose(Vec<String>),
    Env(Vec<KeyValue>),
    Add(Add),
    Copy(Copy),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDecl>),
    Onbuild(Onbuild),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct From {
    pub image: String,
    /// The stage name, lower-cased as BuildKit does.
    pub name: Option<String>,
    /// The `AS` keyword as written (for the `FromAsCasing` check).
    pub as_keyword: Option<String>,
    pub platform: Option<String>,
}

/// Shell form (run through SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandLine {
    Shell(String),
    Exec(Vec<String>),
}

/// `RUN`, with its flags (values unexpanded; the plan checks them) and heredoc bodies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub command: CommandLine,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

/// A `key=value` pair of ENV or LABEL, raw (quotes kept until expansion).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// False for the legacy `ENV key value` form, whose value is taken as one word.
    pub equals: bool,
}

/// One name declared by ARG, with its default if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// A COPY/ADD source: a path (or URL/glob) or an inline heredoc file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Path(String),
    Heredoc(Heredoc),
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    pub sources: Vec<Source>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Add {
    pub sources: Vec<Source>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub keep_git_dir: bool,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

/// `ONBUILD <instruction>`: the trigger, typed, and its source text for the child image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Onbuild {
    pub expression: String,
    pub trigger: Box<Command>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Healthcheck {
    None,
    Cmd {
        test: CommandLine,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

/// Types every node of `ast`, stopping at the first error.
pub fn parse_instructions(ast: &Ast) -> Result<Vec<Instruction>, ParseError> {
    ast.nodes.iter().map(Instruction::from_node).collect()
}

impl Instruction {
    /// Types one raw node: checks its arguments and flags.
    pub fn from_node(node: &Node) -> Result<Instruction, ParseError> {
        let command = command_from_node(node)?;
        Ok(Instruction {
            span: node.span,
            keyword: node.keyword.clone(),
            original: node.original.clone(),
            command,
        })
    }
}

fn command_from_node(node: &Node) -> Result<Command, ParseError> {
    let r = Req {
        node,
        args: node.args(),
    };
    r.command().map_err(|(kind, flag)| {
        let column = flag
            .and_then(|f| node.original.find(&f))
            .map(|byte| node.original[..byte].chars().count() + node.span.column)
            .unwrap_or(node.span.column);
        ParseError::new(node.span.at_column(column), kind)
    })
}

/// An error, and optionally the flag word it concerns.
type Fail = (ParseErrorKind, Option<String>);

fn fail<T>(kind: ParseErrorKind) -> Result<T, Fail> {
    Err((kind, None))
}

struct Req<'a> {
    node: &'a Node,
    args: &'a [String],
}

impl Req<'_> {
    fn upper(&self) -> String {
        self.node.keyword.to_ascii_uppercase()
    }

    fn flags(&self, accepted: &[(&'static str, FlagKind)]) -> Result<Flags, Fail> {
        Flags::parse(&self.upper(), &self.node.flags, accepted).map_err(|(k, f)| (k, Some(f)))
    }

    fn exactly_one(&self) -> Result<String, Fail> {
        self.flags(&[])?;
        match self.args {
            [one] => Ok(one.clone()),
            _ => fail(ParseErrorKind::ExactlyOneArgument(self.upper())),
        }
    }

    fn at_least_one(&self) -> Result<(), Fail> {
        if self.args.is_empty() && !matches!(self.node.body, Body::Trigger(_)) {
            return fail(ParseErrorKind::AtLeastOneArgument(self.upper()));
        }
        Ok(())
    }

    fn command_line(&self) -> CommandLine {
        if self.node.json {
            CommandLine::Exec(self.args.to_vec())
        } else {
            CommandLine::Shell(self.args.join(" "))
        }
    }

    fn command(&self) -> Result<Command, Fail> {
        Ok(match self.node.command().as_str() {
            "from" => Command::From(self.from()?),
            "run" => Command::Run(self.run()?),
            "cmd" => {
                self.flags(&[])?;
                Command::Cmd(self.command_line())
            }
            "entrypoint" => {
                self.flags(&[])?;
                Command::Entrypoint(self.command_line())
            }
            "label" => Command::Label(self.key_values()?),
            "env" => Command::Env(self.key_values()?),
            "maintainer" => Command::Maintainer(self.exactly_one()?),
            "user" => Command::User(self.exactly_one()?),
            "workdir" => Command::Workdir(self.exactly_one()?),
            "stopsignal" => Command::Stopsignal(self.exactly_one()?),
            "expose" => {
                self.at_least_one()?;
                self.flags(&[])?;
                Command::Expose(self.args.to_vec())
            }
            "volume" => Command::Volume(self.volume()?),
            "arg" => Command::Arg(self.arg()?),
            "copy" => Command::Copy(self.copy()?),
            "add" => Command::Add(self.add()?),
            "onbuild" => Command::Onbuild(self.onbuild()?),
            "healthcheck" => Command::Healthcheck(self.healthcheck()?),
            "shell" => Command::Shell(self.shell()?),
            _ => {
                return fail(ParseErrorKind::UnknownInstruction(
                    self.node.keyword.clone(),
                ));
            }
        })
    }

    fn from(&self) -> Result<From, Fail> {
        let flags = self.flags(&[("platform", Str)])?;
        let (image, as_keyword, name) = match self.args {
            [image] => (image, None, None),
            [image, kw, name] if kw.eq_ignore_ascii_case("as") => {
                let lower = name.to_ascii_lowercase();
                if !valid_stage_name(&lower) {
                    return fail(ParseErrorKind::InvalidStageName(name.clone()));
                }
                (image, Some(kw.clone()), Some(lower))
            }
            _ => return fail(ParseErrorKind::FromArguments),
        };
        Ok(From {
            image: image.clone(),
            name,
            as_keyword,
            platform: flags.string("platform"),
        })
    }

    fn run(&self) -> Result<Run, Fail> {
        let flags = self.flags(&[("mount", List), ("network", Str), ("security", Str)])?;
        Ok(Run {
            command: self.command_line(),
            heredocs: self.node.heredocs.clone(),
            mounts: flags.list("mount"),
            network: flags.string("network"),
            security: flags.string("security"),
        })
    }

    fn key_values(&self) -> Result<Vec<KeyValue>, Fail> {
        self.flags(&[])?;
        self.at_least_one()?;
        self.args
            .chunks(3)
            .map(|c| match c {
                [k, _, _] if k.is_empty() => fail(ParseErrorKind::BlankName(self.upper())),
                [k, v, sep] => Ok(KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                    equals: sep == "=",
                }),
                _ => unreachable!("the line parser emits key/value/separator triples"),
            })
            .collect()
    }

    fn volume(&self) -> Result<Vec<String>, Fail> {
        self.flags(&[])?;
        self.at_least_one()?;
        if self.args.iter().any(|v| v.trim().is_empty()) {
            return fail(ParseErrorKind::EmptyVolume);
        }
        Ok(self.args.to_vec())
    }

    fn arg(&self) -> Result<Vec<ArgDecl>, Fail> {
        self.flags(&[])?;
        self.at_least_one()?;
        self.args
            .iter()
            .map(|word| {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (word.as_str(), None),
                };
                if name.is_empty() {
                    return fail(ParseErrorKind::BlankName("ARG".into()));
                }
                Ok(ArgDecl {
                    name: name.to_string(),
                    default,
                })
            })
            .collect()
    }

    /// Splits sources (heredoc markers become inline files) from the destination.
    fn sources_and_dest(&self) -> Result<(Vec<Source>, String), Fail> {
        let Some((dest, srcs)) = self.args.split_last().filter(|(_, s)| !s.is_empty()) else {
            return fail(ParseErrorKind::NoDestination(self.upper()));
        };
        if parse_heredoc_marker(dest).is_some() {
            return fail(ParseErrorKind::BadHeredoc {
                instruction: self.upper(),
                what: "a destination".into(),
            });
        }
        let sources = srcs
            .iter()
            .map(|src| match parse_heredoc_marker(src) {
                Some(marker) => Source::Heredoc(
                    self.node
                        .heredocs
                        .iter()
                        .find(|h| h.name == marker.name)
                        .cloned()
                        .unwrap_or(marker),
                ),
                None => Source::Path(src.clone()),
            })
            .collect();
        Ok((sources, dest.clone()))
    }

    fn copy(&self) -> Result<Copy, Fail> {
        let flags = self.flags(&[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", List),
        ])?;
        let (sources, dest) = self.sources_and_dest()?;
        Ok(Copy {
            sources,
            dest,
            from: flags.string("from"),
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link").unwrap_or(false),
            parents: flags.bool("parents").unwrap_or(false),
            exclude: flags.list("exclude"),
        })
    }

    fn add(&self) -> Result<Add, Fail> {
        let flags = self.flags(&[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", Str),
            ("unpack", Bool),
            ("exclude", List),
        ])?;
        let (sources, dest) = self.sources_and_dest()?;
        Ok(Add {
            sources,
            dest,
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link").unwrap_or(false),
            keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
            checksum: flags.string("checksum"),
            unpack: flags.bool("unpack"),
            exclude: flags.list("exclude"),
        })
    }

    fn onbuild(&self) -> Result<Onbuild, Fail> {
        self.flags(&[])?;
        let Body::Trigger(child) = &self.node.body else {
            return fail(ParseErrorKind::AtLeastOneArgument("ONBUILD".into()));
        };
        match child.command().as_str() {
            "onbuild" => return fail(ParseErrorKind::OnbuildChain),
            "from" | "maintainer" => {
                return fail(ParseErrorKind::OnbuildForbidden(
                    child.keyword.to_ascii_uppercase(),
                ));
            }
            _ => {}
        }
        let mut expression = child.original.trim().to_string();
        for doc in &self.node.heredocs {
            expression.push('\n');
            expression.push_str(&doc.content);
            expression.push_str(&doc.name);
        }
        // The heredoc bodies were read for the ONBUILD line; they belong to its trigger.
        let child = Node {
            heredocs: self.node.heredocs.clone(),
            ..(**child).clone()
        };
        let trigger = Req {
            node: &child,
            args: child.args(),
        }
        .command()?;
        Ok(Onbuild {
            expression,
            trigger: Box::new(trigger),
        })
    }

    fn healthcheck(&self) -> Result<Healthcheck, Fail> {
        let Some((typ, rest)) = self.args.split_first() else {
            return fail(ParseErrorKind::AtLeastOneArgument("HEALTHCHECK".into()));
        };
        let typ = typ.to_ascii_uppercase();
        if typ == "NONE" {
            self.flags(&[])?;
            if !rest.is_empty() {
                return fail(ParseErrorKind::HealthcheckNoneArguments);
            }
            return Ok(Healthcheck::None);
        }
        let flags = self.flags(&[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ])?;
        if typ != "CMD" {
            return fail(ParseErrorKind::HealthcheckType(typ));
        }
        if rest.is_empty() {
            return fail(ParseErrorKind::HealthcheckMissingCommand);
        }
        let test = if self.node.json {
            CommandLine::Exec(rest.to_vec())
        } else {
            CommandLine::Shell(rest.join(" "))
        };
        let duration = |name: &str| interval_flag(&flags, name);
        let retries = match flags.string("retries") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| {
                (
                    ParseErrorKind::BadRetries(v.clone()),
                    Some("--retries".to_string()),
                )
            })?),
        };
        Ok(Healthcheck::Cmd {
            test,
            interval: duration("interval")?,
            timeout: duration("timeout")?,
            start_period: duration("start-period")?,
            start_interval: duration("start-interval")?,
            retries,
        })
    }

    fn shell(&self) -> Result<Vec<String>, Fail> {
        self.flags(&[])?;
        self.at_least_one()?;
        if !self.node.json {
            return fail(ParseErrorKind::ShellNotJson);
        }
        Ok(self.args.to_vec())
    }
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_\.]*$` (after lower-casing).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// A HEALTHCHECK duration flag: absent or `0` means "default"; otherwise at least 1ms.
fn interval_flag(flags: &Flags, name: &str) -> Result<Option<Duration>, Fail> {
    let Some(value) = flags.string(name) else {
        return Ok(None);
    };
    let flag = Some(format!("--{name}"));
    let d = parse_go_duration(&value).ok_or_else(|| {
        (
            ParseErrorKind::BadDuration {
                flag: name.to_string(),
                value: value.clone(),
            },
            flag.clone(),
        )
    })?;
    if d.is_zero() {
        return Ok(None);
    }
    if d < Duration::from_millis(1) {
        return Err((ParseErrorKind::DurationTooSmall(name.to_string()), flag));
    }
    Ok(Some(d))
}

/// Go's `time.ParseDuration` for non-negative values: `1h2m3.5s`, `300ms`, `0`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos;
    }
    (total < u64::MAX as f64).then(|| Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn stage_names() {
        assert!(valid_stage_name("build-1.x_y"));
        assert!(!valid_stage_name("1build"));
        assert!(!valid_stage_name("a/b"));
    }
}
