//! `kiln build`: the flags users know from `docker build`, `buildah bud` and kaniko.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Digest;
use crate::build::{BuildRequest, LayerReady};
use crate::image::{ImageFormat, Output};
use crate::image::{Layer, Stored};
use crate::layer::{Compression, Encoding};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Manifest, Pulled, StoreBlobs};
use crate::sandbox::{Isolation, Network, Sandbox};
use crate::store::Store;
use anyhow::Context as _;

use super::args::{ConnectionArgs, CredsArgs, DockerfileArgs, GlobalArgs};
use super::env::{dockerfile_path, open_store, read_dockerfile, runtime, source_date_epoch};
use super::progress::{self as display, Mode};

mod cache_registry;
mod clients;
mod early_push;
mod ssh_agents;
use early_push::EarlyPush;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name (and optionally tag) for the image; may be given several times.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub dockerfile: DockerfileArgs,
    /// Push the image to its registry: layers while the build runs, the manifest once it
    /// succeeded.
    #[arg(long)]
    pub push: bool,
    /// Also write the image as type=oci|docker,dest=PATH (a directory or a .tar file).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Reuse the build cache exported to this registry tag: REF or type=registry,ref=REF
    /// (repeatable; searched in order). Layers of hits are downloaded only when needed.
    #[arg(long = "cache-from", value_name = "REF")]
    pub cache_from: Vec<String>,
    /// After a successful build, merge its step cache into this registry tag: REF or
    /// type=registry,ref=REF[,mode=max|min] (max, the default: every stage's steps).
    #[arg(long = "cache-to", value_name = "REF")]
    pub cache_to: Option<String>,
    /// Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (type=file|env
    /// as in docker); never stored in the image, the cache or the logs.
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh and git@/ssh:// ADD sources: `default` (forwards
    /// $SSH_AUTH_SOCK) or ID=SOCKET or ID=KEY[,KEY] (loaded into an ssh-agent kiln starts).
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEY]")]
    pub ssh: Vec<String>,
    /// Network for RUN steps.
    #[arg(long, value_name = "MODE", default_value = "host", value_parser = ["host", "none"])]
    pub network: String,
    /// Entitlements, as BuildKit's: `security.insecure` lets `RUN --security=insecure` run
    /// with every capability, no seccomp filter and an unmasked /proc.
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_parser = ["security.insecure", "network.host"])]
    pub allow: Vec<String>,
    /// How RUN steps are isolated.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "rootless", "chroot"])]
    pub isolation: String,
    /// Most processes and threads one RUN step may have (0: no limit). Applied as root,
    /// through a cgroup per step; an unprivileged kiln applies none and says so.
    #[arg(long, value_name = "N", default_value_t = crate::sandbox::DEFAULT_PIDS_LIMIT)]
    pub pids_limit: u32,
    /// Layer compression.
    #[arg(long, value_name = "ALGO", default_value = "gzip", value_parser = ["gzip", "zstd"])]
    pub compression: String,
    /// Compression level of new layers: gzip 0-9 (default 5), zstd 1-22 (default 3). Layers
    /// already in the cache keep the level they were written with.
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
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
    /// Independent stages built in parallel (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub transport: ConnectionArgs,
    #[command(flatten)]
    pub creds: CredsArgs,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// The build context directory, or `-` for a Dockerfile on stdin with no context.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

