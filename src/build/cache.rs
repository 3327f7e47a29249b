//! The local build cache: which layer (or metadata-only result) a build step produced for a
//! given set of inputs, and why a step missed.
//!
//! API (used by `stage.rs`):
//! - [`BuildCache::open`]`(store, disabled)`; [`BuildCache::stage_root`] makes the first parent
//!   key of a stage from its base and the build-wide settings that change layer bytes.
//! - [`BuildCache::key`]`(parent, step, sources)`: a step's key chains its parent's key, the
//!   expanded instruction, the ARG values it uses and, for COPY/ADD, a [`SourceDigest`].
//! - [`BuildCache::lookup`] / [`BuildCache::record`] a [`CachedStep`] under a key. Its layer
//!   may have no blob ([`BuildLayer::Unpacked`]: a stage whose layers never left the build):
//!   the record then pins the layer's unpacked dir, and is a miss once the dir is gone.
//! - [`BuildCache::explain_miss`] / [`BuildCache::remember`] the [`StepInputs`] of a step "slot"
//!   (the same step across builds), to say in words why a step missed.
//! - [`BuildCache::trim`] drops records by age and size for `kiln prune` (then `Store::prune`
//!   frees what they pinned).
//! - [`context_sources`] (the usual entry point) or [`source_digest`] digests COPY/ADD
//!   sources from the context: content, mode, symlink targets; never mtime (a fresh `git clone` still hits) nor the host's uid/gid (COPY gives
//!   files root or `--chown` ownership, which is part of the instruction).
//!
//! Layout under the store root:
//!
//! ```text
//! cache/build/steps/<key-hex>.json   a CachedStep; its layer is pinned as pins/<key-hex>.json
//! cache/build/slots/<sha256(slot)>.json  the step key and StepInputs the slot had last time
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::context::{Context, ContextError, Entry, EntryKind};
use crate::digest::{Digest, HashingWriter};
use crate::image::{BuildLayer, Compression, Layer};
use crate::plan::Step;
use crate::store::{Pin, Store, StoreError};

/// Bumped whenever what goes into a key changes, so old records can never be hit by mistake.
const KEY_VERSION: u32 = 2;
/// How many names an explanation lists before `…`.
const NAMES_SHOWN: usize = 3;

/// Why a cache record could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("cannot {action} build cache file {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a step produced: a layer, or nothing but image metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedStep {
    /// `None` for metadata-only steps (ENV, LABEL, ...). A layer without a blob
    /// ([`BuildLayer::Unpacked`]) lives as its directory in the store, which the record pins.
    pub layer: Option<BuildLayer>,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// When the step was built (seconds since the epoch): a rebuild served wholly from the
    /// cache stamps the image with it, so it gets the same digest as the first build.
    pub created: i64,
}

impl CachedStep {
    /// The step's layer with its blob, if it has a layer and the layer a blob.
    pub fn blob(&self) -> Option<Layer> {
        self.layer.and_then(|l| l.blob().copied())
    }
}

/// The content digest of a COPY/ADD's sources, with per-file digests for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceDigest {
    pub digest: Digest,
    /// (path relative to the source root, digest of its kind, mode and content or target).
    pub files: Vec<(String, Digest)>,
}

impl SourceDigest {
    /// Sources already named by a digest and with no per-file detail, e.g. `COPY --from` a
    /// stage (pass the stage's last key) or an image (its manifest digest).
    pub fn opaque(digest: Digest) -> SourceDigest {
        SourceDigest {
            digest,
            files: Vec::new(),
        }
    }
}

/// Everything that went into a step's key, kept per slot to explain the next miss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepInputs {
    pub parent: Digest,
    pub instruction: String,
    pub args: BTreeMap<String, String>,
    pub files: Vec<(String, Digest)>,
}

impl StepInputs {
    /// The inputs of `step` as [`BuildCache::key`] sees them.
    pub fn new(parent: &Digest, step: &Step, sources: Option<SourceDigest>) -> StepInputs {
        StepInputs {
            parent: *parent,
            instruction: instruction_text(step),
            args: step.args_used.clone(),
            files: sources.map(|s| s.files).unwrap_or_default(),
        }
    }
}

/// A slot's file: the key its inputs gave, first (see [`BuildCache::remember`]), then the
/// inputs; it reads back as a [`StepInputs`] (serde skips `key`).
#[derive(Serialize)]
struct SlotFile<'a> {
    key: &'a Digest,
    parent: &'a Digest,
    instruction: &'a str,
    args: &'a BTreeMap<String, String>,
    files: &'a [(String, Digest)],
}

/// How a [`SlotFile`] for `key` begins, byte for byte, as serde_json writes it.
fn slot_prefix(key: &Digest) -> String {
    format!("{{\"key\":\"{key}\",")
}

/// Whether the slot file at `path` begins with `prefix`; if so, its mtime (the slot's last
/// use, for `trim`) is refreshed through the same open file. False if it cannot be read.
fn is_current(path: &Path, prefix: &[u8]) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(prefix.len());
    if (&file)
        .take(prefix.len() as u64)
        .read_to_end(&mut head)
        .is_err()
        || head != prefix
    {
        return false;
    }
    // Failing to touch it only makes the slot look older to `trim`.
    let _ = filetime::set_file_handle_times(&file, None, Some(filetime::FileTime::now()));
    true
}

