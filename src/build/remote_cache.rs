//! The registry build cache (`--cache-from REF` / `--cache-to REF`): the step records of a build
//! shared through an OCI registry, so CI runners and build pods with empty stores reuse each
//! other's layers.
//!
//! API:
//! - [`CacheRegistry`]: the registry operations the cache needs, implemented by the caller
//!   (the CLI, over its registry client and credentials), so this module knows nothing of
//!   tokio, HTTP or credentials.
//! - [`RemoteCache`]: what the caller puts in [`super::Hooks`]: the registry, the REFs, the
//!   export [`ExportMode`] and whether hit layers may stay in the registry.
//! - [`Session`] (used by `stage.rs`/`copy_step.rs`/`mod.rs`): [`Session::open`] imports
//!   every `--cache-from` REF once per build (the platforms of a multi-platform build share
//!   the read through [`Imports`]); [`Session::fetch`] serves a local miss from them;
//!   [`Session::ensure`] downloads the layers a step needs the files of (`ensure_all` those
//!   of the image to be named); [`Session::note`] remembers each
//!   record the build used or produced; [`Session::export`] merges them into `--cache-to`.
//!
//! **Lazy layers.** A hit's layer is not downloaded when the hit is found: only when a later
//! step needs its files (a RUN's lower dirs, a COPY's destination tree, a `COPY --from` or
//! `RUN --mount=from=` source: [`Session::ensure`]), and at the end of the build when the
//! image is stored under its names (every layer of a named image is in the store). A caller
//! that only pushes the image sets [`RemoteCache::leave_layers`]: the image is then stored
//! unnamed and the push mounts the layers from the cache repository (the CLI falls back to a
//! download and upload when the registry does not mount). That caller also pulls base images
//! without their layers, which [`Session::ensure`] gets through
//! [`CacheRegistry::pull_base_layer`] when a step needs them. So an unchanged build on a fresh
//! runner reads only manifests and configs. A layer's diffID is checked when
//! it is downloaded; one that is never downloaded is trusted as the cache recorded it (a
//! mounted blob is verified by the registry against its digest only). Because a lazy hit has
//! already been used when its layer is fetched, a layer that turns out missing or damaged
//! then fails the build (naming the REF) instead of rebuilding the step.
//!
//! One REF is one tag holding one OCI image manifest (like BuildKit's `type=registry`, but with
//! our own keys): `artifactType` [`ARTIFACT_TYPE`], a config blob of media type
//! [`CONFIG_TYPE`] that lists the records as [`CacheConfig`], and `layers` naming every layer
//! blob a record uses, so the registry keeps them (garbage collection follows manifests) and a
//! later export can skip or mount what is already there. distribution 2.8 ignores
//! `artifactType` (it predates it) but accepts the custom config type, which is how tools tell
//! the manifest apart there.
//!
//! **Export merges.** An export keeps what the REF held: this build's records first, then the
//! earlier ones it did not use, most recently exported first, cut to [`MAX_RECORDS`] records
//! and [`MAX_LAYER_BYTES`] bytes of distinct layers (compressed) by dropping the oldest; this
//! build's own records are always kept. So builds of different targets, branches or stages
//! sharing one REF do not evict each other's steps. A REF holding something that is not a kiln
//! cache is never overwritten.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::cache::{BuildCache, CachedStep};
use crate::digest::Digest;
use crate::error_chain::Causes;
use crate::image::{BuildLayer, Compression, ImageFormat, Layer};
use crate::manifest::{self, ManifestError, OCI_MANIFEST, Parsed};
use crate::progress::Progress;
use crate::store::{Store, StoreError};

/// The cache manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// The media type of the cache manifest's config blob (the record list).
pub const CONFIG_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// Bumped when the record format changes; other versions are ignored, not misread.
const FORMAT_VERSION: u32 = 1;
/// A record list larger than this is refused (a build with thousands of steps is ~1 MiB).
const MAX_CONFIG: u64 = 32 << 20;
/// Most step records one REF keeps (about 400 bytes each in the record list).
pub const MAX_RECORDS: usize = 5000;
/// Most bytes of distinct (compressed) layers one REF keeps: older records go beyond it.
pub const MAX_LAYER_BYTES: u64 = 20 << 30;
/// Layers downloaded at once when the image is completed at the end of a build.
const FETCHES_AT_ONCE: usize = 4;
/// `--cache-from` REFs read at once when the build starts.
const IMPORTS_AT_ONCE: usize = 4;

/// The error of a [`CacheRegistry`] operation: the caller's own typed error, which names the
/// registry and the REF (never a credential). Boxed so this module needs no registry client;
/// kept whole as the cause of the error it ends up in.
pub type RegistryFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The registry operations the cache needs.
pub trait CacheRegistry: Sync {
    /// The manifest tagged `cache_ref`, or `Ok(None)` when the registry has none there.
    fn get_manifest(&self, cache_ref: &str) -> Result<Option<Vec<u8>>, RegistryFailure>;
    /// Streams blob `digest` (`size` bytes) of `cache_ref`'s repository into `store`,
    /// committed only once its digest is verified.
    fn pull_blob(
        &self,
        cache_ref: &str,
        digest: &Digest,
        size: u64,
        store: &Store,
    ) -> Result<(), RegistryFailure>;
    /// Pushes the OCI manifest `manifest` to `cache_ref`: its config and layer blobs first
    /// (skipped or mounted when the registry has them; a layer missing from `store`, left in
    /// a `--cache-from` repository, is mounted from there or downloaded), then the manifest.
    fn push(&self, cache_ref: &str, manifest: &[u8], store: &Store) -> Result<(), RegistryFailure>;
    /// Downloads into `store` a layer of a base image the caller pulled without its layers
    /// (it does so when the image is only pushed: see [`RemoteCache::leave_layers`]); `None`
    /// when it knows of no such layer.
    fn pull_base_layer(
        &self,
        _digest: &Digest,
        _size: u64,
        _store: &Store,
    ) -> Option<Result<(), RegistryFailure>> {
        None
    }
}

