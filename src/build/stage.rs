//! Runs one stage: its base, then each step in order, into an [`ImageBuilder`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::cache::{self, BuildCache, CachedStep, SourceDigest, StepInputs};
use super::context::Context;
use super::copy;
use super::copy_step::CopySpec;
use super::run::{self, RunArgs, RunEnv};
use super::{BuildError, BuildRequest, Hooks};
use crate::Digest;
use crate::dockerfile::{CommandLine, Healthcheck, Span};
use crate::image::{self, ImageBuilder, Layer, StoredImage};
use crate::layer::{self, DiffKind, LayerEntry, LayerOptions, Ownership, UnpackOptions};
use crate::plan::{Base, CopyFrom, SourceSpec, Stage, Step, StepKind};
use crate::progress::{Event, Progress};
use crate::reference::Reference;
use crate::sandbox::Sandbox;
use crate::store::Store;

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds stages one after another, keeping each finished stage for later `FROM`/`--from`.
pub(crate) struct Runner<'a> {
    pub(super) store: &'a Store,
    pub(super) sandbox: &'a Sandbox,
    pub(super) hooks: &'a Hooks<'a>,
    pub(super) cache: BuildCache<'a>,
    /// The last cache key of each finished stage (`FROM stage` and `COPY --from` build on it).
    pub(super) stage_keys: HashMap<usize, Digest>,
    /// Identifies this Dockerfile in this context, for explaining cache misses.
    pub(super) slot_prefix: String,
    pub(super) announced_isolation: bool,
    pub(super) req: &'a BuildRequest,
    pub(super) context: Option<&'a Context>,
    pub(super) progress: &'a Progress,
    pub(super) created: DateTime<Utc>,
    pub(super) platform: image::Platform,
    pub(super) done: HashMap<usize, ImageBuilder>,
    pub(super) layers_built: usize,
    /// The latest build time among the cache hits (see [`Runner::take`]).
    pub(super) newest_hit: Option<i64>,
}

pub(super) fn step_err(span: Span, message: impl Into<String>) -> BuildError {
    BuildError::Step {
        span,
        message: message.into(),
    }
}

impl<'a> Runner<'a> {
    pub(crate) fn new(
        store: &'a Store,
        sandbox: &'a Sandbox,
        hooks: &'a Hooks<'a>,
        req: &'a BuildRequest,
        context: Option<&'a Context>,
        progress: &'a Progress,
        created: DateTime<Utc>,
    ) -> Self {
        let platform = image::Platform::host();
        Runner {
            store,
            sandbox,
            hooks,
            cache: BuildCache::open(store, req.no_cache),
            stage_keys: HashMap::new(),
            slot_prefix: format!(
                "{}:{}",
                context
                    .map(|c| c.root().display().to_string())
                    .unwrap_or_default(),
                req.dockerfile_name
            ),
            announced_isolation: false,
            newest_hit: None,
            req,
            context,
            progress,
            created,
            platform,
            done: HashMap::new(),
            layers_built: 0,
        }
    }

    pub(crate) fn layers_built(&self) -> usize {
        self.layers_built
    }

    /// The finished image of stage `index` (which must have been run). When no layer was
    /// written, every layer came from the cache: the image is stamped with the time those
    /// layers were built, so an unchanged rebuild reproduces the first build's digest
    /// (`SOURCE_DATE_EPOCH`, when set, already fixes all times).
    pub(crate) fn take(&mut self, index: usize) -> ImageBuilder {
        let mut img = self
            .done
            .remove(&index)
            .expect("the target stage was built");
        if let (0, None, Some(t)) = (
            self.layers_built,
            self.req.source_date_epoch,
            self.newest_hit,
        ) {
            if let Some(t) = DateTime::from_timestamp(t, 0) {
                img.restamp(t);
            }
        }
        img
    }

