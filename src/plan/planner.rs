//! From typed instructions to a [`Plan`]: stages, ARG/ENV scoping, expansion with the values
//! in force before each instruction, the stage DAG and `--target`.

use std::collections::{BTreeMap, BTreeSet};

use crate::dockerfile::shell::{ExpandError, ShellLex};
use crate::dockerfile::{
    self, Command, CommandLine, Instruction, Source, Span, parse_heredoc_marker,
};

use super::PlanOptions;
use super::args::{PROXY_ARGS, is_predefined, platform_args};
use super::error::{PlanError, PlanErrorKind};
use super::lint::Lints;
use super::model::*;
use super::mount::{MountKind, parse_mount};

/// Plans `source` (a Dockerfile's text) with `opts`.
pub fn plan(source: &str, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let ast = dockerfile::parse(source)?;
    let instructions = dockerfile::parse_instructions(&ast)?;
    let mut lints = Lints::new(ast.directives.check.as_deref());
    for w in &ast.warnings {
        lints.warn(w.rule, w.message.clone(), Some(w.span));
    }
    let first_from = instructions
        .iter()
        .position(|i| matches!(i.command, Command::From(_)));
    let Some(first_from) = first_from else {
        let span = instructions.first().map(|i| i.span);
        let kind = PlanErrorKind::NoFrom;
        return Err(span.map_or(PlanError::Global(PlanErrorKind::NoFrom), |s| {
            PlanError::at(s, kind)
        }));
    };
    let lex = ShellLex::new(ast.directives.escape);
    let mut planner = Planner::new(opts, lex, &mut lints);
    planner.global_args(&instructions[..first_from])?;
    let groups = split_stages(&instructions[first_from..]);
    planner.name_stages(&groups)?;
    for (index, group) in groups.iter().enumerate() {
        let stage = planner.stage(index, group)?;
        planner.stages.push(stage);
    }
    let target = planner.target()?;
    let order = build_order(&planner.stages, target)?;
    for &i in &order {
        planner.stages[i].needed = true;
        if let Some(Some(err)) = planner.deferred.get_mut(i).map(Option::take) {
            return Err(err);
        }
    }
    for (i, err) in planner.deferred.iter().enumerate() {
        if let Some(PlanError::At { span, kind }) = err {
            let message = format!("stage {i} is skipped, but would fail: {kind}");
            planner.lints.warn("UnknownStage", message, Some(*span));
        }
    }
    planner.unused_build_args(&order);
    let Planner {
        stages, globals, ..
    } = planner;
    lints.finish()?;
    Ok(Plan {
        stages,
        order,
        target,
        global_args: globals.declared,
        warnings: lints.into_warnings(),
    })
}

/// Instructions grouped by stage: the FROM first.
fn split_stages(instructions: &[Instruction]) -> Vec<&[Instruction]> {
    let mut starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.command, Command::From(_)))
        .map(|(n, _)| n)
        .collect();
    starts.push(instructions.len());
    starts
        .windows(2)
        .map(|w| &instructions[w[0]..w[1]])
        .collect()
}

/// ARGs before the first FROM: visible to FROM lines only (unless re-declared in a stage).
#[derive(Default)]
struct Globals {
    declared: Vec<(String, Option<String>)>,
    /// What FROM lines expand with: platform ARGs plus declared globals with values.
    env: BTreeMap<String, String>,
}

/// The scope inside one stage as instructions go by.
#[derive(Clone, Default)]
struct Scope {
    args: BTreeMap<String, Option<String>>,
    env: BTreeMap<String, String>,
    shell: Vec<String>,
    workdir: String,
    workdir_set: bool,
    /// False when the base image's ENV is unknown (no `base_env` given): no UndefinedVar.
    env_known: bool,
}

impl Scope {
    /// Values in force: ARGs with values, overridden by ENV of the same name.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = self
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        vars.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }

    /// Whether `name` is an ARG use (declared ARG not shadowed by ENV).
    fn arg_value(&self, name: &str) -> Option<&str> {
        if self.env.contains_key(name) {
            return None;
        }
        self.args.get(name)?.as_deref()
    }
}

