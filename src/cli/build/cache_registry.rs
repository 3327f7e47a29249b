//! `kiln build --cache-from/--cache-to`: the registry side of the shared build cache, over the
//! same registry client, flags and credentials as `pull`/`push`.
//!
//! Flags take a plain `REF` or BuildKit's form, `type=registry,ref=REF` (and for `--cache-to`
//! `,mode=max|min`, default max: see [`ExportMode`]).
//!
//! Layers that cache hits left in the registry (see `build::remote_cache`) reach another
//! repository through [`CacheClients::place`]: a cross-repository mount from the cache
//! repository when both are on one registry, else a download into the store (the push then
//! uploads it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::Reference;
use crate::build::remote_cache::{CacheRegistry, ExportMode, RegistryFailure, RemoteCache};
use crate::digest::Digest;
use crate::platform::Platform;
use crate::progress::Progress;
use crate::registry::{
    BlobSource, Manifest, OCI_MANIFEST, Parsed, Pulled, Registry, RegistryError, StoreBlobs,
};
use crate::store::{Store, StoreError};

use super::Args;
use super::clients::Clients;

/// Mounts (or downloads, when a registry does not mount) at once in
/// [`CacheClients::place`]: a mount is one small request, so an image's layers go in one
/// round or two.
const PLACED_AT_ONCE: usize = 8;

/// One client per cache REF, made up front so a bad REF or credential fails before the build.
pub(super) struct CacheClients<'a> {
    rt: &'a tokio::runtime::Runtime,
    clients: HashMap<String, Source>,
    /// Layers of base images pulled without them ([`CacheClients::note_lazy_base`]), with
    /// the image they belong to.
    lazy_bases: Mutex<HashMap<Digest, Source>>,
    /// The manifest digest of each base pulled without its layers, by reference and
    /// platform: such a base stays unnamed in the store, and the build resolves it once.
    lazy_pulled: Mutex<HashMap<(String, String), Digest>>,
    /// `--cache-from` REFs, in preference order.
    from: Vec<String>,
    /// `--cache-to` REF and mode.
    to: Option<(String, ExportMode)>,
}

/// A repository holding blobs, with the client for its registry.
type Source = (Reference, Arc<Registry>);

/// What [`CacheClients::place`] did for the blobs the store lacks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    /// Already in the destination repository, or mounted into it from a cache repository.
    pub mounted: usize,
    /// Downloaded into the store from a cache REF (to be uploaded by the push).
    pub downloaded: usize,
    pub bytes_downloaded: u64,
    /// The blobs the destination repository was seen to hold (`mounted` of them): the push
    /// that follows need not ask again ([`PlacedBlobs`]).
    pub confirmed: HashSet<Digest>,
}

/// The store as the push's blob source, plus blobs of `repo` on `host` the push sends no
/// `HEAD` for: those [`CacheClients::place`] confirmed, or is placing at the same time (the
/// caller then waits for it before the manifests go up).
pub(super) struct PlacedBlobs<'s> {
    pub store: &'s Store,
    pub host: &'s str,
    pub repo: &'s str,
    pub confirmed: &'s HashSet<Digest>,
}

impl BlobSource for PlacedBlobs<'_> {
    fn open_blob(&self, digest: &Digest) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        StoreBlobs(self.store).open_blob(digest)
    }
    fn mount_candidates(&self, host: &str, digest: &Digest) -> Vec<String> {
        StoreBlobs(self.store).mount_candidates(host, digest)
    }
    fn record_pushed(&self, host: &str, repo: &str, digests: &[Digest]) -> std::io::Result<()> {
        StoreBlobs(self.store).record_pushed(host, repo, digests)
    }
    fn confirmed(&self, host: &str, repo: &str, digest: &Digest) -> bool {
        host == self.host && repo == self.repo && self.confirmed.contains(digest)
    }
}

/// Why a registry operation of the cache failed (the [`RegistryFailure`] the build keeps as
/// the cause of its own error).
#[derive(Debug, thiserror::Error)]
enum CacheClientError {
    #[error("{0} was not given as --cache-from/--cache-to")]
    UnknownRef(String),
    #[error("{0} has no tag; give --cache-to a tag (the cache is rewritten at each export)")]
    NoTag(String),
    /// Names the registry and what was asked of it.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pulling a layer of {reference}")]
    BaseLayer {
        reference: Reference,
        #[source]
        source: Box<CacheClientError>,
    },
}