/// How much of a build `--cache-to` exports (BuildKit's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// Every step of every stage the build ran (BuildKit's `mode=max`), so a build of
    /// another target, or one whose early stage changed, still finds the other stages.
    #[default]
    Max,
    /// Only the steps whose layers the built image holds, and steps with no layer.
    Min,
}

/// The registry cache of a build, supplied by the caller in [`super::Hooks`].
pub struct RemoteCache<'a> {
    pub registry: &'a dyn CacheRegistry,
    /// `--cache-from` REFs, searched in this order on a local miss.
    pub from: Vec<String>,
    /// `--cache-to` REF, written after a successful build.
    pub to: Option<String>,
    pub mode: ExportMode,
    /// The caller only pushes the image, mounting layers from the cache repository: a hit's
    /// layer that no step needs then stays in the registry and the image is stored without
    /// its names (see the module docs). Otherwise such layers are downloaded at the end.
    pub leave_layers: bool,
    /// The `--cache-from` records, read by the first platform's session and shared by the
    /// others (`Default`: not read yet).
    pub imports: Imports,
}

/// The records of the `--cache-from` REFs, read once per build: by key, with the index of
/// the REF they came from (an earlier REF wins).
#[derive(Debug, Default)]
pub struct Imports(std::sync::OnceLock<HashMap<Digest, (usize, RemoteRecord)>>);

/// The record list in the cache manifest's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub version: u32,
    pub records: Vec<RemoteRecord>,
}

/// One step result: its cache key and what it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    pub key: Digest,
    pub created_by: String,
    pub created: i64,
    pub layer: Option<RemoteLayer>,
}

/// A layer blob as the manifest describes it, plus its diff ID (the uncompressed tar's digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// Why the layer of a cache hit could not be put in the store when a step needed it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry refused or broke off (the cause names the registry and the status).
    #[error(
        "layer {digest} of a step found in the cache at {cache_ref} cannot be downloaded; \
         export the cache again, or build with --no-cache"
    )]
    Download {
        digest: Digest,
        cache_ref: String,
        #[source]
        source: RegistryFailure,
    },
    #[error(
        "layer {digest} from the cache at {cache_ref} has diffID {actual}, not the {recorded} \
         its record claims: the cache is damaged; export it again, or build with --no-cache"
    )]
    DiffId {
        digest: Digest,
        cache_ref: String,
        actual: Digest,
        recorded: Digest,
    },
    #[error("cannot download layer {digest} of a base image pulled without its layers")]
    Base {
        digest: Digest,
        #[source]
        source: RegistryFailure,
    },
    #[error("reading layer {digest} from the cache at {cache_ref}")]
    Read {
        digest: Digest,
        cache_ref: String,
        #[source]
        source: crate::layer::LayerError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the cache at a REF cannot be read or written. Shown after the REF, as in
/// "cannot use the cache at REF, building without it: …".
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The registry operation failed; its error names the registry and the REF.
    #[error(transparent)]
    Registry(RegistryFailure),
    #[error("not a kiln cache manifest")]
    Manifest(#[source] ManifestError),
    #[error(
        "not a kiln cache ({found}); point --cache-from/--cache-to at a tag used only for the \
         cache"
    )]
    NotACache { found: NotACache },
    #[error("its record list is {size} bytes, over the {MAX_CONFIG} byte limit")]
    TooLarge { size: u64 },
    #[error(
        "it was written by a kiln with cache format {version} (this one reads \
         {FORMAT_VERSION}); export it again with this kiln"
    )]
    Version { version: u32 },
    #[error("reading its record list {digest}")]
    Read {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("its record list {digest} is not valid")]
    Records {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("storing the record list")]
    StoreRecords(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a REF holds instead of a kiln cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotACache {
    /// An index (a multi-platform image).
    Index,
    /// A manifest whose config has this media type (an image's, usually).
    Config(String),
}

impl std::fmt::Display for NotACache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotACache::Index => f.write_str("it is an image index"),
            NotACache::Config(t) => write!(f, "its config is {t:?}, not {CONFIG_TYPE}"),
        }
    }
}

impl RemoteRecord {
    fn from_step(key: Digest, step: &CachedStep) -> RemoteRecord {
        RemoteRecord {
            key,
            created_by: step.created_by.clone(),
            created: step.created,
            // `note` passes no layer without a blob, which would read as no layer at all.
            layer: step.blob().map(|l| RemoteLayer {
                digest: l.digest,
                diff_id: l.diff_id,
                size: l.size,
                media_type: ImageFormat::Oci
                    .layer_media_type(l.compression)
                    .expect("every compression has an OCI media type")
                    .to_string(),
            }),
        }
    }

    /// `None` when the layer's media type is not one we can use.
    fn to_step(&self) -> Option<CachedStep> {
        let layer = match &self.layer {
            None => None,
            Some(l) => Some(BuildLayer::Blob(Layer {
                digest: l.digest,
                size: l.size,
                diff_id: l.diff_id,
                compression: Compression::of_media_type(&l.media_type)?,
            })),
        };
        Some(CachedStep {
            layer,
            created_by: self.created_by.clone(),
            created: self.created,
        })
    }
}

/// The manifest and config blob that hold `records` (layers listed once each, in record order).
pub fn encode(records: &[RemoteRecord]) -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::to_vec(&CacheConfig {
        version: FORMAT_VERSION,
        records: records.to_vec(),
    })
    .expect("cache records serialise");
    let mut seen = BTreeSet::new();
    let layers: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| r.layer.as_ref())
        .filter(|l| seen.insert(l.digest))
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG_TYPE,
            "digest": Digest::of(&config),
            "size": config.len(),
        },
        "layers": layers,
    });
    (
        serde_json::to_vec(&manifest).expect("a manifest serialises"),
        config,
    )
}

