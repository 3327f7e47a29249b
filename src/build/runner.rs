//! The state a stage runs with: [`BuildEnv`] (shared by every stage of one build) and
//! [`Runner`] (one stage's own). Kept apart from `stage.rs`, which drives the steps, so the
//! step modules (`copy_step`, `workdir`, `rootless`) build on the runner without importing
//! the driver that calls them.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Utc};

use super::cache::BuildCache;
use super::context::Context;
use super::downloads::Downloads;
use super::{BuildRequest, Hooks};
use crate::Digest;
use crate::image::{self, ImageBuilder};
use crate::layer::{Deletions, LayerOptions, Ownership, UnpackOptions};
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::store::Store;

/// What every stage of one build shares: the build's inputs, read-only, and the little
/// state stages coordinate through (atomics, so a stage's own work takes no lock).
pub(crate) struct BuildEnv<'a> {
    pub(crate) store: &'a Store,
    pub(crate) sandbox: &'a Sandbox,
    pub(crate) hooks: &'a Hooks<'a>,
    pub(crate) req: &'a BuildRequest,
    pub(crate) context: Option<&'a Context>,
    pub(crate) progress: &'a Progress,
    pub(crate) created: DateTime<Utc>,
    /// The platform the image is built for (`--platform`, else this machine's).
    pub(crate) platform: image::Platform,
    /// One of several platforms is built: step names and ids carry the platform
    /// (`[linux/arm64 build 2/5]`, BuildKit's `[linux/amd64->arm64 build 1/3]` for a stage
    /// `FROM --platform=$BUILDPLATFORM`).
    pub(crate) label_platforms: bool,
    /// Identifies this Dockerfile in this context, for explaining cache misses.
    pub(crate) slot_prefix: String,
    /// What ONBUILD triggers are planned with (build args, platforms).
    pub(crate) plan_options: crate::plan::PlanOptions,
    /// The registry cache (`--cache-from`/`--cache-to`), shared by all stages; inert without one.
    pub(crate) remote: super::remote_cache::Session<'a>,
    /// Set when a stage failed: the others stop before their next step. Shared by the
    /// platforms of a multi-platform build, so one platform's failure stops them all.
    pub(crate) cancelled: std::sync::Arc<AtomicBool>,
    pub(super) announced_isolation: AtomicBool,
    /// The stages whose layers the built image holds (reported to [`Hooks::layer_ready`]).
    pub(crate) image_stages: std::collections::HashSet<usize>,
}

impl BuildEnv<'_> {
    /// Whether the layers of stage `index` leave the build: the image holds them (named in
    /// the store, then maybe pushed or written out), or `--cache-to mode=max` exports every
    /// step. The others are never compressed: kept as their unpacked dirs only.
    pub(crate) fn layers_leave(&self, index: usize) -> bool {
        let exports_all = self
            .hooks
            .remote_cache
            .as_ref()
            .is_some_and(|r| r.to.is_some() && r.mode == super::remote_cache::ExportMode::Max);
        exports_all || self.image_stages.contains(&index)
    }
}

impl<'a> BuildEnv<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: &'a Store,
        sandbox: &'a Sandbox,
        hooks: &'a Hooks<'a>,
        req: &'a BuildRequest,
        context: Option<&'a Context>,
        progress: &'a Progress,
        created: DateTime<Utc>,
        platform: image::Platform,
    ) -> Self {
        let slot_prefix = format!(
            "{}:{}",
            // Canonical, so `ctx` and `/abs/path/ctx` are the same slot.
            context
                .map(|c| {
                    std::fs::canonicalize(c.root())
                        .unwrap_or_else(|_| c.root().to_path_buf())
                        .display()
                        .to_string()
                })
                .unwrap_or_default(),
            req.dockerfile_name
        );
        BuildEnv {
            store,
            sandbox,
            hooks,
            req,
            context,
            progress,
            created,
            plan_options: super::plan_options(req, &platform),
            platform,
            slot_prefix,
            label_platforms: false,
            // Inert until `build_platform` reads the `--cache-from` REFs (beside the base pulls).
            remote: super::remote_cache::Session::open(None, store, progress),
            cancelled: Default::default(),
            announced_isolation: AtomicBool::new(false),
            image_stages: Default::default(),
        }
    }
}

