//! Placeholder: replaced by the issue that implements this command.
use super::GlobalArgs;
use std::process::ExitCode;
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {}
pub fn images(_g: &GlobalArgs, _a: ImagesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
#[derive(Debug, clap::Args)]
pub struct InspectArgs {}
pub fn inspect(_g: &GlobalArgs, _a: InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
#[derive(Debug, clap::Args)]
pub struct TagArgs {}
pub fn tag(_g: &GlobalArgs, _a: TagArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
#[derive(Debug, clap::Args)]
pub struct RmiArgs {}
pub fn rmi(_g: &GlobalArgs, _a: RmiArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
#[derive(Debug, clap::Args)]
pub struct PruneArgs {}
pub fn prune(_g: &GlobalArgs, _a: PruneArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
#[derive(Debug, clap::Args)]
pub struct SaveArgs {}
pub fn save(_g: &GlobalArgs, _a: SaveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
