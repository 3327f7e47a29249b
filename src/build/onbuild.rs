//! ONBUILD triggers: a base image's `OnBuild` entries become the stage's first steps
//! (Docker's semantics: they run right after FROM, then are consumed, so the child image
//! keeps only its own ONBUILDs).
//!
//! Each trigger is planned as if written at the top of the stage: a small Dockerfile
//! `FROM <base>` + triggers goes through our parser and planner, with the base image's ENV,
//! WORKDIR and SHELL in force and the build's `--build-arg`s, so expansion follows the same
//! rules as the stage's own instructions.

use std::collections::BTreeMap;

use crate::dockerfile::Span;
use crate::image::RunConfig;
use crate::plan::{self, PlanOptions, Step};

/// The name the synthetic Dockerfile gives the base; its ENV comes through `base_env`.
const BASE: &str = "kiln-onbuild-base";

/// The planned steps of `triggers`, each pointing at the stage's FROM line (`from`), which
/// is where the user can act on them.
pub(super) fn trigger_steps(
    triggers: &[String],
    base: &RunConfig,
    opts: &PlanOptions,
    from: Span,
) -> Result<Vec<Step>, OnbuildError> {
    if triggers.is_empty() {
        return Ok(Vec::new());
    }
    let (source, preamble) = synthetic_dockerfile(triggers, base)?;
    let env = base
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let opts = PlanOptions {
        base_env: BTreeMap::from([(BASE.to_string(), env)]),
        target: None,
        ..opts.clone()
    };
    let plan = plan::plan(&source, &opts).map_err(|e| OnbuildError::Parse {
        rendered: e.render("ONBUILD", &source),
    })?;
    let mut steps = plan.stages[plan.target].steps.clone();
    steps.drain(..preamble);
    for s in &mut steps {
        s.span = from;
        s.original = format!("ONBUILD {}", s.original.trim());
    }
    Ok(steps)
}

/// `FROM base`, the base's WORKDIR and SHELL (so relative paths and shell-form commands
/// resolve as they would in the stage), then one line per trigger. Returns the text and how
/// many preamble steps to drop.
fn synthetic_dockerfile(
    triggers: &[String],
    base: &RunConfig,
) -> Result<(String, usize), OnbuildError> {
    let mut text = format!("FROM {BASE}\n");
    let mut preamble = 0;
    if let Some(dir) = base.working_dir.as_deref().filter(|d| !d.is_empty()) {
        text.push_str(&format!("WORKDIR {}\n", json_string(dir)));
        preamble += 1;
    }
    if let Some(shell) = &base.shell {
        let items: Vec<String> = shell.iter().map(|s| json_string(s)).collect();
        text.push_str(&format!("SHELL [{}]\n", items.join(", ")));
        preamble += 1;
    }
    for t in triggers {
        let t = t.trim();
        let keyword = t
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        // Docker refuses these as triggers; so do we, naming the trigger.
        if matches!(keyword.as_str(), "FROM" | "ONBUILD" | "MAINTAINER") {
            return Err(OnbuildError::NotAllowed {
                trigger: t.to_string(),
                keyword,
            });
        }
        text.push_str(t);
        text.push('\n');
    }
    Ok((text, preamble))
}

/// Why the base image's ONBUILD triggers cannot run.
#[derive(Debug, thiserror::Error)]
pub(super) enum OnbuildError {
    /// The plan error, rendered against the synthetic Dockerfile (`ONBUILD:2:1: …`).
    #[error("the base image's ONBUILD triggers do not parse: {rendered}")]
    Parse { rendered: String },
    #[error("ONBUILD {trigger}: {keyword} is not allowed as an ONBUILD trigger")]
    NotAllowed { trigger: String, keyword: String },
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[&str], workdir: Option<&str>) -> RunConfig {
        RunConfig {
            env: env.iter().map(|s| s.to_string()).collect(),
            working_dir: workdir.map(String::from),
            ..RunConfig::default()
        }
    }

    #[test]
    fn triggers_expand_with_the_base_env_and_point_at_from() {
        let from = Span::new(3, 1, 3);
        let steps = trigger_steps(
            &["COPY . $APP".into(), "RUN echo hi".into()],
            &config(&["APP=/app"], Some("/srv")),
            &PlanOptions::default(),
            from,
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        match &steps[0].kind {
            plan::StepKind::Copy { dest, .. } => assert_eq!(dest, "/app"),
            other => panic!("expected COPY, got {other:?}"),
        }
        assert!(steps.iter().all(|s| s.span == from));
        assert_eq!(steps[1].original, "ONBUILD RUN echo hi");
    }

    #[test]
    fn from_is_refused_as_a_trigger() {
        let err = trigger_steps(
            &["FROM busybox".into()],
            &config(&[], None),
            &PlanOptions::default(),
            Span::new(1, 1, 1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    #[test]
    fn no_triggers_no_steps() {
        let steps = trigger_steps(
            &[],
            &config(&[], None),
            &PlanOptions::default(),
            Span::new(1, 1, 1),
        );
        assert!(steps.unwrap().is_empty());
    }
}
