//! `kiln build`: the flags users know from `docker build`, `buildah bud` and kaniko.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Digest;
use crate::build::BuildRequest;
use crate::image::StoredImage;
use crate::image::{ImageFormat, Output};
use crate::layer::Compression;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Manifest, StoreBlobs};
use crate::sandbox::{Isolation, Network, Sandbox};
use crate::store::Store;
use anyhow::Context as _;

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
    /// Reuse the build cache exported to this registry tag (repeatable; searched in order).
    #[arg(long = "cache-from", value_name = "REF")]
    pub cache_from: Vec<String>,
    /// After a successful build, export its step cache to this registry tag (one manifest, replaced each time).
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
    /// Add a label to the image.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Progress output: tty (live display), plain (line by line, for CI logs), json (one event
    /// per line, for tools); auto is tty on a terminal, else plain.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "tty", "plain", "json"])]
    pub progress: String,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    #[command(flatten)]
    pub transport: super::pull::RegistryArgs,
    #[command(flatten)]
    pub creds: super::pull::CredsArgs,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// The build context directory, or `-` for a Dockerfile on stdin with no context.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

pub fn run(g: &GlobalArgs, a: Args) -> anyhow::Result<ExitCode> {
    reject_unwired(&a)?;
    let req = request(&a)?;
    let outputs = a
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<Result<Vec<_>, _>>()?;
    let store = super::images::open_store(g)?;
    let mode = super::progress::Mode::choose(&a.progress, a.quiet);
    let (progress, renderer) = super::progress::start(mode);
    let t0 = std::time::Instant::now();
    let isolation = match a.isolation.as_str() {
        "rootless" => Isolation::Rootless,
        "chroot" => Isolation::Chroot,
        _ => Isolation::Auto,
    };
    let sandbox = Sandbox::new(
        std::env::current_exe().context("finding the kiln executable")?,
        isolation,
    );
    // Ctrl-C / SIGTERM: kill the running step's whole process tree; the build then fails with
    // "interrupted" and cleans up (mounts lived only in the step's namespace).
    let cancel = sandbox.cancel_handle();
    let _ = ctrlc::set_handler(move || cancel.cancel());
    let rt = super::pull::runtime()?;
    let pull = |reference: &Reference, progress: &Progress| -> Result<Digest, String> {
        let cred = a.creds.resolve(reference).map_err(|e| format!("{e:#}"))?;
        let registry = a
            .transport
            .client(reference.api_host(), cred)
            .map_err(|e| format!("{e:#}"))?;
        let host = crate::registry::Platform::host();
        let pulled = rt
            .block_on(registry.pull_image(reference, &host, &StoreBlobs(&store), progress))
            .map_err(|e| e.to_string())?;
        store
            .tag(reference, &pulled.manifest.digest)
            .map_err(|e| e.to_string())?;
        Ok(pulled.manifest.digest)
    };
    let cache_clients = super::build_cache::CacheClients::new(&a, &rt)?;
    let http = http_client(a.transport.config().tls_verify)?;
    let fetch = |url: &str, out: &mut dyn std::io::Write| fetch_url(&rt, &http, url, out);
    let hooks = crate::build::Hooks {
        pull: &pull,
        remote_cache: cache_clients.as_ref().map(|c| c.hook(&a)),
        fetch: &fetch,
    };
    let result = crate::build::build(&store, &sandbox, &hooks, &req, &progress);
    drop(progress);
    renderer.finish();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => anyhow::bail!("{}", e.render(&req)),
    };
    let image = &outcome.image;
    for o in &outputs {
        o.write(&store, image, &req.tags)
            .with_context(|| format!("writing the image to {}", o.dest().display()))?;
    }
    let pushed = if a.push {
        push(&a, mode, &store, &rt, image, &req.tags)?
    } else {
        Vec::new()
    };
    if let Some(f) = &a.iidfile {
        std::fs::write(f, image.config_digest.to_string())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if mode.summary() {
        let summary = super::progress::Summary {
            image,
            layers_built: outcome.layers_built,
            layers_reused: outcome.layers_reused,
            elapsed: t0.elapsed(),
            names: req.tags.iter().map(|t| t.to_string()).collect(),
            pushed,
        };
        for line in super::progress::summary_lines(&summary) {
            eprintln!("{line}");
        }
    }
    println!("{}", image.config_digest);
    Ok(ExitCode::SUCCESS)
}

