//! `kiln plan`: show the stages and steps in the order they will run, with resolved arguments,
//! skipped stages and warnings.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::GlobalArgs;
use super::debug::read_dockerfile;
use crate::plan::{self, PlanOptions, Platform};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/Containerfile); `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (`NAME=VALUE`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Plan this stage (and what it needs) instead of the last one.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform, os/arch[/variant] (default: this machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// The build context directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

pub fn run(_g: &GlobalArgs, a: Args) -> anyhow::Result<ExitCode> {
    let file = dockerfile_path(&a.context, a.file.as_deref())?;
    let (name, source) = read_dockerfile(&file, Some(&a.context))?;
    let build_args = plan::parse_build_args(&a.build_args, |k| std::env::var(k).ok())
        .map_err(|w| anyhow::anyhow!("invalid --build-arg {w:?}: use NAME=VALUE"))?;
    let mut opts = PlanOptions {
        build_args,
        target: a.target.clone(),
        // Showing a plan runs nothing: an insecure RUN is listed, not refused.
        allow_insecure: true,
        ..PlanOptions::default()
    };
    if let Some(p) = &a.platform {
        opts.target_platform = Platform::parse(p).with_context(|| {
            format!("invalid --platform {p:?}: use os/arch[/variant], e.g. linux/arm64")
        })?;
    }
    let plan = match plan::plan(&source, &opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", e.render(&name, &source));
            return Ok(ExitCode::from(1));
        }
    };
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.outline(&name));
    }
    Ok(ExitCode::SUCCESS)
}

/// `-f` as given (relative to the working directory), else `Dockerfile`, else `Containerfile`
/// in the context.
pub(crate) fn dockerfile_path(context: &Path, file: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    for name in ["Dockerfile", "Containerfile"] {
        let p = context.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no Dockerfile or Containerfile in {} (use -f FILE to name one)",
        context.display()
    )
}