/// The expanded instruction as canonical JSON. Left out: its span (moving a line or editing
/// a comment above it must not miss) and RUN's proxy variables (Docker keeps HTTP_PROXY and
/// friends out of the cache key so a build behind a proxy reuses one built without).
fn instruction_text(step: &Step) -> String {
    let mut kind = serde_json::to_value(&step.kind).expect("a StepKind always serialises");
    if let Some(fields) = kind.as_object_mut() {
        fields.remove("proxy_env");
    }
    kind.to_string()
}

/// The cache over one store. Cheap: holds only paths.
pub(crate) struct BuildCache<'s> {
    store: &'s Store,
    dir: PathBuf,
    disabled: bool,
}

impl<'s> BuildCache<'s> {
    /// The cache of `store`; with `disabled` (`--no-cache`) every lookup misses, but results
    /// are still recorded so the next build can use them (as Docker does).
    pub fn open(store: &'s Store, disabled: bool) -> Self {
        BuildCache {
            store,
            dir: store.root().join("cache/build"),
            disabled,
        }
    }

    /// Whether lookups always miss (`--no-cache`): the registry cache must miss then too.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The parent key of a stage's first step: the base image's manifest digest (`None` for
    /// `scratch`; an earlier stage's last key for `FROM stage`) and the build-wide settings
    /// that change the bytes of every layer the stage writes. A `scratch` stage is keyed by
    /// its platform too (a base's manifest already is): each platform of a multi-platform
    /// build gets its own steps, and a `FROM --platform=$BUILDPLATFORM` stage is shared.
    pub fn stage_root(
        base: Option<&Digest>,
        platform: &crate::platform::Platform,
        compression: Compression,
        source_date_epoch: Option<i64>,
    ) -> Digest {
        let mut root = serde_json::json!({
            "v": KEY_VERSION,
            "base": base,
            "compression": compression.name(),
            "source_date_epoch": source_date_epoch,
        });
        if base.is_none() {
            root["platform"] = platform.normalized().to_string().into();
        }
        Digest::of(root.to_string().as_bytes())
    }

    /// The key of `step` run on top of `parent` (see the module docs).
    pub fn key(parent: &Digest, step: &Step, sources: Option<&SourceDigest>) -> Digest {
        let key = serde_json::json!({
            "v": KEY_VERSION,
            "parent": parent,
            "instruction": instruction_text(step),
            "args": step.args_used,
            "sources": sources.map(|s| s.digest),
        });
        Digest::of(key.to_string().as_bytes())
    }

    /// The recorded result of `key`; `None` when disabled, never recorded, unreadable, or
    /// when what holds its layer is gone from the store (the blob, or for a layer kept only
    /// unpacked, its directory: a record never hits without its content).
    pub fn lookup(&self, key: &Digest) -> Option<CachedStep> {
        if self.disabled {
            return None;
        }
        let path = self.step_path(key);
        let bytes = fs::read(&path).ok()?;
        let step = serde_json::from_slice::<StepRecord>(&bytes)
            .ok()?
            .into_step();
        let present = match &step.layer {
            None => true,
            Some(BuildLayer::Blob(l)) => self.store.has_blob(&l.digest),
            Some(BuildLayer::Unpacked { diff_id, .. }) => self.store.is_unpacked(diff_id),
        };
        if !present {
            return None;
        }
        // The record's mtime is its last use, for `trim`; failing to touch it only makes the
        // entry look older.
        let _ = filetime::set_file_mtime(&path, filetime::FileTime::now());
        Some(step)
    }

    /// Records what `key` produced. The layer is pinned first so a record never names
    /// content that `prune` may take.
    pub fn record(&self, key: &Digest, step: &CachedStep) -> Result<(), CacheError> {
        if let Some(layer) = &step.layer {
            let pin = Pin {
                blobs: layer.blob().map(|l| l.digest).into_iter().collect(),
                diff_ids: vec![layer.diff_id()],
            };
            self.store.pin(&key.hex(), &pin)?;
        }
        let record = StepRecord::from_step(step);
        let bytes = serde_json::to_vec(&record).expect("a step record serialises");
        self.write_atomically(&self.step_path(key), &bytes, true)
    }

    /// Why the step in `slot` missed, in words, against what the slot had last time:
    /// `3 files changed (src/main.rs, src/lib.rs, …)`, `build arg VERSION changed`,
    /// `instruction changed`, `parent changed`, `not built before`.
    pub fn explain_miss(&self, slot: &str, now: &StepInputs) -> String {
        if self.disabled {
            return "cache disabled (--no-cache)".to_string();
        }
        let before = fs::read(self.slot_path(slot))
            .ok()
            .and_then(|b| serde_json::from_slice::<StepInputs>(&b).ok());
        match before {
            None => "not built before".to_string(),
            Some(before) => explain(&before, now),
        }
    }

    /// Stores `now`, the inputs that gave `key`, as the slot's inputs for the next
    /// explanation. The file starts with `key`, so when the slot already holds these inputs
    /// (every step of a no-change build) nothing is serialised or written: only the file's
    /// mtime is refreshed, which is its last use for `trim`. Best effort: losing it only makes
    /// the next explanation vaguer, so errors are returned for a warning at most.
    pub fn remember(&self, slot: &str, key: &Digest, now: &StepInputs) -> Result<(), CacheError> {
        let path = self.slot_path(slot);
        let prefix = slot_prefix(key);
        if is_current(&path, prefix.as_bytes()) {
            return Ok(());
        }
        let file = SlotFile {
            key,
            parent: &now.parent,
            instruction: &now.instruction,
            args: &now.args,
            files: &now.files,
        };
        let bytes = serde_json::to_vec(&file).expect("step inputs serialise");
        debug_assert!(bytes.starts_with(prefix.as_bytes()));
        // Not fsynced: a slot a crash empties reads as "not built before" (an explanation
        // only), and a fresh runner writes one per step.
        self.write_atomically(&path, &bytes, false)
    }

