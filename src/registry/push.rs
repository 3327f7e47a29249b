//! Push: blobs (HEAD first, cross-repository mount, monolithic or chunked upload, a fresh upload
//! session on every retry), then manifests only once every blob is confirmed.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Url};

use super::auth::Scopes;
use super::client::Registry;
use super::error::RegistryError;
use super::manifest::{Manifest, Parsed};
use crate::digest::Digest;
use crate::error_chain::Causes;
use crate::progress::{Event, Progress};

/// Where pushed blobs are read from (the content store, a file, …). Each retry opens the blob
/// again, so a failed upload restarts cleanly.
pub trait BlobSource: Sync {
    fn open_blob(&self, digest: &Digest) -> std::io::Result<Box<dyn Read + Send>>;

    /// Repositories on registry `host` known to hold the blob, most recent first: a push to
    /// another repository of that registry tries to mount from the first one.
    fn mount_candidates(&self, _host: &str, _digest: &Digest) -> Vec<String> {
        Vec::new()
    }

    /// Told after a successful push that `repo` on `host` now holds `digests`.
    fn record_pushed(&self, _host: &str, _repo: &str, _digests: &[Digest]) -> std::io::Result<()> {
        Ok(())
    }

    /// Whether the caller has just confirmed that `repo` on `host` holds the blob (a
    /// cross-repository mount answered `201 Created` in this push): [`Registry::push_image`]
    /// then sends no `HEAD` for it.
    fn confirmed(&self, _host: &str, _repo: &str, _digest: &Digest) -> bool {
        false
    }
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushed {
    /// The registry already had it (only a HEAD was sent).
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// The blobs [`Registry::push_image_blobs`] saw to, for [`Registry::push_image_manifests`].
#[derive(Debug)]
pub struct PushedBlobs {
    children: Vec<Manifest>,
    outcomes: Vec<(Digest, BlobPushed, u64)>,
    started: Instant,
}

impl PushedBlobs {
    /// Records what the caller did for `digest` itself since (a blob it vouched for, then had
    /// to push), so the summary counts it.
    pub fn set(&mut self, digest: &Digest, outcome: BlobPushed) {
        if let Some(o) = self.outcomes.iter_mut().find(|(d, _, _)| d == digest) {
            o.1 = outcome;
        }
    }
}

/// Totals of a [`Registry::push_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSummary {
    /// The digest of the pushed (top-level) manifest.
    pub digest: Digest,
    pub bytes_sent: u64,
    pub bytes_skipped: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    pub elapsed: Duration,
}

const READ_CHUNK: usize = 256 * 1024;
/// Chunk size when a registry refuses a monolithic upload (GHCR rejects PATCHes over ~4 MiB).
const FALLBACK_CHUNK: u64 = 4 << 20;

impl Registry {
    /// `Some(size)` when the repository has the blob.
    pub async fn blob_exists(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let what = format!("HEAD blob {repo}@{digest}");
        let path = format!("v2/{repo}/blobs/{digest}");
        let resp = self
            .send(&what, &Scopes::push(repo, None), true, |http, base| {
                http.head(base.join(&path).expect("valid path"))
            })
            .await?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(self.status_error(&what, resp).await),
        }
    }