/// A `--cache-from`/`--cache-to` value: `REF`, or `type=registry,ref=REF[,mode=max|min]`.
fn parse_spec(flag: &str, spec: &str) -> anyhow::Result<(String, Option<ExportMode>)> {
    if !spec.contains('=') {
        return Ok((spec.to_string(), None));
    }
    let (mut reference, mut mode) = (None, None);
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').with_context(|| {
            format!("{flag} {spec}: expected REF or type=registry,ref=REF fields")
        })?;
        match (k.trim(), v) {
            ("type", "registry") => {}
            ("type", other) => anyhow::bail!(
                "{flag} {spec}: type={other} is not supported; kiln caches in a registry \
                 (type=registry)"
            ),
            ("ref", r) => reference = Some(r.to_string()),
            ("mode", "max") if flag == "--cache-to" => mode = Some(ExportMode::Max),
            ("mode", "min") if flag == "--cache-to" => mode = Some(ExportMode::Min),
            ("mode", other) if flag == "--cache-to" => {
                anyhow::bail!("{flag} {spec}: mode={other}: use mode=max or mode=min")
            }
            (other, _) => anyhow::bail!(
                "{flag} {spec}: unknown key {other:?} (type, ref{})",
                if flag == "--cache-to" { ", mode" } else { "" }
            ),
        }
    }
    let reference = reference.with_context(|| format!("{flag} {spec}: ref=REF is required"))?;
    Ok((reference, mode))
}

