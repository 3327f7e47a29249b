//! The local content store: content-addressed blobs, image records, unpacked layer cache, GC.
//!
//! Layout under the root (see [`Store::default_root`]):
//!
//! ```text
//! blobs/sha256/<hex>          content-addressed blobs (layers, configs, manifests)
//! images.json                 image name → manifest digest (replaced atomically)
//! layers/<diffid-hex>/        unpacked layers, used as overlay lower dirs (whiteouts kept)
//! layers/<diffid-hex>.complete  marker: the directory beside it is whole; its first word is
//!                             the dir format (`kiln-layer-dir/2`), an older one is redone
//! cache/compressed/<diffid-hex>.<compression>  diffID → compressed blob digest
//! cache/blob-locations.json   blob → registry repositories known to hold it (mount hints)
//! pins/<key>.json             content a build-cache entry keeps alive through `prune`
//! tmp/                        temp files and dirs, renamed into place when complete
//! locks/                      per-digest lock files; `gc.lock` for prune vs. users
//! ```
//!
//! Public API:
//! - [`Store::open`], [`Store::default_root`], [`Store::lease`] (hold while building so a
//!   concurrent `prune` cannot delete fresh, not yet named content).
//! - Blobs: [`Store::begin_blob`] → [`BlobWriter`] → [`BlobWriter::commit`]; [`Store::put_blob`],
//!   [`Store::has_blob`], [`Store::open_blob`], [`Store::blob_size`], [`Store::lock_digest`];
//!   [`Store::begin_unhashed_blob`] → [`UnhashedBlobWriter`] for a writer that computes the
//!   digest itself (the layer writer).
//! - Names: [`Store::tag`], [`Store::untag`], [`Store::list_images`], [`Store::resolve`].
//! - Layers: [`Store::layer_dir`], [`Store::ensure_unpacked`], [`Store::cached_compressed`],
//!   [`Store::record_compressed`].
//! - Mount hints: [`Store::blob_locations`], [`Store::record_blob_locations`].
//! - GC: [`Store::pin`], [`Store::unpin`], [`Store::prune`] → [`PruneReport`].

mod blobs;
mod gc;
mod layers;
mod locations;
mod lock;
mod records;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub use blobs::{BlobWriter, UnhashedBlobWriter};
pub use gc::{Pin, PruneReport};
pub use locations::BlobLocation;
pub use lock::{DigestLock, Lease};
pub use records::ImageRecord;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("content does not match its digest: expected {expected}, got {actual} ({size} bytes)")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {0} is not in the store (pull or build the image again)")]
    BlobNotFound(Digest),
    #[error("no image named {0:?} in the store (see `kiln images`)")]
    ImageNotFound(String),
    #[error("{prefix:?} matches several images ({candidates}); give more characters or a name")]
    Ambiguous { prefix: String, candidates: String },
    #[error("store file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid cache key {0:?}: use letters, digits, '.', '_', '+' and '-'")]
    InvalidKey(String),
    #[error("the store at {0} is in use by another kiln process; run prune again when it is done")]
    Busy(PathBuf),
    #[error("unpacking layer {diff_id} failed: {source}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the action and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A handle on a store directory. Cheap to clone; safe to share between threads and processes.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { root: root.into() };
        for dir in [
            store.root.join("blobs/sha256"),
            store.root.join("layers"),
            store.root.join("cache/compressed"),
            store.root.join("pins"),
            store.root.join("tmp"),
            store.root.join("locks"),
        ] {
            fs::create_dir_all(&dir).ctx("create store directory", &dir)?;
        }
        Ok(store)
    }

    /// `$XDG_DATA_HOME/kiln` (else `~/.local/share/kiln`), or `/var/lib/kiln` for root.
    /// The CLI's `--root`/`$KILN_ROOT` takes precedence over this.
    pub fn default_root() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(xdg) => PathBuf::from(xdg).join("kiln"),
            None => {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
                PathBuf::from(home).join(".local/share/kiln")
            }
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// fsyncs a directory so a rename inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}