pub fn run(g: &GlobalArgs, a: Args) -> anyhow::Result<ExitCode> {
    // Kiln's own agents (for key files) stop when the build is over.
    let agents = ssh_agents::start(&a.ssh, |k| std::env::var_os(k))?;
    let mut req = request(&a)?;
    req.ssh = agents.sockets.clone();
    let outputs = a
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<Result<Vec<_>, _>>()?;
    let store = open_store(g)?;
    let mode = Mode::choose(&a.progress, a.quiet);
    let (progress, renderer) = display::start(mode);
    let t0 = std::time::Instant::now();
    let isolation = match a.isolation.as_str() {
        "rootless" => Isolation::Rootless,
        "chroot" => Isolation::Chroot,
        _ => Isolation::Auto,
    };
    let sandbox = Sandbox::new(
        std::env::current_exe().context("finding the kiln executable")?,
        isolation,
    )
    .forcing(crate::sandbox::Force::from_env())
    .with_pids_limit(a.pids_limit);
    // Ctrl-C / SIGTERM: kill the running step's whole process tree; the build then fails with
    // "interrupted" and cleans up (mounts lived only in the step's namespace).
    // With --push, the uploads made during the build stop at once too.
    // Planning, the context walk and the step loop check `progress::interrupted`; a pull or
    // the final push is abandoned at once (`interrupted`, a token for async waits).
    let cancel = sandbox.cancel_handle();
    let uploads_cancel = tokio_util::sync::CancellationToken::new();
    let interrupted = tokio_util::sync::CancellationToken::new();
    let on_signal = (uploads_cancel.clone(), interrupted.clone());
    let _ = ctrlc::set_handler(move || {
        crate::progress::interrupt();
        cancel.cancel();
        on_signal.0.cancel();
        on_signal.1.cancel();
    });
    let rt = runtime()?;
    let waits = Waits {
        rt: &rt,
        interrupted,
    };
    // One client per registry for the pulls, the cache and the push: one probe, one token.
    let clients = clients::Clients::new(rt.handle().clone());
    let cache_clients = cache_registry::CacheClients::new(&a, &rt, &clients)?;
    // Only pushed, from a registry cache: layers no step needs stay in the registry (the
    // push mounts them): cache hits' layers, and the base images' (pulled without them).
    let leave_layers = a.push && outputs.is_empty();
    let lazy_bases = cache_clients
        .as_ref()
        .filter(|_| leave_layers && !a.cache_from.is_empty());
    let pull = |reference: &Reference,
                platform: &crate::platform::Platform,
                progress: &Progress|
     -> Result<Digest, crate::build::HookError> {
        // A base pulled without its layers stays unnamed, so the stage that uses it would
        // resolve it again: the build asks the registry once.
        if let Some(digest) = lazy_bases.and_then(|c| c.lazily_pulled(reference, platform)) {
            return Ok(digest);
        }
        let registry = clients
            .for_ref(&a, reference)
            .map_err(|e| format!("{e:#}"))?;
        let sink = StoreBlobs(&store);
        let pulling = async {
            match lazy_bases {
                Some(_) => {
                    let lazily = registry.pull_image_lazily(reference, platform, &sink, progress);
                    lazily.await
                }
                None => {
                    registry
                        .pull_image(reference, platform, &sink, progress)
                        .await
                }
            }
        };
        let pulled = waits.run(pulling).ok_or_else(|| {
            format!("interrupted (Ctrl-C or SIGTERM) while pulling {reference}")
        })??;
        // A name in the store promises every blob: a base pulled without its layers stays
        // unnamed (and is resolved again, manifests only, by the next build).
        if pulled.layers.iter().all(|d| store.has_blob(d)) {
            store.tag(reference, &pulled_name(&store, &pulled))?;
        } else if let Some(cache) = lazy_bases {
            cache.note_lazy_base(reference, platform, registry, &pulled);
        }
        Ok(pulled.manifest.digest)
    };
    // Made at the first `ADD <url>`: loading the system's CA certificates costs milliseconds
    // that a build without one (most of them) need not pay.
    let http = std::sync::OnceLock::new();
    let fetch = |url: &str, out: &mut dyn std::io::Write| {
        let client = match http.get() {
            Some(c) => c,
            None => {
                let made = http_client(a.transport.config().tls_verify)
                    .map_err(|e| crate::build::HookError::from(format!("{e:#}")))?;
                http.get_or_init(|| made)
            }
        };
        fetch_url(&rt, client, url, out).map_err(Into::into)
    };
    // Made before the build: a push that cannot start fails before the work, and the
    // uploads during the build share the final push's clients (credentials, tokens).
    let destinations = match a.push {
        true => destinations(&a, &req.tags, &clients)?,
        false => Vec::new(),
    };
    let early = EarlyPush::new(&destinations, &store, uploads_cancel.clone());
    let layer_ready = |layer: &Layer| early.layer_ready(layer);
    let hooks = crate::build::Hooks {
        pull: &pull,
        remote_cache: cache_clients.as_ref().map(|c| c.hook(leave_layers)),
        fetch: &fetch,
        layer_ready: a.push.then_some(&layer_ready as &LayerReady),
    };
    let (result, sent_early) = std::thread::scope(|s| {
        let uploads = a.push.then(|| s.spawn(|| early.run(&rt, &progress)));
        let over = early.over_on_drop();
        let result = crate::build::build(&store, &sandbox, &hooks, &req, &progress);
        early.build_over(result.is_ok());
        drop(over);
        let sent = uploads.map(|u| u.join().expect("the upload thread does not panic"));
        (result, sent.unwrap_or_default())
    });
    drop(progress);
    renderer.finish();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => anyhow::bail!("{}", e.render(&req)),
    };
    // A signal between RUN steps (during a COPY) does not stop the build, but it does stop
    // the push: an interrupted build never puts a manifest.
    anyhow::ensure!(
        !(a.push && uploads_cancel.is_cancelled()),
        "interrupted: the image {} was built but not pushed",
        outcome.image.id()
    );
    let image = &outcome.image;
    for o in &outputs {
        o.write(&store, image, &req.tags)
            .with_context(|| format!("writing the image to {}", o.dest().display()))?;
    }
    let pushed = push(
        &a,
        mode,
        &store,
        &waits,
        image,
        &destinations,
        &sent_early,
        cache_clients
            .as_ref()
            .map(|c| (c, &outcome.left_in_registry[..])),
    )?;
    if let Some(f) = &a.iidfile {
        std::fs::write(f, image.id().to_string())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if mode.summary() {
        let summary = display::Summary {
            image,
            layers_built: outcome.layers_built,
            layers_reused: outcome.layers_reused,
            elapsed: t0.elapsed(),
            // Not named in the store while layers of it stay in the registry cache.
            names: match outcome.left_in_registry.is_empty() {
                true => req.tags.iter().map(|t| t.to_string()).collect(),
                false => Vec::new(),
            },
            pushed,
        };
        for line in display::summary_lines(&summary) {
            eprintln!("{line}");
        }
    }
    println!("{}", image.id());
    Ok(ExitCode::SUCCESS)
}

