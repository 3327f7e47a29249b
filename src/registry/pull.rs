//! Pull: manifests (verified), platform selection, and blobs streamed into a sink with digest
//! and size checked before the sink may commit them.

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::auth::Scopes;
use super::client::{Registry, read_capped};
use super::error::RegistryError;
use super::manifest::{
    MANIFEST_ACCEPT, MAX_MANIFEST, Manifest, ManifestError, Parsed, Platform, available_platforms,
    select_platform,
};
use crate::digest::{Digest, HashingWriter};
use crate::error_chain::Causes;
use crate::progress::{Event, Progress};
use crate::reference::Reference;

/// Where pulled blobs go (the content store, or anything else). Only content whose digest and
/// size were verified is ever passed to [`BlobSink::commit`]; a writer that is dropped instead
/// must leave nothing behind.
pub trait BlobSink: Sync {
    type Writer: Write + Send;
    /// Whether the blob is already complete (then it is not downloaded again).
    fn has_blob(&self, digest: &Digest) -> bool;
    fn begin(&self) -> std::io::Result<Self::Writer>;
    fn commit(&self, writer: Self::Writer, digest: &Digest) -> std::io::Result<()>;

    /// Told after a successful pull that `repo` on `host` holds `digests` (mount hints).
    fn record_pulled(&self, _host: &str, _repo: &str, _digests: &[Digest]) -> std::io::Result<()> {
        Ok(())
    }
}

/// The outcome of [`Registry::pull_image`].
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The index or manifest list the tag pointed at, when it was one.
    pub index: Option<Manifest>,
    /// The image manifest for the chosen platform.
    pub manifest: Manifest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub bytes_downloaded: u64,
    pub blobs_skipped: usize,
}

impl Registry {
    /// Fetches a manifest by tag or digest. Its digest is verified when the selector or
    /// `expected` pins one; the size too when `expected` gives it.
    pub async fn get_manifest(
        &self,
        repo: &str,
        selector: &str,
        expected: Option<(&Digest, u64)>,
    ) -> Result<Manifest, RegistryError> {
        let what = format!("GET manifest {repo}:{selector}");
        let path = format!("v2/{repo}/manifests/{selector}");
        let resp = self
            .send(&what, &Scopes::pull(repo), true, |http, base| {
                http.get(base.join(&path).expect("valid path"))
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(&what, resp).await);
        }
        let media = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes =
            read_capped(resp, MAX_MANIFEST)
                .await
                .map_err(|source| RegistryError::Body {
                    registry: self.host().to_string(),
                    what: what.clone(),
                    source,
                })?;
        let m = Manifest::from_bytes(bytes, media.as_deref());
        let pinned = expected
            .map(|(d, _)| *d)
            .or_else(|| selector.parse::<Digest>().ok());
        if let Some(want) = pinned.filter(|d| *d != m.digest) {
            return Err(RegistryError::DigestMismatch {
                registry: self.host().to_string(),
                what,
                expected: want,
                actual: m.digest,
            });
        }
        if let Some((_, size)) = expected.filter(|(_, s)| *s != m.bytes.len() as u64) {
            return Err(RegistryError::SizeMismatch {
                registry: self.host().to_string(),
                what,
                expected: size,
                actual: m.bytes.len() as u64,
            });
        }
        Ok(m)
    }

    fn unreadable(&self, what: &str, source: ManifestError) -> RegistryError {
        RegistryError::UnreadableManifest {
            registry: self.host().to_string(),
            what: what.to_string(),
            source,
        }
    }

    fn manifest_error(&self, what: &str, message: String) -> RegistryError {
        RegistryError::Manifest {
            registry: self.host().to_string(),
            what: what.to_string(),
            message,
        }
    }