impl<'a> CacheClients<'a> {
    /// `None` when neither flag is given.
    pub(super) fn new(
        a: &Args,
        rt: &'a tokio::runtime::Runtime,
        shared: &Clients,
    ) -> anyhow::Result<Option<CacheClients<'a>>> {
        let mut from = Vec::new();
        for spec in &a.cache_from {
            from.push(parse_spec("--cache-from", spec)?.0);
        }
        let to = match &a.cache_to {
            Some(spec) => {
                let (r, mode) = parse_spec("--cache-to", spec)?;
                Some((r, mode.unwrap_or_default()))
            }
            None => None,
        };
        let mut clients = HashMap::new();
        for (flag, r) in from
            .iter()
            .map(|r| ("--cache-from", r))
            .chain(to.iter().map(|(r, _)| ("--cache-to", r)))
        {
            let reference: Reference = r
                .parse()
                .with_context(|| format!("{flag} {r}: expected REGISTRY/REPOSITORY:TAG"))?;
            if flag == "--cache-to" {
                anyhow::ensure!(
                    reference.digest().is_none(),
                    "--cache-to {r}: give a tag, not a digest (the cache is rewritten at each export)"
                );
            }
            let client = shared.for_ref(a, &reference)?;
            clients.insert(r.clone(), (reference, client));
        }
        if clients.is_empty() {
            return Ok(None);
        }
        Ok(Some(CacheClients {
            rt,
            clients,
            lazy_bases: Mutex::new(HashMap::new()),
            lazy_pulled: Mutex::new(HashMap::new()),
            from,
            to,
        }))
    }

    /// The hook for `build()`; `leave_layers` when the image is only pushed (see
    /// [`RemoteCache::leave_layers`]).
    pub(super) fn hook(&'a self, leave_layers: bool) -> RemoteCache<'a> {
        RemoteCache {
            registry: self,
            from: self.from.clone(),
            to: self.to.as_ref().map(|(r, _)| r.clone()),
            mode: self.to.as_ref().map(|(_, m)| *m).unwrap_or_default(),
            leave_layers,
            imports: Default::default(),
        }
    }

    fn client(&self, cache_ref: &str) -> Result<&Source, CacheClientError> {
        self.clients
            .get(cache_ref)
            .ok_or_else(|| CacheClientError::UnknownRef(cache_ref.to_string()))
    }

    /// Streams blob `digest` of `reference`'s repository into `store`, committed once its
    /// digest is verified (an uncommitted writer dropped on error is discarded).
    fn pull_into(
        &self,
        (reference, registry): &Source,
        digest: &Digest,
        size: u64,
        store: &Store,
    ) -> Result<(), CacheClientError> {
        let mut w = store.begin_blob()?;
        self.rt.block_on(registry.pull_blob(
            reference.repository(),
            digest,
            size,
            &mut w,
            &Progress::none(),
        ))?;
        w.commit(Some(digest))?;
        Ok(())
    }

    /// Remembers that the layers of base image `reference` were not pulled (see
    /// `Registry::pull_image_lazily`): `registry` fetches them when a step needs them, and
    /// [`CacheClients::place`] mounts them from that repository. Later pulls of it for
    /// `platform` in this build are answered by [`CacheClients::lazily_pulled`].
    pub(super) fn note_lazy_base(
        &self,
        reference: &Reference,
        platform: &Platform,
        registry: Arc<Registry>,
        pulled: &Pulled,
    ) {
        let mut bases = self.lazy_bases.lock().unwrap_or_else(|e| e.into_inner());
        for d in &pulled.layers {
            bases.insert(*d, (reference.clone(), registry.clone()));
        }
        self.lazy_pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (reference.to_string(), platform.to_string()),
                pulled.manifest.digest,
            );
    }

    /// The manifest digest of `reference` for `platform` when this build already pulled it
    /// without its layers (its manifest and config are in the store).
    pub(super) fn lazily_pulled(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Option<Digest> {
        self.lazy_pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(reference.to_string(), platform.to_string()))
            .copied()
    }

    /// Where `digest` may be found: the base image it belongs to if it was pulled without
    /// its layers, then the `--cache-from` repositories, in order.
    fn sources(&self, digest: &Digest) -> Vec<Source> {
        let bases = self.lazy_bases.lock().unwrap_or_else(|e| e.into_inner());
        let base = bases.get(digest).cloned();
        base.into_iter()
            .chain(
                self.from
                    .iter()
                    .filter_map(|r| self.clients.get(r))
                    .cloned(),
            )
            .collect()
    }

    /// Makes sure that `repo` on `dest` will get each of `blobs` (digest, size) that the store
    /// lacks, in the order: it has it already, a mount from a `--cache-from` repository of
    /// the same registry, a download into the store from the first `--cache-from` REF that
    /// serves it (for the push to upload). Errors name the blob and what was tried.
    pub(super) async fn place(
        &self,
        dest: &Registry,
        repo: &str,
        blobs: &[(Digest, u64)],
        store: &Store,
        progress: &Progress,
    ) -> Result<Placed, RegistryError> {
        let missing: Vec<(Digest, u64)> = blobs
            .iter()
            .filter(|(d, _)| !store.has_blob(d))
            .copied()
            .collect();
        let outcomes: Vec<(Digest, Option<u64>)> = stream::iter(missing)
            .map(|(digest, size)| async move {
                let placed = self.place_one(dest, repo, digest, size, store, progress);
                Ok::<_, RegistryError>((digest, placed.await?))
            })
            .buffer_unordered(PLACED_AT_ONCE)
            .try_collect()
            .await?;
        let mut placed = Placed::default();
        for (digest, o) in outcomes {
            match o {
                None => {
                    placed.mounted += 1;
                    placed.confirmed.insert(digest);
                }
                Some(bytes) => {
                    placed.downloaded += 1;
                    placed.bytes_downloaded += bytes;
                }
            }
        }
        Ok(placed)
    }

    /// `None` when `repo` has the blob (mounted or there), `Some(size)` when downloaded.
    async fn place_one(
        &self,
        dest: &Registry,
        repo: &str,
        digest: Digest,
        size: u64,
        store: &Store,
        progress: &Progress,
    ) -> Result<Option<u64>, RegistryError> {
        let sources = self.sources(&digest);
        let mut same_registry = sources
            .iter()
            .filter(|(r, _)| r.api_host() == dest.host() && r.repository() != repo)
            .map(|(r, _)| r.repository());
        // A mount also answers 201 when the repository holds the blob already, so it goes
        // first: one request per layer left in the registry, not a HEAD and a mount.
        let first = same_registry.next();
        if let Some(from) = first {
            if dest.mount_blob(repo, &digest, from).await? {
                return Ok(None);
            }
        }
        if dest.blob_exists(repo, &digest).await?.is_some() {
            return Ok(None);
        }
        for from in same_registry {
            if dest.mount_blob(repo, &digest, from).await? {
                return Ok(None);
            }
        }
        let mut last = None;
        for (reference, client) in &sources {
            let mut w = store
                .begin_blob()
                .map_err(|e| io_error(&digest, std::io::Error::other(e)))?;
            let got = client
                .pull_blob(reference.repository(), &digest, size, &mut w, progress)
                .await;
            match got {
                Ok(()) => {
                    w.commit(Some(&digest))
                        .map_err(|e| io_error(&digest, std::io::Error::other(e)))?;
                    return Ok(Some(size));
                }
                // Dropping the uncommitted writer discards it; the next REF may have it.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Manifest {
            registry: dest.host().to_string(),
            what: format!("blob {digest} for {repo}"),
            message: "it is not in the store and kiln knows no repository to fetch it from; \
                      build again without --push to have it locally"
                .into(),
        }))
    }
}

