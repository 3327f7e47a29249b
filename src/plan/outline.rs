//! The text form of a plan (`kiln plan --format text`), like `docker buildx build --call=outline`.

use crate::dockerfile::{CommandLine, Healthcheck};

use super::model::*;
use super::mount::MountKind;

impl Plan {
    /// Stages in build order with their resolved steps, skipped stages, then warnings.
    /// `file_name` prefixes the places (`Dockerfile:12`).
    pub fn outline(&self, file_name: &str) -> String {
        let mut out = String::new();
        let label = |i: usize| match &self.stages[i].name {
            Some(n) => format!("{i} ({n})"),
            None => i.to_string(),
        };
        out.push_str(&format!("target: stage {}\n", label(self.target)));
        if !self.global_args.is_empty() {
            out.push_str("global args:\n");
            for (name, value) in &self.global_args {
                out.push_str(&format!(
                    "  {name}={}\n",
                    value.as_deref().unwrap_or("<unset>")
                ));
            }
        }
        for &i in &self.order {
            let s = &self.stages[i];
            let base = match &s.base {
                Base::Image(r) => r.clone(),
                Base::Scratch => "scratch".into(),
                Base::Stage(p) => format!("stage {}", label(*p)),
            };
            let platform = s
                .platform
                .as_ref()
                .map(|p| format!(" --platform={p}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "\nstage {}: FROM{platform} {base}  [{file_name}:{}]\n",
                label(i),
                s.span.line
            ));
            for (n, step) in s.steps.iter().enumerate() {
                out.push_str(&format!(
                    "  {:>2}. {}  [{file_name}:{}]\n",
                    n + 1,
                    describe(&step.kind, &label),
                    step.span.line
                ));
                if !step.args_used.is_empty() {
                    let args: Vec<String> = step
                        .args_used
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    out.push_str(&format!("      args: {}\n", args.join(" ")));
                }
            }
        }
        let skipped: Vec<String> = (0..self.stages.len())
            .filter(|&i| !self.stages[i].needed)
            .map(label)
            .collect();
        if !skipped.is_empty() {
            out.push_str(&format!(
                "\nskipped stages (not needed for the target): {}\n",
                skipped.join(", ")
            ));
        }
        if !self.warnings.is_empty() {
            out.push_str("\nwarnings:\n");
            for w in &self.warnings {
                let place = w
                    .span
                    .map(|s| format!("{file_name}:{}: ", s))
                    .unwrap_or_default();
                out.push_str(&format!("  {place}{}: {}\n", w.rule, w.message));
            }
        }
        out
    }
}

fn command_line(c: &CommandLine) -> String {
    match c {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Exec(v) => format!("{v:?}"),
    }
}

fn pairs(v: &[(String, String)]) -> String {
    v.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sources(v: &[SourceSpec]) -> String {
    v.iter()
        .map(|s| match s {
            SourceSpec::Path { path } => path.clone(),
            SourceSpec::Inline { name, content } => format!("<<{name} ({} bytes)", content.len()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(kind: &StepKind, label: &dyn Fn(usize) -> String) -> String {
    match kind {
        StepKind::Run {
            program,
            mounts,
            network,
            insecure,
            ..
        } => {
            let mut s = String::from("RUN");
            for m in mounts {
                let from = m
                    .from
                    .as_ref()
                    .map(|f| format!(",from={f}"))
                    .unwrap_or_default();
                let kind = format!("{:?}", m.kind).to_lowercase();
                s.push_str(&format!(" --mount=type={kind}"));
                // An ssh mount without a target gets its numbered default when it runs.
                if !m.target.is_empty() {
                    s.push_str(&format!(",target={}", m.target));
                }
                s.push_str(&from);
                if matches!(m.kind, MountKind::Secret | MountKind::Ssh) {
                    s.push_str(&format!(",id={}", m.id.as_deref().unwrap_or_default()));
                }
            }
            if let Some(network) = network {
                s.push_str(&format!(" --network={}", network.name()));
            }
            if *insecure {
                s.push_str(" --security=insecure");
            }
            match program {
                RunProgram::Argv { argv } => s.push_str(&format!(" {argv:?}")),
                RunProgram::Script { name, content } => s.push_str(&format!(
                    " script <<{name} ({})",
                    content.lines().next().unwrap_or_default()
                )),
            }
            s
        }
        StepKind::Copy {
            sources: src,
            dest,
            from,
            chown,
            chmod,
            link,
            parents,
            exclude,
        } => {
            let mut s = String::from("COPY");
            match from {
                CopyFrom::Context => {}
                CopyFrom::Stage(i) => s.push_str(&format!(" --from=stage {}", label(*i))),
                CopyFrom::Image(r) => s.push_str(&format!(" --from={r}")),
            }
            push_common(&mut s, chown, chmod, *link, exclude);
            if *parents {
                s.push_str(" --parents");
            }
            format!("{s} {} -> {dest}", sources(src))
        }
        StepKind::Add {
            sources: src,
            dest,
            chown,
            chmod,
            link,
            keep_git_dir,
            checksum,
            unpack,
            exclude,
        } => {
            let mut s = String::from("ADD");
            push_common(&mut s, chown, chmod, *link, exclude);
            if *keep_git_dir {
                s.push_str(" --keep-git-dir");
            }
            if let Some(c) = checksum {
                s.push_str(&format!(" --checksum={c}"));
            }
            if let Some(u) = unpack {
                s.push_str(&format!(" --unpack={u}"));
            }
            format!("{s} {} -> {dest}", sources(src))
        }
        StepKind::Env { vars } => format!("ENV {}", pairs(vars)),
        StepKind::Label { labels } => format!("LABEL {}", pairs(labels)),
        StepKind::Arg { args } => {
            let a: Vec<String> = args
                .iter()
                .map(|(k, v)| {
                    v.as_ref()
                        .map_or(format!("{k} (unset)"), |v| format!("{k}={v:?}"))
                })
                .collect();
            format!("ARG {}", a.join(" "))
        }
        StepKind::Workdir { path } => format!("WORKDIR {path}"),
        StepKind::User { user } => format!("USER {user}"),
        StepKind::Expose { ports } => format!("EXPOSE {}", ports.join(" ")),
        StepKind::Volume { paths } => format!("VOLUME {paths:?}"),
        StepKind::Cmd { command } => format!("CMD {}", command_line(command)),
        StepKind::Entrypoint { command } => format!("ENTRYPOINT {}", command_line(command)),
        StepKind::Shell { shell } => format!("SHELL {shell:?}"),
        StepKind::Stopsignal { signal } => format!("STOPSIGNAL {signal}"),
        StepKind::Healthcheck {
            health: Healthcheck::None,
        } => "HEALTHCHECK NONE".into(),
        StepKind::Healthcheck {
            health: Healthcheck::Cmd { test, .. },
        } => format!("HEALTHCHECK CMD {}", command_line(test)),
        StepKind::Onbuild { expression } => {
            format!("ONBUILD {}", expression.lines().next().unwrap_or_default())
        }
        StepKind::Maintainer { name } => format!("MAINTAINER {name}"),
    }
}

fn push_common(
    s: &mut String,
    chown: &Option<String>,
    chmod: &Option<String>,
    link: bool,
    exclude: &[String],
) {
    if let Some(c) = chown {
        s.push_str(&format!(" --chown={c}"));
    }
    if let Some(c) = chmod {
        s.push_str(&format!(" --chmod={c}"));
    }
    if link {
        s.push_str(" --link");
    }
    for e in exclude {
        s.push_str(&format!(" --exclude={e}"));
    }
}