/// What an export writes: this build's records (`new`, always kept), then the earlier
/// records of the REF (`old`, most recent first) that `new` does not have, while they fit in
/// `max_records` records and `max_bytes` bytes of distinct layers; the first older record
/// that does not fit and every one after it are dropped. Returns the records and how many
/// older ones were dropped.
pub fn merge(
    new: Vec<RemoteRecord>,
    old: Vec<RemoteRecord>,
    max_records: usize,
    max_bytes: u64,
) -> (Vec<RemoteRecord>, usize) {
    let mut keys: BTreeSet<Digest> = new.iter().map(|r| r.key).collect();
    let mut layers = BTreeSet::new();
    let mut bytes = 0u64;
    for l in new.iter().filter_map(|r| r.layer.as_ref()) {
        if layers.insert(l.digest) {
            bytes += l.size;
        }
    }
    let mut out = new;
    let mut dropped = 0;
    let mut full = false;
    for r in old {
        if !keys.insert(r.key) {
            continue;
        }
        let added = match &r.layer {
            Some(l) if !layers.contains(&l.digest) => l.size,
            _ => 0,
        };
        full = full || out.len() >= max_records || bytes + added > max_bytes;
        if full {
            dropped += 1;
            continue;
        }
        if let Some(l) = &r.layer {
            layers.insert(l.digest);
        }
        bytes += added;
        out.push(r);
    }
    (out, dropped)
}

/// The config descriptor of a cache manifest, or why it is not one. Read by the one manifest
/// reader, so a REF is a cache by the same rules the registry client reads images by.
fn config_descriptor(manifest: &[u8]) -> Result<(Digest, u64), CacheError> {
    let document = manifest::read(manifest, None).map_err(CacheError::Manifest)?;
    let config = match document.parsed {
        Parsed::Index { .. } => {
            return Err(CacheError::NotACache {
                found: NotACache::Index,
            });
        }
        Parsed::Image { config, .. } => config,
    };
    if config.media_type != CONFIG_TYPE {
        return Err(CacheError::NotACache {
            found: NotACache::Config(config.media_type),
        });
    }
    if config.size > MAX_CONFIG {
        return Err(CacheError::TooLarge { size: config.size });
    }
    Ok((config.digest, config.size))
}

/// A hit whose layer is still only in the registry.
#[derive(Debug, Clone)]
struct Lazy {
    /// Index of the `--cache-from` REF it came from.
    from: usize,
    layer: Layer,
    /// The steps it serves, recorded in the local cache once the layer is in the store.
    steps: Vec<(Digest, CachedStep)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry cache during one build. Without a [`RemoteCache`] every method is a no-op.
pub(crate) struct Session<'a> {
    remote: Option<&'a RemoteCache<'a>>,
    store: &'a Store,
    /// Imported records by key, with the index of the REF they came from.
    imported: Option<&'a HashMap<Digest, (usize, RemoteRecord)>>,
    /// What this build used or produced, in step order, each key once (for `--cache-to`).
    used: Mutex<Vec<RemoteRecord>>,
    /// Hits whose layers are not downloaded (yet), by layer digest.
    lazy: Mutex<HashMap<Digest, Lazy>>,
    /// Layers downloaded from the cache, and their bytes.
    fetched: AtomicUsize,
    fetched_bytes: AtomicU64,
}

impl<'a> Session<'a> {
    /// The registry cache for one platform of the build. The first session of a build reads
    /// every `--cache-from` REF ([`IMPORTS_AT_ONCE`] at a time; the other platforms' sessions
    /// wait for it and share what it read). A REF that does not exist is an info line, one
    /// that cannot be read a warning: the build goes on without it either way.
    /// `build_platform` calls it beside the base pulls.
    pub fn open(
        remote: Option<&'a RemoteCache<'a>>,
        store: &'a Store,
        progress: &Progress,
    ) -> Self {
        let imported = remote.map(|r| r.imports.0.get_or_init(|| import_all(r, store, progress)));
        Session {
            remote,
            store,
            imported,
            used: Mutex::new(Vec::new()),
            lazy: Mutex::new(HashMap::new()),
            fetched: AtomicUsize::new(0),
            fetched_bytes: AtomicU64::new(0),
        }
    }

    /// Serves `key` from an imported REF and says so on `progress`. The layer is not
    /// downloaded (see the module docs): the step is recorded in the local `cache` once it is.
    /// A layer already in the store is checked against the record's diffID first; a mismatch
    /// is a warning and a miss.
    pub fn fetch(
        &self,
        key: &Digest,
        cache: &BuildCache,
        step_name: &str,
        progress: &Progress,
    ) -> Option<CachedStep> {
        if cache.is_disabled() {
            return None;
        }
        let (remote, (from, record)) = (self.remote?, self.imported?.get(key)?);
        let cache_ref = &remote.from[*from];
        let step = record.to_step()?;
        match &step.blob() {
            Some(layer) if !self.store.has_blob(&layer.digest) => {
                lock(&self.lazy)
                    .entry(layer.digest)
                    .or_insert_with(|| Lazy {
                        from: *from,
                        layer: *layer,
                        steps: Vec::new(),
                    })
                    .steps
                    .push((*key, step.clone()));
            }
            _ => {
                if let Some(layer) = &step.blob() {
                    if let Err(e) = self.check_diff_id(cache_ref, layer) {
                        progress.warn(format!(
                            "{step_name}: cannot use layer {} from the cache at {cache_ref}, \
                             building the step instead: {}",
                            layer.digest,
                            Causes(&e)
                        ));
                        return None;
                    }
                }
                if let Err(e) = cache.record(key, &step) {
                    progress.warn(format!("could not record the build cache: {}", Causes(&e)));
                }
            }
        }
        progress.info(format!("  found in the cache at {cache_ref}"));
        Some(step)
    }

