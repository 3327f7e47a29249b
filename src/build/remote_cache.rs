//! The registry build cache (`--cache-from REF` / `--cache-to REF`): the step records of a build
//! shared through an OCI registry, so CI runners and build pods with empty stores reuse each
//! other's layers.
//!
//! API:
//! - [`CacheRegistry`]: the three registry operations the cache needs, implemented by the caller
//!   (the CLI, over its registry client and credentials), so this module knows nothing of
//!   tokio, HTTP or credentials.
//! - [`RemoteCache`]: what the caller puts in [`super::Hooks`]: the registry and the REFs.
//! - [`Session`] (used by `stage.rs`/`mod.rs`): [`Session::open`] imports every `--cache-from`
//!   REF once; [`Session::fetch`] serves a local miss from them (layer pulled into the store,
//!   verified, recorded locally); [`Session::note`] remembers each record the build used or
//!   produced; [`Session::export`] pushes them to `--cache-to` after a successful build.
//!
//! One REF is one tag holding one OCI image manifest (like BuildKit's `type=registry,mode=max`,
//! but with our own keys): `artifactType` [`ARTIFACT_TYPE`], a config blob of media type
//! [`CONFIG_TYPE`] that lists the records as [`CacheConfig`], and `layers` naming every layer
//! blob a record uses, so the registry keeps them (garbage collection follows manifests) and a
//! later export can skip or mount what is already there. distribution 2.8 ignores
//! `artifactType` (it predates it) but accepts the custom config type, which is how tools tell
//! the manifest apart there. An export replaces the tag with this build's records only: the
//! REF stays bounded by one build's size, whatever the number of builds.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::cache::{BuildCache, CachedStep};
use crate::digest::Digest;
use crate::image::{Compression, ImageFormat, Layer};
use crate::progress::Progress;
use crate::store::Store;

/// The cache manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// The media type of the cache manifest's config blob (the record list).
pub const CONFIG_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Bumped when the record format changes; other versions are ignored, not misread.
const FORMAT_VERSION: u32 = 1;
/// A record list larger than this is refused (a build with thousands of steps is ~1 MiB).
const MAX_CONFIG: u64 = 32 << 20;

/// The registry operations the cache needs. Errors are messages for the user that name the
/// registry and the REF (and never a credential).
pub trait CacheRegistry: Sync {
    /// The manifest tagged `cache_ref`, or `Ok(None)` when the registry has none there.
    fn get_manifest(&self, cache_ref: &str) -> Result<Option<Vec<u8>>, String>;
    /// Streams blob `digest` (`size` bytes) of `cache_ref`'s repository into `store`,
    /// committed only once its digest is verified.
    fn pull_blob(
        &self,
        cache_ref: &str,
        digest: &Digest,
        size: u64,
        store: &Store,
    ) -> Result<(), String>;
    /// Pushes the OCI manifest `manifest` to `cache_ref`: its config and layer blobs, read from
    /// `store`, first (skipped or mounted when the registry has them), then the manifest.
    fn push(&self, cache_ref: &str, manifest: &[u8], store: &Store) -> Result<(), String>;
}

/// The registry cache of a build, supplied by the caller in [`super::Hooks`].
pub struct RemoteCache<'a> {
    pub registry: &'a dyn CacheRegistry,
    /// `--cache-from` REFs, searched in this order on a local miss.
    pub from: Vec<String>,
    /// `--cache-to` REF, written after a successful build.
    pub to: Option<String>,
}

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