struct Planner<'a> {
    opts: &'a PlanOptions,
    lex: ShellLex,
    lints: &'a mut Lints,
    globals: Globals,
    platform_args: BTreeMap<String, String>,
    names: BTreeMap<String, usize>,
    stage_count: usize,
    stages: Vec<Stage>,
    /// Scope at the end of each planned stage (children based on it inherit it).
    end_scopes: Vec<Scope>,
    /// `--build-arg` names consumed, per stage (index `stages.len()` slot unused) and global.
    consumed: Vec<BTreeSet<String>>,
    consumed_global: BTreeSet<String>,
    /// Errors that count only if their stage is needed, by stage index.
    deferred: Vec<Option<PlanError>>,
}

/// Expansion of the words of one instruction, recording which variables it used.
struct Expander<'s> {
    lex: ShellLex,
    vars: BTreeMap<String, String>,
    span: Span,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    scope: &'s Scope,
}

/// Stops planning at the next word after Ctrl-C or SIGTERM: one word's expansion is bounded
/// (`shell::MATCH_BUDGET`, `shell::MAX_EXPANDED`), a Dockerfile's count of words is not.
fn check_interrupt(span: Span) -> Result<(), PlanError> {
    match crate::progress::interrupted() {
        true => Err(PlanError::at(span, PlanErrorKind::Interrupted)),
        false => Ok(()),
    }
}

impl Expander<'_> {
    fn word(&mut self, w: &str) -> Result<String, PlanError> {
        check_interrupt(self.span)?;
        let e = self
            .lex
            .process_word(w, &self.vars)
            .map_err(|e| self.fail(e))?;
        self.matched.extend(e.matched);
        self.unmatched.extend(e.unmatched);
        Ok(e.value)
    }

    fn words(&mut self, w: &str) -> Result<Vec<String>, PlanError> {
        check_interrupt(self.span)?;
        let (words, e) = self
            .lex
            .process_words_with_matches(w, &self.vars)
            .map_err(|e| self.fail(e))?;
        self.matched.extend(e.matched);
        self.unmatched.extend(e.unmatched);
        Ok(words)
    }

    fn opt(&mut self, w: Option<&String>) -> Result<Option<String>, PlanError> {
        w.map(|w| self.word(w)).transpose()
    }

    fn heredoc(&mut self, body: &str) -> Result<String, PlanError> {
        check_interrupt(self.span)?;
        let e = self
            .lex
            .process_heredoc(body, &self.vars)
            .map_err(|e| self.fail(e))?;
        self.matched.extend(e.matched);
        self.unmatched.extend(e.unmatched);
        Ok(e.value)
    }

    fn fail(&self, e: ExpandError) -> PlanError {
        PlanError::at(self.span, PlanErrorKind::Expand(e))
    }

    /// ARGs this expansion used, with their values.
    fn args_used(&self) -> BTreeMap<String, String> {
        self.matched
            .iter()
            .filter_map(|n| Some((n.clone(), self.scope.arg_value(n)?.to_string())))
            .collect()
    }
}

fn bad_flag(span: Span, flag: &str, value: &str, message: impl Into<String>) -> PlanError {
    PlanError::at(
        span,
        PlanErrorKind::BadFlagValue {
            flag: flag.to_string(),
            value: value.to_string(),
            message: message.into(),
        },
    )
}

impl<'a> Planner<'a> {
    fn new(opts: &'a PlanOptions, lex: ShellLex, lints: &'a mut Lints) -> Self {
        let platform_args = platform_args(&opts.build_platform, &opts.target_platform);
        Planner {
            opts,
            lex,
            lints,
            globals: Globals {
                declared: Vec::new(),
                env: platform_args.clone(),
            },
            platform_args,
            names: BTreeMap::new(),
            stage_count: 0,
            stages: Vec::new(),
            end_scopes: Vec::new(),
            consumed: Vec::new(),
            consumed_global: BTreeSet::new(),
            deferred: Vec::new(),
        }
    }

