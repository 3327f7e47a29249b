//! `kiln push SRC [DEST]`: upload an image from the store (blobs in parallel, HEAD first,
//! manifests last) under one or more tags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::Reference;
use crate::error_chain::Causes;
use crate::registry::{Manifest, Parsed};
use anyhow::{Context, bail};

use super::args::{CredsArgs, GlobalArgs, RegistryArgs, parse_size};
use super::env::{open_store, runtime};
use super::progress::{Mode, mb_per_s, start};
use crate::registry::StoreBlobs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image in the store (name or digest).
    #[arg(value_name = "SRC")]
    source: String,
    /// Where to push (default: SRC's own name).
    #[arg(value_name = "DEST")]
    destination: Option<String>,
    /// Also push under these tags of DEST's repository (repeatable).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    tags: Vec<String>,
    /// Upload in PATCH chunks of this size (e.g. 4MiB) instead of one PUT per blob.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_size: Option<u64>,
    /// Mount blobs from this repository of the same registry instead of uploading them.
    #[arg(long, value_name = "REPO")]
    mount_from: Option<String>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Write the image ID (config digest) to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// No progress display; only the summary.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    transport: RegistryArgs,
    #[command(flatten)]
    creds: CredsArgs,
}

pub fn run(g: &GlobalArgs, a: Args) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let digest = store
        .resolve(&a.source)
        .with_context(|| format!("finding {} in the store", a.source))?;
    let dest: Reference = match &a.destination {
        Some(d) => d.parse()?,
        None => a
            .source
            .parse()
            .with_context(|| format!("{} is not a name to push to; give DEST", a.source))?,
    };
    let mut tags: Vec<String> = dest.tag().map(str::to_string).into_iter().collect();
    for t in &a.tags {
        dest.with_tag(t)?; // validates the tag
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    if dest.tag().is_none() && dest.digest().is_some_and(|d| *d != digest) {
        bail!(
            "DEST pins {}, but {} is {digest}",
            dest.digest().unwrap(),
            a.source
        );
    }
    let bytes = store.read_blob(&digest)?;
    let manifest = Manifest::from_bytes(bytes, None);
    let image_id = match manifest.parse() {
        Ok(Parsed::Image { config, .. }) => Some(config.digest),
        Ok(Parsed::Index { .. }) => None,
        Err(e) => bail!(
            "{} ({digest}) is not an image manifest: {}",
            a.source,
            Causes(&e)
        ),
    };
    let mut config = a.transport.config();
    config.chunk_size = a.chunk_size;
    let cred = a.creds.resolve(&dest)?;
    let registry = crate::registry::Registry::new(dest.api_host(), config, cred)?;
    let (progress, renderer) = start(Mode::choose("auto", a.quiet));
    let started = Instant::now();
    let result = runtime()?.block_on(registry.push_image(
        dest.repository(),
        &tags,
        &manifest,
        &StoreBlobs(&store),
        a.mount_from.as_deref(),
        &progress,
    ));
    drop(progress);
    renderer.finish();
    let sum = result.with_context(|| format!("pushing {} to {dest}", a.source))?;
    if let Some(f) = &a.digest_file {
        std::fs::write(f, sum.digest.to_string())
            .with_context(|| format!("writing --digest-file {}", f.display()))?;
    }
    if let (Some(f), Some(id)) = (&a.iidfile, image_id) {
        std::fs::write(f, id.to_string())
            .with_context(|| format!("writing --iidfile {}", f.display()))?;
    }
    println!(
        "{}@{}: {} blob(s) uploaded ({:.1} MB, {:.1} MB/s), {} present, {} mounted ({:.1} MB skipped) in {:.1} s; tags: {}",
        dest.name(),
        sum.digest,
        sum.blobs_uploaded,
        sum.bytes_sent as f64 / 1e6,
        mb_per_s(sum.bytes_sent, started),
        sum.blobs_present,
        sum.blobs_mounted,
        sum.bytes_skipped as f64 / 1e6,
        sum.elapsed.as_secs_f64(),
        if tags.is_empty() {
            "(by digest only)".to_string()
        } else {
            tags.join(", ")
        },
    );
    Ok(ExitCode::SUCCESS)
}
