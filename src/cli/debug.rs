//! `kiln debug`: developer tools.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;
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

/// Reads a Dockerfile from a path or, for `-`, standard input; returns its display name too.
/// Invalid UTF-8 is replaced rather than refused, as Docker reads bytes. A Dockerfile inside
/// `context` is resolved with the context as `/`: a `Dockerfile -> /etc/shadow` there is
/// `<context>/etc/shadow`, never the host file.
pub(crate) fn read_dockerfile(
    file: &Path,
    context: Option<&Path>,
) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        return Ok((
            "<stdin>".into(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    bytes = match context {
        Some(ctx) => crate::build::context::in_root::read_maybe_in(ctx, file),
        None => std::fs::read(file),
    }
    .with_context(|| format!("reading {}", file.display()))?;
    Ok((
        file.display().to_string(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}
