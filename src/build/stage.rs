//! Runs one stage: its base, then each step in order, into an [`ImageBuilder`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::DateTime;

use super::cache::{self, BuildCache, CachedStep, SourceDigest, StepInputs};
use super::context::Context;
use super::copy;
use super::copy_step::{AddSpec, CopySpec, SourceTree};
use super::onbuild;
use super::platform::{self, platform_matches};
use super::rootless;
use super::run::{self, RunArgs, RunEnv};
use super::runner::{Finished, Runner};
use super::{BuildError, BuildRequest};
use crate::Digest;
use crate::dockerfile::{CommandLine, Healthcheck, Span};
use crate::image::{self, BuildLayer, ImageBuilder, Layer, StoredImage};
use crate::layer::{self, LayerEntry, LayerOptions};
use crate::plan::{Base, CopyFrom, Mount, MountKind, SourceSpec, Stage, Step, StepKind};
use crate::progress::Event;
use crate::reference::Reference;

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the image a `FROM` or `--from` names could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BaseError {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("pulling {reference}")]
    Pull {
        reference: String,
        #[source]
        source: super::HookError,
    },
    #[error("{reference} in the store is not for {platform}, and pulling it for {platform} failed")]
    PullOther {
        reference: String,
        platform: image::Platform,
        #[source]
        source: super::HookError,
    },
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("{reference} has no image for {platform}: choose another base or --platform")]
    NoPlatform {
        reference: String,
        platform: image::Platform,
    },
}

/// When no layer was written, every layer came from the cache: the image is stamped with
/// the time those layers were built, so an unchanged rebuild reproduces the first build's
/// digest (`SOURCE_DATE_EPOCH`, when set, already fixes all times).
pub(crate) fn restamp_if_all_cached(
    img: &mut ImageBuilder,
    layers_built: usize,
    newest_hit: Option<i64>,
    req: &BuildRequest,
) {
    if let (0, None, Some(t)) = (layers_built, req.source_date_epoch, newest_hit) {
        if let Some(t) = DateTime::from_timestamp(t, 0) {
            img.restamp(t);
        }
    }
}

impl<'a> Runner<'a> {
    /// Builds `stage`; stops with [`BuildError::Cancelled`] before a step when another stage
    /// has failed.
    pub(crate) fn run(mut self, stage: &Stage) -> Result<Finished, BuildError> {
        if let Some(p) = &stage.platform {
            // `FROM --platform=...`: the stage's base and config are for that platform.
            self.platform =
                image::Platform::parse(p).map_err(|e| super::step_failed(stage.span, e))?;
        }
        self.layers_leave = self.env.layers_leave(stage.index);
        let (mut img, base) = self.base(stage)?;
        self.layers_ready(stage, &img, 0);
        let triggers = self.take_triggers(stage, &mut img)?;
        let steps: Vec<&Step> = triggers.iter().chain(&stage.steps).collect();
        let mut parent = BuildCache::stage_root(
            base.as_ref(),
            &self.platform,
            self.req.encoding.compression(),
            self.req.source_date_epoch,
        );
        let mut label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let mut id_prefix = String::new();
        if self.env.label_platforms {
            label = format!("{} {label}", self.platform_label());
            id_prefix = format!("{}:", self.env.platform);
        }
        for (i, &step) in steps.iter().enumerate() {
            if self.env.cancelled.load(Ordering::SeqCst) {
                return Err(BuildError::Cancelled);
            }
            if crate::progress::interrupted() {
                let step = format!("{label} {}/{}", i + 1, steps.len());
                return Err(BuildError::Interrupted { step });
            }
            let id = format!("{id_prefix}{}.{}", stage.index, i + 1);
            let name = format!(
                "[{label} {}/{}] {}",
                i + 1,
                steps.len(),
                step.original.trim()
            );
            self.progress.send(Event::StepStarted {
                id: id.clone(),
                name,
            });
            let t0 = Instant::now();
            let layers_before = img.layers().len();
            self.layer_read_later = self.env.image_stages.iter().max() != Some(&stage.index)
                || steps[i + 1..].iter().any(|s| reads_layers(s));
            let sources = self.sources(step)?;
            let key = BuildCache::key(&parent, step, sources.as_ref());
            let cached = if writes_layer(step) {
                // Per platform: a miss is explained by what this platform last built.
                let slot = format!("{}:{id_prefix}{}:{}", self.env.slot_prefix, stage.index, i);
                self.cached_step(
                    &mut img,
                    step,
                    &key,
                    &slot,
                    StepInputs::new(&parent, step, sources),
                    &id,
                )?
            } else {
                self.step(&mut img, step, &id)?;
                false
            };
            parent = key;
            let millis = t0.elapsed().as_millis() as u64;
            self.progress.send(Event::StepDone { id, cached, millis });
            self.layers_ready(stage, &img, layers_before);
        }
        Ok(Finished {
            image: img,
            key: parent,
            layers_built: self.layers_built,
            layers_reused: self.layers_reused,
            newest_hit: self.newest_hit,
        })
    }