    fn global_args(&mut self, instructions: &[Instruction]) -> Result<(), PlanError> {
        for ins in instructions {
            let Command::Arg(decls) = &ins.command else {
                let kind = PlanErrorKind::BeforeFrom(ins.keyword.to_ascii_uppercase());
                return Err(PlanError::at(ins.span, kind));
            };
            for decl in decls {
                check_interrupt(ins.span)?;
                let value = match self.opts.build_args.get(&decl.name) {
                    Some(v) => {
                        self.consumed_global.insert(decl.name.clone());
                        Some(v.clone())
                    }
                    None => match &decl.default {
                        Some(d) => Some(
                            self.lex
                                .process_word(d, &self.globals.env)
                                .map_err(|e| PlanError::at(ins.span, PlanErrorKind::Expand(e)))?
                                .value,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = &value {
                    self.globals.env.insert(decl.name.clone(), v.clone());
                }
                self.globals.declared.push((decl.name.clone(), value));
            }
        }
        Ok(())
    }

    fn name_stages(&mut self, groups: &[&[Instruction]]) -> Result<(), PlanError> {
        self.stage_count = groups.len();
        for (i, g) in groups.iter().enumerate() {
            if let Command::From(from) = &g[0].command
                && let Some(name) = &from.name
                && self.names.insert(name.clone(), i).is_some()
            {
                return Err(PlanError::at(
                    g[0].span,
                    PlanErrorKind::DuplicateStage(name.clone()),
                ));
            }
        }
        Ok(())
    }

    /// Every stage, by name where it has one, else by index: for error messages.
    fn stage_list(&self) -> String {
        let mut by_index: Vec<String> = (0..self.stage_count).map(|i| i.to_string()).collect();
        for (name, &i) in &self.names {
            by_index[i] = name.clone();
        }
        by_index.join(", ")
    }

    fn stage(&mut self, index: usize, group: &[Instruction]) -> Result<Stage, PlanError> {
        let from_ins = &group[0];
        let Command::From(from) = &from_ins.command else {
            unreachable!("split_stages starts each group at a FROM")
        };
        let (base, platform) = self.base(index, from_ins, from)?;
        let mut scope = match &base {
            Base::Stage(p) => self.end_scopes[*p].clone(),
            Base::Scratch => Scope {
                env_known: true,
                ..Scope::default()
            },
            Base::Image(image) => Scope {
                env: self
                    .opts
                    .base_env
                    .get(image)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                env_known: self.opts.base_env.contains_key(image),
                ..Scope::default()
            },
        };
        if !matches!(base, Base::Stage(_)) {
            scope.shell = vec!["/bin/sh".into(), "-c".into()];
            scope.workdir = "/".into();
        }
        self.consumed.push(BTreeSet::new());
        let mut stage = Stage {
            index,
            name: from.name.clone(),
            base,
            platform,
            span: from_ins.span,
            steps: Vec::new(),
            depends_on: Vec::new(),
            needed: false,
        };
        if let Base::Stage(p) = stage.base {
            stage.depends_on.push(p);
        }
        self.lints.stage_checks(group);
        for ins in &group[1..] {
            check_interrupt(ins.span)?;
            let step = self.step(index, ins, &mut scope, &mut stage.depends_on)?;
            stage.steps.push(step);
        }
        stage.depends_on.sort_unstable();
        stage.depends_on.dedup();
        self.end_scopes.push(scope);
        Ok(stage)
    }

    fn base(
        &mut self,
        index: usize,
        ins: &Instruction,
        from: &dockerfile::From,
    ) -> Result<(Base, Option<String>), PlanError> {
        let expand = |w: &str| {
            self.lex
                .process_word(w, &self.globals.env)
                .map_err(|e| PlanError::at(ins.span, PlanErrorKind::Expand(e)))
        };
        let image = expand(&from.image)?;
        let platform = from.platform.as_deref().map(expand).transpose()?;
        for name in image
            .unmatched
            .iter()
            .chain(platform.iter().flat_map(|p| p.unmatched.iter()))
        {
            self.lints.warn(
                "UndefinedArgInFrom",
                format!("FROM argument '{name}' is not declared"),
                Some(ins.span),
            );
        }
        if from
            .platform
            .as_deref()
            .is_some_and(|p| p.contains("TARGETPLATFORM"))
        {
            self.lints.warn(
                "RedundantTargetPlatform",
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior".into(),
                Some(ins.span),
            );
        }
        if image.value.is_empty() {
            return Err(PlanError::at(ins.span, PlanErrorKind::EmptyBase));
        }
        let lower = image.value.to_ascii_lowercase();
        let base = match self.names.get(&lower) {
            Some(&i) if i < index => Base::Stage(i),
            _ if lower == "scratch" => Base::Scratch,
            _ => Base::Image(image.value),
        };
        Ok((base, platform.map(|p| p.value)))
    }

    /// Resolves a `--from` / `from=` value to a stage or an image. An unknown bare name is
    /// an error only if the stage is built (BuildKit resolves skipped stages lazily too).
    /// A stage defined later resolves here; the caller rejects it with its own wording.
    fn source_stage(
        &mut self,
        index: usize,
        flag: &str,
        name: &str,
        span: Span,
    ) -> Result<CopyFrom, PlanError> {
        if let Ok(n) = name.parse::<usize>() {
            let count = self.stage_count;
            if n >= count {
                let kind = PlanErrorKind::StageIndex {
                    flag: flag.into(),
                    index: n,
                    count,
                };
                return Err(PlanError::at(span, kind));
            }
            if n == index {
                let label = self.stage_label(n);
                return Err(PlanError::at(
                    span,
                    PlanErrorKind::Cycle(format!("{label} -> {label}")),
                ));
            }
            return Ok(CopyFrom::Stage(n));
        }
        if let Some(&i) = self.names.get(&name.to_ascii_lowercase()) {
            if i == index {
                return Err(PlanError::at(
                    span,
                    PlanErrorKind::Cycle(format!("{name} -> {name}")),
                ));
            }
            return Ok(CopyFrom::Stage(i));
        }
        // A bare word that is not a stage is far more often a typo than an image.
        if !name.contains(['/', ':', '@', '.']) {
            let kind = PlanErrorKind::UnknownStage {
                flag: flag.into(),
                name: name.into(),
                stages: self.stage_list(),
            };
            self.defer(index, PlanError::at(span, kind));
        }
        Ok(CopyFrom::Image(name.to_string()))
    }

    /// Records an error that fails the build only if stage `index` is built (BuildKit only
    /// dispatches the stages the target needs). The first one recorded wins.
    fn defer(&mut self, index: usize, err: PlanError) {
        if self.deferred.len() <= index {
            self.deferred.resize(index + 1, None);
        }
        self.deferred[index].get_or_insert(err);
    }

    /// A stage as BuildKit names it in messages: its name, else `stage-N`.
    fn stage_label(&self, index: usize) -> String {
        self.names
            .iter()
            .find(|(_, i)| **i == index)
            .map_or_else(|| format!("stage-{index}"), |(n, _)| n.clone())
    }

    fn step(
        &mut self,
        index: usize,
        ins: &Instruction,
        scope: &mut Scope,
        deps: &mut Vec<usize>,
    ) -> Result<Step, PlanError> {
        let snapshot = scope.clone();
        let mut x = Expander {
            lex: self.lex,
            vars: snapshot.vars(),
            span: ins.span,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            scope: &snapshot,
        };
        let kind = self.step_kind(index, ins, &mut x, scope, deps)?;
        let args_used = match kind {
            StepKind::Run { .. } => snapshot
                .args
                .keys()
                .filter_map(|k| Some((k.clone(), snapshot.arg_value(k)?.to_string())))
                .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()) || snapshot.args.contains_key(k))
                .collect(),
            _ => x.args_used(),
        };
        if snapshot.env_known {
            for name in &x.unmatched {
                if !snapshot.args.contains_key(name) {
                    self.lints.warn(
                        "UndefinedVar",
                        format!("Usage of undefined variable '${name}'"),
                        Some(ins.span),
                    );
                }
            }
        }
        Ok(Step {
            span: ins.span,
            original: ins.original.trim().to_string(),
            kind,
            args_used,
        })
    }

    fn step_kind(
        &mut self,
        index: usize,
        ins: &Instruction,
        x: &mut Expander,
        scope: &mut Scope,
        deps: &mut Vec<usize>,
    ) -> Result<StepKind, PlanError> {
        Ok(match &ins.command {
            Command::From(_) => unreachable!("FROM starts a stage"),
            Command::Run(run) => self.run(index, ins, run, x, scope, deps)?,
            Command::Copy(c) => self.copy(index, ins, c, &scope.workdir, x, deps)?,
            Command::Add(a) => self.add(ins, a, &scope.workdir, x)?,
            Command::Env(kvs) => {
                let vars = kvs
                    .iter()
                    // BuildKit expands the key too, so `ENV "A"=1` sets A (quotes removed).
                    .map(|kv| Ok((x.word(&kv.key)?, x.word(&kv.value)?)))
                    .collect::<Result<Vec<_>, PlanError>>()?;
                scope.env.extend(vars.iter().cloned());
                StepKind::Env { vars }
            }
            Command::Label(kvs) => StepKind::Label {
                labels: kvs
                    .iter()
                    .map(|kv| Ok((x.word(&kv.key)?, x.word(&kv.value)?)))
                    .collect::<Result<_, PlanError>>()?,
            },
            Command::Arg(decls) => StepKind::Arg {
                args: self.stage_args(index, decls, x, scope)?,
            },
            Command::Workdir(p) => {
                let p = x.word(p)?;
                let path = join_path(&scope.workdir, &p);
                if !p.starts_with('/') && !scope.workdir_set {
                    self.lints.warn(
                        "WorkdirRelativePath",
                        format!("Relative workdir '{p}' can have unexpected results if the base image changes"),
                        Some(ins.span),
                    );
                }
                scope.workdir = path.clone();
                scope.workdir_set = true;
                StepKind::Workdir { path }
            }
            Command::User(u) => StepKind::User { user: x.word(u)? },
            Command::Expose(ports) => {
                let ports = ports
                    .iter()
                    .map(|p| x.words(p))
                    .collect::<Result<Vec<_>, _>>()?
                    .concat();
                if let Some(bad) = ports.iter().find(|p| !valid_port_spec(p)) {
                    let kind = PlanErrorKind::BadPort(bad.clone());
                    return Err(PlanError::at(ins.span, kind));
                }
                StepKind::Expose { ports }
            }
            Command::Volume(paths) => StepKind::Volume {
                paths: paths.iter().map(|p| x.word(p)).collect::<Result<_, _>>()?,
            },
            Command::Stopsignal(s) => StepKind::Stopsignal { signal: x.word(s)? },
            Command::Cmd(c) => StepKind::Cmd { command: c.clone() },
            Command::Entrypoint(c) => StepKind::Entrypoint { command: c.clone() },
            Command::Shell(s) => {
                scope.shell = s.clone();
                StepKind::Shell { shell: s.clone() }
            }
            Command::Healthcheck(h) => StepKind::Healthcheck { health: h.clone() },
            Command::Onbuild(o) => StepKind::Onbuild {
                expression: o.expression.clone(),
            },
            Command::Maintainer(m) => StepKind::Maintainer { name: m.clone() },
        })
    }

    fn stage_args(
        &mut self,
        index: usize,
        decls: &[dockerfile::ArgDecl],
        x: &mut Expander,
        scope: &mut Scope,
    ) -> Result<Vec<(String, Option<String>)>, PlanError> {
        let mut out = Vec::new();
        for decl in decls {
            let value = if let Some(v) = self.opts.build_args.get(&decl.name) {
                self.consumed[index].insert(decl.name.clone());
                Some(v.clone())
            } else if let Some(d) = &decl.default {
                // Like every instruction, ARG expands with the values in force before it.
                Some(x.word(d)?)
            } else if let Some((_, v)) = self
                .globals
                .declared
                .iter()
                .rev()
                .find(|(n, _)| *n == decl.name)
            {
                v.clone()
            } else {
                self.platform_args.get(&decl.name).cloned()
            };
            scope.args.insert(decl.name.clone(), value.clone());
            out.push((decl.name.clone(), value));
        }
        Ok(out)
    }

    fn run(
        &mut self,
        index: usize,
        ins: &Instruction,
        run: &dockerfile::Run,
        x: &mut Expander,
        scope: &Scope,
        deps: &mut Vec<usize>,
    ) -> Result<StepKind, PlanError> {
        let mut mounts = Vec::new();
        for raw in &run.mounts {
            let spec = x.word(raw)?;
            let mut mount = parse_mount(&spec)
                .map_err(|e| bad_flag(ins.span, "--mount", &spec, e.to_string()))?;
            // BuildKit mounts an empty or relative target relative to WORKDIR; an `env=`
            // secret without a target is only an environment variable (no file).
            // An ssh mount without a target gets its numbered default when the step runs.
            let env_only = mount.kind == MountKind::Secret && mount.target.is_empty();
            let default_ssh = mount.kind == MountKind::Ssh && mount.target.is_empty();
            if !env_only && !default_ssh {
                mount.target = join_path(&scope.workdir, &mount.target);
            }
            if let Some(from) = &mount.from
                && let CopyFrom::Stage(s) =
                    self.source_stage(index, "--mount=from", from, ins.span)?
            {
                // BuildKit dispatches stages in file order: a later one is not there yet.
                if s > index {
                    let kind = PlanErrorKind::MountFromLaterStage {
                        from: from.clone(),
                        target: mount.target.clone(),
                    };
                    self.defer(index, PlanError::at(ins.span, kind));
                }
                deps.push(s);
                mount.from_stage = Some(s);
            }
            mounts.push(mount);
        }
        let network = match run
            .network
            .as_deref()
            .map(|n| x.word(n))
            .transpose()?
            .as_deref()
        {
            None | Some("default") => None,
            Some("none") => Some(Network::None),
            Some("host") => Some(Network::Host),
            Some(other) => {
                return Err(bad_flag(
                    ins.span,
                    "--network",
                    other,
                    "use default, none or host",
                ));
            }
        };
        let insecure = match run.security.as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") if self.opts.allow_insecure => true,
            Some("insecure") => {
                return Err(PlanError::at(ins.span, PlanErrorKind::InsecureNotAllowed));
            }
            Some(other) => {
                return Err(bad_flag(
                    ins.span,
                    "--security",
                    other,
                    "use sandbox or insecure",
                ));
            }
        };
        let (program, shell_form) = run_program(&run.command, &run.heredocs, &scope.shell);
        // BuildKit hands proxy build-args to RUN without a declaration (and keeps them out
        // of the cache key); declared ones are ordinary ARGs.
        let proxy_env = PROXY_ARGS
            .iter()
            .filter(|p| !scope.args.contains_key(**p))
            .filter_map(|p| Some((p.to_string(), self.opts.build_args.get(*p)?.clone())))
            .collect();
        Ok(StepKind::Run {
            program,
            shell_form,
            mounts,
            network,
            insecure,
            proxy_env,
        })
    }

