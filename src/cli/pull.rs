//! Placeholder: replaced by the issue that implements this command.
use super::GlobalArgs;
use std::process::ExitCode;
#[derive(Debug, clap::Args)]
pub struct Args {}
pub fn run(_g: &GlobalArgs, _a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