/// What a base pulled by a build is named by: the index it came through once the store holds
/// every member of it whole, else the platform's own image (a name promises every blob).
/// Naming the member alone made the platforms of a multi-platform build take the name from
/// each other, so every rebuild pulled each base again; under the index's name each platform
/// finds its member in the store.
fn pulled_name(store: &Store, pulled: &Pulled) -> Digest {
    let whole = |index: &&Manifest| match Stored::load(store, &index.digest) {
        Ok(Stored::Index(i)) => i
            .members
            .iter()
            .all(|m| m.image.layers.iter().all(|l| store.has_blob(&l.digest))),
        _ => false,
    };
    match pulled.index.as_ref().filter(whole) {
        Some(index) => index.digest,
        None => pulled.manifest.digest,
    }
}

/// The async runtime, and the token Ctrl-C and SIGTERM cancel: a pull or a push waited for
/// through [`Waits::run`] is abandoned at once on a signal (its temp files are removed as
/// the future is dropped).
struct Waits<'a> {
    rt: &'a tokio::runtime::Runtime,
    interrupted: tokio_util::sync::CancellationToken,
}

impl Waits<'_> {
    /// Runs `work` to its end, or `None` when a signal came first.
    fn run<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        self.rt.block_on(async {
            tokio::select! {
                r = work => Some(r),
                () = self.interrupted.cancelled() => None,
            }
        })
    }
}

/// `--compression` and `--compression-level` as the encoding of new layers.
fn encoding(algo: &str, level: Option<i32>) -> anyhow::Result<Encoding> {
    let compression = Compression::from_name(algo).unwrap_or(Compression::Gzip);
    Encoding::new(compression, level).map_err(|_| {
        let range = compression
            .levels()
            .map_or("0".into(), |r| format!("{}-{}", r.start(), r.end()));
        let l = level.unwrap_or_default();
        anyhow::anyhow!("--compression-level {l} is out of range for {algo}: use {range}")
    })
}

/// One repository `--push` goes to, with its registry client.
struct Destination {
    /// The first `-t` name in this repository.
    reference: Reference,
    /// The tags of every `-t` name in this repository.
    tags: Vec<String>,
    registry: std::sync::Arc<crate::registry::Registry>,
}

