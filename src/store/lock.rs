//! File locks (flock through fs4): per-digest locks and the store-wide GC lease.
//!
//! flock locks belong to the open file, so they also exclude threads of one process that open
//! the lock file separately, and the kernel drops them when a process dies.

use std::fs::{File, OpenOptions};
use std::path::Path;

use fs4::fs_std::FileExt;

use super::{IoContext, Result, Store, StoreError};
use crate::digest::Digest;

/// An exclusive lock on one digest; released on drop. It holds a [`Lease`] too, since `prune`
/// removes lock files and must not do so while anyone uses one.
#[derive(Debug)]
pub struct DigestLock {
    _file: File,
    _lease: Lease,
}

/// A shared hold on the store: while any lease is alive, `prune` refuses to run, so content
/// written but not yet named (a build in progress) is never collected.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx("open lock file", path)
}

impl Store {
    /// Waits for and takes the exclusive lock on `digest`, for coordinating work on a blob.
    /// Take it before expensive work (a download) and re-check whether the content appeared
    /// meanwhile: that is how two processes avoid doing the work twice.
    ///
    /// Blob writes do not take this lock themselves (their rename is atomic and idempotent), so
    /// holding it across [`BlobWriter::commit`](super::BlobWriter::commit) is fine. Do not take
    /// it twice for one digest in one process: flock would wait for itself.
    pub fn lock_digest(&self, digest: &Digest) -> Result<DigestLock> {
        self.lock_named(&format!("blob-{}", digest.hex()))
    }

    /// The lock [`Store::ensure_unpacked`] takes for a diffID; a separate name space from
    /// blob locks, so an unpack callback may lock and write the blob it unpacks.
    pub(super) fn lock_layer(&self, diff_id: &Digest) -> Result<DigestLock> {
        self.lock_named(&format!("layer-{}", diff_id.hex()))
    }

    /// The lock serialising image record updates.
    pub(super) fn lock_records(&self) -> Result<DigestLock> {
        self.lock_named("images")
    }

    pub(super) fn lock_named(&self, name: &str) -> Result<DigestLock> {
        let lease = self.lease()?;
        let path = self.root.join("locks").join(format!("{name}.lock"));
        let file = open_lock_file(&path)?;
        FileExt::lock_exclusive(&file).ctx("lock", &path)?;
        Ok(DigestLock {
            _file: file,
            _lease: lease,
        })
    }

    /// A shared lease that keeps `prune` away; hold it for the length of a build or pull.
    pub fn lease(&self) -> Result<Lease> {
        let path = self.gc_lock_path();
        let file = open_lock_file(&path)?;
        FileExt::lock_shared(&file).ctx("lock", &path)?;
        Ok(Lease { _file: file })
    }

    /// The exclusive GC lock, or `Busy` when a lease is held (never waits: a process holding
    /// a lease and calling prune would otherwise wait for itself).
    pub(super) fn gc_lock(&self) -> Result<File> {
        let path = self.gc_lock_path();
        let file = open_lock_file(&path)?;
        if FileExt::try_lock_exclusive(&file).ctx("lock", &path)? {
            Ok(file)
        } else {
            Err(StoreError::Busy(self.root.clone()))
        }
    }

    fn gc_lock_path(&self) -> std::path::PathBuf {
        self.root.join("locks/gc.lock")
    }
}
