//! `kiln pull REF`: resolve, pick the platform, download verified blobs into the store and name
//! the image. Also home of the registry flags shared by `push` and `login`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::Reference;
use crate::digest::Digest;
use crate::registry::{ClientConfig, Credential, Platform, Registry, creds};
use crate::store::Store;
use anyhow::Context;

use super::GlobalArgs;
use super::images::open_store;
use super::progress::Mode;

/// How to reach registries (shared by pull, push and login): the connection, and how many
/// blobs move at once.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Blobs transferred in parallel.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOB_JOBS)]
    jobs: usize,
}

/// Blobs moved in parallel when the command has no `--jobs` for it (`kiln build`'s `--jobs`
/// means parallel stages, as in buildah).
const DEFAULT_BLOB_JOBS: usize = 4;

impl RegistryArgs {
    pub(super) fn config(&self) -> ClientConfig {
        self.connection.config_with(self.jobs)
    }

    pub(super) fn client(
        &self,
        api_host: &str,
        cred: Option<Credential>,
    ) -> anyhow::Result<Registry> {
        Ok(Registry::new(api_host, self.config(), cred)?)
    }
}

/// How to reach registries: TLS, trusted CAs, retries.
#[derive(Debug, clap::Args)]
pub struct ConnectionArgs {
    /// Require HTTPS with a verified certificate (`--tls-verify=false` allows HTTP and any
    /// certificate). Loopback registries may always use plain HTTP.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    tls_verify: bool,
    /// Allow plain HTTP and unverified TLS for this registry host (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Also trust the `*.crt` CA files in this directory (besides
    /// /etc/containers/certs.d/HOST/ and /etc/docker/certs.d/HOST/).
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Retries on connection errors, timeouts, 429 and 5xx (with exponential backoff).
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
}

impl ConnectionArgs {
    fn config_with(&self, blob_jobs: usize) -> ClientConfig {
        ClientConfig {
            tls_verify: self.tls_verify,
            insecure_registries: self.insecure_registries.clone(),
            cert_dir: self.cert_dir.clone(),
            concurrency: blob_jobs.max(1),
            retries: self.retries,
            ..ClientConfig::default()
        }
    }

    /// The client config with the default blob parallelism.
    pub(super) fn config(&self) -> ClientConfig {
        self.config_with(DEFAULT_BLOB_JOBS)
    }

    pub(super) fn client(
        &self,
        api_host: &str,
        cred: Option<Credential>,
    ) -> anyhow::Result<Registry> {
        Ok(Registry::new(api_host, self.config(), cred)?)
    }
}

/// Where credentials come from for pull and push.
#[derive(Debug, clap::Args)]
pub struct CredsArgs {
    /// `USER:PASSWORD` for the registry (prefer --creds-file: this stays in shell history).
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// Read `USER:PASSWORD` from this file (`-` for stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "creds")]
    creds_file: Option<PathBuf>,
}

impl CredsArgs {
    /// Explicit credentials first, then the auth files (see `crate::registry::creds`).
    pub(super) fn resolve(&self, reference: &Reference) -> anyhow::Result<Option<Credential>> {
        let explicit = match (&self.creds, &self.creds_file) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(f)) if f.as_os_str() == "-" => {
                Some(std::io::read_to_string(std::io::stdin()).context("reading --creds-file -")?)
            }
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading --creds-file {}", f.display()))?,
            ),
            (None, None) => None,
        };
        match explicit {
            Some(text) => Ok(Some(Credential::parse_user_pass(text.trim()).context(
                "credentials must look like USER:PASSWORD (the user name must not be empty)",
            )?)),
            None => Ok(creds::lookup(reference.auth_key())?),
        }
    }
}

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

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(super) fn mb_per_s(bytes: u64, start: Instant) -> f64 {
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64().max(1e-6)
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