    /// The stage's platform as BuildKit labels steps: the target's, or `build->target-arch`
    /// for a stage built for another platform (`FROM --platform=$BUILDPLATFORM`).
    fn platform_label(&self) -> String {
        let (stage, target) = (self.platform.normalized(), self.env.platform.normalized());
        if stage == target {
            return stage.to_string();
        }
        let arch = match &target.variant {
            Some(v) => format!("{}/{v}", target.architecture),
            None => target.architecture.clone(),
        };
        format!("{stage}->{arch}")
    }

    /// Reports the image's layers from index `from` on to [`Hooks::layer_ready`] when this
    /// stage's layers end up in the built image: their blobs are in the store by now (such a
    /// stage's layers leave the build, so each got its blob when it was made or hit).
    fn layers_ready(&self, stage: &Stage, img: &ImageBuilder, from: usize) {
        if let Some(ready) = self.hooks.layer_ready {
            if self.env.image_stages.contains(&stage.index) {
                let layers = img.layers().iter().skip(from);
                layers.filter_map(BuildLayer::blob).for_each(ready);
            }
        }
    }

    /// The base's ONBUILD triggers as steps, consumed from the image (Docker's semantics).
    fn take_triggers(
        &self,
        stage: &Stage,
        img: &mut ImageBuilder,
    ) -> Result<Vec<Step>, BuildError> {
        if matches!(stage.base, Base::Scratch) || img.config().on_build.is_empty() {
            return Ok(Vec::new());
        }
        let triggers = img.config().on_build.clone();
        img.clear_on_build();
        onbuild::trigger_steps(&triggers, img.config(), &self.env.plan_options, stage.span)
            .map_err(|e| super::step_failed(stage.span, e))
    }

    /// A layer-writing step through the cache: reuse a recorded layer, or say why there is
    /// none, run the step and record it. Returns whether it was a hit.
    fn cached_step(
        &mut self,
        img: &mut ImageBuilder,
        step: &Step,
        key: &Digest,
        slot: &str,
        inputs: StepInputs,
        id: &str,
    ) -> Result<bool, BuildError> {
        let hit = (self.cache.lookup(key)).or_else(|| {
            self.env
                .remote
                .fetch(key, &self.cache, step.original.trim(), self.progress)
        });
        if let Some(hit) = hit.and_then(|h| self.leaving_hit(key, h, step)) {
            self.env.remote.note(key, &hit);
            self.newest_hit = self.newest_hit.max(Some(hit.created));
            // A hit is what the slot last saw too: without this, a change after a first build
            // that hit (a fresh checkout elsewhere) is explained as "not built before".
            // Best effort, like `remember` after a miss.
            let _ = self.cache.remember(slot, key, &inputs);
            // WORKDIR's config change is not in its layer: apply it on a hit too.
            if let StepKind::Workdir { path } = &step.kind {
                img.set_working_dir(path);
            }
            match hit.layer {
                Some(layer) => {
                    img.add_layer(layer, &hit.created_by);
                    self.layers_reused += 1;
                }
                None => img.add_empty_step(&hit.created_by),
            }
            return Ok(true);
        }
        let reason = self.cache.explain_miss(slot, &inputs);
        self.progress.send(Event::CacheMiss {
            id: id.to_string(),
            reason: format!("{}: cache miss, {reason}", step.original.trim()),
        });
        let layers_before = img.layers().len();
        self.step(img, step, id)?;
        let layer = (img.layers().len() > layers_before)
            .then(|| *img.layers().last().expect("a layer was added"));
        debug_assert!(
            !self.layers_leave || layer.is_none_or(|l| l.blob().is_some()),
            "a layer that leaves the build has its blob"
        );
        let record = CachedStep {
            created: self.created.timestamp(),
            layer,
            created_by: step.original.trim().to_string(),
        };
        self.env.remote.note(key, &record);
        // A cache that cannot be written only costs time on the next build.
        if let Err(e) = self
            .cache
            .record(key, &record)
            .and_then(|()| self.cache.remember(slot, key, &inputs))
        {
            self.progress
                .warn(format!("could not record the build cache: {e}"));
        }
        Ok(false)
    }