    fn sources(
        &self,
        ins: &Instruction,
        sources: &[Source],
        x: &mut Expander,
    ) -> Result<Vec<SourceSpec>, PlanError> {
        sources
            .iter()
            .map(|s| {
                Ok(match s {
                    Source::Path(p) => SourceSpec::Path { path: x.word(p)? },
                    Source::Heredoc(h) => {
                        let body = h.body();
                        let content = if h.expand { x.heredoc(&body)? } else { body };
                        SourceSpec::Inline {
                            name: h.name.clone(),
                            content,
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()
            .and_then(|v| {
                if v.is_empty() {
                    return Err(PlanError::at(
                        ins.span,
                        PlanErrorKind::MultiSourceDest(ins.keyword.to_ascii_uppercase()),
                    ));
                }
                Ok(v)
            })
    }

    /// The destination, expanded and made absolute against WORKDIR; a trailing `/` (or `.`)
    /// is kept because it means "into this directory".
    fn dest(
        &self,
        ins: &Instruction,
        dest: &str,
        count: usize,
        workdir: &str,
        x: &mut Expander,
    ) -> Result<String, PlanError> {
        let written = x.word(dest)?;
        let mut dest = join_path(workdir, &written);
        let dir = written.ends_with('/') || written == "." || written.ends_with("/.");
        if dir && !dest.ends_with('/') {
            dest.push('/');
        }
        if count > 1 && !dest.ends_with('/') {
            let kind = PlanErrorKind::MultiSourceDest(ins.keyword.to_ascii_uppercase());
            return Err(PlanError::at(ins.span, kind));
        }
        Ok(dest)
    }

    fn copy(
        &mut self,
        index: usize,
        ins: &Instruction,
        c: &dockerfile::Copy,
        workdir: &str,
        x: &mut Expander,
        deps: &mut Vec<usize>,
    ) -> Result<StepKind, PlanError> {
        let from_name = x.opt(c.from.as_ref())?;
        let from = match &from_name {
            None => CopyFrom::Context,
            Some(f) => self.source_stage(index, "--from", f, ins.span)?,
        };
        if let CopyFrom::Stage(s) = from {
            // BuildKit dispatches stages in file order: a later one is not there yet.
            if s > index {
                let kind = PlanErrorKind::CopyFromLaterStage {
                    from: from_name.unwrap_or_default(),
                    current: self.stage_label(index),
                };
                self.defer(index, PlanError::at(ins.span, kind));
            }
            deps.push(s);
        }
        let sources = self.sources(ins, &c.sources, x)?;
        let dest = self.dest(ins, &c.dest, sources.len(), workdir, x)?;
        let chmod = x.opt(c.chmod.as_ref())?;
        check_chmod(ins.span, chmod.as_deref())?;
        Ok(StepKind::Copy {
            sources,
            dest,
            from,
            chown: x.opt(c.chown.as_ref())?,
            chmod,
            link: c.link,
            parents: c.parents,
            exclude: c
                .exclude
                .iter()
                .map(|e| x.word(e))
                .collect::<Result<_, _>>()?,
        })
    }

    fn add(
        &mut self,
        ins: &Instruction,
        a: &dockerfile::Add,
        workdir: &str,
        x: &mut Expander,
    ) -> Result<StepKind, PlanError> {
        let sources = self.sources(ins, &a.sources, x)?;
        let dest = self.dest(ins, &a.dest, sources.len(), workdir, x)?;
        let chmod = x.opt(a.chmod.as_ref())?;
        check_chmod(ins.span, chmod.as_deref())?;
        let checksum = x.opt(a.checksum.as_ref())?;
        if let Some(c) = &checksum {
            let ok = c.split_once(':').is_some_and(|(alg, hex)| {
                matches!(alg, "sha256" | "sha384" | "sha512")
                    && !hex.is_empty()
                    && hex.chars().all(|h| h.is_ascii_hexdigit())
            });
            if !ok {
                return Err(bad_flag(
                    ins.span,
                    "--checksum",
                    c,
                    "use sha256:<hex> (or sha384:/sha512:)",
                ));
            }
        }
        Ok(StepKind::Add {
            sources,
            dest,
            chown: x.opt(a.chown.as_ref())?,
            chmod,
            link: a.link,
            keep_git_dir: a.keep_git_dir,
            checksum,
            unpack: a.unpack,
            exclude: a
                .exclude
                .iter()
                .map(|e| x.word(e))
                .collect::<Result<_, _>>()?,
        })
    }

    fn target(&self) -> Result<usize, PlanError> {
        match &self.opts.target {
            None => Ok(self.stages.len() - 1),
            Some(t) => self
                .names
                .get(&t.to_ascii_lowercase())
                .copied()
                .ok_or_else(|| {
                    PlanError::Global(PlanErrorKind::TargetNotFound {
                        target: t.clone(),
                        stages: self.stage_list(),
                    })
                }),
        }
    }

    fn unused_build_args(&mut self, order: &[usize]) {
        let mut used = self.consumed_global.clone();
        for &i in order {
            used.extend(self.consumed[i].iter().cloned());
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !used.contains(*k) && !is_predefined(k))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.lints.warn(
                "UnusedBuildArg",
                format!(
                    "One or more build-args [{}] were not consumed",
                    names.join(" ")
                ),
                None,
            );
        }
    }
}

/// What RUN executes, following BuildKit's handling of heredocs.
fn run_program(
    cmd: &CommandLine,
    heredocs: &[dockerfile::Heredoc],
    shell: &[String],
) -> (RunProgram, bool) {
    let with_shell = |text: String| {
        let mut argv = shell.to_vec();
        argv.push(text);
        RunProgram::Argv { argv }
    };
    match cmd {
        CommandLine::Exec(argv) => (RunProgram::Argv { argv: argv.clone() }, false),
        CommandLine::Shell(text) if heredocs.is_empty() => (with_shell(text.clone()), true),
        CommandLine::Shell(text) => {
            // Only a line that is the marker alone runs the body as the script; with a command
            // around it (`RUN <<EOF sh -c '…'`) the shell gets the whole text (BuildKit's
            // `ParseHeredoc` wants exactly one word).
            let marker = text.trim();
            let sole = heredocs.len() == 1
                && !marker.contains(char::is_whitespace)
                && parse_heredoc_marker(marker).is_some();
            if sole {
                let doc = &heredocs[0];
                let body = doc.body();
                if body.starts_with("#!") {
                    return (
                        RunProgram::Script {
                            name: doc.name.clone(),
                            content: body,
                        },
                        true,
                    );
                }
                return (with_shell(body), true);
            }
            // Several heredocs or a command around one: give the shell the whole text.
            let mut full = text.clone();
            for doc in heredocs {
                full.push('\n');
                full.push_str(&doc.content);
                full.push_str(&doc.name);
            }
            (with_shell(full), true)
        }
    }
}

/// Octal (`644`, `0755`) or symbolic (`u=rwX,go=rX`) modes.
fn check_chmod(span: Span, chmod: Option<&str>) -> Result<(), PlanError> {
    let Some(m) = chmod else { return Ok(()) };
    let octal = !m.is_empty() && m.len() <= 4 && m.chars().all(|c| ('0'..='7').contains(&c));
    let symbolic = !m.is_empty()
        && m.split(',').all(|clause| {
            let who_len = clause.len() - clause.trim_start_matches(['u', 'g', 'o', 'a']).len();
            let rest = &clause[who_len..];
            !rest.is_empty()
                && rest.starts_with(['+', '-', '='])
                && rest[1..].chars().all(|c| "rwxXst+-=".contains(c))
        });
    if octal || symbolic {
        return Ok(());
    }
    Err(bad_flag(
        span,
        "--chmod",
        m,
        "use an octal mode such as 644 or a symbolic one such as u=rwX,go=rX",
    ))
}

/// `base` joined with `p` (absolute `p` wins), cleaned of `.`, `..` and double slashes.
fn join_path(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The stages the target needs, dependencies first; a cycle is an error.
fn build_order(stages: &[Stage], target: usize) -> Result<Vec<usize>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        stages: &[Stage],
        i: usize,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), PlanError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let name = |s: usize| stages[s].name.clone().unwrap_or_else(|| s.to_string());
                let cycle: Vec<String> =
                    path[start..].iter().chain([&i]).map(|&s| name(s)).collect();
                return Err(PlanError::at(
                    stages[i].span,
                    PlanErrorKind::Cycle(cycle.join(" -> ")),
                ));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        path.push(i);
        for &d in &stages[i].depends_on {
            visit(stages, d, marks, path, order)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    visit(stages, target, &mut marks, &mut Vec::new(), &mut order)?;
    Ok(order)
}

/// `PORT[/PROTO]` or `FROM-TO[/PROTO]`, as Docker's `nat.ParsePortSpecs` accepts for EXPOSE.
fn valid_port_spec(spec: &str) -> bool {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let port = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    };
    let range_ok = match ports.split_once('-') {
        Some((a, b)) => port(a) && port(b) && a.parse::<u16>().ok() <= b.parse::<u16>().ok(),
        None => port(ports),
    };
    // `80/` is tcp, as in nat.SplitProtoPort.
    range_ok
        && matches!(
            proto.to_ascii_lowercase().as_str(),
            "" | "tcp" | "udp" | "sctp"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_takes_docker_port_specs() {
        for ok in [
            "80",
            "80/",
            "80/tcp",
            "53/UDP",
            "8000-8010/udp",
            "132/sctp",
            "65535",
        ] {
            assert!(valid_port_spec(ok), "{ok}");
        }
        for bad in ["abc", "80/icmp", "65536", "10-5", "", "-1"] {
            assert!(!valid_port_spec(bad), "{bad}");
        }
    }

    #[test]
    fn workdir_joins_and_cleans() {
        assert_eq!(join_path("/a", "b/../c"), "/a/c");
        assert_eq!(join_path("/a", "/x//y/"), "/x/y");
        assert_eq!(join_path("/", ".."), "/");
    }

    fn run_argv(dockerfile: &str) -> Vec<String> {
        let p = plan(dockerfile, &PlanOptions::default()).unwrap();
        match &p.stages[0].steps[0].kind {
            StepKind::Run {
                program: RunProgram::Argv { argv },
                ..
            } => argv.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_heredoc_alone_is_the_script_and_one_with_a_command_goes_whole_to_the_shell() {
        assert_eq!(
            run_argv("FROM scratch\nRUN <<EOF\necho hi\nEOF\n"),
            ["/bin/sh", "-c", "echo hi\n"]
        );
        assert_eq!(
            run_argv("FROM scratch\nRUN <<EOF sh -c 'cat > /f'\nit's\nEOF\n"),
            ["/bin/sh", "-c", "<<EOF sh -c 'cat > /f'\nit's\nEOF"]
        );
    }

    #[test]
    fn chmod_forms() {
        let s = Span::new(1, 1, 1);
        assert!(check_chmod(s, Some("0755")).is_ok());
        assert!(check_chmod(s, Some("u=rwX,go=rX")).is_ok());
        assert!(check_chmod(s, Some("999")).is_err());
        assert!(check_chmod(s, Some("rwx")).is_err());
    }
}