/// `--push`: every `-t` name, one push per repository (its tags together), each manifest
/// only after all its blobs are confirmed (the registry client guarantees that).
fn push(
    a: &Args,
    mode: super::progress::Mode,
    store: &Store,
    rt: &tokio::runtime::Runtime,
    image: &StoredImage,
    names: &[Reference],
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        !names.is_empty(),
        "--push needs a name to push to: give -t REGISTRY/REPOSITORY:TAG"
    );
    let manifest = Manifest::from_bytes(image.manifest.clone(), None);
    let mut repos: Vec<(String, Vec<&Reference>)> = Vec::new();
    for r in names {
        match repos.iter_mut().find(|(n, _)| *n == r.name()) {
            Some((_, group)) => group.push(r),
            None => repos.push((r.name(), vec![r])),
        }
    }
    let (progress, renderer) = super::progress::start(mode);
    let mut pushed = Vec::new();
    for (_, group) in &repos {
        let dest = group[0];
        let tags: Vec<String> = group
            .iter()
            .filter_map(|r| r.tag())
            .map(str::to_string)
            .collect();
        let cred = a.creds.resolve(dest)?;
        let registry = a.transport.client(dest.api_host(), cred)?;
        let sum = rt
            .block_on(registry.push_image(
                dest.repository(),
                &tags,
                &manifest,
                &StoreBlobs(store),
                None,
                &progress,
            ))
            .with_context(|| format!("pushing to {}", dest.name()))?;
        progress.info(format!(
            "pushed {}@{} ({} blob(s) uploaded, {} already there)",
            dest.name(),
            sum.digest,
            sum.blobs_uploaded,
            sum.blobs_present
        ));
        pushed.push((dest.name(), sum.digest));
    }
    drop(progress);
    renderer.finish();
    if let (Some(f), Some((_, d))) = (&a.digest_file, pushed.last()) {
        std::fs::write(f, d.to_string())
            .with_context(|| format!("writing --digest-file {}", f.display()))?;
    }
    Ok(pushed
        .into_iter()
        .map(|(n, d)| format!("{n}@{d}"))
        .collect())
}

/// Flags whose machinery is not wired into builds yet: refuse them instead of ignoring them.
fn reject_unwired(a: &Args) -> anyhow::Result<()> {
    let unwired = [
        (!a.secrets.is_empty(), "--secret"),
        (a.platform.is_some(), "--platform"),
    ];
    for (set, flag) in unwired {
        if set {
            anyhow::bail!("{flag} is not supported by `kiln build` yet");
        }
    }
    Ok(())
}

fn request(a: &Args) -> anyhow::Result<BuildRequest> {
    let no_context = a.context.as_os_str() == "-";
    let (dockerfile, name, path) = dockerfile(a, no_context)?;
    let tags = a
        .tags
        .iter()
        .map(|t| t.parse::<Reference>().with_context(|| format!("-t {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let build_args = crate::plan::parse_build_args(&a.build_args, |k| std::env::var(k).ok())
        .map_err(|w| anyhow::anyhow!("invalid --build-arg {w:?}: use NAME=VALUE"))?;
    let labels = a
        .labels
        .iter()
        .map(|kv| label(kv))
        .collect::<anyhow::Result<_>>()?;
    let compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd { level: 3 },
        _ => Compression::default(),
    };
    let format = if a.format == "docker" {
        ImageFormat::Docker
    } else {
        ImageFormat::Oci
    };
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"))?,
        ),
        _ => None,
    };
    Ok(BuildRequest {
        dockerfile,
        dockerfile_name: name,
        dockerfile_path: path,
        context: (!no_context).then(|| a.context.clone()),
        build_args,
        target: a.target.clone(),
        tags,
        labels,
        compression,
        format,
        source_date_epoch,
        no_cache: a.no_cache,
        network: if a.network == "none" {
            Network::None
        } else {
            Network::Host
        },
    })
}

/// The Dockerfile text, the name errors use for it, and its path (for `<name>.dockerignore`).
fn dockerfile(a: &Args, no_context: bool) -> anyhow::Result<(String, String, Option<PathBuf>)> {
    let stdin = std::path::Path::new("-");
    let path = if no_context {
        stdin.to_path_buf()
    } else {
        super::plan::dockerfile_path(&a.context, a.file.as_deref())?
    };
    let (name, text) = super::debug::read_dockerfile(&path)?;
    Ok((text, name, (path != stdin).then_some(path)))
}

/// `--label KEY=VALUE`.
fn label(kv: &str) -> anyhow::Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => anyhow::bail!("--label {kv:?}: expected KEY=VALUE"),
    }
}

/// The HTTP client for `ADD <url>`: rustls with the system's roots; `--tls-verify=false`
/// accepts any certificate. Redirects are followed (reqwest's default, up to 10).
fn http_client(tls_verify: bool) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!tls_verify)
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .context("creating the HTTP client for ADD <url>")
}

/// Streams the body of `url` into `out` chunk by chunk; the error names the URL's host and
/// the HTTP status. URLs may carry credentials (`https://user:pw@host/…`): they are never
/// part of a message.
fn fetch_url(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    url: &str,
    out: &mut dyn std::io::Write,
) -> Result<crate::build::FetchInfo, String> {
    use futures_util::StreamExt;
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    let host = parsed.host_str().unwrap_or("?").to_string();
    rt.block_on(async {
        let resp = http
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("cannot reach {host}: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{host} answered HTTP {status}; check the URL"));
        }
        let last_modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.timestamp());
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| format!("download from {host} broke off: {}", e.without_url()))?;
            out.write_all(&chunk)
                .map_err(|e| format!("writing the download: {e}"))?;
        }
        Ok(crate::build::FetchInfo { last_modified })
    })
}
