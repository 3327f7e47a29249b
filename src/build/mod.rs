//! `kiln build`: executes a plan with the store, layer engine, sandbox and registry.
//!
//! Public API:
//! - [`build`]`(store, sandbox, &Hooks, &BuildRequest, &Progress)` plans the Dockerfile, builds
//!   the stages the target needs (independent ones in parallel, up to `BuildRequest::jobs`;
//!   the first failure stops the rest), commits the target image to the store under the
//!   requested names and returns it as a [`BuildOutcome`].
//! - [`BuildRequest`] also carries the target platforms (base images chosen from indexes,
//!   config os/architecture; with several, one image per platform, built in parallel with
//!   one build cache (the first platform alone first when a stage is built for a fixed
//!   platform; the first failure stops them all), and their index is what the tags name:
//!   [`BuildOutcome::image`]), `--secret` values (for `RUN --mount=type=secret`; never in
//!   a layer, a cache key or an event) and `--ssh` agent sockets (relayed read-only to
//!   `RUN --mount=type=ssh` by [`ssh`]; used by git for `git@` sources).
//! - [`BuildError::render`] names the Dockerfile line (`Dockerfile:12:5: ...`) with a caret.
//! - [`context`] reads the build context (`.dockerignore`, stat cache).
//! - [`Hooks::layer_ready`] hears of each layer of the image being built as soon as its blob
//!   is in the store (`kiln build --push` starts uploading it while later steps run).
//!
//! What runs today: FROM scratch / an image in the store / an earlier stage; COPY (context,
//! heredoc, `--from` a stage or stored image, `--parents`, `--chmod` octal or symbolic);
//! ADD of local files and archives (extracted), of http(s) URLs through [`Hooks::fetch`] and
//! of git repositories through the `git` command ([`git`]: cached by resolved commit);
//! RUN in the sandbox (cache, tmpfs, secret, ssh and context bind mounts; foreign platforms
//! through binfmt_misc); ONBUILD triggers of the base, run first; every metadata
//! instruction (WORKDIR also creates its directory in a layer: [`workdir`]); stages in
//! parallel ([`schedule`]); the registry cache ([`remote_cache`]).

mod add;
pub(crate) mod cache;
pub mod context;
mod copy;
mod copy_step;
mod downloads;
mod git;
mod image_tree;
mod onbuild;
mod owner;
mod platform;
pub mod remote_cache;
mod rootless;
mod run;
mod runner;
mod schedule;
mod ssh;
mod stage;
mod workdir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Timelike, Utc};

use crate::digest::Digest;
use crate::dockerfile::{Span, render_at};
use crate::error_chain::Causes;
use crate::image::{ImageFormat, Layer, Stored, StoredImage, StoredIndex};
use crate::layer::Encoding;
use crate::plan::{self, PlanOptions, ignore::DockerIgnore};
use crate::platform::Platform;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::sandbox::{Sandbox, SecretBytes};
use crate::store::Store;

/// Everything a build needs besides the store.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The name errors use for the Dockerfile (`Dockerfile`, a path, or `-`).
    pub dockerfile_name: String,
    /// The Dockerfile's path, for a `<name>.dockerignore` beside it.
    pub dockerfile_path: Option<PathBuf>,
    /// The context directory; `None` for a Dockerfile with no context (`kiln build -`).
    pub context: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Names the image gets in the store.
    pub tags: Vec<Reference>,
    /// `--label` values, applied to the final image.
    pub labels: Vec<(String, String)>,
    /// `--compression` and `--compression-level`: how new layers are compressed.
    pub encoding: Encoding,
    pub format: ImageFormat,
    /// `SOURCE_DATE_EPOCH`: clamps created times and file mtimes for reproducible images.
    pub source_date_epoch: Option<i64>,
    /// `--no-cache`: build every step (results are still recorded for the next build).
    pub no_cache: bool,
    /// The network RUN steps get unless they say otherwise (`--network`).
    pub network: crate::network::Network,
    /// How many stages may build at once (`--jobs`); at least 1.
    pub jobs: usize,
    /// The platforms to build for (`--platform`): none is this machine's; two or more give a
    /// multi-platform index of one image per platform.
    pub platforms: Vec<Platform>,
    /// `--secret` values by id, for `RUN --mount=type=secret` (their `Debug` is redacted).
    pub secrets: BTreeMap<String, SecretBytes>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run unconfined.
    pub allow_insecure: bool,
    /// `--ssh` agents by id (`default`, …): the socket of an ssh agent, for
    /// `RUN --mount=type=ssh` and ADD of `git@`/`ssh://` repositories.
    pub ssh: BTreeMap<String, PathBuf>,
}