    /// A hit as this stage can use it: a layer kept only unpacked gets its blob when this
    /// stage's layers leave the build (see [`rootless::ensure_blob`]), and the record is
    /// updated to name it. `None` (a miss, with a warning) when the blob cannot be made.
    fn leaving_hit(&self, key: &Digest, mut hit: CachedStep, step: &Step) -> Option<CachedStep> {
        let Some(layer @ BuildLayer::Unpacked { .. }) = hit.layer else {
            return Some(hit);
        };
        if !self.layers_leave {
            return Some(hit);
        }
        match rootless::ensure_blob(self.store, self.sandbox, self.layer_options(), &layer) {
            Ok(blob) => {
                hit.layer = Some(BuildLayer::Blob(blob));
                // Best effort: the record keeps naming the dir, which still serves.
                let _ = self.cache.record(key, &hit);
                Some(hit)
            }
            Err(e) => {
                self.progress.warn(format!(
                    "{}: the cached layer cannot be used, building the step again: {}",
                    step.original.trim(),
                    crate::error_chain::Causes(&e)
                ));
                None
            }
        }
    }

    /// How this build writes layers: `--compression`, its level and `SOURCE_DATE_EPOCH`.
    pub(super) fn layer_options(&self) -> LayerOptions {
        super::runner::layer_options(self.req)
    }

    /// The content identity of what a COPY/ADD reads (None for other steps): per-file digests
    /// for the context (served by the stat cache), the source stage's key or image manifest
    /// for `--from`.
    fn sources(&self, step: &Step) -> Result<Option<SourceDigest>, BuildError> {
        let (sources, from) = match &step.kind {
            StepKind::Copy { sources, from, .. } => (sources, from),
            StepKind::Add {
                sources, checksum, ..
            } => return self.add_sources(sources, checksum.as_deref(), step.span),
            StepKind::Run { mounts, .. } => return self.mount_sources(mounts, step.span),
            _ => return Ok(None),
        };
        match from {
            CopyFrom::Stage(i) => Ok(self.stage_keys.get(i).copied().map(SourceDigest::opaque)),
            CopyFrom::Image(name) => {
                let stored = self
                    .stored_image(name)
                    .map_err(|e| super::step_failed(step.span, e))?;
                Ok(Some(SourceDigest::opaque(stored.manifest_digest)))
            }
            CopyFrom::Context => {
                let Some(ctx) = self.context else {
                    return Ok(None);
                };
                let mut paths = Vec::new();
                for s in sources {
                    if let SourceSpec::Path { path } = s {
                        // A missing source is reported by the COPY itself, with hints.
                        paths.extend(copy::matches(ctx, path).unwrap_or_default());
                    }
                }
                let found: Vec<String> = paths.into_iter().filter(|p| ctx.contains(p)).collect();
                Ok(Some(cache::context_sources(ctx, &found)?))
            }
        }
    }

    /// The stage's starting image and what identifies it for the cache (the base manifest,
    /// the earlier stage's last key, or nothing for scratch).
    fn base(&self, stage: &Stage) -> Result<(ImageBuilder, Option<Digest>), BuildError> {
        let (mut img, identity) = self.base_image(stage)?;
        // Docker, BuildKit and buildah give every Linux image a PATH when its base has none.
        if img.env("PATH").is_none() {
            img.set_env("PATH", DEFAULT_PATH);
        }
        Ok((img, identity))
    }

    fn base_image(&self, stage: &Stage) -> Result<(ImageBuilder, Option<Digest>), BuildError> {
        match &stage.base {
            Base::Scratch => Ok((ImageBuilder::new(self.platform.clone(), self.created), None)),
            Base::Stage(i) => {
                let img = self
                    .done
                    .get(i)
                    .expect("plan orders dependencies first")
                    .as_base();
                Ok((img, self.stage_keys.get(i).copied()))
            }
            Base::Image(name) => {
                let stored = self
                    .stored_image(name)
                    .map_err(|e| super::step_failed(stage.span, e))?;
                Ok((
                    ImageBuilder::from_base(&stored, self.created)?,
                    Some(stored.manifest_digest),
                ))
            }
        }
    }

