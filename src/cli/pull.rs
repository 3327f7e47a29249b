//! `kiln pull REF`: resolve, pick the platform, download verified blobs into the store and name
//! the image.

use std::process::ExitCode;
use std::time::Instant;

use crate::Reference;
use crate::digest::Digest;
use crate::registry::Platform;
use crate::store::Store;
use anyhow::Context;

use super::args::{CredsArgs, GlobalArgs, RegistryArgs};
use super::env::{open_store, runtime};
use super::progress::{Mode, mb_per_s};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to pull (`alpine`, `ghcr.io/acme/app:1.4`, `host:5000/x@sha256:…`).
    #[arg(value_name = "REF")]
    reference: String,
    /// The platform to pick from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// No progress display; only the final line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    transport: RegistryArgs,
    #[command(flatten)]
    creds: CredsArgs,
}

pub fn run(g: &GlobalArgs, a: Args) -> anyhow::Result<ExitCode> {
    let reference: Reference = a.reference.parse()?;
    let platform = match &a.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let store = open_store(g)?;
    let cred = a.creds.resolve(&reference)?;
    let registry = a.transport.client(reference.api_host(), cred)?;
    let (progress, renderer) = super::progress::start(Mode::choose("auto", a.quiet));
    let started = Instant::now();
    let result = runtime()?.block_on(registry.pull_image(
        &reference,
        &platform,
        &crate::registry::StoreBlobs(&store),
        &progress,
    ));
    drop(progress);
    renderer.finish();
    let pulled = result.with_context(|| format!("pulling {reference}"))?;
    if pulled.index.is_none() {
        warn_if_other_platform(&store, &pulled.config, &platform);
    }
    store
        .tag(&reference, &pulled.manifest.digest)
        .with_context(|| format!("naming {reference} in the store"))?;
    println!(
        "{}: {} ({platform}); {} blob(s) downloaded ({:.1} MB, {:.1} MB/s), {} already present",
        reference.familiar(),
        pulled.manifest.digest,
        pulled.layers.len() + 1 - pulled.blobs_skipped,
        pulled.bytes_downloaded as f64 / 1e6,
        mb_per_s(pulled.bytes_downloaded, started),
        pulled.blobs_skipped,
    );
    Ok(ExitCode::SUCCESS)
}

/// A single-platform image is used whatever it was built for (as Docker does), but say so when
/// it is not the platform asked for.
fn warn_if_other_platform(store: &Store, config: &Digest, wanted: &Platform) {
    #[derive(serde::Deserialize)]
    struct Cfg {
        os: String,
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
    }
    let Ok(cfg) = store
        .read_blob(config)
        .map_err(|_| ())
        .and_then(|b| serde_json::from_slice::<Cfg>(&b).map_err(|_| ()))
    else {
        return;
    };
    let got = Platform {
        os: cfg.os,
        architecture: cfg.architecture,
        variant: cfg.variant,
    };
    if !wanted.matches(&got) {
        eprintln!("warning: the image is for {got}, not {wanted}; it may not run here");
    }
}
