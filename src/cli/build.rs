//! `kiln build`: the flags users know from `docker build`, `buildah bud` and kaniko.

use std::path::PathBuf;
use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name (and optionally tag) for the image; may be given several times.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/Containerfile); `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform, os/arch[/variant] (default: this machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Push the image to its registry after building it.
    #[arg(long)]
    pub push: bool,
    /// Also write the image as type=oci|docker,dest=PATH (a directory or a .tar file).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Import build cache from a registry reference.
    #[arg(long = "cache-from", value_name = "REF")]
    pub cache_from: Vec<String>,
    /// Export build cache to a registry reference.
    #[arg(long = "cache-to", value_name = "REF")]
    pub cache_to: Option<String>,
    /// Secret for RUN --mount=type=secret: id=NAME,src=FILE or id=NAME,env=VAR.
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// Network for RUN steps.
    #[arg(long, value_name = "MODE", default_value = "host", value_parser = ["host", "none"])]
    pub network: String,
    /// How RUN steps are isolated.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "rootless", "chroot"])]
    pub isolation: String,
    /// Layer compression.
    #[arg(long, value_name = "ALGO", default_value = "gzip", value_parser = ["gzip", "zstd"])]
    pub compression: String,
    /// Image format: OCI (default) or Docker v2 schema 2.
    #[arg(long, value_name = "FORMAT", default_value = "oci", value_parser = ["oci", "docker"])]
    pub format: String,
    /// How many stages to build at once (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Add a label to the image.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Progress output.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "tty", "plain", "json"])]
    pub progress: String,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Verify TLS for registries (use --tls-verify=false for self-signed/plain HTTP registries).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Registry credentials USER:PASSWORD (prefer `kiln login`; this lands in shell history).
    #[arg(long, value_name = "USER:PASS")]
    pub creds: Option<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// The build context directory, or `-` for a Dockerfile on stdin with no context.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

pub fn run(_g: &GlobalArgs, _a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