    /// An image from the store by the name a Dockerfile gives it, for the stage's platform.
    pub(super) fn stored_image(&self, name: &str) -> Result<StoredImage, BaseError> {
        let reference: Reference = name.parse()?;
        // Like docker and buildah: use the stored image when there is one for the platform,
        // else pull it.
        let stored = self
            .store
            .resolve(&reference.to_string())
            .ok()
            .and_then(|d| StoredImage::load_for(self.store, &d, &self.platform).ok());
        if let Some(img) = &stored {
            if platform_matches(img, &self.platform) {
                return Ok(img.clone());
            }
        }
        self.progress.info(format!(
            "pulling {} for {}",
            reference.familiar(),
            self.platform
        ));
        let digest = (self.hooks.pull)(&reference, &self.platform, self.progress).map_err(|e| {
            match stored {
                // Say why a stored image was not enough before the pull's own error.
                Some(_) => BaseError::PullOther {
                    reference: reference.to_string(),
                    platform: self.platform.clone(),
                    source: e,
                },
                None => BaseError::Pull {
                    reference: reference.to_string(),
                    source: e,
                },
            }
        })?;
        let img = StoredImage::load_for(self.store, &digest, &self.platform)?;
        if !platform_matches(&img, &self.platform) {
            return Err(BaseError::NoPlatform {
                reference: reference.to_string(),
                platform: self.platform.clone(),
            });
        }
        Ok(img)
    }

    fn step(&mut self, img: &mut ImageBuilder, step: &Step, id: &str) -> Result<(), BuildError> {
        let created_by = step.original.trim().to_string();
        match &step.kind {
            StepKind::Env { vars } => vars.iter().for_each(|(k, v)| img.set_env(k, v)),
            StepKind::Label { labels } => labels.iter().for_each(|(k, v)| img.set_label(k, v)),
            // ARG values live in the plan; Docker records no history for them.
            StepKind::Arg { .. } => return Ok(()),
            StepKind::Workdir { path } => return self.workdir(img, step.span, path, &created_by),
            StepKind::User { user } => img.set_user(user),
            StepKind::Expose { ports } => ports.iter().for_each(|p| img.expose(p)),
            StepKind::Volume { paths } => paths.iter().for_each(|p| img.add_volume(p)),
            StepKind::Cmd { command } => img.set_cmd(argv(img, command)),
            StepKind::Entrypoint { command } => img.set_entrypoint(argv(img, command)),
            StepKind::Shell { shell } => img.set_shell(shell.clone()),
            StepKind::Stopsignal { signal } => img.set_stop_signal(signal),
            StepKind::Healthcheck { health } => img.set_healthcheck(healthcheck(health)),
            StepKind::Onbuild { expression } => img.add_on_build(expression),
            StepKind::Maintainer { name } => img.set_author(name),
            StepKind::Copy {
                sources,
                dest,
                from,
                chown,
                chmod,
                parents,
                exclude,
                // Accepted: every COPY layer already holds only the copied files, independent
                // of the base, which is what --link asks for.
                link: _,
            } => {
                let spec = CopySpec {
                    sources,
                    dest,
                    from,
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    exclude,
                    parents: *parents,
                    add: None,
                };
                return self.copy(img, step.span, &spec, &created_by);
            }
            StepKind::Add {
                sources,
                dest,
                chown,
                chmod,
                exclude,
                checksum,
                unpack,
                keep_git_dir,
                link: _,
            } => {
                let spec = CopySpec {
                    sources,
                    dest,
                    from: &CopyFrom::Context,
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    exclude,
                    parents: false,
                    add: Some(AddSpec {
                        checksum: checksum.as_deref(),
                        unpack: *unpack,
                        keep_git_dir: *keep_git_dir,
                    }),
                };
                return self.copy(img, step.span, &spec, &created_by);
            }
            StepKind::Run {
                program,
                mounts,
                network,
                insecure,
                proxy_env,
                ..
            } => {
                let args = RunArgs {
                    program,
                    mounts,
                    network: *network,
                    insecure: *insecure,
                    proxy_env,
                };
                return self.run_step(img, step, &args, id);
            }
        }
        img.add_empty_step(&created_by);
        Ok(())
    }