fn io_error(digest: &Digest, source: std::io::Error) -> RegistryError {
    RegistryError::Io {
        what: format!("storing blob {digest} from the registry cache"),
        source,
    }
}

impl CacheRegistry for CacheClients<'_> {
    fn get_manifest(&self, cache_ref: &str) -> Result<Option<Vec<u8>>, RegistryFailure> {
        let (reference, registry) = self.client(cache_ref)?;
        let got = self.rt.block_on(registry.get_manifest(
            reference.repository(),
            &reference.manifest_selector(),
            None,
        ));
        match got {
            Ok(m) => Ok(Some(m.bytes)),
            // MANIFEST_UNKNOWN and NAME_UNKNOWN: nothing exported there yet.
            Err(RegistryError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(CacheClientError::from(e).into()),
        }
    }

    fn pull_blob(
        &self,
        cache_ref: &str,
        digest: &Digest,
        size: u64,
        store: &Store,
    ) -> Result<(), RegistryFailure> {
        let source = self.client(cache_ref)?;
        Ok(self.pull_into(source, digest, size, store)?)
    }

    fn pull_base_layer(
        &self,
        digest: &Digest,
        size: u64,
        store: &Store,
    ) -> Option<Result<(), RegistryFailure>> {
        let source = self
            .lazy_bases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()?;
        let pulled = self.pull_into(&source, digest, size, store);
        Some(pulled.map_err(|e| {
            CacheClientError::BaseLayer {
                reference: source.0,
                source: Box::new(e),
            }
            .into()
        }))
    }

    fn push(&self, cache_ref: &str, manifest: &[u8], store: &Store) -> Result<(), RegistryFailure> {
        let (reference, registry) = self.client(cache_ref)?;
        let tag = reference
            .tag()
            .ok_or_else(|| CacheClientError::NoTag(cache_ref.to_string()))?;
        let manifest = Manifest::from_bytes(manifest.to_vec(), Some(OCI_MANIFEST));
        let layers: Vec<(Digest, u64)> = match manifest.parse() {
            Ok(Parsed::Image { layers, .. }) => layers.iter().map(|l| (l.digest, l.size)).collect(),
            _ => Vec::new(),
        };
        let repo = reference.repository();
        self.rt
            .block_on(async {
                // Layers of hits this build left in the registry, and of earlier records.
                let placed = self
                    .place(registry, repo, &layers, store, &Progress::none())
                    .await?;
                let mount_from = self
                    .from
                    .iter()
                    .filter_map(|r| self.clients.get(r))
                    .find(|(r, _)| r.api_host() == reference.api_host() && r.repository() != repo)
                    .map(|(r, _)| r.repository());
                registry
                    .push_image(
                        repo,
                        &[tag.to_string()],
                        &manifest,
                        &PlacedBlobs {
                            store,
                            host: registry.host(),
                            repo,
                            confirmed: &placed.confirmed,
                        },
                        mount_from,
                        &Progress::none(),
                    )
                    .await
            })
            .map(drop)
            .map_err(|e| CacheClientError::from(e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_flags_take_a_ref_or_buildkit_fields() {
        assert_eq!(
            parse_spec("--cache-to", "reg/c:main").unwrap(),
            ("reg/c:main".into(), None)
        );
        assert_eq!(
            parse_spec("--cache-to", "type=registry,ref=reg/c:main,mode=min").unwrap(),
            ("reg/c:main".into(), Some(ExportMode::Min))
        );
        assert_eq!(
            parse_spec("--cache-to", "ref=reg/c:main,mode=max").unwrap(),
            ("reg/c:main".into(), Some(ExportMode::Max))
        );
        assert_eq!(
            parse_spec("--cache-from", "type=registry,ref=reg/c:main").unwrap(),
            ("reg/c:main".into(), None)
        );
        for (flag, bad, says) in [
            ("--cache-to", "type=local,dest=/x", "type=local"),
            ("--cache-to", "ref=r:t,mode=all", "mode=all"),
            ("--cache-from", "ref=r:t,mode=max", "unknown key \"mode\""),
            ("--cache-to", "mode=max", "ref=REF is required"),
            ("--cache-to", "ref=r:t,colour=red", "unknown key"),
        ] {
            let err = format!("{:#}", parse_spec(flag, bad).unwrap_err());
            assert!(err.contains(says) && err.contains(flag), "{bad}: {err}");
        }
    }
}