    /// Drops cache records last used longer ago than `keep_duration`, then the least recently
    /// used ones until their layers fit in `keep_bytes` (compressed sizes, the tar's size for
    /// a layer kept only unpacked, each layer counted once), and unpins their layers; the next `Store::prune` frees the blobs. Slot inputs
    /// (explanations only) older than `keep_duration` go too. Run it where `prune` runs: with
    /// no build in progress.
    pub fn trim(
        &self,
        keep_duration: Option<Duration>,
        keep_bytes: Option<u64>,
    ) -> Result<TrimReport, CacheError> {
        let now = SystemTime::now();
        let too_old = |used: SystemTime| {
            keep_duration.is_some_and(|keep| now.duration_since(used).unwrap_or_default() > keep)
        };
        let mut report = TrimReport::default();
        let mut records = self.step_records()?;
        records.sort_by_key(|r| std::cmp::Reverse(r.used));
        let mut kept_layers = BTreeSet::new();
        let mut kept_bytes = 0u64;
        // Once the budget is spent, everything used less recently goes too (plain LRU).
        let mut full = false;
        for r in records {
            let new_bytes = match r.layer {
                Some((digest, size)) if !kept_layers.contains(&digest) => size,
                _ => 0,
            };
            full = full || keep_bytes.is_some_and(|max| kept_bytes + new_bytes > max);
            if too_old(r.used) || full {
                // Record first: a record must never outlive its pin.
                remove_file(&r.path)?;
                self.store.unpin(&r.key.hex())?;
                report.entries += 1;
            } else if let Some((digest, _)) = r.layer {
                kept_layers.insert(digest);
                kept_bytes += new_bytes;
            }
        }
        report.kept_bytes = kept_bytes;
        for (path, used) in list_json(&self.dir.join("slots"))? {
            if too_old(used) {
                remove_file(&path)?;
                report.slots += 1;
            }
        }
        Ok(report)
    }

    /// Every step record with its key, last use and layer (blob digest or diffID, size).
    fn step_records(&self) -> Result<Vec<RecordInfo>, CacheError> {
        let mut out = Vec::new();
        for (path, used) in list_json(&self.dir.join("steps"))? {
            let key = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| Digest::from_hex(s).ok());
            let Some(key) = key else { continue };
            // An unreadable record is worth nothing: trim it like an old one.
            let layer = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<StepRecord>(&b).ok())
                .map(|r| r.layer.map(|l| l.identity()));
            out.push(RecordInfo {
                path,
                key,
                used: if layer.is_some() { used } else { UNIX_EPOCH },
                layer: layer.flatten(),
            });
        }
        Ok(out)
    }

    fn step_path(&self, key: &Digest) -> PathBuf {
        self.dir.join("steps").join(format!("{}.json", key.hex()))
    }

    fn slot_path(&self, slot: &str) -> PathBuf {
        let name = Digest::of(slot.as_bytes()).hex();
        self.dir.join("slots").join(format!("{name}.json"))
    }

    /// Temp file in the store's `tmp/` (which `prune` cleans after a crash), fsynced when
    /// `durable`, then rename.
    fn write_atomically(&self, path: &Path, bytes: &[u8], durable: bool) -> Result<(), CacheError> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io {
                action,
                path,
                source,
            }
        };
        let dir = path.parent().expect("cache files have a parent");
        fs::create_dir_all(dir).map_err(io_err("create directory for", path))?;
        let tmp_dir = self.store.root().join("tmp");
        let mut tmp = tempfile::Builder::new()
            .prefix("cache-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("create a temp file for", path))?;
        tmp.write_all(bytes)
            .and_then(|()| match durable {
                true => tmp.as_file().sync_all(),
                false => Ok(()),
            })
            .map_err(io_err("write", tmp.path()))?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .map_err(io_err("replace", path))?;
        Ok(())
    }
}

/// What [`BuildCache::trim`] removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrimReport {
    /// Step records removed (their layers unpinned).
    pub entries: usize,
    /// Slot inputs removed.
    pub slots: usize,
    /// Compressed bytes of the layers still pinned by the cache.
    pub kept_bytes: u64,
}

struct RecordInfo {
    path: PathBuf,
    key: Digest,
    used: SystemTime,
    layer: Option<(Digest, u64)>,
}

/// The `.json` files of `dir` with their mtimes; nothing if `dir` does not exist yet.
fn list_json(dir: &Path) -> Result<Vec<(PathBuf, SystemTime)>, CacheError> {
    let err = |source| CacheError::Io {
        action: "list",
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(err)?.path();
        if path.extension().is_some_and(|e| e == "json") {
            // A file that vanished meanwhile (another trim) is simply skipped.
            if let Ok(meta) = fs::metadata(&path) {
                out.push((path, meta.modified().unwrap_or(UNIX_EPOCH)));
            }
        }
    }
    Ok(out)
}