    /// Each layer of the image unpacked in the store, top layer first (for metadata lookups).
    pub(super) fn unpacked_layers(
        &self,
        layers: &[BuildLayer],
    ) -> Result<Vec<PathBuf>, BuildError> {
        // Cache hits leave their layers in the registry until a step needs their files.
        let blobs: Vec<Layer> = layers.iter().filter_map(|l| l.blob().copied()).collect();
        self.env.remote.ensure(&blobs, self.progress)?;
        let mut dirs = Vec::with_capacity(layers.len());
        for l in layers.iter().rev() {
            let dir = match l {
                BuildLayer::Blob(l) => self.store.ensure_unpacked(&l.diff_id, |tmp| {
                    let blob = self
                        .store
                        .open_blob(&l.digest)
                        .map_err(std::io::Error::other)?;
                    rootless::unpack(self.sandbox, blob, tmp)
                })?,
                BuildLayer::Unpacked { diff_id, .. } if self.store.is_unpacked(diff_id) => {
                    self.store.layer_dir(diff_id)
                }
                BuildLayer::Unpacked { diff_id, .. } => {
                    return Err(image::ImageError::LayerDirGone(*diff_id).into());
                }
            };
            dirs.push(dir);
        }
        Ok(dirs)
    }

    fn run_step(
        &mut self,
        img: &mut ImageBuilder,
        step: &Step,
        args: &RunArgs,
        id: &str,
    ) -> Result<(), BuildError> {
        let created_by = step.original.trim();
        platform::check_can_run(&self.platform).map_err(|e| super::step_failed(step.span, *e))?;
        self.announce_isolation(step.span)?;
        let mut lower_dirs = self.unpacked_layers(img.layers())?;
        // Overlay ignores an opaque mark on a lower dir's root: the layers it hides go here.
        lower_dirs.truncate(layer::visible_layers(&lower_dirs).len());
        // Locked while the step lives: a killed build's dir is found and removed later.
        let scratch = self.store.scratch_dir("run-")?;
        let upper_dir = scratch.path().join("upper");
        std::fs::create_dir(&upper_dir).map_err(|source| BuildError::Io {
            action: "creating the RUN step's upper dir",
            source,
        })?;
        let cfg = img.config();
        // `--mount=type=bind,from=X`: X's files, unpacked for the step (dropped after it).
        let trees = self.mount_trees(args.mounts, step.span)?;
        let from_trees: HashMap<String, &Context> =
            trees.iter().map(|(f, t)| (f.clone(), t.tree())).collect();
        let env = RunEnv {
            id: id.to_string(),
            lower_dirs,
            upper_dir: upper_dir.clone(),
            scratch: scratch.path(),
            config_env: &cfg.env,
            args_used: &step.args_used,
            user: cfg.user.clone().filter(|u| !u.is_empty()),
            workdir: cfg.working_dir.clone().filter(|w| !w.is_empty()),
            default_network: self.req.network,
            context: self.context,
            from_trees: &from_trees,
            cache_root: self.store.root().join("cache/mounts"),
            secrets: &self.req.secrets,
            ssh: &self.req.ssh,
        };
        // The ssh agent relays live until the step is over.
        let mut agents = Vec::new();
        let spec =
            run::spec(args, &env, &mut agents).map_err(|e| super::step_failed(step.span, e))?;
        let outcome = self
            .sandbox
            .run_step(&spec, self.progress)
            .map_err(|e| super::step_failed(step.span, e))?;
        drop(agents);
        if !outcome.success() {
            return Err(super::step_failed(
                step.span,
                run::failure(&step.original, &outcome),
            ));
        }
        let opts = self.layer_options();
        if !self.layers_leave && rootless::run_dir_retars(self.sandbox, &outcome) {
            // Only hashed (the diffID), never compressed: the upper dir is the layer.
            let plain = LayerOptions {
                encoding: layer::Encoding::plain(),
                ..opts.clone()
            };
            let tar = rootless::write_run_layer(
                self.sandbox,
                &upper_dir,
                &outcome,
                plain,
                &mut std::io::sink(),
            )
            .map_err(|e| super::step_failed(step.span, e))?;
            if self.keep_unpacked(img, tar.diff_id, tar.size, &upper_dir, created_by)? {
                return Ok(());
            }
        }
        let mut w = self.store.begin_blob()?;
        let blob = rootless::write_run_layer(self.sandbox, &upper_dir, &outcome, opts, &mut w)
            .map_err(|e| super::step_failed(step.span, e))?;
        w.commit(Some(&blob.digest))?;
        if rootless::upper_is_a_layer_dir(&outcome) {
            // The upper dir is the layer unpacked: kept, for the next step to stack.
            self.store.adopt_layer_dir(&blob.diff_id, &upper_dir)?;
        }
        img.add_layer(Layer::from(blob), created_by);
        self.layers_built += 1;
        Ok(())
    }