impl RemoteRecord {
    fn from_step(key: Digest, step: &CachedStep) -> RemoteRecord {
        RemoteRecord {
            key,
            created_by: step.created_by.clone(),
            created: step.created,
            layer: step.layer.map(|l| RemoteLayer {
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
            Some(l) => Some(Layer {
                digest: l.digest,
                size: l.size,
                diff_id: l.diff_id,
                compression: Compression::of_layer(&l.media_type, &l.digest).ok()?,
            }),
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
    let mut seen = std::collections::BTreeSet::new();
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

/// The config descriptor of a cache manifest, or why it is not one.
fn config_descriptor(manifest: &[u8]) -> Result<(Digest, u64), String> {
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: Digest,
        size: u64,
    }
    #[derive(Deserialize)]
    struct Raw {
        config: Desc,
    }
    let raw: Raw =
        serde_json::from_slice(manifest).map_err(|e| format!("not a kiln cache manifest ({e})"))?;
    if raw.config.media_type != CONFIG_TYPE {
        return Err(format!(
            "not a kiln cache (its config is {:?}, not {CONFIG_TYPE}); \
             point --cache-from/--cache-to at a tag used only for the cache",
            raw.config.media_type
        ));
    }
    if raw.config.size > MAX_CONFIG {
        return Err(format!(
            "its record list is {} bytes, over the {MAX_CONFIG} byte limit",
            raw.config.size
        ));
    }
    Ok((raw.config.digest, raw.config.size))
}

/// The registry cache during one build. Without a [`RemoteCache`] every method is a no-op.
pub(crate) struct Session<'a> {
    remote: Option<&'a RemoteCache<'a>>,
    store: &'a Store,
    /// Imported records by key, with the index of the REF they came from.
    imported: HashMap<Digest, (usize, RemoteRecord)>,
    /// What this build used or produced, in step order, each key once (for `--cache-to`).
    used: Mutex<Vec<RemoteRecord>>,
}

impl<'a> Session<'a> {
    /// Reads every `--cache-from` REF. A REF that does not exist is an info line, one that
    /// cannot be read a warning: the build goes on without it either way.
    pub fn open(
        remote: Option<&'a RemoteCache<'a>>,
        store: &'a Store,
        progress: &Progress,
    ) -> Self {
        let mut imported = HashMap::new();
        for (i, cache_ref) in remote.iter().flat_map(|r| r.from.iter().enumerate()) {
            let registry = remote.expect("iterating its REFs").registry;
            match import(registry, cache_ref, store) {
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
                    "cannot use the cache at {cache_ref}, building without it: {e}"
                )),
            }
        }
        Session {
            remote,
            store,
            imported,
            used: Mutex::new(Vec::new()),
        }
    }

    /// Serves `key` from an imported REF: pulls its layer into the store unless already there,
    /// records the step in the local `cache` and says so on `progress`. A blob that cannot be
    /// fetched is a warning and a miss.
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
        let (remote, (from, record)) = (self.remote?, self.imported.get(key)?);
        let cache_ref = &remote.from[*from];
        let step = record.to_step()?;
        if let Some(layer) = &step.layer {
            if let Err(e) = self.fetch_layer(remote.registry, cache_ref, layer) {
                progress.warn(format!(
                    "{step_name}: cannot use layer {} from the cache at {cache_ref}, \
                     building the step instead: {e}",
                    layer.digest
                ));
                return None;
            }
        }
        if let Err(e) = cache.record(key, &step) {
            progress.warn(format!("could not record the build cache: {e}"));
        }
        progress.info(format!("  found in the cache at {cache_ref}"));
        Some(step)
    }