    /// Checks the diffID the record claims for a layer in the store (the registry verified
    /// only the compressed digest): a wrong one would give an image whose config does not
    /// match its layers.
    fn check_diff_id(&self, cache_ref: &str, layer: &Layer) -> Result<(), FetchError> {
        let blob = self.store.open_blob(&layer.digest)?;
        let actual = crate::layer::diff_id(std::io::BufReader::new(blob)).map_err(|source| {
            FetchError::Read {
                digest: layer.digest,
                cache_ref: cache_ref.to_string(),
                source,
            }
        })?;
        if actual != layer.diff_id {
            return Err(FetchError::DiffId {
                digest: layer.digest,
                cache_ref: cache_ref.to_string(),
                actual,
                recorded: layer.diff_id,
            });
        }
        Ok(())
    }

    /// Puts in the store each of `layers` that a hit left in the registry (its diffID
    /// checked, its steps recorded in the local cache) or that a base image was pulled
    /// without: a step is about to read their files.
    pub fn ensure(&self, layers: &[Layer], progress: &Progress) -> Result<(), FetchError> {
        layers.iter().try_for_each(|l| self.ensure_one(l, progress))
    }

    /// [`Session::ensure`], a few layers at a time (the image is completed at the end).
    pub fn ensure_all(&self, layers: &[Layer], progress: &Progress) -> Result<(), FetchError> {
        let mut seen = BTreeSet::new();
        let todo: Vec<&Layer> = layers
            .iter()
            .filter(|l| !self.store.has_blob(&l.digest) && seen.insert(l.digest))
            .collect();
        let next = AtomicUsize::new(0);
        let failed = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..FETCHES_AT_ONCE.min(todo.len()) {
                s.spawn(|| {
                    while let Some(l) = todo.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if let Err(e) = self.ensure_one(l, progress) {
                            lock(&failed).get_or_insert(e);
                            // The others stop at their next layer.
                            next.store(todo.len(), Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn ensure_one(&self, layer: &Layer, progress: &Progress) -> Result<(), FetchError> {
        let digest = &layer.digest;
        let Some(remote) = self.remote else {
            return Ok(());
        };
        let Some(lazy) = lock(&self.lazy).get(digest).cloned() else {
            return self.ensure_base_layer(remote, layer);
        };
        let cache_ref = &remote.from[lazy.from];
        // Two stages needing one layer download it once.
        let _held = self.store.lock_digest(digest)?;
        if !lock(&self.lazy).contains_key(digest) {
            return Ok(());
        }
        if !self.store.has_blob(digest) {
            remote
                .registry
                .pull_blob(cache_ref, digest, lazy.layer.size, self.store)
                .map_err(|source| FetchError::Download {
                    digest: *digest,
                    cache_ref: cache_ref.clone(),
                    source,
                })?;
            self.fetched.fetch_add(1, Ordering::Relaxed);
            self.fetched_bytes
                .fetch_add(lazy.layer.size, Ordering::Relaxed);
        }
        // Every record using this blob must name its true diffID, not only the first.
        let mut claims: Vec<Layer> = lazy.steps.iter().filter_map(|(_, s)| s.blob()).collect();
        claims.dedup_by_key(|l| l.diff_id);
        for claim in &claims {
            self.check_diff_id(cache_ref, claim)?;
        }
        let cache = BuildCache::open(self.store, false);
        for (key, step) in &lazy.steps {
            if let Err(e) = cache.record(key, step) {
                progress.warn(format!("could not record the build cache: {}", Causes(&e)));
            }
        }
        lock(&self.lazy).remove(digest);
        Ok(())
    }

    /// A layer of a base image pulled without its layers, unless it is in the store.
    fn ensure_base_layer(&self, remote: &RemoteCache, layer: &Layer) -> Result<(), FetchError> {
        if self.store.has_blob(&layer.digest) {
            return Ok(());
        }
        let _held = self.store.lock_digest(&layer.digest)?;
        if self.store.has_blob(&layer.digest) {
            return Ok(());
        }
        match remote
            .registry
            .pull_base_layer(&layer.digest, layer.size, self.store)
        {
            None => Ok(()),
            Some(Ok(())) => {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                self.fetched_bytes.fetch_add(layer.size, Ordering::Relaxed);
                Ok(())
            }
            Some(Err(source)) => Err(FetchError::Base {
                digest: layer.digest,
                source,
            }),
        }
    }

    /// Whether the caller lets hit layers stay in the registry ([`RemoteCache::leave_layers`]).
    pub fn leaves_layers(&self) -> bool {
        self.remote.is_some_and(|r| r.leave_layers)
    }

    /// One line on what the registry cache cost this build, when it was used.
    pub fn report(&self, progress: &Progress) {
        if self.remote.is_none_or(|r| r.from.is_empty()) {
            return;
        }
        let left = lock(&self.lazy).len();
        progress.info(format!(
            "registry cache: {} layer(s) downloaded ({} bytes), {left} left in the registry",
            self.fetched.load(Ordering::Relaxed),
            self.fetched_bytes.load(Ordering::Relaxed),
        ));
    }

    /// Remembers a step record this build used or produced, for [`Session::export`].
    pub fn note(&self, key: &Digest, step: &CachedStep) {
        // A layer kept only unpacked never leaves the build: the build makes the blob of
        // every layer an export needs before noting its step (`--cache-to mode=max`).
        let unpacked = step.layer.is_some_and(|l| l.blob().is_none());
        if self.remote.is_some_and(|r| r.to.is_some()) && !unpacked {
            let mut used = lock(&self.used);
            // A stage built twice over (`FROM stage` reuses keys) is exported once.
            if !used.iter().any(|r| r.key == *key) {
                used.push(RemoteRecord::from_step(*key, step));
            }
        }
    }

    /// Merges this build's records into `--cache-to`, if given (see the module docs);
    /// `image_layers` are the built image's, which [`ExportMode::Min`] keeps. A failure is a
    /// warning: the image was built, only the next build elsewhere will be slower.
    pub fn export(&self, image_layers: &[Layer], progress: &Progress) {
        let Some((remote, cache_ref)) = self.remote.and_then(|r| r.to.as_ref().map(|to| (r, to)))
        else {
            return;
        };
        let mut records: Vec<RemoteRecord> = lock(&self.used).clone();
        if remote.mode == ExportMode::Min {
            let in_image: BTreeSet<Digest> = image_layers.iter().map(|l| l.digest).collect();
            records.retain(|r| {
                r.layer
                    .as_ref()
                    .is_none_or(|l| in_image.contains(&l.digest))
            });
        }
        let ours = records.len();
        let pushed = earlier_records(remote.registry, cache_ref, self.store).and_then(|old| {
            let (records, dropped) = merge(records, old, MAX_RECORDS, MAX_LAYER_BYTES);
            let (manifest, config) = encode(&records);
            self.store
                .put_blob(&config)
                .map_err(CacheError::StoreRecords)?;
            remote
                .registry
                .push(cache_ref, &manifest, self.store)
                .map_err(CacheError::Registry)?;
            Ok((records.len(), dropped))
        });
        match pushed {
            Ok((total, dropped)) => progress.info(format!(
                "exported the build cache to {cache_ref}: {ours} step record(s) \
                 ({total} in all, {dropped} old one(s) dropped)"
            )),
            Err(e) => progress.warn(format!(
                "could not export the build cache to {cache_ref} (the image is built): {}",
                Causes(&e)
            )),
        }
    }
}

/// The records an export to `cache_ref` keeps: none when there is no cache there or it was
/// written in another format version (it is replaced); an error when the tag holds
/// something that is not a kiln cache (never overwritten) or cannot be read.
fn earlier_records(
    registry: &dyn CacheRegistry,
    cache_ref: &str,
    store: &Store,
) -> Result<Vec<RemoteRecord>, CacheError> {
    match read_config(registry, cache_ref, store)? {
        Some(config) if config.version == FORMAT_VERSION => Ok(config.records),
        _ => Ok(Vec::new()),
    }
}

/// The records at `cache_ref`, `None` when there is no cache there.
/// Reads every `--cache-from` REF of `remote`, [`IMPORTS_AT_ONCE`] at a time (each is two
/// round trips: the manifest, then the record list), and says on `progress` what each gave.
fn import_all(
    remote: &RemoteCache,
    store: &Store,
    progress: &Progress,
) -> HashMap<Digest, (usize, RemoteRecord)> {
    let mut imported = HashMap::new();
    let mut results = Vec::with_capacity(remote.from.len());
    for batch in remote.from.chunks(IMPORTS_AT_ONCE) {
        std::thread::scope(|s| {
            let reading: Vec<_> = batch
                .iter()
                .map(|r| s.spawn(|| import(remote.registry, r, store)))
                .collect();
            results.extend(
                reading
                    .into_iter()
                    .map(|h| h.join().expect("reading a cache REF does not panic")),
            );
        });
    }
    for (i, (cache_ref, result)) in remote.from.iter().zip(results).enumerate() {
        match result {
            Ok(None) => progress.info(format!(
                "no cache at {cache_ref} (yet): building without it"
            )),
            Ok(Some(records)) => {
                progress.info(format!(
                    "cache {cache_ref}: {} step record(s)",
                    records.len()
                ));
                for r in records {
                    // An earlier REF wins: `--cache-from` order is preference order.
                    imported.entry(r.key).or_insert((i, r));
                }
            }
            Err(e) => progress.warn(format!(
                "cannot use the cache at {cache_ref}, building without it: {}",
                Causes(&e)
            )),
        }
    }
    imported
}

fn import(
    registry: &dyn CacheRegistry,
    cache_ref: &str,
    store: &Store,
) -> Result<Option<Vec<RemoteRecord>>, CacheError> {
    let Some(config) = read_config(registry, cache_ref, store)? else {
        return Ok(None);
    };
    if config.version != FORMAT_VERSION {
        return Err(CacheError::Version {
            version: config.version,
        });
    }
    Ok(Some(config.records))
}

/// The record list at `cache_ref`, whatever its version; `None` when there is no manifest.
fn read_config(
    registry: &dyn CacheRegistry,
    cache_ref: &str,
    store: &Store,
) -> Result<Option<CacheConfig>, CacheError> {
    let Some(manifest) = registry
        .get_manifest(cache_ref)
        .map_err(CacheError::Registry)?
    else {
        return Ok(None);
    };
    let (digest, size) = config_descriptor(&manifest)?;
    if !store.has_blob(&digest) {
        registry
            .pull_blob(cache_ref, &digest, size, store)
            .map_err(CacheError::Registry)?;
    }
    let mut bytes = Vec::with_capacity(size as usize);
    store
        .open_blob(&digest)?
        .take(MAX_CONFIG)
        .read_to_end(&mut bytes)
        .map_err(|source| CacheError::Read { digest, source })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CacheError::Records { digest, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step whose "layer" is `seed` gzipped (its diffID is the digest of `seed`).
    fn record(store: &Store, seed: &str) -> (Digest, CachedStep) {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(seed.as_bytes()).unwrap();
        let blob = gz.finish().unwrap();
        let digest = store.put_blob(&blob).unwrap();
        let step = CachedStep {
            layer: Some(BuildLayer::Blob(Layer {
                digest,
                size: blob.len() as u64,
                diff_id: Digest::of(seed.as_bytes()),
                compression: Compression::Gzip,
            })),
            created_by: format!("RUN {seed}"),
            created: 1_700_000_000,
        };
        (Digest::of(format!("key {seed}").as_bytes()), step)
    }

    /// A registry in memory: tags to manifests, blobs by digest; counts blob pulls.
    #[derive(Default)]
    struct FakeRegistry {
        manifests: Mutex<HashMap<String, Vec<u8>>>,
        blobs: Mutex<HashMap<Digest, Vec<u8>>>,
        pulls: Mutex<Vec<Digest>>,
        manifest_gets: AtomicUsize,
    }

    impl FakeRegistry {
        fn pulled(&self) -> Vec<Digest> {
            self.pulls.lock().unwrap().clone()
        }
        /// The records of the cache at `cache_ref`.
        fn records(&self, cache_ref: &str) -> Vec<RemoteRecord> {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            import(self, cache_ref, &store).unwrap().unwrap()
        }
    }

    impl CacheRegistry for FakeRegistry {
        fn get_manifest(&self, cache_ref: &str) -> Result<Option<Vec<u8>>, RegistryFailure> {
            self.manifest_gets.fetch_add(1, Ordering::SeqCst);
            Ok(self.manifests.lock().unwrap().get(cache_ref).cloned())
        }
        fn pull_blob(
            &self,
            _: &str,
            digest: &Digest,
            size: u64,
            store: &Store,
        ) -> Result<(), RegistryFailure> {
            self.pulls.lock().unwrap().push(*digest);
            let blobs = self.blobs.lock().unwrap();
            let bytes = blobs.get(digest).ok_or("blob unknown: HTTP 404")?;
            assert_eq!(bytes.len() as u64, size);
            assert_eq!(store.put_blob(bytes).unwrap(), *digest);
            Ok(())
        }
        fn push(
            &self,
            cache_ref: &str,
            manifest: &[u8],
            store: &Store,
        ) -> Result<(), RegistryFailure> {
            let Parsed::Image { config, layers } = manifest::read(manifest, None)?.parsed else {
                panic!("the cache is a manifest");
            };
            for d in std::iter::once(&config).chain(&layers) {
                let digest = d.digest;
                if self.blobs.lock().unwrap().contains_key(&digest) {
                    continue;
                }
                let mut bytes = Vec::new();
                store.open_blob(&digest)?.read_to_end(&mut bytes).unwrap();
                self.blobs.lock().unwrap().insert(digest, bytes);
            }
            let mut manifests = self.manifests.lock().unwrap();
            manifests.insert(cache_ref.to_string(), manifest.to_vec());
            Ok(())
        }
    }

    fn remote<'a>(
        registry: &'a FakeRegistry,
        from: &[&str],
        to: Option<&str>,
        mode: ExportMode,
    ) -> RemoteCache<'a> {
        RemoteCache {
            registry,
            from: from.iter().map(|s| s.to_string()).collect(),
            to: to.map(str::to_string),
            mode,
            leave_layers: false,
            imports: Imports::default(),
        }
    }

    /// Exports `steps` to `to` from a store holding their layers.
    fn export(registry: &FakeRegistry, to: &str, store: &Store, steps: &[(Digest, CachedStep)]) {
        let to = remote(registry, &[], Some(to), ExportMode::Max);
        let session = Session::open(Some(&to), store, &Progress::none());
        for (key, step) in steps {
            session.note(key, step);
        }
        session.export(&[], &Progress::none());
    }

    fn warnings(events: &std::sync::mpsc::Receiver<crate::progress::Event>) -> Vec<String> {
        events
            .try_iter()
            .filter_map(|e| match e {
                crate::progress::Event::Warning { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_manifest_lists_each_layer_once_and_the_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (k1, s1) = record(&store, "a");
        let (k2, mut s2) = record(&store, "a");
        s2.created_by = "COPY a /a".into();
        let k2 = Digest::of(format!("{k1}{k2}").as_bytes());
        let meta = CachedStep {
            layer: None,
            created_by: "RUN true".into(),
            created: 5,
        };
        let records = vec![
            RemoteRecord::from_step(k1, &s1),
            RemoteRecord::from_step(k2, &s2),
            RemoteRecord::from_step(Digest::of(b"m"), &meta),
        ];
        let (manifest, config) = encode(&records);
        let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["config"]["mediaType"], CONFIG_TYPE);
        assert_eq!(v["layers"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            config_descriptor(&manifest).unwrap(),
            (Digest::of(&config), config.len() as u64)
        );
        let back: CacheConfig = serde_json::from_slice(&config).unwrap();
        assert_eq!(back.records, records);
        assert_eq!(back.records[0].to_step(), Some(s1));
        assert_eq!(back.records[2].to_step(), Some(meta));
    }

    #[test]
    fn an_image_manifest_is_not_taken_for_a_cache() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
        let err = config_descriptor(image).unwrap_err();
        assert!(err.to_string().contains("not a kiln cache"), "{err}");
    }

    #[test]
    fn an_index_or_an_unreadable_manifest_is_not_a_cache_and_says_why_once() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let err = config_descriptor(index).unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::NotACache {
                    found: NotACache::Index
                }
            ),
            "{err}"
        );
        let err = config_descriptor(br#"{"schemaVersion":1}"#).unwrap_err();
        assert!(matches!(err, CacheError::Manifest(_)), "{err}");
        assert!(
            Causes(&err).to_string().contains("schema version 1"),
            "{err}"
        );
        let cause = crate::error_chain::testing::CAUSE;
        let registry = CacheError::Registry(cause.into());
        crate::error_chain::testing::assert_each_cause_once(&registry, cause);
        let read = CacheError::Read {
            digest: Digest::of(b"c"),
            source: crate::error_chain::testing::io(),
        };
        crate::error_chain::testing::assert_each_cause_once(&read, cause);
        let base = FetchError::Base {
            digest: Digest::of(b"l"),
            source: cause.into(),
        };
        crate::error_chain::testing::assert_each_cause_once(&base, cause);
    }

    #[test]
    fn a_hit_downloads_no_layer_until_a_step_needs_it_then_verifies_and_records_it() {
        let registry = FakeRegistry::default();
        let first_dir = tempfile::tempdir().unwrap();
        let first = Store::open(first_dir.path()).unwrap();
        let (key, step) = record(&first, "layer bytes");
        export(&registry, "reg/cache:main", &first, &[(key, step.clone())]);
        let layer = step.blob().unwrap();

        let second_dir = tempfile::tempdir().unwrap();
        let second = Store::open(second_dir.path()).unwrap();
        let from = remote(
            &registry,
            &["reg/cache:missing", "reg/cache:main"],
            None,
            ExportMode::Max,
        );
        let (progress, events) = Progress::channel();
        let session = Session::open(Some(&from), &second, &progress);
        let config_pulls = registry.pulled();
        assert_eq!(config_pulls.len(), 1, "the record list only");
        let cache = BuildCache::open(&second, false);
        assert_eq!(
            session.fetch(&Digest::of(b"other"), &cache, "RUN x", &progress),
            None
        );
        assert_eq!(
            session.fetch(&key, &cache, "RUN x", &progress),
            Some(step.clone())
        );
        let no_cache = BuildCache::open(&second, true);
        assert_eq!(
            session.fetch(&key, &no_cache, "RUN x", &progress),
            None,
            "--no-cache"
        );
        assert_eq!(registry.pulled(), config_pulls, "no layer downloaded");
        assert!(!second.has_blob(&layer.digest));
        assert_eq!(cache.lookup(&key), None, "recorded once the layer is here");

        session.ensure(&[layer], &progress).unwrap();
        session.ensure(&[layer], &progress).unwrap();
        assert_eq!(registry.pulled().len(), 2, "downloaded once");
        assert!(second.has_blob(&layer.digest));
        assert_eq!(cache.lookup(&key), Some(step), "recorded locally");
        session.report(&progress);
        drop(progress);
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(&e).unwrap())
            .collect();
        let text = lines.join("\n");
        assert!(text.contains("no cache at reg/cache:missing"), "{text}");
        assert!(
            text.contains("found in the cache at reg/cache:main"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "registry cache: 1 layer(s) downloaded ({} bytes), 0 left in the registry",
                layer.size
            )),
            "{text}"
        );
    }

    #[test]
    fn the_platforms_of_a_build_share_one_read_of_each_ref() {
        let registry = FakeRegistry::default();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (key, step) = record(&store, "shared");
        export(&registry, "r1", &store, &[(key, step)]);
        export(&registry, "r2", &store, &[record(&store, "other")]);
        let exports = registry.manifest_gets.load(Ordering::SeqCst);
        let from = remote(&registry, &["r1", "r2", "r3"], None, ExportMode::Max);
        let fresh = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh.path()).unwrap();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let session = Session::open(Some(&from), &fresh, &Progress::none());
                    let cache = BuildCache::open(&fresh, false);
                    assert!(
                        session
                            .fetch(&key, &cache, "RUN", &Progress::none())
                            .is_some()
                    );
                });
            }
        });
        assert_eq!(
            registry.manifest_gets.load(Ordering::SeqCst) - exports,
            3,
            "each REF once"
        );
        assert_eq!(registry.pulled().len(), 2, "each record list once");
    }

    #[test]
    fn ensure_all_downloads_every_left_layer_of_the_image() {
        let registry = FakeRegistry::default();
        let first_dir = tempfile::tempdir().unwrap();
        let first = Store::open(first_dir.path()).unwrap();
        let steps: Vec<_> = (0..9).map(|i| record(&first, &format!("l{i}"))).collect();
        export(&registry, "r", &first, &steps);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let from = remote(&registry, &["r"], None, ExportMode::Max);
        let session = Session::open(Some(&from), &store, &Progress::none());
        let cache = BuildCache::open(&store, false);
        let layers: Vec<Layer> = steps
            .iter()
            .map(|(k, s)| {
                session.fetch(k, &cache, "RUN", &Progress::none()).unwrap();
                s.blob().unwrap()
            })
            .collect();
        assert!(layers.iter().all(|l| !store.has_blob(&l.digest)));
        session.ensure_all(&layers, &Progress::none()).unwrap();
        assert!(layers.iter().all(|l| store.has_blob(&l.digest)));
        assert_eq!(registry.pulled().len(), 1 + 9);
    }

    #[test]
    fn a_layer_that_cannot_be_downloaded_fails_the_step_that_needs_it_naming_the_ref() {
        let registry = FakeRegistry::default();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (key, step) = record(&store, "gone");
        let (manifest, config) = encode(&[RemoteRecord::from_step(key, &step)]);
        registry
            .manifests
            .lock()
            .unwrap()
            .insert("r".into(), manifest);
        registry
            .blobs
            .lock()
            .unwrap()
            .insert(Digest::of(&config), config);
        let empty_dir = tempfile::tempdir().unwrap();
        let empty = Store::open(empty_dir.path()).unwrap();
        let from = remote(&registry, &["r"], None, ExportMode::Max);
        let session = Session::open(Some(&from), &empty, &Progress::none());
        let cache = BuildCache::open(&empty, false);
        assert!(
            session
                .fetch(&key, &cache, "RUN gone", &Progress::none())
                .is_some()
        );
        let err = session
            .ensure(&[step.blob().unwrap()], &Progress::none())
            .unwrap_err();
        assert!(matches!(err, FetchError::Download { .. }), "{err}");
        let text = Causes(&err).to_string();
        assert!(
            text.contains("the cache at r") && text.contains("HTTP 404"),
            "{text}"
        );
        crate::error_chain::testing::assert_each_cause_once(&err, "HTTP 404");
        assert_eq!(cache.lookup(&key), None);
    }

    #[test]
    fn a_record_whose_diff_id_does_not_match_its_layer_is_caught() {
        let registry = FakeRegistry::default();
        let first_dir = tempfile::tempdir().unwrap();
        let first = Store::open(first_dir.path()).unwrap();
        let (key, mut step) = record(&first, "layer");
        let mut lie = step.blob().unwrap();
        lie.diff_id = Digest::of(b"a lie");
        step.layer = Some(BuildLayer::Blob(lie));
        export(&registry, "r", &first, &[(key, step.clone())]);
        let from = remote(&registry, &["r"], None, ExportMode::Max);

        // Downloaded when a step needs it: the step fails, naming the damage.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let session = Session::open(Some(&from), &store, &Progress::none());
        let cache = BuildCache::open(&store, false);
        assert!(
            session
                .fetch(&key, &cache, "RUN x", &Progress::none())
                .is_some()
        );
        let err = session
            .ensure(&[step.blob().unwrap()], &Progress::none())
            .unwrap_err();
        assert!(matches!(err, FetchError::DiffId { .. }), "{err}");
        assert!(err.to_string().contains("the cache at r"), "{err}");
        assert_eq!(cache.lookup(&key), None, "nothing recorded");

        // Already in the store: checked at once, a warned miss.
        let (progress, events) = Progress::channel();
        let session = Session::open(Some(&from), &first, &progress);
        let cache = BuildCache::open(&first, false);
        assert_eq!(session.fetch(&key, &cache, "RUN x", &progress), None);
        drop(progress);
        let warned = warnings(&events);
        assert!(
            warned.iter().any(|m| m.contains("the cache is damaged")),
            "{warned:?}"
        );
    }

    #[test]
    fn an_export_keeps_what_the_ref_held_and_puts_this_build_first() {
        let registry = FakeRegistry::default();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ka, sa) = record(&store, "stage a");
        let (kb, sb) = record(&store, "stage b");
        let (kc, sc) = record(&store, "shared");
        export(&registry, "r", &store, &[(ka, sa), (kc, sc.clone())]);
        export(&registry, "r", &store, &[(kb, sb), (kc, sc)]);
        let keys: Vec<Digest> = registry.records("r").iter().map(|r| r.key).collect();
        assert_eq!(keys, [kb, kc, ka]);
    }

    #[test]
    fn merge_drops_the_oldest_records_beyond_the_caps_but_never_this_builds() {
        let rec = |n: u8, layer: Option<(u8, u64)>| RemoteRecord {
            key: Digest::of(&[n]),
            created_by: format!("RUN {n}"),
            created: 0,
            layer: layer.map(|(d, size)| RemoteLayer {
                digest: Digest::of(&[100, d]),
                diff_id: Digest::of(&[200, d]),
                size,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }),
        };
        let new = vec![rec(1, Some((1, 50))), rec(2, None)];
        let old = vec![
            rec(2, Some((9, 1))),  // same key as a new one: the new one wins
            rec(3, Some((1, 50))), // a layer already counted: free
            rec(4, Some((4, 40))), // 90 bytes so far
            rec(5, Some((5, 20))), // would be 110: over 100, dropped...
            rec(6, Some((4, 40))), // ...and everything older, even if it would fit
        ];
        let (kept, dropped) = merge(new.clone(), old.clone(), 100, 100);
        let keys: Vec<Digest> = kept.iter().map(|r| r.key).collect();
        assert_eq!(keys, [1, 2, 3, 4].map(|n| Digest::of(&[n])));
        assert_eq!(kept[1], new[1]);
        assert_eq!(dropped, 2);
        let (kept, dropped) = merge(new.clone(), old.clone(), 3, u64::MAX);
        assert_eq!(kept.len(), 3);
        assert_eq!(dropped, 3);
        let (kept, _) = merge(new.clone(), old, 1, 1);
        assert_eq!(kept, new, "this build's records are always kept");
    }

    #[test]
    fn mode_min_exports_only_the_image_layers_and_layerless_steps() {
        let registry = FakeRegistry::default();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (kb, sb) = record(&store, "builder");
        let (ki, si) = record(&store, "image");
        let meta = CachedStep {
            layer: None,
            created_by: "WORKDIR /".into(),
            created: 0,
        };
        let to = remote(&registry, &[], Some("r"), ExportMode::Min);
        let session = Session::open(Some(&to), &store, &Progress::none());
        session.note(&kb, &sb);
        session.note(&ki, &si);
        session.note(&Digest::of(b"m"), &meta);
        session.export(&[si.blob().unwrap()], &Progress::none());
        let keys: Vec<Digest> = registry.records("r").iter().map(|r| r.key).collect();
        assert_eq!(keys, [ki, Digest::of(b"m")]);
    }

    #[test]
    fn a_tag_that_is_not_a_kiln_cache_is_never_overwritten() {
        let registry = FakeRegistry::default();
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
        registry
            .manifests
            .lock()
            .unwrap()
            .insert("app:latest".into(), image.to_vec());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (key, step) = record(&store, "x");
        let to = remote(&registry, &[], Some("app:latest"), ExportMode::Max);
        let (progress, events) = Progress::channel();
        let session = Session::open(Some(&to), &store, &progress);
        session.note(&key, &step);
        session.export(&[], &progress);
        drop(progress);
        assert_eq!(registry.manifests.lock().unwrap()["app:latest"], image);
        let warned = warnings(&events);
        assert!(
            warned.iter().any(|m| m.contains("not a kiln cache")),
            "{warned:?}"
        );
    }

    #[test]
    fn without_a_remote_cache_nothing_happens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (key, step) = record(&store, "x");
        let session = Session::open(None, &store, &Progress::none());
        session.note(&key, &step);
        session.export(&[], &Progress::none());
        session
            .ensure(&[step.blob().unwrap()], &Progress::none())
            .unwrap();
        let cache = BuildCache::open(&store, false);
        assert_eq!(
            session.fetch(&key, &cache, "RUN x", &Progress::none()),
            None
        );
    }
}