/// How a build gets a base image that is not in the store (or not for the platform): pulls
/// it for the platform into the store, names it there, and returns its manifest (or index)
/// digest; the error (with its causes) is shown to the user. The CLI passes the registry client;
/// library users may refuse (offline builds). Called from several stage threads at once.
pub type PullBase<'a> = dyn Fn(&Reference, &crate::platform::Platform, &Progress) -> Result<Digest, HookError>
    + Sync
    + 'a;

/// The error of a hook ([`PullBase`], [`Fetch`]): the caller's own error, kept typed as the
/// cause of the step that called it (a plain message converts with `?` or `.into()`).
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// What a build asks of the world outside the store, supplied by the caller (the CLI wires
/// the registry client in). One field per service, so the library stays free of network and
/// credential policy.
pub struct Hooks<'a> {
    /// Gets a base image that is not in the store.
    pub pull: &'a PullBase<'a>,
    /// The registry cache (`--cache-from` / `--cache-to`), if any.
    pub remote_cache: Option<remote_cache::RemoteCache<'a>>,
    /// Downloads an `ADD <url>` source.
    pub fetch: &'a Fetch<'a>,
    /// Told of each layer the built image will hold, once its blob is in the store.
    pub layer_ready: Option<&'a LayerReady<'a>>,
}

/// Hears of the layers of the image a build makes, each as soon as its blob is in the store
/// (or, for a cache hit, found in the registry cache: see [`remote_cache`]) and while later
/// steps still run: the base image's layers when a stage of the image starts,
/// then each layer a step writes or takes from the cache. Only stages whose layers end up in
/// the image are reported (the target and the stages it is built `FROM`), never a layer of
/// a stage the image only copies from; a layer may be reported more than once. Called from
/// stage threads, so it must return quickly (queue the work); a failed build reports no
/// more layers, and the caller discards what it started.
pub type LayerReady<'a> = dyn Fn(&Layer) + Sync + 'a;

/// How a build downloads an `ADD https://…` source: streams the body of `url` into the
/// writer (never holding it whole) and reports `Last-Modified`; the error is a message for
/// the user naming the URL and the HTTP status. The CLI implements it with its HTTP client
/// and TLS settings; library users may refuse (offline builds).
pub type Fetch<'a> =
    dyn Fn(&str, &mut dyn std::io::Write) -> Result<FetchInfo, HookError> + Sync + 'a;

pub use add::FetchInfo;

/// The result of a successful build.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The image, or the index of one image per platform.
    pub image: Stored,
    /// Layers written by this build (cache hits and base layers not counted).
    pub layers_built: usize,
    /// Layers taken from the build cache instead of being built.
    pub layers_reused: usize,
    /// Layers of the image not in the store (only with
    /// [`remote_cache::RemoteCache::leave_layers`]: cache hits left in the registry, layers
    /// of bases pulled without them): the image is then in the store without its names, and
    /// whoever pushes it mounts these from where they are.
    pub left_in_registry: Vec<Layer>,
}