    /// Streams a blob into `sink`, verifying its size as it comes and its digest at the end. On
    /// error the sink holds garbage and must be discarded, not committed.
    pub async fn pull_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        sink: &mut (dyn Write + Send),
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        let what = format!("GET blob {repo}@{digest}");
        let path = format!("v2/{repo}/blobs/{digest}");
        let mut resp = self
            .send(&what, &Scopes::pull(repo), true, |http, base| {
                http.get(base.join(&path).expect("valid path"))
            })
            .await?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(&what, resp).await);
        }
        let mut w = HashingWriter::new(sink);
        let id = digest.to_string();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(self.transport_error(&what, &e)),
            };
            if w.len() + chunk.len() as u64 > size {
                return Err(self.size_error(&what, size, w.len() + chunk.len() as u64));
            }
            w.write_all(&chunk).map_err(|source| RegistryError::Io {
                what: format!("writing {what}"),
                source,
            })?;
            progress.send(Event::Bytes {
                id: id.clone(),
                done: w.len(),
                total: Some(size),
            });
        }
        let (_, actual, len) = w.finish();
        if len != size {
            return Err(self.size_error(&what, size, len));
        }
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.host().to_string(),
                what,
                expected: *digest,
                actual,
            });
        }
        Ok(())
    }

    fn size_error(&self, what: &str, expected: u64, actual: u64) -> RegistryError {
        RegistryError::SizeMismatch {
            registry: self.host().to_string(),
            what: what.to_string(),
            expected,
            actual,
        }
    }

    /// Resolves `reference` (an index is narrowed to `platform`) and fetches its manifest.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<(Option<Manifest>, Manifest), RegistryError> {
        let repo = reference.repository();
        let top = self
            .get_manifest(repo, &reference.manifest_selector(), None)
            .await?;
        let what = format!("manifest {reference}");
        match top.parse().map_err(|e| self.unreadable(&what, e))? {
            Parsed::Image { .. } => Ok((None, top)),
            Parsed::Index { manifests } => {
                let chosen = select_platform(&manifests, platform).ok_or_else(|| {
                    RegistryError::NoPlatform {
                        reference: reference.to_string(),
                        wanted: platform.to_string(),
                        available: available_platforms(&manifests),
                    }
                })?;
                let child = self
                    .get_manifest(
                        repo,
                        &chosen.digest.to_string(),
                        Some((&chosen.digest, chosen.size)),
                    )
                    .await?;
                Ok((Some(top), child))
            }
        }
    }

    /// Pulls an image for `platform` into `sink`: index and manifest bytes, config and layers
    /// (in parallel, `config.concurrency` at a time). Blobs the sink has are skipped; a blob
    /// interrupted by a transient failure is fetched again into a fresh writer.
    pub async fn pull_image<S: BlobSink>(
        &self,
        reference: &Reference,
        platform: &Platform,
        sink: &S,
        progress: &Progress,
    ) -> Result<Pulled, RegistryError> {
        self.pull(reference, platform, sink, true, progress).await
    }

    /// [`Registry::pull_image`] without the layers: the index, manifest and config go into
    /// `sink`, and [`BlobSink::record_pulled`] hears of every blob (layers included) so they
    /// can be mounted from this repository or fetched later. For a build that may never need
    /// the layers here (`kiln build --push` from a registry cache). The sink then holds an
    /// image whose layers it lacks: it must not name it.
    pub async fn pull_image_lazily<S: BlobSink>(
        &self,
        reference: &Reference,
        platform: &Platform,
        sink: &S,
        progress: &Progress,
    ) -> Result<Pulled, RegistryError> {
        self.pull(reference, platform, sink, false, progress).await
    }

    async fn pull<S: BlobSink>(
        &self,
        reference: &Reference,
        platform: &Platform,
        sink: &S,
        with_layers: bool,
        progress: &Progress,
    ) -> Result<Pulled, RegistryError> {
        let (index, manifest) = self.resolve(reference, platform).await?;
        let what = format!("manifest {reference}");
        let Parsed::Image { config, layers } =
            manifest.parse().map_err(|e| self.unreadable(&what, e))?
        else {
            return Err(self.manifest_error(&what, "an index points at another index".into()));
        };
        let repo = reference.repository();
        let mut blobs = vec![(config.digest, config.size)];
        blobs.extend(layers.iter().map(|l| (l.digest, l.size)));
        blobs.dedup();
        let wanted = match with_layers {
            true => &blobs[..],
            false => &blobs[..1],
        };
        let skipped = wanted.iter().filter(|(d, _)| sink.has_blob(d)).count();
        let todo: Vec<_> = wanted.iter().filter(|(d, _)| !sink.has_blob(d)).collect();
        let downloaded: Vec<u64> = stream::iter(todo)
            .map(|(d, size)| self.pull_blob_into(repo, d, *size, sink, progress))
            .buffer_unordered(self.config.concurrency.max(1))
            .try_collect()
            .await?;
        // Manifests go in last: their presence means everything they reference is there.
        for m in index.iter().chain(std::iter::once(&manifest)) {
            self.commit_bytes(sink, &m.bytes, &m.digest)?;
        }
        let digests: Vec<Digest> = blobs.iter().map(|(d, _)| *d).collect();
        if let Err(e) = sink.record_pulled(self.host(), repo, &digests) {
            progress.warn(format!(
                "could not remember where blobs were pulled from: {}",
                Causes(&e)
            ));
        }
        Ok(Pulled {
            index,
            manifest,
            config: config.digest,
            layers: layers.iter().map(|l| l.digest).collect(),
            bytes_downloaded: downloaded.iter().sum(),
            blobs_skipped: skipped,
        })
    }

    async fn pull_blob_into<S: BlobSink>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        sink: &S,
        progress: &Progress,
    ) -> Result<u64, RegistryError> {
        let io_err = |source| RegistryError::Io {
            what: format!("storing blob {digest}"),
            source,
        };
        let mut attempt = 0;
        loop {
            let mut w = sink.begin().map_err(io_err)?;
            match self.pull_blob(repo, digest, size, &mut w, progress).await {
                Ok(()) => {
                    sink.commit(w, digest).map_err(io_err)?;
                    return Ok(size);
                }
                Err(e) if e.is_transient() && attempt < self.config.retries => {
                    drop(w);
                    progress.warn(format!("{}; retrying", Causes(&e)));
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn commit_bytes<S: BlobSink>(
        &self,
        sink: &S,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let io_err = |source| RegistryError::Io {
            what: format!("storing manifest {digest}"),
            source,
        };
        if sink.has_blob(digest) {
            return Ok(());
        }
        let mut w = sink.begin().map_err(io_err)?;
        w.write_all(bytes).map_err(io_err)?;
        sink.commit(w, digest).map_err(io_err)
    }
}