fn remove_file(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The on-disk form of a [`CachedStep`] (`Layer` itself is not serde: this keeps the format
/// the cache's own business).
#[derive(Serialize, Deserialize)]
struct StepRecord {
    layer: Option<LayerRecord>,
    created_by: String,
    #[serde(default)]
    created: i64,
}

/// A record's layer: with its blob (the form every kiln wrote before layers could be kept
/// only unpacked), or its diffID alone. A kiln that knows only the first form cannot read
/// the second and takes the record for a miss, never for a layer without content.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LayerRecord {
    Blob {
        digest: Digest,
        size: u64,
        diff_id: Digest,
        compression: Compression,
    },
    Unpacked {
        unpacked_diff_id: Digest,
        tar_size: u64,
    },
}

impl LayerRecord {
    /// What tells the layer apart from others, and its size, for `trim`.
    fn identity(&self) -> (Digest, u64) {
        match self {
            LayerRecord::Blob { digest, size, .. } => (*digest, *size),
            LayerRecord::Unpacked {
                unpacked_diff_id,
                tar_size,
            } => (*unpacked_diff_id, *tar_size),
        }
    }
}

impl StepRecord {
    fn from_step(step: &CachedStep) -> StepRecord {
        StepRecord {
            layer: step.layer.map(|l| match l {
                BuildLayer::Blob(l) => LayerRecord::Blob {
                    digest: l.digest,
                    size: l.size,
                    diff_id: l.diff_id,
                    compression: l.compression,
                },
                BuildLayer::Unpacked { diff_id, size } => LayerRecord::Unpacked {
                    unpacked_diff_id: diff_id,
                    tar_size: size,
                },
            }),
            created_by: step.created_by.clone(),
            created: step.created,
        }
    }

    fn into_step(self) -> CachedStep {
        CachedStep {
            layer: self.layer.map(|l| match l {
                LayerRecord::Blob {
                    digest,
                    size,
                    diff_id,
                    compression,
                } => BuildLayer::Blob(Layer {
                    digest,
                    size,
                    diff_id,
                    compression,
                }),
                LayerRecord::Unpacked {
                    unpacked_diff_id,
                    tar_size,
                } => BuildLayer::Unpacked {
                    diff_id: unpacked_diff_id,
                    size: tar_size,
                },
            }),
            created_by: self.created_by,
            created: self.created,
        }
    }
}

/// Digests COPY/ADD sources: `entries` as the context lists them with `digests` from
/// `Context::file_digests` (same order), paths made relative to `base` (the source root
/// inside the context; `""` keeps context-relative paths, which read best in explanations).
/// Takes the entries to reuse their paths: this runs once per file of a COPY on every build.
pub(crate) fn source_digest(
    entries: Vec<Entry>,
    digests: &[Option<Digest>],
    base: &str,
) -> SourceDigest {
    let base = base.trim_matches('/');
    let mut files: Vec<(String, Digest)> = entries
        .into_par_iter()
        .zip(digests)
        .map(|(e, d)| {
            let digest = entry_digest(&e, d.as_ref());
            (relative_to(e.rel, base), digest)
        })
        .collect();
    // The walk's order is already sorted but for names that sort before `/`: nearly free.
    files.sort();
    SourceDigest::of_files(files)
}

impl SourceDigest {
    /// The digest of `files` in the order given (see [`source_digest`] for context files).
    pub fn of_files(files: Vec<(String, Digest)>) -> SourceDigest {
        let mut h = HashingWriter::new(io::sink());
        for (path, digest) in &files {
            // Length-prefixed, so no choice of names can make two lists hash alike.
            let written = h
                .write_all(&(path.len() as u64).to_le_bytes())
                .and_then(|()| h.write_all(path.as_bytes()))
                .and_then(|()| h.write_all(digest.as_bytes()));
            written.expect("writing to a sink cannot fail");
        }
        let (_, digest, _) = h.finish();
        SourceDigest { digest, files }
    }
}

/// The [`SourceDigest`] of COPY/ADD sources in `tree`: `paths` are context-relative source
/// roots with wildcards already expanded (each a file, symlink or directory, walked). File
/// digests come from the context's stat cache, so a no-change rebuild reads no file.
pub(crate) fn context_sources(
    tree: &Context,
    paths: &[String],
) -> Result<SourceDigest, ContextError> {
    let mut entries = Vec::new();
    for path in paths {
        let more = tree.entries(path)?;
        // One source (the usual case) is moved, not copied: it can be 50,000 entries.
        if entries.is_empty() {
            entries = more;
        } else {
            entries.extend(more);
        }
    }
    let digests = tree.file_digests(&entries)?;
    Ok(source_digest(entries, &digests, ""))
}

/// `rel` (context-relative) made relative to `base`, in place.
fn relative_to(mut rel: String, base: &str) -> String {
    if base.is_empty() {
        return rel;
    }
    match rel.strip_prefix(base) {
        Some("") => String::new(),
        Some(rest) if rest.starts_with('/') => {
            rel.drain(..=base.len());
            rel
        }
        _ => rel,
    }
}

/// One entry's kind, permission bits and content (file digest or symlink target), hashed as
/// raw bytes: a kind byte, then fixed-size fields, a symlink target last and length-prefixed,
/// so no two entries share an encoding. No text formatting: this runs once per context file
/// on every build, and hex-formatting 50,000 digests showed in the no-change profile.
fn entry_digest(e: &Entry, content: Option<&Digest>) -> Digest {
    let mode = (e.mode & 0o7777).to_le_bytes();
    let mut buf = [0u8; 1 + 4 + 1 + 32];
    let fixed = |kind: u8, buf: &mut [u8; 38]| {
        buf[0] = kind;
        buf[1..5].copy_from_slice(&mode);
    };
    let len = match &e.kind {
        EntryKind::File { .. } => {
            fixed(b'f', &mut buf);
            match content {
                Some(d) => {
                    buf[5] = 1;
                    buf[6..].copy_from_slice(d.as_bytes());
                    38
                }
                None => 6,
            }
        }
        EntryKind::Dir => {
            fixed(b'd', &mut buf);
            5
        }
        EntryKind::Other => {
            fixed(b'o', &mut buf);
            5
        }
        EntryKind::Symlink { target } => {
            let target = target.as_os_str().as_encoded_bytes();
            let mut link = Vec::with_capacity(9 + target.len());
            link.push(b'l');
            link.extend_from_slice(&(target.len() as u64).to_le_bytes());
            link.extend_from_slice(target);
            return Digest::of(&link);
        }
    };
    Digest::of(&buf[..len])
}

/// The differences between two sets of inputs, most specific first.
fn explain(before: &StepInputs, now: &StepInputs) -> String {
    let mut reasons = Vec::new();
    if before.instruction != now.instruction {
        reasons.push("instruction changed".to_string());
    }
    if let Some(args) = explain_args(&before.args, &now.args) {
        reasons.push(args);
    }
    if let Some(files) = explain_files(&before.files, &now.files) {
        reasons.push(files);
    }
    if before.parent != now.parent {
        reasons.push("parent changed".to_string());
    }
    if reasons.is_empty() {
        // Same inputs, yet no usable record: it was pruned, its blob is gone, or that build
        // stopped before recording this step.
        return "no cached result for these inputs (pruned, or the last build did not finish \
                this step)"
            .to_string();
    }
    reasons.join(", ")
}

fn explain_args(
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Option<String> {
    let names: BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    let changed: Vec<&str> = names
        .into_iter()
        .filter(|n| before.get(*n) != now.get(*n))
        .map(|n| n.as_str())
        .collect();
    match changed.len() {
        0 => None,
        1 => Some(format!("build arg {} changed", changed[0])),
        _ => Some(format!("build args {} changed", name_list(&changed))),
    }
}

fn explain_files(before: &[(String, Digest)], now: &[(String, Digest)]) -> Option<String> {
    let old: BTreeMap<&str, &Digest> = before.iter().map(|(p, d)| (p.as_str(), d)).collect();
    let new: BTreeMap<&str, &Digest> = now.iter().map(|(p, d)| (p.as_str(), d)).collect();
    let mut changed = Vec::new();
    let mut added = Vec::new();
    for (path, digest) in &new {
        match old.get(path) {
            Some(d) if d == digest => {}
            Some(_) => changed.push(shown_path(path)),
            None => added.push(shown_path(path)),
        }
    }
    let removed: Vec<&str> = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .map(|p| shown_path(p))
        .collect();
    let parts: Vec<String> = [(changed, "changed"), (added, "added"), (removed, "removed")]
        .into_iter()
        .filter(|(names, _)| !names.is_empty())
        .map(|(names, what)| {
            let noun = if names.len() == 1 { "file" } else { "files" };
            format!("{} {noun} {what} ({})", names.len(), name_list(&names))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The source root itself has an empty path; call it `.` in messages.
fn shown_path(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

fn name_list(names: &[&str]) -> String {
    let mut out = names[..names.len().min(NAMES_SHOWN)].join(", ");
    if names.len() > NAMES_SHOWN {
        out.push_str(", …");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{self, PlanOptions, ignore::DockerIgnore};

    /// The steps of a one-stage Dockerfile, planned for real.
    fn steps(dockerfile: &str, args: &[(&str, &str)]) -> Vec<Step> {
        let opts = PlanOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..PlanOptions::default()
        };
        let mut plan = plan::plan(dockerfile, &opts).unwrap();
        plan.stages.pop().unwrap().steps
    }

    /// The sources of `COPY . /app` from `dir`, as stage.rs computes them.
    fn sources(dir: &Path) -> SourceDigest {
        let ctx = Context::open(dir, DockerIgnore::parse("").unwrap(), None).unwrap();
        let entries = ctx.entries("").unwrap();
        let digests = ctx.file_digests(&entries).unwrap();
        source_digest(entries, &digests, "")
    }

    fn project() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src")).unwrap();
        fs::write(d.path().join("src/main.rs"), "fn main() {}").unwrap();
        fs::write(d.path().join("src/lib.rs"), "pub fn f() {}").unwrap();
        fs::write(d.path().join("README"), "hello").unwrap();
        std::os::unix::fs::symlink("README", d.path().join("README.md")).unwrap();
        d
    }

    /// What stage.rs does after running or hitting `step`.
    fn remember(
        cache: &BuildCache,
        slot: &str,
        parent: &Digest,
        step: &Step,
        sources: Option<&SourceDigest>,
    ) {
        let key = BuildCache::key(parent, step, sources);
        let inputs = StepInputs::new(parent, step, sources.cloned());
        cache.remember(slot, &key, &inputs).unwrap();
    }

    fn host() -> crate::platform::Platform {
        crate::platform::Platform::host()
    }

    fn base() -> Digest {
        BuildCache::stage_root(None, &host(), Compression::Gzip, None)
    }

    fn layer(store: &Store, seed: &str) -> BuildLayer {
        BuildLayer::Blob(Layer {
            digest: store.put_blob(seed.as_bytes()).unwrap(),
            size: seed.len() as u64,
            diff_id: Digest::of(format!("tar {seed}").as_bytes()),
            compression: Compression::Gzip,
        })
    }

    const COPY: &str = "FROM scratch\nCOPY . /app\n";

    #[test]
    fn same_inputs_give_the_same_key_and_the_span_does_not_matter() {
        let d = project();
        let a = &steps(COPY, &[])[0];
        let b = &steps("FROM scratch\n\n# moved down\nCOPY . /app\n", &[])[0];
        let (sa, sb) = (sources(d.path()), sources(d.path()));
        assert_eq!(sa, sb);
        assert_eq!(
            BuildCache::key(&base(), a, Some(&sa)),
            BuildCache::key(&base(), b, Some(&sb))
        );
        let other = &steps("FROM scratch\nCOPY . /srv\n", &[])[0];
        assert_ne!(
            BuildCache::key(&base(), a, Some(&sa)),
            BuildCache::key(&base(), other, Some(&sa))
        );
    }

    #[test]
    fn an_mtime_only_change_keeps_the_key() {
        let d = project();
        let step = &steps(COPY, &[])[0];
        let before = BuildCache::key(&base(), step, Some(&sources(d.path())));
        let old = filetime::FileTime::from_unix_time(1_000_000, 0);
        filetime::set_file_mtime(d.path().join("src/main.rs"), old).unwrap();
        filetime::set_symlink_file_times(d.path().join("README.md"), old, old).unwrap();
        assert_eq!(
            BuildCache::key(&base(), step, Some(&sources(d.path()))),
            before
        );
    }

    #[test]
    fn a_content_change_changes_the_key_and_the_explanation_names_the_file() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let d = project();
        let step = &steps(COPY, &[])[0];
        let s1 = sources(d.path());
        let slot = "ctx:Dockerfile:0:0";
        assert_eq!(
            cache.explain_miss(slot, &StepInputs::new(&base(), step, Some(s1.clone()))),
            "not built before"
        );
        remember(&cache, slot, &base(), step, Some(&s1));

        fs::write(d.path().join("src/main.rs"), "fn main() { run() }").unwrap();
        fs::write(d.path().join("src/new.rs"), "").unwrap();
        fs::remove_file(d.path().join("README.md")).unwrap();
        let s2 = sources(d.path());
        assert_ne!(
            BuildCache::key(&base(), step, Some(&s1)),
            BuildCache::key(&base(), step, Some(&s2))
        );
        assert_eq!(
            cache.explain_miss(slot, &StepInputs::new(&base(), step, Some(s2.clone()))),
            "1 file changed (src/main.rs), 1 file added (src/new.rs), 1 file removed (README.md)"
        );
    }

    #[test]
    fn remembering_the_same_inputs_again_writes_nothing_but_the_mtime() {
        use std::os::unix::fs::MetadataExt;
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let d = project();
        let step = &steps(COPY, &[])[0];
        let s1 = sources(d.path());
        let slot = "ctx:Dockerfile:0:0";
        remember(&cache, slot, &base(), step, Some(&s1));
        let path = cache.slot_path(slot);
        let ino = fs::metadata(&path).unwrap().ino();
        age(&path, 3 * 86400);

        remember(&cache, slot, &base(), step, Some(&s1));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.ino(), ino, "the slot file was rewritten");
        let age = SystemTime::now().duration_since(meta.modified().unwrap());
        assert!(
            age.unwrap_or_default() < Duration::from_secs(60),
            "last use not refreshed"
        );

        fs::write(d.path().join("README"), "changed").unwrap();
        let s2 = sources(d.path());
        remember(&cache, slot, &base(), step, Some(&s2));
        assert_ne!(
            fs::metadata(&path).unwrap().ino(),
            ino,
            "new inputs not saved"
        );
        assert_eq!(
            cache.explain_miss(slot, &StepInputs::new(&base(), step, Some(s1))),
            "1 file changed (README)"
        );
    }

    #[test]
    fn a_mode_change_counts_as_a_changed_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = project();
        let s1 = sources(d.path());
        fs::set_permissions(d.path().join("README"), fs::Permissions::from_mode(0o755)).unwrap();
        let s2 = sources(d.path());
        assert_ne!(s1.digest, s2.digest);
        assert_eq!(
            explain_files(&s1.files, &s2.files).as_deref(),
            Some("1 file changed (README)")
        );
    }

    #[test]
    fn many_changed_files_are_counted_and_the_list_is_cut_short() {
        let old: Vec<(String, Digest)> = (0..5)
            .map(|i| (format!("f{i}"), Digest::of(b"old")))
            .collect();
        let new: Vec<(String, Digest)> = (0..5)
            .map(|i| (format!("f{i}"), Digest::of(b"new")))
            .collect();
        assert_eq!(
            explain_files(&old, &new).as_deref(),
            Some("5 files changed (f0, f1, f2, …)")
        );
    }

    #[test]
    fn a_build_arg_change_changes_the_key_and_is_explained() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let df = "FROM scratch\nARG VERSION=1\nRUN echo $VERSION\n";
        let run1 = steps(df, &[]).pop().unwrap();
        let run2 = steps(df, &[("VERSION", "2")]).pop().unwrap();
        assert_ne!(
            BuildCache::key(&base(), &run1, None),
            BuildCache::key(&base(), &run2, None)
        );
        remember(&cache, "s", &base(), &run1, None);
        let why = cache.explain_miss("s", &StepInputs::new(&base(), &run2, None));
        // Shell-form RUN text is not expanded (the shell sees $VERSION), so only the arg moved.
        assert_eq!(why, "build arg VERSION changed");
    }

    #[test]
    fn proxy_args_stay_out_of_the_key() {
        let df = "FROM scratch\nRUN make\n";
        let plain = steps(df, &[]).pop().unwrap();
        let proxied = steps(df, &[("HTTP_PROXY", "http://proxy:3128")])
            .pop()
            .unwrap();
        assert_ne!(
            plain.kind, proxied.kind,
            "the planner passes the proxy to RUN"
        );
        assert_eq!(
            BuildCache::key(&base(), &plain, None),
            BuildCache::key(&base(), &proxied, None)
        );
    }

    #[test]
    fn instruction_and_parent_changes_are_explained() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let a = steps("FROM scratch\nENV A=1\n", &[]).pop().unwrap();
        let b = steps("FROM scratch\nENV A=2\n", &[]).pop().unwrap();
        let other_base = BuildCache::stage_root(
            Some(&Digest::of(b"alpine")),
            &host(),
            Compression::Gzip,
            None,
        );
        remember(&cache, "s", &base(), &a, None);
        assert_eq!(
            cache.explain_miss("s", &StepInputs::new(&base(), &b, None)),
            "instruction changed"
        );
        assert_eq!(
            cache.explain_miss("s", &StepInputs::new(&other_base, &a, None)),
            "parent changed"
        );
        assert!(
            cache
                .explain_miss("s", &StepInputs::new(&base(), &a, None))
                .starts_with("no cached result")
        );
    }

    #[test]
    fn opaque_sources_key_on_their_digest() {
        let step = steps(
            "FROM scratch AS a\nFROM scratch\nCOPY --from=a /x /x\n",
            &[],
        )
        .pop()
        .unwrap();
        let a = SourceDigest::opaque(Digest::of(b"manifest a"));
        let b = SourceDigest::opaque(Digest::of(b"manifest b"));
        assert_ne!(
            BuildCache::key(&base(), &step, Some(&a)),
            BuildCache::key(&base(), &step, Some(&b))
        );
        assert_ne!(
            BuildCache::key(&base(), &step, Some(&a)),
            BuildCache::key(&base(), &step, None)
        );
    }

    #[test]
    fn a_scratch_stage_is_keyed_by_its_platform_a_based_one_by_its_base() {
        let p = |s: &str| crate::platform::Platform::parse(s).unwrap();
        let root = |base, platform: &str| {
            BuildCache::stage_root(base, &p(platform), Compression::Gzip, None)
        };
        assert_ne!(root(None, "linux/amd64"), root(None, "linux/arm64"));
        assert_eq!(root(None, "linux/arm64"), root(None, "linux/arm64/v8"));
        let m = Digest::of(b"m");
        assert_eq!(root(Some(&m), "linux/amd64"), root(Some(&m), "linux/arm64"));
    }

    #[test]
    fn build_wide_settings_change_the_stage_root() {
        let gz = BuildCache::stage_root(None, &host(), Compression::Gzip, None);
        assert_ne!(
            gz,
            BuildCache::stage_root(None, &host(), Compression::Zstd, None)
        );
        assert_ne!(
            gz,
            BuildCache::stage_root(None, &host(), Compression::Gzip, Some(0))
        );
        assert_ne!(
            gz,
            BuildCache::stage_root(Some(&Digest::of(b"m")), &host(), Compression::Gzip, None)
        );
    }

    #[test]
    fn records_round_trip_survive_prune_while_pinned_and_vanish_with_their_blob() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let step = CachedStep {
            created: 0,
            layer: Some(layer(&store, "layer one")),
            created_by: "COPY . /app # buildkit".to_string(),
        };
        let key = Digest::of(b"key");
        assert_eq!(cache.lookup(&key), None);
        cache.record(&key, &step).unwrap();
        assert_eq!(cache.lookup(&key), Some(step.clone()));

        store.prune().unwrap();
        assert_eq!(cache.lookup(&key), Some(step), "the pin keeps the blob");

        store.unpin(&key.hex()).unwrap();
        store.prune().unwrap();
        assert_eq!(cache.lookup(&key), None, "the blob was pruned");
    }

    #[test]
    fn a_layer_kept_only_unpacked_hits_while_its_dir_is_there_and_the_record_pins_it() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let diff_id = Digest::of(b"tar of the dir");
        store
            .ensure_unpacked(&diff_id, |d| fs::write(d.join("f"), "x"))
            .unwrap();
        let step = CachedStep {
            created: 0,
            layer: Some(BuildLayer::Unpacked { diff_id, size: 3 }),
            created_by: "RUN make".to_string(),
        };
        let key = Digest::of(b"unpacked");
        cache.record(&key, &step).unwrap();
        assert_eq!(cache.lookup(&key), Some(step.clone()));
        assert_eq!(step.blob(), None);

        store.prune().unwrap();
        assert!(
            store.is_unpacked(&diff_id),
            "the record's pin keeps the dir"
        );
        assert_eq!(cache.lookup(&key), Some(step));

        // Without its dir the record is a miss, never a hit without content.
        store.unpin(&key.hex()).unwrap();
        store.prune().unwrap();
        assert!(!store.layer_dir(&diff_id).exists());
        assert_eq!(cache.lookup(&key), None);
    }

    #[test]
    fn a_record_of_a_kiln_before_unpacked_layers_still_reads() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let digest = store.put_blob(b"gz").unwrap();
        let key = Digest::of(b"old");
        let old = serde_json::json!({
            "layer": {"digest": digest, "size": 2, "diff_id": Digest::of(b"t"), "compression": "gzip"},
            "created_by": "RUN old",
            "created": 5,
        });
        fs::create_dir_all(cache.step_path(&key).parent().unwrap()).unwrap();
        fs::write(cache.step_path(&key), old.to_string()).unwrap();
        let hit = cache.lookup(&key).unwrap();
        assert_eq!(hit.blob().map(|l| l.digest), Some(digest));
    }

    #[test]
    fn metadata_only_steps_need_no_blob() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let step = CachedStep {
            created: 0,
            layer: None,
            created_by: "ENV A=1".to_string(),
        };
        let key = Digest::of(b"env");
        cache.record(&key, &step).unwrap();
        assert_eq!(cache.lookup(&key), Some(step));
        assert_eq!(
            fs::read_dir(store_dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_disabled_cache_always_misses_but_still_records() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let step = CachedStep {
            created: 0,
            layer: Some(layer(&store, "l")),
            created_by: "RUN make".to_string(),
        };
        let key = Digest::of(b"k");
        let disabled = BuildCache::open(&store, true);
        disabled.record(&key, &step).unwrap();
        assert_eq!(disabled.lookup(&key), None);
        let inputs = StepInputs {
            parent: base(),
            instruction: "x".to_string(),
            args: BTreeMap::new(),
            files: Vec::new(),
        };
        assert_eq!(
            disabled.explain_miss("s", &inputs),
            "cache disabled (--no-cache)"
        );
        assert_eq!(BuildCache::open(&store, false).lookup(&key), Some(step));
    }

    #[test]
    fn a_damaged_record_is_a_miss() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let key = Digest::of(b"k");
        let path = cache.step_path(&key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "{not json").unwrap();
        assert_eq!(cache.lookup(&key), None);
    }

    #[test]
    fn source_paths_are_relative_to_the_base() {
        let d = project();
        let ctx = Context::open(d.path(), DockerIgnore::parse("").unwrap(), None).unwrap();
        let entries = ctx.entries("src").unwrap();
        let digests = ctx.file_digests(&entries).unwrap();
        let s = source_digest(entries, &digests, "src");
        let names: Vec<&str> = s.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["", "lib.rs", "main.rs"]);
    }

    fn age(path: &Path, secs_ago: i64) {
        let t = filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - secs_ago, 0);
        filetime::set_file_mtime(path, t).unwrap();
    }

    #[test]
    fn trim_drops_old_records_and_their_pins_and_keeps_recent_ones() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let (old_key, new_key) = (Digest::of(b"old"), Digest::of(b"new"));
        let old = CachedStep {
            created: 0,
            layer: Some(layer(&store, "old layer")),
            created_by: "RUN old".to_string(),
        };
        let new = CachedStep {
            created: 0,
            layer: Some(layer(&store, "new layer")),
            created_by: "RUN new".to_string(),
        };
        cache.record(&old_key, &old).unwrap();
        cache.record(&new_key, &new).unwrap();
        remember(&cache, "old slot", &base(), &steps(COPY, &[])[0], None);
        age(&cache.step_path(&old_key), 3 * 86400);
        age(&cache.slot_path("old slot"), 3 * 86400);

        let report = cache.trim(Some(Duration::from_secs(86400)), None).unwrap();
        assert_eq!((report.entries, report.slots), (1, 1));
        assert_eq!(report.kept_bytes, "new layer".len() as u64);
        store.prune().unwrap();
        let old_blob = old.layer.unwrap().blob().unwrap().digest;
        assert!(!store.has_blob(&old_blob), "unpinned, so pruned");
        assert_eq!(cache.lookup(&old_key), None);
        assert_eq!(cache.lookup(&new_key), Some(new));
    }

    #[test]
    fn trim_to_a_size_keeps_the_most_recently_used() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let cache = BuildCache::open(&store, false);
        let keys: Vec<Digest> = (0..3).map(|i| Digest::of(&[i])).collect();
        for (i, key) in keys.iter().enumerate() {
            let step = CachedStep {
                created: 0,
                layer: Some(layer(&store, &"x".repeat(10 * (i + 1)))),
                created_by: format!("RUN {i}"),
            };
            cache.record(key, &step).unwrap();
            age(&cache.step_path(key), 1000 - 100 * i as i64);
        }
        // A hit makes the oldest, smallest record the most recently used.
        assert!(cache.lookup(&keys[0]).is_some());
        let report = cache.trim(None, Some(45)).unwrap();
        assert_eq!(report.kept_bytes, 10 + 30);
        assert_eq!(report.entries, 1);
        assert!(cache.lookup(&keys[0]).is_some());
        assert!(cache.lookup(&keys[1]).is_none());
        assert!(cache.lookup(&keys[2]).is_some());
    }

    #[test]
    fn context_sources_cover_several_paths_and_see_only_their_files() {
        let d = project();
        let ctx = Context::open(d.path(), DockerIgnore::parse("").unwrap(), None).unwrap();
        let both = context_sources(&ctx, &["src".into(), "README".into()]).unwrap();
        let names: Vec<&str> = both.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["README", "src", "src/lib.rs", "src/main.rs"]);
        let src_only = context_sources(&ctx, &["src".into()]).unwrap();
        fs::write(d.path().join("README"), "changed").unwrap();
        let ctx = Context::open(d.path(), DockerIgnore::parse("").unwrap(), None).unwrap();
        assert_eq!(context_sources(&ctx, &["src".into()]).unwrap(), src_only);
        assert_ne!(
            context_sources(&ctx, &["src".into(), "README".into()]).unwrap(),
            both
        );
        assert!(matches!(
            context_sources(&ctx, &["missing".into()]),
            Err(ContextError::NotFound(_))
        ));
    }
}