/// Why a build failed. Each variant knows where in the Dockerfile it happened, if anywhere.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Parse and plan errors, already rendered with the Dockerfile's name and a caret.
    #[error("{0}")]
    Plan(String),
    /// A step failed because of a typed error, kept as the cause.
    #[error(transparent)]
    StepFailed(StepFailure),
    #[error(transparent)]
    Ignore(#[from] plan::ignore::IgnoreError),
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    /// A cache hit's layer, left in the registry, could not be fetched when it was needed.
    #[error(transparent)]
    RemoteCache(#[from] remote_cache::FetchError),
    /// Stopped because another stage failed (never the error a build reports).
    #[error("stopped because another stage failed")]
    Cancelled,
    /// Ctrl-C or SIGTERM between steps (see [`crate::progress::interrupt`]).
    #[error("interrupted (Ctrl-C or SIGTERM): the build stopped before step {step}")]
    Interrupted { step: String },
    #[error("{action}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// The error as the user sees it, with its causes: step errors point at their Dockerfile
    /// line.
    pub fn render(&self, req: &BuildRequest) -> String {
        match self {
            BuildError::StepFailed(f) => render_at(
                &req.dockerfile_name,
                &req.dockerfile,
                f.span,
                &Causes(f).to_string(),
            ),
            other => Causes(other).to_string(),
        }
    }
}

/// A step that failed because of `cause`. It reads as the cause itself (its message, then the
/// cause's own causes), plus the step's place in the Dockerfile.
#[derive(Debug)]
pub struct StepFailure {
    pub span: Span,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for StepFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// The error of the step at `span` that failed because of `cause` (see [`StepFailure`]).
pub(crate) fn step_failed(
    span: Span,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> BuildError {
    BuildError::StepFailed(StepFailure {
        span,
        cause: Box::new(cause),
    })
}

/// Builds the image `req` describes into `store`: one image, or with several
/// [`BuildRequest::platforms`] one image per platform (in parallel, sharing the build cache,
/// so a `FROM --platform=$BUILDPLATFORM` stage is built once) and the
/// index of them, named by the tags.
///
/// RUN steps run in `sandbox`; the caller keeps its cancel handle for Ctrl-C.
pub fn build(
    store: &Store,
    sandbox: &Sandbox,
    hooks: &Hooks,
    req: &BuildRequest,
    progress: &Progress,
) -> Result<BuildOutcome, BuildError> {
    let context = match &req.context {
        Some(dir) => {
            let ignore = DockerIgnore::load(dir, req.dockerfile_path.as_deref())?;
            Some(context::Context::open(
                dir,
                ignore,
                Some(stat_cache_file(store, dir)),
            )?)
        }
        None => None,
    };
    // Held for the whole build so a concurrent `kiln prune` leaves fresh, unnamed blobs (the
    // members of an index until the index is named) alone.
    let _lease = store.lease()?;
    remove_abandoned_scratch(store, progress);
    let created = created_time(req);
    let outcome = match req.platforms.as_slice() {
        [] | [_] => {
            let platform = req
                .platforms
                .first()
                .cloned()
                .unwrap_or_else(Platform::host);
            let one = Target {
                platform,
                in_index: false,
                names: &req.tags,
                cancelled: Default::default(),
            };
            let built = build_platform(
                store,
                sandbox,
                hooks,
                req,
                context.as_ref(),
                &one,
                created,
                progress,
            )?;
            BuildOutcome {
                image: Stored::Image(built.image),
                layers_built: built.layers_built,
                layers_reused: built.layers_reused,
                left_in_registry: built.left_in_registry,
            }
        }
        platforms => build_index(
            store,
            sandbox,
            hooks,
            req,
            context.as_ref(),
            platforms,
            created,
            progress,
        )?,
    };
    if let Some(ctx) = &context {
        if let Err(e) = ctx.save_cache() {
            progress.warn(format!(
                "could not save the context stat cache (the next build re-reads files): {}",
                Causes(&e)
            ));
        }
    }
    Ok(outcome)
}

/// One platform's build of a request.
struct Target<'r> {
    platform: Platform,
    /// Several platforms are built: steps are labelled with theirs.
    in_index: bool,
    /// Names the image gets (none for an index member: the index is named).
    names: &'r [Reference],
    /// Stops the build before its next step (set by the first failure of any platform).
    cancelled: Arc<AtomicBool>,
}

/// Keeps `e` unless an error is kept already: the first failure is the build's, and
/// `Cancelled` (a platform stopped because of it) never hides a real error.
fn keep_first_error(first: &Mutex<Option<BuildError>>, e: BuildError) {
    let mut first = first.lock().unwrap_or_else(|p| p.into_inner());
    if first
        .as_ref()
        .is_none_or(|kept| matches!(kept, BuildError::Cancelled))
    {
        *first = Some(e);
    }
}

/// Whether a stage of the Dockerfile is built for a fixed platform (`FROM --platform=…`),
/// which every target platform then shares through the cache. A Dockerfile that does not
/// plan says so when its first platform is built.
fn shares_stages(req: &BuildRequest, platform: &Platform) -> bool {
    plan::plan(&req.dockerfile, &plan_options(req, platform))
        .map_or(true, |p| p.stages.iter().any(|s| s.platform.is_some()))
}

/// One platform's image, in the store.
struct BuiltImage {
    image: StoredImage,
    layers_built: usize,
    layers_reused: usize,
    left_in_registry: Vec<Layer>,
}

/// Builds every platform's image, then their index, named by the tags (unless layers stay in
/// the registry: see [`BuildOutcome::left_in_registry`]). Platforms build in parallel, up to
/// `--jobs` at once; when a stage is built for a fixed platform (`FROM
/// --platform=$BUILDPLATFORM`), the first platform is built alone first, so the stages every
/// platform shares are in the cache when the others start. With a registry cache they stay
/// one after the other: each exports into the same tag. The platforms share one cancellation
/// flag: the first to fail stops the others before their next step, and its error is the
/// build's.
#[allow(clippy::too_many_arguments)]
fn build_index(
    store: &Store,
    sandbox: &Sandbox,
    hooks: &Hooks,
    req: &BuildRequest,
    context: Option<&context::Context>,
    platforms: &[Platform],
    created: DateTime<Utc>,
    progress: &Progress,
) -> Result<BuildOutcome, BuildError> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let first_error = Mutex::new(None);
    let one = |platform: &Platform| {
        let target = Target {
            platform: platform.clone(),
            in_index: true,
            names: &[],
            cancelled: cancelled.clone(),
        };
        let built = build_platform(
            store, sandbox, hooks, req, context, &target, created, progress,
        );
        built.map_err(|e| {
            cancelled.store(true, Ordering::SeqCst);
            keep_first_error(&first_error, e);
        })
    };
    let at_once = match hooks.remote_cache.is_some() {
        true => 1,
        false => req.jobs.max(1),
    };
    let mut built = Vec::new();
    let mut rest = platforms;
    if shares_stages(req, &platforms[0]) {
        built.push(one(&platforms[0]).ok());
        rest = &platforms[1..];
    }
    for group in rest.chunks(at_once) {
        if cancelled.load(Ordering::SeqCst) {
            break;
        }
        std::thread::scope(|s| {
            let threads: Vec<_> = group.iter().map(|p| s.spawn(|| one(p))).collect();
            for t in threads {
                let result = t
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                built.push(result.ok());
            }
        });
    }
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let built: Vec<BuiltImage> = built.into_iter().flatten().collect();
    let (mut layers_built, mut layers_reused) = (0, 0);
    let mut left_in_registry: Vec<Layer> = Vec::new();
    let mut members = Vec::new();
    for (platform, b) in platforms.iter().zip(built) {
        layers_built += b.layers_built;
        layers_reused += b.layers_reused;
        for l in b.left_in_registry {
            if !left_in_registry.iter().any(|k| k.digest == l.digest) {
                left_in_registry.push(l);
            }
        }
        members.push((platform.clone(), b.image));
    }
    let index = StoredIndex::create(store, req.format, members)?;
    if left_in_registry.is_empty() {
        for name in &req.tags {
            store.tag(name, &index.digest)?;
        }
    }
    Ok(BuildOutcome {
        image: Stored::Index(index),
        layers_built,
        layers_reused,
        left_in_registry,
    })
}

/// Plans and builds the image for one platform and commits it under `target.names`.
#[allow(clippy::too_many_arguments)]
fn build_platform(
    store: &Store,
    sandbox: &Sandbox,
    hooks: &Hooks,
    req: &BuildRequest,
    context: Option<&context::Context>,
    target: &Target,
    created: DateTime<Utc>,
    progress: &Progress,
) -> Result<BuiltImage, BuildError> {
    let options = plan_options(req, &target.platform);
    let mut plan = plan::plan(&req.dockerfile, &options)
        .map_err(|e| BuildError::Plan(e.render(&req.dockerfile_name, &req.dockerfile)))?;
    let mut env = runner::BuildEnv::new(
        store,
        sandbox,
        hooks,
        req,
        context,
        progress,
        created,
        target.platform.clone(),
    );
    env.label_platforms = target.in_index;
    env.cancelled = target.cancelled.clone();
    // `ENV PATH=/opt/bin:$PATH` expands with the base image's ENV, as docker does: the bases
    // are resolved (pulled when missing) and the plan made again with their environments.
    // The `--cache-from` REFs are read meanwhile: neither needs the other, and on a fresh
    // runner both are registry round trips.
    let (remote, base_env) = std::thread::scope(|s| {
        let importing =
            s.spawn(|| remote_cache::Session::open(hooks.remote_cache.as_ref(), store, progress));
        let base_env = base_envs(&env, &plan);
        let remote = importing
            .join()
            .expect("reading the registry cache does not panic");
        (remote, base_env)
    });
    env.remote = remote;
    let base_env = base_env?;
    if !base_env.is_empty() {
        let opts = PlanOptions {
            base_env,
            ..options
        };
        plan = plan::plan(&req.dockerfile, &opts)
            .map_err(|e| BuildError::Plan(e.render(&req.dockerfile_name, &req.dockerfile)))?;
    }
    for w in &plan.warnings {
        let message = format!("{} ({})", w.message, w.rule);
        progress.warn(match w.span {
            Some(span) => render_at(&req.dockerfile_name, &req.dockerfile, span, &message),
            None => format!("{}: {message}", req.dockerfile_name),
        });
    }
    env.image_stages = image_stages(&plan);
    let mut finished = schedule::run_stages(&env, &plan, req.jobs)?;
    let layers_built = finished.values().map(|f| f.layers_built).sum();
    let layers_reused = finished.values().map(|f| f.layers_reused).sum();
    let newest_hit = finished.values().filter_map(|f| f.newest_hit).max();
    let mut image = finished
        .remove(&plan.target)
        .expect("the target stage was built")
        .image;
    stage::restamp_if_all_cached(&mut image, layers_built, newest_hit, req);
    for (k, v) in &req.labels {
        image.set_label(k, v);
    }
    // The image's stages made every layer with its blob; a layer an earlier build kept only
    // unpacked and this image took from the cache got its blob on the hit. Made here if not.
    let opts = runner::layer_options(req);
    image.ensure_blobs(|l| rootless::ensure_blob(store, sandbox, opts.clone(), l))?;
    let layers = image.blob_layers()?;
    let left_in_registry = match env.remote.leaves_layers() {
        true => {
            let mut seen = std::collections::BTreeSet::new();
            layers
                .iter()
                .filter(|l| !store.has_blob(&l.digest) && seen.insert(l.digest))
                .copied()
                .collect()
        }
        false => {
            env.remote.ensure_all(&layers, progress)?;
            Vec::new()
        }
    };
    let blobs = if left_in_registry.is_empty() {
        image.commit(store, req.format, target.names)?
    } else {
        // A name in the store promises every blob: the image stays unnamed (and `prune`
        // collects it) until someone needs it here; the push mounts the missing layers.
        progress.info(format!(
            "{} layer(s) of the image stay in the registry (the push mounts them): the image \
             is not named in the local store",
            left_in_registry.len()
        ));
        let blobs = image.finish(req.format)?;
        store.put_blob(&blobs.config)?;
        store.put_blob(&blobs.manifest)?;
        blobs
    };
    env.remote.report(progress);
    env.remote.export(&layers, progress);
    Ok(BuiltImage {
        image: StoredImage::load(store, &blobs.manifest_digest)?,
        layers_built,
        layers_reused,
        left_in_registry,
    })
}

/// Removes what builds killed before they could clean up left in the store (their scratch
/// dirs' locks are free); a concurrent build's are locked and stay. Cleaning is a courtesy:
/// a failure only leaves the dirs for `kiln prune`.
fn remove_abandoned_scratch(store: &Store, progress: &Progress) {
    match store.remove_abandoned_scratch() {
        Ok(freed) if freed.dirs > 0 => progress.info(format!(
            "removed {} scratch dir(s) of interrupted builds ({} bytes)",
            freed.dirs, freed.bytes
        )),
        Ok(_) => {}
        Err(e) => progress.warn(format!(
            "could not remove the scratch dirs of interrupted builds (`kiln prune` will): {}",
            Causes(&e)
        )),
    }
}

/// The ENV of every base image the stages to build start from, by the name the Dockerfile
/// gives it (the first stage's platform wins when two stages name one image).
fn base_envs(
    env: &runner::BuildEnv,
    plan: &plan::Plan,
) -> Result<std::collections::BTreeMap<String, Vec<(String, String)>>, BuildError> {
    let mut envs = std::collections::BTreeMap::new();
    for stage in plan.order.iter().map(|&i| &plan.stages[i]) {
        let plan::Base::Image(name) = &stage.base else {
            continue;
        };
        if envs.contains_key(name) {
            continue;
        }
        let mut runner = runner::Runner::new(env, &Default::default());
        if let Some(p) = &stage.platform {
            runner.platform =
                crate::image::Platform::parse(p).map_err(|e| step_failed(stage.span, e))?;
        }
        let stored = runner
            .stored_image(name)
            .map_err(|e| step_failed(stage.span, e))?;
        let base = crate::image::ImageBuilder::from_base(&stored, env.created)?;
        let vars = base
            .config()
            .env
            .iter()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        envs.insert(name.clone(), vars);
    }
    Ok(envs)
}

/// The stages whose layers the target image holds: the target and, through `FROM <stage>`,
/// each stage it is built on (a `COPY --from` source adds files, not layers).
fn image_stages(plan: &plan::Plan) -> std::collections::HashSet<usize> {
    let mut stages = std::collections::HashSet::from([plan.target]);
    let mut at = plan.target;
    while let plan::Base::Stage(base) = plan.stages[at].base {
        if !stages.insert(base) {
            break;
        }
        at = base;
    }
    stages
}

/// The plan options a request implies for one target platform (`TARGETPLATFORM` and the
/// other platform ARGs in BuildKit's spelling: `linux/arm64`, not `linux/arm64/v8`).
fn plan_options(req: &BuildRequest, platform: &Platform) -> PlanOptions {
    PlanOptions {
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        allow_insecure: req.allow_insecure,
        target_platform: platform.normalized(),
        ..PlanOptions::default()
    }
}

/// Trims the build cache (`kiln prune --keep-duration/--keep-bytes`): records unused for
/// longer than `keep_duration`, then the least recently used beyond `keep_bytes`, are dropped
/// and their layers unpinned, so the store's prune that follows can free them.
pub(crate) fn trim_cache(
    store: &Store,
    keep_duration: Option<std::time::Duration>,
    keep_bytes: Option<u64>,
) -> Result<cache::TrimReport, cache::CacheError> {
    cache::BuildCache::open(store, false).trim(keep_duration, keep_bytes)
}

/// One stat cache per context directory, kept in the store.
fn stat_cache_file(store: &Store, context: &std::path::Path) -> PathBuf {
    let key = std::fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
    let key = Digest::of(key.as_os_str().as_encoded_bytes());
    store
        .root()
        .join("cache/context")
        .join(format!("{}.statcache", key.hex()))
}

/// `SOURCE_DATE_EPOCH` when set, else now in whole seconds (sub-second created times only
/// make digests differ for no one's benefit).
fn created_time(req: &BuildRequest) -> DateTime<Utc> {
    let now = Utc::now();
    req.source_date_epoch
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
        .unwrap_or_else(|| now.with_nanosecond(0).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages_of(dockerfile: &str, target: Option<&str>) -> Vec<usize> {
        let opts = PlanOptions {
            target: target.map(str::to_string),
            ..PlanOptions::default()
        };
        let mut v: Vec<usize> = image_stages(&plan::plan(dockerfile, &opts).unwrap())
            .into_iter()
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_image_holds_the_layers_of_its_from_chain_not_of_copy_from_sources() {
        let df = "FROM scratch AS a\nFROM scratch AS b\nFROM a AS c\nCOPY --from=b / /\nFROM c\n";
        assert_eq!(stages_of(df, None), vec![0, 2, 3]);
        assert_eq!(stages_of(df, Some("b")), vec![1]);
        assert_eq!(stages_of("FROM scratch\n", None), vec![0]);
    }

    #[test]
    fn no_build_error_repeats_its_cause() {
        use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};
        let path = || PathBuf::from("/some/path");
        let store_io = || crate::store::StoreError::Io {
            action: "create",
            path: path(),
            source: io(),
        };
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(BuildError::Io {
                action: "creating",
                source: io(),
            }),
            Box::new(BuildError::Store(store_io())),
            Box::new(step_failed(Span::new(1, 1, 1), store_io())),
            Box::new(cache::CacheError::Io {
                action: "write",
                path: path(),
                source: io(),
            }),
            Box::new(context::ContextError::Io {
                path: path(),
                source: io(),
            }),
        ];
        for e in &errors {
            assert_each_cause_once(e.as_ref(), CAUSE);
        }
    }
}
