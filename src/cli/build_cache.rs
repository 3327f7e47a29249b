//! `kiln build --cache-from/--cache-to`: the registry side of the shared build cache, over the
//! same registry client, flags and credentials as `pull`/`push`.

use std::collections::HashMap;

use anyhow::Context as _;

use crate::Reference;
use crate::build::remote_cache::{CacheRegistry, RemoteCache};
use crate::digest::Digest;
use crate::error_chain::Causes;
use crate::progress::Progress;
use crate::registry::{Manifest, OCI_MANIFEST, Registry, RegistryError, StoreBlobs};
use crate::store::Store;

use super::build::Args;

/// One client per cache REF, made up front so a bad REF or credential fails before the build.
pub(super) struct CacheClients<'a> {
    rt: &'a tokio::runtime::Runtime,
    clients: HashMap<String, (Reference, Registry)>,
    /// `--cache-from` REFs, for mounting blobs into the `--cache-to` repository.
    from: Vec<String>,
}

impl<'a> CacheClients<'a> {
    /// `None` when neither flag is given.
    pub(super) fn new(
        a: &Args,
        rt: &'a tokio::runtime::Runtime,
    ) -> anyhow::Result<Option<CacheClients<'a>>> {
        let mut clients = HashMap::new();
        for (flag, r) in a
            .cache_from
            .iter()
            .map(|r| ("--cache-from", r))
            .chain(a.cache_to.iter().map(|r| ("--cache-to", r)))
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
            let cred = a.creds.resolve(&reference)?;
            let client = a.transport.client(reference.api_host(), cred)?;
            clients.insert(r.clone(), (reference, client));
        }
        if clients.is_empty() {
            return Ok(None);
        }
        Ok(Some(CacheClients {
            rt,
            clients,
            from: a.cache_from.clone(),
        }))
    }

    /// The hook for `build()`.
    pub(super) fn hook(&'a self, a: &Args) -> RemoteCache<'a> {
        RemoteCache {
            registry: self,
            from: a.cache_from.clone(),
            to: a.cache_to.clone(),
        }
    }

    fn client(&self, cache_ref: &str) -> Result<&(Reference, Registry), String> {
        self.clients
            .get(cache_ref)
            .ok_or_else(|| format!("{cache_ref} was not given as --cache-from/--cache-to"))
    }

    /// A `--cache-from` repository on the same registry as `to`, to mount blobs from.
    fn mount_source(&self, to: &Reference) -> Option<&str> {
        self.from
            .iter()
            .filter_map(|r| self.clients.get(r))
            .map(|(r, _)| r)
            .find(|r| r.api_host() == to.api_host() && r.repository() != to.repository())
            .map(|r| r.repository())
    }
}

impl CacheRegistry for CacheClients<'_> {
    fn get_manifest(&self, cache_ref: &str) -> Result<Option<Vec<u8>>, String> {
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
            Err(e) => Err(Causes(&e).to_string()),
        }
    }

    fn pull_blob(
        &self,
        cache_ref: &str,
        digest: &Digest,
        size: u64,
        store: &Store,
    ) -> Result<(), String> {
        let (reference, registry) = self.client(cache_ref)?;
        let mut w = store.begin_blob().map_err(|e| Causes(&e).to_string())?;
        self.rt
            .block_on(registry.pull_blob(
                reference.repository(),
                digest,
                size,
                &mut w,
                &Progress::none(),
            ))
            .map_err(|e| Causes(&e).to_string())?;
        // Dropping an uncommitted writer on error discards it; commit checks the digest again.
        w.commit(Some(digest)).map_err(|e| Causes(&e).to_string())?;
        Ok(())
    }

    fn push(&self, cache_ref: &str, manifest: &[u8], store: &Store) -> Result<(), String> {
        let (reference, registry) = self.client(cache_ref)?;
        let tag = reference
            .tag()
            .ok_or_else(|| format!("{cache_ref} has no tag"))?;
        let manifest = Manifest::from_bytes(manifest.to_vec(), Some(OCI_MANIFEST));
        self.rt
            .block_on(registry.push_image(
                reference.repository(),
                &[tag.to_string()],
                &manifest,
                &StoreBlobs(store),
                self.mount_source(reference),
                &Progress::none(),
            ))
            .map(drop)
            .map_err(|e| Causes(&e).to_string())
    }
}
