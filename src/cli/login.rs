//! Placeholder: replaced by the issue that implements this command.
use super::GlobalArgs;
use std::process::ExitCode;
#[derive(Debug, clap::Args)]
pub struct LoginArgs {}
pub fn login(_g: &GlobalArgs, _a: LoginArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {}
pub fn logout(_g: &GlobalArgs, _a: LogoutArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
