//! The command line: the only module that prints. Each subcommand lives in its own file and
//! is a leaf: it imports the shared argument groups (`args`), the environment helpers (`env`)
//! and the progress renderer (`progress`), never another command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod build;
mod debug;
mod env;
mod images;
mod login;
mod plan;
mod progress;
mod pull;
mod push;

pub use args::GlobalArgs;

/// kiln: build OCI container images from Dockerfiles, without a daemon and without root.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::Args>),
    /// Show the build plan: stages and steps in run order, resolved arguments, warnings.
    Plan(plan::Args),
    /// List images in the local store.
    Images(images::ImagesArgs),
    /// Show an image's config and manifest as JSON.
    Inspect(images::InspectArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Remove image names (and what only they referenced, on the next prune).
    Rmi(images::RmiArgs),
    /// Remove everything no image name and no cache entry references.
    Prune(images::PruneArgs),
    /// Write an image from the store to an archive file.
    Save(images::SaveArgs),
    /// Pull an image from a registry into the store.
    Pull(pull::Args),
    /// Push an image from the store to a registry.
    Push(push::Args),
    /// Store credentials for a registry after checking them.
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(login::LogoutArgs),
    /// Developer tools.
    #[command(subcommand)]
    Debug(debug::Command),
}

/// Parses the command line, runs the command and turns its error into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.log.as_deref());
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Build(a) => build::run(g, *a),
        Command::Plan(a) => plan::run(g, a),
        Command::Images(a) => images::images(g, a),
        Command::Inspect(a) => images::inspect(g, a),
        Command::Tag(a) => images::tag(g, a),
        Command::Rmi(a) => images::rmi(g, a),
        Command::Prune(a) => images::prune(g, a),
        Command::Save(a) => images::save(g, a),
        Command::Pull(a) => pull::run(g, a),
        Command::Push(a) => push::run(g, a),
        Command::Login(a) => login::login(g, a),
        Command::Logout(a) => login::logout(g, a),
        Command::Debug(c) => debug::run(g, c),
    }
}

fn init_tracing(filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