    /// Puts `layer` in the store unless it is there, and checks the diffID the record claims
    /// (the registry verified only the compressed digest): a wrong diffID would give an image
    /// whose config does not match its layers.
    fn fetch_layer(
        &self,
        registry: &dyn CacheRegistry,
        cache_ref: &str,
        layer: &Layer,
    ) -> Result<(), String> {
        if !self.store.has_blob(&layer.digest) {
            registry.pull_blob(cache_ref, &layer.digest, layer.size, self.store)?;
        }
        let blob = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| e.to_string())?;
        let actual = crate::layer::diff_id(std::io::BufReader::new(blob))
            .map_err(|e| format!("reading the layer: {e}"))?;
        if actual != layer.diff_id {
            return Err(format!(
                "its tar has diffID {actual}, not the {} the cache records; \
                 the cache at {cache_ref} is damaged: export it again",
                layer.diff_id
            ));
        }
        Ok(())
    }

    /// Remembers a step record this build used or produced, for [`Session::export`].
    pub fn note(&self, key: &Digest, step: &CachedStep) {
        if self.remote.is_some_and(|r| r.to.is_some()) {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            // A stage built twice over (`FROM stage` reuses keys) is exported once.
            if !used.iter().any(|r| r.key == *key) {
                used.push(RemoteRecord::from_step(*key, step));
            }
        }
    }

    /// Pushes this build's records to `--cache-to`, if given. A failure is a warning: the
    /// image was built, only the next build elsewhere will be slower.
    pub fn export(&self, progress: &Progress) {
        let Some((remote, cache_ref)) = self.remote.and_then(|r| r.to.as_ref().map(|to| (r, to)))
        else {
            return;
        };
        let records: Vec<RemoteRecord> =
            self.used.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (manifest, config) = encode(&records);
        let pushed = self
            .store
            .put_blob(&config)
            .map_err(|e| format!("storing the record list: {e}"))
            .and_then(|_| remote.registry.push(cache_ref, &manifest, self.store));
        match pushed {
            Ok(()) => progress.info(format!(
                "exported the build cache to {cache_ref}: {} step record(s)",
                records.len()
            )),
            Err(e) => progress.warn(format!(
                "could not export the build cache to {cache_ref} (the image is built): {e}"
            )),
        }
    }
}