    pub(crate) fn run(&mut self, stage: &Stage) -> Result<(), BuildError> {
        let (mut img, base) = self.base(stage)?;
        let mut parent = BuildCache::stage_root(
            base.as_ref(),
            self.req.compression.into(),
            self.req.source_date_epoch,
        );
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        for (i, step) in stage.steps.iter().enumerate() {
            let id = format!("{}.{}", stage.index, i + 1);
            let name = format!(
                "[{label} {}/{}] {}",
                i + 1,
                stage.steps.len(),
                step.original.trim()
            );
            self.progress.send(Event::StepStarted {
                id: id.clone(),
                name,
            });
            let t0 = Instant::now();
            let sources = self.sources(step)?;
            let key = BuildCache::key(&parent, step, sources.as_ref());
            let cached = if writes_layer(step) {
                let slot = format!("{}:{}:{}", self.slot_prefix, stage.index, i);
                self.cached_step(
                    &mut img,
                    step,
                    &key,
                    &slot,
                    StepInputs::new(&parent, step, sources.as_ref()),
                    &id,
                )?
            } else {
                self.step(&mut img, step)?;
                false
            };
            parent = key;
            let millis = t0.elapsed().as_millis() as u64;
            self.progress.send(Event::StepDone { id, cached, millis });
        }
        self.stage_keys.insert(stage.index, parent);
        self.done.insert(stage.index, img);
        Ok(())
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
        if let Some(hit) = self.cache.lookup(key) {
            self.newest_hit = self.newest_hit.max(Some(hit.created));
            match hit.layer {
                Some(layer) => img.add_layer(layer, &hit.created_by),
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
        self.step(img, step)?;
        let layer = (img.layers().len() > layers_before)
            .then(|| *img.layers().last().expect("a layer was added"));
        let record = CachedStep {
            created: self.created.timestamp(),
            layer,
            created_by: step.original.trim().to_string(),
        };
        // A cache that cannot be written only costs time on the next build.
        if let Err(e) = self
            .cache
            .record(key, &record)
            .and_then(|()| self.cache.remember(slot, &inputs))
        {
            self.progress
                .warn(format!("could not record the build cache: {e}"));
        }
        Ok(false)
    }

    /// The content identity of what a COPY/ADD reads (None for other steps): per-file digests
    /// for the context (served by the stat cache), the source stage's key or image manifest
    /// for `--from`.
    fn sources(&self, step: &Step) -> Result<Option<SourceDigest>, BuildError> {
        let (sources, from) = match &step.kind {
            StepKind::Copy { sources, from, .. } => (sources, from),
            StepKind::Add { sources, .. } => (sources, &CopyFrom::Context),
            _ => return Ok(None),
        };
        match from {
            CopyFrom::Stage(i) => Ok(self.stage_keys.get(i).copied().map(SourceDigest::opaque)),
            CopyFrom::Image(name) => {
                let stored = self
                    .stored_image(name)
                    .map_err(|m| step_err(step.span, m))?;
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
                    .clone();
                Ok((img, self.stage_keys.get(i).copied()))
            }
            Base::Image(name) => {
                let stored = self
                    .stored_image(name)
                    .map_err(|m| step_err(stage.span, m))?;
                Ok((
                    ImageBuilder::from_base(&stored, self.created)?,
                    Some(stored.manifest_digest),
                ))
            }
        }
    }

    /// An image from the store by the name a Dockerfile gives it.
    pub(super) fn stored_image(&self, name: &str) -> Result<StoredImage, String> {
        let reference: Reference = name.parse().map_err(|e| format!("{e}"))?;
        // Like docker and buildah: use the stored image when there is one, else pull it.
        let digest = match self.store.resolve(&reference.to_string()) {
            Ok(d) => d,
            Err(_) => {
                self.progress
                    .info(format!("pulling {}", reference.familiar()));
                (self.hooks.pull)(&reference, self.progress)
                    .map_err(|e| format!("pulling {reference}: {e}"))?
            }
        };
        StoredImage::load_for(self.store, &digest, &self.platform).map_err(|e| e.to_string())
    }

    fn step(&mut self, img: &mut ImageBuilder, step: &Step) -> Result<(), BuildError> {
        let created_by = step.original.trim().to_string();
        match &step.kind {
            StepKind::Env { vars } => vars.iter().for_each(|(k, v)| img.set_env(k, v)),
            StepKind::Label { labels } => labels.iter().for_each(|(k, v)| img.set_label(k, v)),
            // ARG values live in the plan; Docker records no history for them.
            StepKind::Arg { .. } => return Ok(()),
            StepKind::Workdir { path } => img.set_working_dir(path),
            StepKind::User { user } => img.set_user(user),
            StepKind::Expose { ports } => ports.iter().for_each(|p| img.expose(p)),
            StepKind::Volume { paths } => paths.iter().for_each(|p| img.add_volume(p)),
            StepKind::Cmd { command } => img.set_cmd(argv(img, command)),
            StepKind::Entrypoint { command } => img.set_entrypoint(argv(img, command)),
            StepKind::Shell { shell } => img.set_shell(shell.clone()),
            StepKind::Stopsignal { signal } => img.set_stop_signal(signal),
            StepKind::Healthcheck { health } => img.set_healthcheck(healthcheck(health)),
            StepKind::Onbuild { expression } => img.add_on_build(expression),
            StepKind::Maintainer { .. } => {}
            StepKind::Copy {
                sources,
                dest,
                from,
                chown,
                chmod,
                parents,
                exclude,
                ..
            } => {
                if *parents {
                    return Err(step_err(
                        step.span,
                        "COPY --parents is not supported by kiln yet",
                    ));
                }
                let spec = CopySpec {
                    sources,
                    dest,
                    from,
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    exclude,
                };
                return self.copy(img, step.span, &spec, &created_by);
            }
            StepKind::Add {
                sources,
                dest,
                chown,
                chmod,
                exclude,
                ..
            } => {
                self.check_add_sources(sources, step.span)?;
                let spec = CopySpec {
                    sources,
                    dest,
                    from: &CopyFrom::Context,
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    exclude,
                };
                return self.copy(img, step.span, &spec, &created_by);
            }
            StepKind::Run {
                program,
                mounts,
                network,
                proxy_env,
                ..
            } => {
                let args = RunArgs {
                    program,
                    mounts,
                    network: *network,
                    proxy_env,
                };
                return self.run_step(img, step, &args, &created_by);
            }
        }
        img.add_empty_step(&created_by);
        Ok(())
    }

    /// Each layer of the image unpacked in the store, top layer first (for metadata lookups).
    pub(super) fn unpacked_layers(&self, layers: &[Layer]) -> Result<Vec<PathBuf>, BuildError> {
        let mut dirs = Vec::with_capacity(layers.len());
        for l in layers.iter().rev() {
            let digest = l.digest;
            let dir = self.store.ensure_unpacked(&l.diff_id, |tmp| {
                let blob = self
                    .store
                    .open_blob(&digest)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                layer::unpack_layer(blob, tmp, &unpack_options())
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })?;
            dirs.push(dir);
        }
        Ok(dirs)
    }

    fn run_step(
        &mut self,
        img: &mut ImageBuilder,
        step: &Step,
        args: &RunArgs,
        created_by: &str,
    ) -> Result<(), BuildError> {
        self.announce_isolation(step.span)?;
        let lower_dirs = self.unpacked_layers(img.layers())?;
        let scratch = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.store.root())
            .map_err(|source| BuildError::Io {
                action: "creating the RUN step's scratch dir in the store",
                source,
            })?;
        let upper_dir = scratch.path().join("upper");
        std::fs::create_dir(&upper_dir).map_err(|source| BuildError::Io {
            action: "creating the RUN step's upper dir",
            source,
        })?;
        let cfg = img.config();
        let env = RunEnv {
            id: created_by.to_string(),
            lower_dirs,
            upper_dir: upper_dir.clone(),
            scratch: scratch.path(),
            config_env: &cfg.env,
            args_used: &step.args_used,
            user: cfg.user.clone().filter(|u| !u.is_empty()),
            workdir: cfg.working_dir.clone().filter(|w| !w.is_empty()),
            default_network: self.req.network,
            context: self.context.map(|c| c.root()),
            cache_root: self.store.root().join("cache/mounts"),
        };
        let spec = run::spec(args, &env).map_err(|m| step_err(step.span, m))?;
        let outcome = self
            .sandbox
            .run_step(&spec, self.progress)
            .map_err(|e| step_err(step.span, e.to_string()))?;
        if !outcome.success() {
            return Err(step_err(step.span, run::failure(&step.original, &outcome)));
        }
        let opts = LayerOptions {
            compression: self.req.compression,
            source_date_epoch: self.req.source_date_epoch,
            id_map: run::layer_id_map(&outcome.id_map),
        };
        let mut w = self.store.begin_blob()?;
        let blob = layer::write_layer(&upper_dir, DiffKind::OverlayUpper, &opts, &mut w)?;
        w.commit(Some(&blob.digest))?;
        img.add_layer(Layer::from(blob), created_by);
        self.layers_built += 1;
        Ok(())
    }

    /// Says once, before the first RUN, which isolation steps get and why.
    fn announce_isolation(&mut self, span: Span) -> Result<(), BuildError> {
        if !self.announced_isolation {
            let probe = self
                .sandbox
                .probe()
                .map_err(|e| step_err(span, e.to_string()))?;
            self.progress.info(
                format!(
                    "RUN steps use {:?} isolation: {}",
                    probe.isolation, probe.reason
                )
                .to_lowercase(),
            );
            self.announced_isolation = true;
        }
        Ok(())
    }

    pub(super) fn add_layer(
        &mut self,
        img: &mut ImageBuilder,
        entries: Vec<LayerEntry>,
        created_by: &str,
    ) -> Result<(), BuildError> {
        let opts = LayerOptions {
            compression: self.req.compression,
            source_date_epoch: self.req.source_date_epoch,
            id_map: None,
        };
        let mut w = self.store.begin_blob()?;
        let blob = layer::write_entries(entries, &opts, &mut w)?;
        w.commit(Some(&blob.digest))?;
        img.add_layer(Layer::from(blob), created_by);
        self.layers_built += 1;
        Ok(())
    }
}

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

/// Steps that write a layer go through the cache; metadata steps are cheaper to redo.
fn writes_layer(step: &Step) -> bool {
    matches!(
        step.kind,
        StepKind::Copy { .. } | StepKind::Add { .. } | StepKind::Run { .. }
    )
}