    /// The trees a RUN's `--mount=type=bind,from=X` mounts read from, by `X`.
    fn mount_trees(
        &self,
        mounts: &[Mount],
        span: Span,
    ) -> Result<Vec<(String, SourceTree<'a>)>, BuildError> {
        let mut trees: Vec<(String, SourceTree<'a>)> = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            let Some(from) = &m.from else { continue };
            if trees.iter().any(|(f, _)| f == from) {
                continue;
            }
            let source = match m.from_stage {
                Some(i) => CopyFrom::Stage(i),
                None => CopyFrom::Image(from.clone()),
            };
            trees.push((from.clone(), self.source_tree(&source, span)?.0));
        }
        Ok(trees)
    }

    /// What a RUN's bind mounts read, for its cache key (as BuildKit keys them): the context
    /// files under each context bind's source, the stage's last key or the image's manifest
    /// for `from=`. None without bind mounts.
    fn mount_sources(
        &self,
        mounts: &[Mount],
        span: Span,
    ) -> Result<Option<SourceDigest>, BuildError> {
        let mut files = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            let label = format!("bind {}", m.target);
            match (&m.from, m.from_stage) {
                (None, _) => {
                    let Some(ctx) = self.context else { continue };
                    let source = m.source.as_deref().unwrap_or("");
                    // A source that is missing or outside is the step's error to report.
                    let Ok(real) = run::bind_path(ctx, source, "the build context") else {
                        continue;
                    };
                    let found = cache::context_sources(ctx, &[real])?;
                    files.extend(
                        found
                            .files
                            .into_iter()
                            .map(|(p, d)| (format!("{label}: {p}"), d)),
                    );
                }
                (Some(_), Some(i)) => {
                    if let Some(key) = self.stage_keys.get(&i) {
                        files.push((format!("{label}: stage {i}"), *key));
                    }
                }
                (Some(name), None) => {
                    let stored = self
                        .stored_image(name)
                        .map_err(|e| super::step_failed(span, e))?;
                    files.push((format!("{label}: image {name}"), stored.manifest_digest));
                }
            }
        }
        Ok((!files.is_empty()).then(|| SourceDigest::of_files(files)))
    }

    /// Says once, before the first RUN, which isolation steps get and why.
    fn announce_isolation(&self, span: Span) -> Result<(), BuildError> {
        if !self.env.announced_isolation.swap(true, Ordering::SeqCst) {
            let probe = self
                .sandbox
                .probe()
                .map_err(|e| super::step_failed(span, e))?;
            self.progress.info(
                format!(
                    "RUN steps use {:?} isolation: {}",
                    probe.isolation, probe.reason
                )
                .to_lowercase(),
            );
        }
        Ok(())
    }

    /// Adds the layer a step made as `dir` (in its scratch dir) without a blob: the dir is
    /// moved into the store as the unpacked layer. False when it could not be (a rename
    /// refused): the caller writes the blob after all.
    fn keep_unpacked(
        &mut self,
        img: &mut ImageBuilder,
        diff_id: Digest,
        size: u64,
        dir: &std::path::Path,
        created_by: &str,
    ) -> Result<bool, BuildError> {
        self.store.adopt_layer_dir(&diff_id, dir)?;
        if !self.store.is_unpacked(&diff_id) {
            return Ok(false);
        }
        img.add_layer(BuildLayer::Unpacked { diff_id, size }, created_by);
        self.layers_built += 1;
        Ok(true)
    }

    /// A COPY layer of a stage whose layers never leave the build, kept only as the tree it
    /// is unpacked into while its tar is hashed (nothing compressed). False when the tree
    /// cannot stand for the layer (see [`rootless::copy_dir_retars`]) or was not made.
    fn copy_unpacked(
        &mut self,
        img: &mut ImageBuilder,
        entries: &[LayerEntry],
        created_by: &str,
    ) -> Result<bool, BuildError> {
        // A hard link's tar entry names the path it links to, which a walk of the tree
        // need not find first: such a layer keeps the tar it was made as.
        let links = entries
            .iter()
            .any(|e| matches!(e.source, layer::EntrySource::Hardlink { .. }));
        if self.layers_leave || links || !rootless::copy_dir_retars(self.sandbox) {
            return Ok(false);
        }
        let opts = LayerOptions {
            encoding: layer::Encoding::plain(),
            ..self.layer_options()
        };
        let (tar, _scratch, tree) = self.write_teed(entries.to_vec(), &opts, std::io::sink())?;
        let Some(tree) = tree else { return Ok(false) };
        self.keep_unpacked(img, tar.diff_id, tar.size, &tree, created_by)
    }

    /// Writes `entries` as a layer to `out` and unpacks its tar, as it is written, into a
    /// fresh tree in a scratch dir (removed with the returned guard unless the tree is moved
    /// out first). The tree is None when unpacking failed: the layer is still written.
    fn write_teed(
        &self,
        entries: Vec<LayerEntry>,
        opts: &LayerOptions,
        out: impl std::io::Write,
    ) -> Result<(layer::LayerBlob, crate::store::ScratchDir, Option<PathBuf>), BuildError> {
        let scratch = self.store.scratch_dir("copy-")?;
        let tree = scratch.path().join("layer");
        std::fs::create_dir(&tree).map_err(|source| BuildError::Io {
            action: "creating the COPY step's layer dir",
            source,
        })?;
        let sandbox = self.sandbox;
        let (blob, unpacked) = layer::write_entries_teed(entries, opts, out, |tar| {
            rootless::unpack(sandbox, tar, &tree)
        })?;
        Ok((blob, scratch, unpacked.is_ok().then_some(tree)))
    }

    pub(super) fn add_layer(
        &mut self,
        img: &mut ImageBuilder,
        entries: Vec<LayerEntry>,
        created_by: &str,
    ) -> Result<(), BuildError> {
        if self.layer_read_later && self.copy_unpacked(img, &entries, created_by)? {
            return Ok(());
        }
        let opts = self.layer_options();
        let mut w = self.store.begin_unhashed_blob()?;
        if !self.layer_read_later {
            let blob = layer::write_entries(entries, &opts, &mut w)?;
            w.commit(&blob.digest)?;
            img.add_layer(Layer::from(blob), created_by);
            self.layers_built += 1;
            return Ok(());
        }
        // Unpacked from the tar as it is written, then kept as the layer's directory.
        let (blob, _scratch, tree) = self.write_teed(entries, &opts, &mut w)?;
        w.commit(&blob.digest)?;
        // A tree that failed is left to the scratch dir: a step that needs the layer unpacks
        // it from the blob, and reports what fails then.
        if let Some(tree) = tree {
            self.store.adopt_layer_dir(&blob.diff_id, &tree)?;
        }
        img.add_layer(Layer::from(blob), created_by);
        self.layers_built += 1;
        Ok(())
    }
}

