//! Placeholder: replaced by the issue that implements this command.
use super::GlobalArgs;
use std::process::ExitCode;
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the AST in BuildKit's parser-dump format.
    DumpAst { file: std::path::PathBuf },
}
pub fn run(_g: &GlobalArgs, _c: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