/// The records at `cache_ref`, `None` when there is no cache there.
fn import(
    registry: &dyn CacheRegistry,
    cache_ref: &str,
    store: &Store,
) -> Result<Option<Vec<RemoteRecord>>, String> {
    let Some(manifest) = registry.get_manifest(cache_ref)? else {
        return Ok(None);
    };
    let (digest, size) = config_descriptor(&manifest)?;
    if !store.has_blob(&digest) {
        registry.pull_blob(cache_ref, &digest, size, store)?;
    }
    let mut bytes = Vec::with_capacity(size as usize);
    store
        .open_blob(&digest)
        .map_err(|e| e.to_string())?
        .take(MAX_CONFIG)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading its record list {digest}: {e}"))?;
    let config: CacheConfig = serde_json::from_slice(&bytes)
        .map_err(|e| format!("its record list {digest} is not valid: {e}"))?;
    if config.version != FORMAT_VERSION {
        return Err(format!(
            "it was written by a kiln with cache format {} (this one reads {FORMAT_VERSION}); \
             export it again with this kiln",
            config.version
        ));
    }
    Ok(Some(config.records))
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
            layer: Some(Layer {
                digest,
                size: blob.len() as u64,
                diff_id: Digest::of(seed.as_bytes()),
                compression: Compression::Gzip,
            }),
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
    }

    impl CacheRegistry for FakeRegistry {
        fn get_manifest(&self, cache_ref: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.manifests.lock().unwrap().get(cache_ref).cloned())
        }
        fn pull_blob(
            &self,
            _: &str,
            digest: &Digest,
            size: u64,
            store: &Store,
        ) -> Result<(), String> {
            self.pulls.lock().unwrap().push(*digest);
            let blobs = self.blobs.lock().unwrap();
            let bytes = blobs.get(digest).ok_or("blob unknown: HTTP 404")?;
            assert_eq!(bytes.len() as u64, size);
            assert_eq!(store.put_blob(bytes).unwrap(), *digest);
            Ok(())
        }
        fn push(&self, cache_ref: &str, manifest: &[u8], store: &Store) -> Result<(), String> {
            let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
            let descs = std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap());
            for d in descs {
                let digest: Digest = d["digest"].as_str().unwrap().parse().unwrap();
                let mut bytes = Vec::new();
                store
                    .open_blob(&digest)
                    .unwrap()
                    .read_to_end(&mut bytes)
                    .unwrap();
                self.blobs.lock().unwrap().insert(digest, bytes);
            }
            let mut manifests = self.manifests.lock().unwrap();
            manifests.insert(cache_ref.to_string(), manifest.to_vec());
            Ok(())
        }
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
        assert!(err.contains("not a kiln cache"), "{err}");
    }

    #[test]
    fn export_then_import_into_an_empty_store_serves_hits_with_verified_layers() {
        let registry = FakeRegistry::default();
        let first_dir = tempfile::tempdir().unwrap();
        let first = Store::open(first_dir.path()).unwrap();
        let (key, step) = record(&first, "layer bytes");
        let to = RemoteCache {
            registry: &registry,
            from: vec![],
            to: Some("reg/cache:main".into()),
        };
        let session = Session::open(Some(&to), &first, &Progress::none());
        session.note(&key, &step);
        session.export(&Progress::none());
        assert_eq!(registry.manifests.lock().unwrap().len(), 1);

        let second_dir = tempfile::tempdir().unwrap();
        let second = Store::open(second_dir.path()).unwrap();
        let from = RemoteCache {
            registry: &registry,
            from: vec!["reg/cache:missing".into(), "reg/cache:main".into()],
            to: None,
        };
        let (progress, events) = Progress::channel();
        let session = Session::open(Some(&from), &second, &progress);
        let cache = BuildCache::open(&second, false);
        assert_eq!(cache.lookup(&key), None);
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
        assert!(second.has_blob(&step.layer.unwrap().digest));
        assert_eq!(cache.lookup(&key), Some(step), "recorded locally");
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
    }

    #[test]
    fn a_layer_that_cannot_be_fetched_is_a_warned_miss() {
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
        let remote = RemoteCache {
            registry: &registry,
            from: vec!["r".into()],
            to: None,
        };
        let (progress, events) = Progress::channel();
        let session = Session::open(Some(&remote), &empty, &progress);
        let cache = BuildCache::open(&empty, false);
        assert_eq!(session.fetch(&key, &cache, "RUN gone", &progress), None);
        assert_eq!(cache.lookup(&key), None);
        drop(progress);
        assert!(events.iter().any(|e| matches!(
            e,
            crate::progress::Event::Warning { message } if message.contains("RUN gone: cannot use layer")
        )));
    }

    #[test]
    fn a_record_whose_diff_id_does_not_match_its_layer_is_a_warned_miss() {
        let registry = FakeRegistry::default();
        let first_dir = tempfile::tempdir().unwrap();
        let first = Store::open(first_dir.path()).unwrap();
        let (key, mut step) = record(&first, "layer");
        step.layer.as_mut().unwrap().diff_id = Digest::of(b"a lie");
        let to = RemoteCache {
            registry: &registry,
            from: vec![],
            to: Some("r".into()),
        };
        let session = Session::open(Some(&to), &first, &Progress::none());
        session.note(&key, &step);
        session.export(&Progress::none());

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let from = RemoteCache {
            registry: &registry,
            from: vec!["r".into()],
            to: None,
        };
        let (progress, events) = Progress::channel();
        let session = Session::open(Some(&from), &store, &progress);
        let cache = BuildCache::open(&store, false);
        assert_eq!(session.fetch(&key, &cache, "RUN x", &progress), None);
        assert_eq!(cache.lookup(&key), None, "nothing recorded");
        drop(progress);
        assert!(events.iter().any(|e| matches!(
            e,
            crate::progress::Event::Warning { message } if message.contains("the cache at r is damaged")
        )));
    }

    #[test]
    fn without_a_remote_cache_nothing_happens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (key, step) = record(&store, "x");
        let session = Session::open(None, &store, &Progress::none());
        session.note(&key, &step);
        session.export(&Progress::none());
        let cache = BuildCache::open(&store, false);
        assert_eq!(
            session.fetch(&key, &cache, "RUN x", &Progress::none()),
            None
        );
    }
}