/// CMD/ENTRYPOINT in shell form run through the stage's SHELL.
fn argv(img: &ImageBuilder, command: &CommandLine) -> Vec<String> {
    match command {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = img
                .config()
                .shell
                .clone()
                .unwrap_or_else(|| DEFAULT_SHELL.map(String::from).to_vec());
            v.push(s.clone());
            v
        }
    }
}

fn healthcheck(h: &Healthcheck) -> image::Healthcheck {
    let nanos = |d: &Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as i64);
    match h {
        Healthcheck::None => image::Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match test {
                CommandLine::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                CommandLine::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            image::Healthcheck {
                test,
                interval: nanos(interval),
                timeout: nanos(timeout),
                start_period: nanos(start_period),
                start_interval: nanos(start_interval),
                retries: retries.map_or(0, i64::from),
            }
        }
    }
}

/// Steps that stack the image's unpacked layers (RUN mounts them, COPY and ADD look up
/// the image's paths in them).
fn reads_layers(step: &Step) -> bool {
    matches!(
        step.kind,
        StepKind::Copy { .. } | StepKind::Add { .. } | StepKind::Run { .. }
    )
}

/// Steps that write a layer go through the cache; metadata steps are cheaper to redo.
fn writes_layer(step: &Step) -> bool {
    match &step.kind {
        StepKind::Copy { .. } | StepKind::Add { .. } | StepKind::Run { .. } => true,
        StepKind::Workdir { path } => super::workdir::creates_layer(path),
        _ => false,
    }
}