/// The repositories of the `-t` names (one push per repository, its tags together), each
/// with its client and credentials.
fn destinations(
    a: &Args,
    names: &[Reference],
    clients: &clients::Clients,
) -> anyhow::Result<Vec<Destination>> {
    anyhow::ensure!(
        !names.is_empty(),
        "--push needs a name to push to: give -t REGISTRY/REPOSITORY:TAG"
    );
    let mut repos: Vec<(String, Vec<&Reference>)> = Vec::new();
    for r in names {
        match repos.iter_mut().find(|(n, _)| *n == r.name()) {
            Some((_, group)) => group.push(r),
            None => repos.push((r.name(), vec![r])),
        }
    }
    repos
        .into_iter()
        .map(|(_, group)| {
            let reference = group[0].clone();
            let registry = clients.for_ref(a, &reference)?;
            Ok(Destination {
                tags: group
                    .iter()
                    .filter_map(|r| r.tag())
                    .map(str::to_string)
                    .collect(),
                reference,
                registry,
            })
        })
        .collect()
}

/// `--push`: the image (or index) to every destination, each manifest only after all its blobs are
/// confirmed (the registry client guarantees that). `sent_early` counts, per destination,
/// the blobs uploaded during the build (the push finds them there). `left` are the layers
/// the build left in the registry (cache hits', lazily pulled bases'): mounted from where
/// they are when that is the destination's registry, else downloaded first.
#[allow(clippy::too_many_arguments)]
fn push(
    a: &Args,
    mode: Mode,
    store: &Store,
    waits: &Waits,
    image: &Stored,
    destinations: &[Destination],
    sent_early: &[usize],
    left: Option<(&cache_registry::CacheClients, &[Layer])>,
) -> anyhow::Result<Vec<String>> {
    if destinations.is_empty() {
        return Ok(Vec::new());
    }
    // An index goes up with its members, each before the index that names it.
    let manifest = Manifest::from_bytes(image.bytes().to_vec(), None);
    let (progress, renderer) = display::start(mode);
    let mut pushed = Vec::new();
    for (i, dest) in destinations.iter().enumerate() {
        let name = dest.reference.name();
        let left = left.filter(|(_, l)| !l.is_empty());
        let sum = push_to(dest, store, waits, &manifest, left, &progress)?;
        let early = sent_early.get(i).copied().unwrap_or(0);
        progress.info(format!(
            "pushed {name}@{} ({} blob(s) uploaded, {early} of them during the build; {} already there)",
            sum.digest,
            sum.blobs_uploaded + early,
            sum.blobs_present.saturating_sub(early)
        ));
        pushed.push((name, sum.digest));
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

/// Pushes `manifest` to one destination. The layers the build `left` in the registry are
/// mounted (or downloaded, when the registry does not mount) while the image's own blobs are
/// checked and uploaded: neither waits for the other; the manifests go last.
fn push_to(
    dest: &Destination,
    store: &Store,
    waits: &Waits,
    manifest: &Manifest,
    left: Option<(&cache_registry::CacheClients, &[Layer])>,
    progress: &Progress,
) -> anyhow::Result<crate::registry::PushSummary> {
    let name = dest.reference.name();
    let interrupted = || format!("interrupted (Ctrl-C or SIGTERM) while pushing to {name}");
    let repo = dest.reference.repository();
    let wanted: Vec<(Digest, u64)> = left
        .iter()
        .flat_map(|(_, l)| l.iter().map(|l| (l.digest, l.size)))
        .collect();
    // Left to `place`: the blob phase does not ask about them.
    let placing: std::collections::HashSet<Digest> = wanted.iter().map(|(d, _)| *d).collect();
    let own = cache_registry::PlacedBlobs {
        store,
        host: dest.registry.host(),
        repo,
        confirmed: &placing,
    };
    let (placed, blobs) = waits
        .run(async {
            let place = async {
                match left {
                    Some((cache, _)) => cache
                        .place(&dest.registry, repo, &wanted, store, progress)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            let blobs = dest
                .registry
                .push_image_blobs(repo, manifest, &own, None, progress);
            tokio::join!(place, blobs)
        })
        .with_context(interrupted)?;
    let placed = placed
        .with_context(|| format!("pushing to {name}: the layers left in the registry cache"))?;
    let mut blobs = blobs.with_context(|| format!("pushing to {name}"))?;
    if let Some(placed) = placed {
        progress.info(format!(
            "{name}: of the layers left in the registry, {} mounted, {} downloaded to upload ({} bytes)",
            placed.mounted, placed.downloaded, placed.bytes_downloaded
        ));
        // What the registry would not mount was downloaded into the store: upload it.
        for (digest, size) in wanted.iter().filter(|(d, _)| !placed.confirmed.contains(d)) {
            let upload = dest
                .registry
                .push_blob(repo, digest, *size, &own, None, progress);
            let done = waits
                .run(upload)
                .with_context(interrupted)?
                .with_context(|| format!("pushing to {name}"))?;
            blobs.set(digest, done);
        }
    }
    let manifests = dest
        .registry
        .push_image_manifests(repo, &dest.tags, manifest, &own, blobs, progress);
    waits
        .run(manifests)
        .with_context(interrupted)?
        .with_context(|| format!("pushing to {name}"))
}

fn request(a: &Args) -> anyhow::Result<BuildRequest> {
    let no_context = a.context.as_os_str() == "-";
    let (dockerfile, name, path) = dockerfile(a, no_context)?;
    let tags = a
        .tags
        .iter()
        .map(|t| t.parse::<Reference>().with_context(|| format!("-t {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels = a
        .labels
        .iter()
        .map(|kv| label(kv))
        .collect::<anyhow::Result<_>>()?;
    let encoding = encoding(&a.compression, a.compression_level)?;
    let format = if a.format == "docker" {
        ImageFormat::Docker
    } else {
        ImageFormat::Oci
    };
    Ok(BuildRequest {
        dockerfile,
        dockerfile_name: name,
        dockerfile_path: path,
        context: (!no_context).then(|| a.context.clone()),
        build_args: a.dockerfile.build_args()?,
        target: a.dockerfile.target.clone(),
        tags,
        labels,
        encoding,
        format,
        source_date_epoch: source_date_epoch()?,
        no_cache: a.no_cache,
        network: if a.network == "none" {
            Network::None
        } else {
            Network::Host
        },
        jobs: match a.jobs {
            Some(0) => anyhow::bail!("--jobs 0: give at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        platforms: a.dockerfile.platforms()?,
        secrets: secrets(&a.secrets, |k| std::env::var_os(k))?,
        allow_insecure: a.allow.iter().any(|e| e == "security.insecure"),
        // Set by `run` once the agents are started.
        ssh: Default::default(),
    })
}

/// The Dockerfile text, the name errors use for it, and its path (for `<name>.dockerignore`).
fn dockerfile(a: &Args, no_context: bool) -> anyhow::Result<(String, String, Option<PathBuf>)> {
    let stdin = std::path::Path::new("-");
    let path = if no_context {
        stdin.to_path_buf()
    } else {
        dockerfile_path(&a.context, a.dockerfile.file.as_deref())?
    };
    let (name, text) = read_dockerfile(&path, Some(&a.context))?;
    Ok((text, name, (path != stdin).then_some(path)))
}

/// `--secret id=ID[,src=PATH|,env=VAR][,type=file|env]`, as docker and buildah take it: the
/// bytes are read now (a file that changes mid-build cannot give steps different values).
/// Errors name the id and the file or variable, never the content.
fn secrets(
    specs: &[String],
    getenv: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> anyhow::Result<std::collections::BTreeMap<String, crate::sandbox::SecretBytes>> {
    let mut out = std::collections::BTreeMap::new();
    for spec in specs {
        let (id, source) = secret_source(spec)?;
        let data = match source {
            SecretSource::File(path) => std::fs::read(&path)
                .with_context(|| format!("--secret id={id}: reading {}", path.display()))?,
            SecretSource::Env(var) => getenv(&var)
                .with_context(|| {
                    format!("--secret id={id}: environment variable {var} is not set")
                })?
                .into_encoded_bytes(),
        };
        out.insert(id, crate::sandbox::SecretBytes(data));
    }
    Ok(out)
}

#[derive(Debug, PartialEq)]
enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses one `--secret` value into its id and where its bytes come from. Like docker:
/// `src` (alias `source`) or `env`; with neither, `type=env` reads the variable named `id`
/// and otherwise the file named `id`.
fn secret_source(spec: &str) -> anyhow::Result<(String, SecretSource)> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').with_context(|| {
            format!(
                "--secret {spec:?}: expected key=value fields (id=ID,src=PATH or id=ID,env=VAR)"
            )
        })?;
        match k.trim() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" if v == "file" || v == "env" => kind = Some(v.to_string()),
            "type" => anyhow::bail!("--secret {spec:?}: type must be file or env"),
            other => anyhow::bail!("--secret {spec:?}: unknown key {other:?} (id, src, env, type)"),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .with_context(|| format!("--secret {spec:?}: id=ID is required"))?;
    let source = match (src, env, kind.as_deref()) {
        (Some(_), Some(_), _) => {
            anyhow::bail!("--secret id={id}: give src= or env=, not both")
        }
        (Some(p), None, Some("env")) | (None, Some(p), _) => SecretSource::Env(p),
        (Some(p), None, _) => SecretSource::File(PathBuf::from(p)),
        (None, None, Some("env")) => SecretSource::Env(id.clone()),
        (None, None, _) => SecretSource::File(PathBuf::from(&id)),
    };
    Ok((id, source))
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

/// Why an `ADD <url>` download failed. URLs may carry credentials (`https://user:pw@host/…`):
/// only the host is ever part of a message, and reqwest's errors lose their URL.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("not a valid URL")]
    Url(#[source] <reqwest::Url as std::str::FromStr>::Err),
    #[error("cannot reach {host}")]
    Connect {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{host} answered HTTP {status}; check the URL")]
    Status {
        host: String,
        status: reqwest::StatusCode,
    },
    #[error("download from {host} broke off")]
    Body {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("writing the download")]
    Write(#[source] std::io::Error),
}

/// Streams the body of `url` into `out` chunk by chunk; the error names the URL's host and
/// the HTTP status.
fn fetch_url(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    url: &str,
    out: &mut dyn std::io::Write,
) -> Result<crate::build::FetchInfo, FetchError> {
    use futures_util::StreamExt;
    let parsed = reqwest::Url::parse(url).map_err(FetchError::Url)?;
    let host = parsed.host_str().unwrap_or("?").to_string();
    rt.block_on(async {
        let resp = http
            .get(parsed)
            .send()
            .await
            .map_err(|e| FetchError::Connect {
                host: host.clone(),
                source: e.without_url(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status { host, status });
        }
        let last_modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.timestamp());
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FetchError::Body {
                host: host.clone(),
                source: e.without_url(),
            })?;
            out.write_all(&chunk).map_err(FetchError::Write)?;
        }
        Ok(crate::build::FetchInfo { last_modified })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_parse_like_docker() {
        let f = |p: &str| SecretSource::File(PathBuf::from(p));
        let e = |v: &str| SecretSource::Env(v.to_string());
        let cases = [
            ("id=a,src=/x", ("a", f("/x"))),
            ("id=a,source=/x", ("a", f("/x"))),
            ("id=a,env=V", ("a", e("V"))),
            ("id=a,type=env,src=V", ("a", e("V"))),
            ("id=A,type=env", ("A", e("A"))),
            ("id=a", ("a", f("a"))),
        ];
        for (spec, (id, source)) in cases {
            assert_eq!(
                secret_source(spec).unwrap(),
                (id.to_string(), source),
                "{spec}"
            );
        }
        for bad in [
            "src=/x",
            "id=a,src=/x,env=V",
            "id=a,type=ssh",
            "id=a,color=red",
            "id",
        ] {
            assert!(secret_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_errors_name_the_source_not_the_content() {
        let err = secrets(&["id=a,env=NOPE".into()], |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("NOPE"), "{err:#}");
        let got = secrets(&["id=a,env=V".into()], |_| Some("xyz".into())).unwrap();
        assert_eq!(got["a"].0, b"xyz");
        let err = secrets(&["id=a,src=/nonexistent/kiln".into()], |_| None).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/kiln"), "{err:#}");
    }
}
