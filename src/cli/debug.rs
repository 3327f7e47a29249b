//! `kiln debug`: developer tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::GlobalArgs;
use super::env::read_dockerfile;
use crate::dockerfile;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the AST in BuildKit's parser-dump format (`-` reads standard input).
    DumpAst { file: PathBuf },
}

pub fn run(_g: &GlobalArgs, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::DumpAst { file } => dump_ast(&file),
    }
}

fn dump_ast(file: &Path) -> anyhow::Result<ExitCode> {
    let (name, source) = read_dockerfile(file, None)?;
    match dockerfile::parse(&source) {
        Ok(ast) => {
            print!("{}", ast.dump());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {}", err.render(&name, &source));
            Ok(ExitCode::from(1))
        }
    }
}
