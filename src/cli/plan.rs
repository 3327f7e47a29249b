//! `kiln plan`: show the stages and steps in the order they will run, with resolved arguments,
//! skipped stages and warnings.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{DockerfileArgs, GlobalArgs};
use super::env::{dockerfile_path, read_dockerfile};
use crate::plan::{self, PlanOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dockerfile: DockerfileArgs,
    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// The build context directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

pub fn run(_g: &GlobalArgs, a: Args) -> anyhow::Result<ExitCode> {
    let d = &a.dockerfile;
    let file = dockerfile_path(&a.context, d.file.as_deref())?;
    let (name, source) = read_dockerfile(&file, Some(&a.context))?;
    let mut opts = PlanOptions {
        build_args: d.build_args()?,
        target: d.target.clone(),
        // Showing a plan runs nothing: an insecure RUN is listed, not refused.
        allow_insecure: true,
        ..PlanOptions::default()
    };
    if let Some(p) = d.platform()? {
        opts.target_platform = p;
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