    /// Makes sure `repo` has the blob: HEAD, then mount from `mount_from` if given, else upload.
    /// Transient failures restart the upload with a new session, with backoff.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        progress: &Progress,
    ) -> Result<BlobPushed, RegistryError> {
        if self.blob_exists(repo, digest).await?.is_some() {
            return Ok(BlobPushed::Present);
        }
        let mut attempt = 0;
        let mut chunk = self.config.chunk_size;
        let mut mount_from = mount_from;
        loop {
            match self
                .upload_once(repo, digest, size, chunk, source, mount_from, progress)
                .await
            {
                Ok(done) => return Ok(done),
                // A registry or proxy that caps request bodies: switch to chunks, new session.
                Err(RegistryError::Status { status: 413, .. }) if chunk.is_none() => {
                    progress.warn(format!(
                        "{}: blob {digest} too large for one request; uploading in {} MiB chunks",
                        self.host(),
                        FALLBACK_CHUNK >> 20
                    ));
                    chunk = Some(FALLBACK_CHUNK);
                }
                // A mount source we may not read (a stale hint, a private repository): the
                // registry denies the whole request, so ask again without the mount.
                Err(
                    e @ (RegistryError::Status {
                        status: 401 | 403, ..
                    }
                    | RegistryError::Auth { .. }),
                ) if mount_from.is_some() => {
                    progress.warn(format!("{}; uploading instead of mounting", Causes(&e)));
                    mount_from = None;
                }
                Err(e) if e.is_transient() && attempt < self.config.retries => {
                    progress.warn(format!("{}; restarting the upload", Causes(&e)));
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks the registry to mount blob `digest` of repository `from` into `repo` (a
    /// cross-repository mount), for a blob the caller does not hold (HEAD `repo` first with
    /// [`Registry::blob_exists`]). `Ok(true)` when the mount was made. `Ok(false)` when the registry
    /// did not mount: it answered `202` (it does not mount, the source lacks the blob, or we
    /// may not read it there; the upload session it opened instead is cancelled) or refused
    /// the mount source (401/403); the caller must then upload the blob.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let what = format!("POST mount {repo}@{digest} from {from}");
        let path = format!("v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let sent = self
            .send(
                &what,
                &Scopes::push(repo, Some(from)),
                true,
                |http, base| {
                    http.post(base.join(&path).expect("valid path"))
                        .header(CONTENT_LENGTH, 0)
                },
            )
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(
                RegistryError::Status {
                    status: 401 | 403, ..
                }
                | RegistryError::Auth { .. },
            ) => return Ok(false),
            Err(e) => return Err(e),
        };
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                // Not mounted: an empty upload session was opened instead. Cancelling it is
                // a courtesy (registries expire idle sessions), so its outcome is ignored.
                if let Ok(location) = self.location(&resp, &what) {
                    drop(resp);
                    let _ = self
                        .send(&what, &Scopes::push(repo, None), false, |http, _| {
                            http.delete(location.clone())
                        })
                        .await;
                }
                Ok(false)
            }
            401 | 403 => Ok(false),
            _ => Err(self.status_error(&what, resp).await),
        }
    }

    /// [`Registry::push_blob`], mounting from a repository of this registry that `source`
    /// knows holds the blob, else from `mount_from` (never from `repo` itself).
    pub async fn push_blob_mounting(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        progress: &Progress,
    ) -> Result<BlobPushed, RegistryError> {
        let known = source
            .mount_candidates(self.host(), digest)
            .into_iter()
            .find(|r| r != repo);
        let from = known.as_deref().or(mount_from).filter(|f| *f != repo);
        self.push_blob(repo, digest, size, source, from, progress)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_once(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        chunk: Option<u64>,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        progress: &Progress,
    ) -> Result<BlobPushed, RegistryError> {
        let scopes = Scopes::push(repo, mount_from);
        let what = format!("POST upload {repo}@{digest}");
        let mut path = format!("v2/{repo}/blobs/uploads/");
        if let Some(from) = mount_from {
            path.push_str(&format!("?mount={digest}&from={from}"));
        }
        let resp = self
            .send(&what, &scopes, true, |http, base| {
                http.post(base.join(&path).expect("valid path"))
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        match resp.status().as_u16() {
            201 if mount_from.is_some() => return Ok(BlobPushed::Mounted),
            201 | 202 => {}
            _ => return Err(self.status_error(&what, resp).await),
        }
        let location = self.location(&resp, &what)?;
        drop(resp);
        match chunk {
            Some(chunk) => {
                self.upload_chunked(location, repo, digest, size, chunk, source, progress)
                    .await
            }
            None => {
                self.upload_monolithic(location, repo, digest, size, source, progress)
                    .await
            }
        }?;
        Ok(BlobPushed::Uploaded)
    }

    /// The upload session URL from `Location` (absolute or relative to the registry).
    fn location(&self, resp: &reqwest::Response, what: &str) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Manifest {
                registry: self.host().to_string(),
                what: what.to_string(),
                message: "the registry answered without a Location for the upload".into(),
            })?;
        resp.url().join(loc).map_err(|e| RegistryError::Manifest {
            registry: self.host().to_string(),
            what: what.to_string(),
            message: format!("bad upload Location {loc:?}: {e}"),
        })
    }

    async fn upload_monolithic(
        &self,
        location: Url,
        repo: &str,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        let what = format!("PUT blob {repo}@{digest}");
        let url = with_digest(location, digest);
        let reader = self.open(source, digest)?;
        let body = body_from_reader(reader, digest, Some(size), progress);
        // Built once: a streamed body cannot be replayed, so this request is never retried
        // here; the caller restarts the whole session instead.
        let body = std::sync::Mutex::new(Some(body));
        let resp = self
            .send(&what, &Scopes::push(repo, None), false, |http, _| {
                let req = http
                    .put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size);
                match body.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    Some(b) => req.body(b),
                    None => req.body(Body::from(Bytes::new())),
                }
            })
            .await?;
        self.expect_created(resp, &what).await
    }

    async fn expect_created(
        &self,
        resp: reqwest::Response,
        what: &str,
    ) -> Result<(), RegistryError> {
        match resp.status().as_u16() {
            201 | 204 | 200 => Ok(()),
            _ => Err(self.status_error(what, resp).await),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_chunked(
        &self,
        mut location: Url,
        repo: &str,
        digest: &Digest,
        size: u64,
        chunk: u64,
        source: &dyn BlobSource,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        let mut reader = self.open(source, digest)?;
        let mut offset = 0u64;
        let scopes = Scopes::push(repo, None);
        while offset < size {
            let want = chunk.min(size - offset) as usize;
            let data = read_exact_async(&mut reader, want, digest).await?;
            let what = format!("PATCH blob {repo}@{digest} bytes {offset}-");
            let end = offset + data.len() as u64 - 1;
            let resp = self
                .send(&what, &scopes, false, |http, _| {
                    http.patch(location.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, data.len())
                        .header("Content-Range", format!("{offset}-{end}"))
                        .body(data.clone())
                })
                .await?;
            if !matches!(resp.status().as_u16(), 202 | 201 | 204) {
                return Err(self.status_error(&what, resp).await);
            }
            location = self.location(&resp, &what)?;
            offset = end + 1;
            progress.send(Event::Bytes {
                id: digest.to_string(),
                done: offset,
                total: Some(size),
            });
        }
        let what = format!("PUT (close upload) blob {repo}@{digest}");
        let url = with_digest(location, digest);
        let resp = self
            .send(&what, &scopes, false, |http, _| {
                http.put(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        self.expect_created(resp, &what).await
    }

    fn open(
        &self,
        source: &dyn BlobSource,
        digest: &Digest,
    ) -> Result<Box<dyn Read + Send>, RegistryError> {
        source.open_blob(digest).map_err(|e| RegistryError::Io {
            what: format!("opening blob {digest} to push"),
            source: e,
        })
    }

    /// Uploads a manifest under `reference` (a tag or its digest); checks the digest the
    /// registry computed when it tells us.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), RegistryError> {
        let what = format!("PUT manifest {repo}:{reference}");
        let path = format!("v2/{repo}/manifests/{reference}");
        let body = Bytes::from(manifest.bytes.clone());
        let resp = self
            .send(&what, &Scopes::push(repo, None), true, |http, base| {
                http.put(base.join(&path).expect("valid path"))
                    .header(CONTENT_TYPE, &manifest.media_type)
                    .body(body.clone())
            })
            .await?;
        if !matches!(resp.status().as_u16(), 201 | 200 | 204) {
            return Err(self.status_error(&what, resp).await);
        }
        let served = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()?.parse::<Digest>().ok());
        match served {
            Some(d) if d != manifest.digest => Err(RegistryError::DigestMismatch {
                registry: self.host().to_string(),
                what,
                expected: manifest.digest,
                actual: d,
            }),
            _ => Ok(()),
        }
    }

    /// Pushes an image (manifest or index) whose manifests and blobs `source` holds, under every
    /// tag in `tags` (or only by digest when empty): [`Registry::push_image_blobs`], then
    /// [`Registry::push_image_manifests`]. A failed push never leaves a tag on a broken image.
    pub async fn push_image(
        &self,
        repo: &str,
        tags: &[String],
        root: &Manifest,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        progress: &Progress,
    ) -> Result<PushSummary, RegistryError> {
        let blobs = self
            .push_image_blobs(repo, root, source, mount_from, progress)
            .await?;
        self.push_image_manifests(repo, tags, root, source, blobs, progress)
            .await
    }

    /// The first half of [`Registry::push_image`]: makes sure `repo` holds every blob of the
    /// image. A blob the registry lacks is mounted from a repository `source` knows holds it
    /// on this registry, else from `mount_from`; a refused mount falls back to an upload.
    /// Blobs are checked (`HEAD`) and sent `config.concurrency` at a time; one `source` says
    /// is [`BlobSource::confirmed`] in `repo` is not asked about (the caller vouches for it,
    /// or is placing it meanwhile: it must be there before the manifests are pushed).
    pub async fn push_image_blobs(
        &self,
        repo: &str,
        root: &Manifest,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        progress: &Progress,
    ) -> Result<PushedBlobs, RegistryError> {
        let started = Instant::now();
        let (children, blobs) = self.collect(root, source)?;
        let outcomes: Vec<(Digest, BlobPushed, u64)> = stream::iter(blobs)
            .map(|(digest, size)| async move {
                if source.confirmed(self.host(), repo, &digest) {
                    return Ok((digest, BlobPushed::Present, size));
                }
                let r = self
                    .push_blob_mounting(repo, &digest, size, source, mount_from, progress)
                    .await?;
                Ok::<_, RegistryError>((digest, r, size))
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .try_collect()
            .await?;
        Ok(PushedBlobs {
            children,
            outcomes,
            started,
        })
    }

    /// The second half of [`Registry::push_image`]: the child manifests, then the manifest
    /// under each tag. Every blob of `blobs` must be in `repo` by now.
    pub async fn push_image_manifests(
        &self,
        repo: &str,
        tags: &[String],
        root: &Manifest,
        source: &dyn BlobSource,
        blobs: PushedBlobs,
        progress: &Progress,
    ) -> Result<PushSummary, RegistryError> {
        for child in &blobs.children {
            self.put_manifest(repo, &child.digest.to_string(), child)
                .await?;
        }
        if tags.is_empty() {
            self.put_manifest(repo, &root.digest.to_string(), root)
                .await?;
        }
        for tag in tags {
            self.put_manifest(repo, tag, root).await?;
        }
        let pushed: Vec<Digest> = blobs.outcomes.iter().map(|(d, _, _)| *d).collect();
        if let Err(e) = source.record_pushed(self.host(), repo, &pushed) {
            progress.warn(format!(
                "could not remember where blobs were pushed: {}",
                Causes(&e)
            ));
        }
        let outcomes = &blobs.outcomes;
        let count = |k| outcomes.iter().filter(|(_, o, _)| *o == k).count();
        let bytes = |k| {
            outcomes
                .iter()
                .filter(|(_, o, _)| *o == k)
                .map(|(_, _, s)| s)
                .sum::<u64>()
        };
        Ok(PushSummary {
            digest: root.digest,
            bytes_sent: bytes(BlobPushed::Uploaded),
            bytes_skipped: bytes(BlobPushed::Present) + bytes(BlobPushed::Mounted),
            blobs_uploaded: count(BlobPushed::Uploaded),
            blobs_present: count(BlobPushed::Present),
            blobs_mounted: count(BlobPushed::Mounted),
            elapsed: blobs.started.elapsed(),
        })
    }

    /// The child manifests (for an index) and every distinct blob, with sizes.
    #[allow(clippy::type_complexity)]
    fn collect(
        &self,
        root: &Manifest,
        source: &dyn BlobSource,
    ) -> Result<(Vec<Manifest>, Vec<(Digest, u64)>), RegistryError> {
        let what = format!("manifest {} to push", root.digest);
        let bad = |message: String| RegistryError::Manifest {
            registry: self.host().to_string(),
            what: what.clone(),
            message,
        };
        let unreadable = |source| RegistryError::UnreadableManifest {
            registry: self.host().to_string(),
            what: what.clone(),
            source,
        };
        let mut children = Vec::new();
        let mut blobs = BTreeMap::new();
        let mut add_image = |m: &Manifest| match m.parse().map_err(unreadable)? {
            Parsed::Image { config, layers } => {
                blobs.insert(config.digest, config.size);
                for l in layers {
                    blobs.insert(l.digest, l.size);
                }
                Ok(())
            }
            Parsed::Index { .. } => Err(bad("nested indexes are not supported".to_string())),
        };
        match root.parse().map_err(unreadable)? {
            Parsed::Image { .. } => add_image(root)?,
            Parsed::Index { manifests } => {
                for d in manifests {
                    let mut bytes = Vec::new();
                    self.open(source, &d.digest)?
                        .read_to_end(&mut bytes)
                        .map_err(|source| RegistryError::Io {
                            what: format!("reading child manifest {} of {what}", d.digest),
                            source,
                        })?;
                    let child = Manifest::from_bytes(bytes, Some(&d.media_type));
                    if child.digest != d.digest {
                        return Err(bad(format!("child manifest {} is corrupt", d.digest)));
                    }
                    add_image(&child)?;
                    children.push(child);
                }
            }
        }
        Ok((children, blobs.into_iter().collect()))
    }
}

fn with_digest(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

/// A streaming request body fed by a blocking reader thread (files are read off the async
/// runtime); reports progress as bytes leave.
fn body_from_reader(
    mut reader: Box<dyn Read + Send>,
    digest: &Digest,
    total: Option<u64>,
    progress: &Progress,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = BytesMut::zeroed(READ_CHUNK);
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let done = Arc::new(AtomicU64::new(0));
    let id = digest.to_string();
    let progress = progress.clone();
    let s = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).map(
        move |item| {
            if let Ok(b) = &item {
                let n = done.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                progress.send(Event::Bytes {
                    id: id.clone(),
                    done: n,
                    total,
                });
            }
            item
        },
    );
    Body::wrap_stream(s)
}

/// Reads exactly `n` bytes (one chunk). Blocking, but bounded by one chunk from a local file.
async fn read_exact_async(
    reader: &mut Box<dyn Read + Send>,
    n: usize,
    digest: &Digest,
) -> Result<Bytes, RegistryError> {
    let mut buf = vec![0u8; n];
    reader.read_exact(&mut buf).map_err(|e| RegistryError::Io {
        what: format!("reading blob {digest} to push"),
        source: e,
    })?;
    Ok(Bytes::from(buf))
}
