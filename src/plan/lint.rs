//! BuildKit-style checks (warnings), and the `# check=skip=...;error=true` directive.

use std::collections::BTreeSet;

use crate::dockerfile::{Command, CommandLine, Instruction, Span};

use super::error::{PlanError, PlanErrorKind};
use super::model::Warning;

pub(crate) struct Lints {
    skip: BTreeSet<String>,
    skip_all: bool,
    fatal: bool,
    warnings: Vec<Warning>,
}

impl Lints {
    /// Reads a `# check=` directive value: `skip=Rule1,Rule2` or `skip=all`, `error=true`.
    pub(crate) fn new(check: Option<&str>) -> Lints {
        let mut lints = Lints {
            skip: BTreeSet::new(),
            skip_all: false,
            fatal: false,
            warnings: Vec::new(),
        };
        for part in check.unwrap_or_default().split(';') {
            match part.trim().split_once('=') {
                Some(("skip", rules)) => {
                    for r in rules.split(',').map(str::trim) {
                        if r.eq_ignore_ascii_case("all") {
                            lints.skip_all = true;
                        } else {
                            lints.skip.insert(r.to_string());
                        }
                    }
                }
                Some(("error", v)) => lints.fatal = v.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        lints
    }

    pub(crate) fn warn(&mut self, rule: &'static str, message: String, span: Option<Span>) {
        if self.skip_all || self.skip.contains(rule) {
            return;
        }
        let w = Warning {
            rule,
            message,
            span,
        };
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Checks that look at one stage's instructions as written.
    pub(crate) fn stage_checks(&mut self, group: &[Instruction]) {
        let from = &group[0];
        if let Command::From(f) = &from.command
            && let Some(kw) = &f.as_keyword
        {
            let upper = |s: &str| s == s.to_ascii_uppercase();
            let lower = |s: &str| s == s.to_ascii_lowercase();
            if (upper(&from.keyword) && lower(kw)) || (lower(&from.keyword) && upper(kw)) {
                self.warn(
                    "FromAsCasing",
                    format!(
                        "'{kw}' and '{}' keywords' casing do not match",
                        from.keyword
                    ),
                    Some(from.span),
                );
            }
        }
        for name in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let all: Vec<&Instruction> = group
                .iter()
                .filter(|i| i.keyword.eq_ignore_ascii_case(name))
                .collect();
            for ins in all.iter().rev().skip(1) {
                self.warn(
                    "MultipleInstructionsDisallowed",
                    format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                    Some(ins.span),
                );
            }
        }
        for ins in group {
            self.instruction_checks(ins);
        }
    }

    fn instruction_checks(&mut self, ins: &Instruction) {
        match &ins.command {
            Command::Cmd(CommandLine::Shell(_)) | Command::Entrypoint(CommandLine::Shell(_)) => {
                let name = ins.keyword.to_ascii_uppercase();
                self.warn(
                    "JSONArgsRecommended",
                    format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                    Some(ins.span),
                );
            }
            Command::Maintainer(_) => self.warn(
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label".into(),
                Some(ins.span),
            ),
            Command::Env(kvs) | Command::Label(kvs) if kvs.iter().any(|kv| !kv.equals) => {
                let name = ins.keyword.to_ascii_uppercase();
                self.warn(
                    "LegacyKeyValueFormat",
                    format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                    Some(ins.span),
                );
            }
            _ => {}
        }
    }

    /// With `error=true`, the first warning fails the plan.
    pub(crate) fn finish(&self) -> Result<(), PlanError> {
        match self.warnings.first() {
            Some(w) if self.fatal => {
                let kind = PlanErrorKind::CheckFailed {
                    rule: w.rule.to_string(),
                    message: w.message.clone(),
                };
                Err(w
                    .span
                    .map_or(PlanError::Global(kind.clone()), |s| PlanError::at(s, kind)))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn into_warnings(self) -> Vec<Warning> {
        self.warnings
    }
}