/// A finished stage: its image and what later stages and the summary need from it.
#[derive(Clone)]
pub(crate) struct Finished {
    pub(crate) image: ImageBuilder,
    /// The stage's last cache key (`FROM stage` and `COPY --from` build on it).
    pub(crate) key: Digest,
    /// Layers this stage wrote (cache hits not counted).
    pub(crate) layers_built: usize,
    /// Layers this stage took from the cache.
    pub(crate) layers_reused: usize,
    /// The latest build time among this stage's cache hits (see [`restamp_if_all_cached`]).
    pub(crate) newest_hit: Option<i64>,
}

/// Runs one stage. Each stage gets its own runner, holding copies of the finished stages it
/// may read (they are immutable once finished), so running stages share nothing mutable.
pub(crate) struct Runner<'a> {
    pub(super) env: &'a BuildEnv<'a>,
    pub(super) store: &'a Store,
    pub(super) sandbox: &'a Sandbox,
    pub(super) hooks: &'a Hooks<'a>,
    pub(super) cache: BuildCache<'a>,
    /// The last cache key of each finished stage.
    pub(super) stage_keys: HashMap<usize, Digest>,
    pub(super) req: &'a BuildRequest,
    pub(super) context: Option<&'a Context>,
    pub(super) progress: &'a Progress,
    pub(super) created: DateTime<Utc>,
    pub(super) platform: image::Platform,
    /// The images of the stages finished before this one started.
    pub(super) done: HashMap<usize, ImageBuilder>,
    pub(super) layers_built: usize,
    /// Layers this stage took from the cache.
    pub(super) layers_reused: usize,
    /// The latest build time among the cache hits (see [`restamp_if_all_cached`]).
    pub(super) newest_hit: Option<i64>,
    /// ADD downloads made for cache keys, reused by their steps.
    pub(super) downloads: std::sync::Mutex<Downloads>,
    /// Whether a later step may stack the layer the current step writes (a later RUN, COPY
    /// or ADD of this stage, or another stage): a COPY's layer is then also unpacked into
    /// the store as it is written, instead of from its blob when that step needs it.
    pub(super) layer_read_later: bool,
    /// Whether this stage's layers leave the build ([`BuildEnv::layers_leave`]): each gets
    /// its blob at once; otherwise a layer is kept only as its unpacked dir when it can be.
    pub(super) layers_leave: bool,
}

impl<'a> Runner<'a> {
    /// A runner for one stage, given the stages finished so far.
    pub(crate) fn new(env: &'a BuildEnv<'a>, finished: &HashMap<usize, Finished>) -> Self {
        Runner {
            env,
            store: env.store,
            sandbox: env.sandbox,
            hooks: env.hooks,
            cache: BuildCache::open(env.store, env.req.no_cache),
            stage_keys: finished.iter().map(|(i, f)| (*i, f.key)).collect(),
            req: env.req,
            context: env.context,
            progress: env.progress,
            created: env.created,
            platform: env.platform.clone(),
            done: finished
                .iter()
                .map(|(i, f)| (*i, f.image.clone()))
                .collect(),
            layers_built: 0,
            layers_reused: 0,
            downloads: Default::default(),
            newest_hit: None,
            layer_read_later: true,
            layers_leave: true,
        }
    }
}

/// How the build writes layers: `--compression` at its level, and `SOURCE_DATE_EPOCH`
/// (both in every step's cache key, so a layer kept without a blob gets the blob its
/// build would have written).
pub(super) fn layer_options(req: &BuildRequest) -> LayerOptions {
    LayerOptions {
        encoding: req.encoding,
        source_date_epoch: req.source_date_epoch,
        id_map: None,
    }
}

/// How this process unpacks a layer itself (COPY --from trees, and base layers when there is
/// no subordinate id map: see `rootless::unpack`).
pub(super) fn unpack_options() -> UnpackOptions {
    // Root keeps the layers' owners; an unprivileged user cannot chown and keeps its own.
    let ownership = if nix::unistd::geteuid().is_root() {
        Ownership::Preserve
    } else {
        Ownership::Ignore
    };
    UnpackOptions {
        ownership,
        xattrs: false,
        deletions: Deletions::Apply,
    }
}
