//! Content-addressed blobs: written to a temp file in the store's filesystem, verified,
//! fsynced and renamed, so no half-written blob ever carries a digest name.
//!
//! The rename itself is not made durable blob by blob (no fsync of `blobs/sha256` after
//! each): a rename lost in a crash only loses a blob, which the next pull or build writes
//! again. What must not lose one, a name in `images.json` ([`Store::tag`]), fsyncs the
//! directory once before the name is written, which makes every earlier rename in it
//! durable. Renames within the directory reach the disk in order (the journaling
//! filesystems order namespace changes), so a manifest is never durable without the
//! blobs renamed before it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};

use tempfile::NamedTempFile;

use super::{IoContext, Lease, Result, Store, StoreError, sync_dir};
use crate::digest::{Digest, HashingWriter};

/// A blob being written. `commit` puts it in place; dropping it instead removes the temp file.
pub struct BlobWriter {
    store: Store,
    out: HashingWriter<BufWriter<NamedTempFile>>,
    // Keeps prune from deleting the blob between commit and the caller naming it.
    _lease: Lease,
}

/// A blob whose writer computes its digest while producing it (the layer writer hashes its
/// output on a thread of its own): the store does not hash the bytes a second time, on the
/// thread that writes them. Committed under the digest the writer names.
pub struct UnhashedBlobWriter {
    store: Store,
    out: BufWriter<NamedTempFile>,
    _lease: Lease,
}

impl Store {
    /// Starts writing a blob whose digest is known only at the end.
    pub fn begin_blob(&self) -> Result<BlobWriter> {
        let (lease, tmp) = self.blob_temp_file()?;
        Ok(BlobWriter {
            store: self.clone(),
            out: HashingWriter::new(BufWriter::with_capacity(256 * 1024, tmp)),
            _lease: lease,
        })
    }

    /// Starts writing a blob whose producer computes its digest; see [`UnhashedBlobWriter`].
    pub fn begin_unhashed_blob(&self) -> Result<UnhashedBlobWriter> {
        let (lease, tmp) = self.blob_temp_file()?;
        Ok(UnhashedBlobWriter {
            store: self.clone(),
            out: BufWriter::with_capacity(256 * 1024, tmp),
            _lease: lease,
        })
    }

    /// A temp file for a new blob in the store's filesystem, under a lease.
    fn blob_temp_file(&self) -> Result<(Lease, NamedTempFile)> {
        let lease = self.lease()?;
        let dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .ctx("create temp file in", &dir)?;
        Ok((lease, tmp))
    }

    /// Stores a small blob (configs, manifests) held in memory.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.begin_blob()?;
        w.write_all(bytes).ctx("write blob", &self.tmp_dir())?;
        Ok(w.commit(None)?.0)
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for streaming reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| self.not_found_or(digest, e))
    }

    /// A blob's size in bytes.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        fs::metadata(self.blob_path(digest))
            .map(|m| m.len())
            .map_err(|e| self.not_found_or(digest, e))
    }

    /// Reads a small blob (a manifest or config) whole.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        fs::read(self.blob_path(digest)).map_err(|e| self.not_found_or(digest, e))
    }

    fn not_found_or(&self, digest: &Digest, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::BlobNotFound(*digest)
        } else {
            StoreError::Io {
                action: "read blob",
                path: self.blob_path(digest),
                source: e,
            }
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Verifies the content against `expected` (when given), fsyncs it and renames it to its
    /// digest name. If the blob is already present (another writer won), the copy is dropped.
    /// The writer's lease keeps `prune` away until it is dropped, so name the content (or pin
    /// it) while holding a lease of your own.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let tmp_dir = self.store.tmp_dir();
        let (buf, digest, size) = self.out.finish();
        let tmp = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write blob", &tmp_dir)?;
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual: digest,
                size,
            });
        }
        self.store.put_in_place(tmp, digest)?;
        Ok((digest, size))
    }
}

impl Write for UnhashedBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl UnhashedBlobWriter {
    /// Fsyncs the content and renames it to `digest`, the digest its writer computed.
    pub fn commit(self, digest: &Digest) -> Result<()> {
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write blob", &self.store.tmp_dir())?;
        self.store.put_in_place(tmp, *digest)
    }
}

impl Store {
    /// Renames a complete, fsynced temp file to its digest name (unless the blob is there
    /// already); see the module docs for when the rename is made durable. No digest lock:
    /// rename is atomic and the content is identical whoever wins, and callers coordinating
    /// work (a download) may hold the lock already.
    fn put_in_place(&self, tmp: NamedTempFile, digest: Digest) -> Result<()> {
        let dest = self.blob_path(&digest);
        if dest.is_file() {
            return Ok(());
        }
        tmp.as_file().sync_all().ctx("sync blob", tmp.path())?;
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .ctx("rename blob to", &dest)?;
        Ok(())
    }

    /// Makes every blob rename so far durable (one fsync of `blobs/sha256`), before a name
    /// that promises the blobs is written.
    pub(super) fn sync_blob_names(&self) -> Result<()> {
        sync_dir(&self.root.join("blobs/sha256"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_count(store: &Store) -> usize {
        fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[test]
    fn an_unhashed_blob_lands_under_the_writers_digest_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let want = Digest::of(b"layer bytes");
        let mut w = store.begin_unhashed_blob().unwrap();
        w.write_all(b"layer bytes").unwrap();
        w.commit(&want).unwrap();
        assert_eq!(store.read_blob(&want).unwrap(), b"layer bytes");
        let mut w = store.begin_unhashed_blob().unwrap();
        w.write_all(b"half a lay").unwrap();
        drop(w);
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn commit_stores_verified_content_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.begin_blob().unwrap();
        w.write_all(b"hello").unwrap();
        let want = Digest::of(b"hello");
        assert_eq!(w.commit(Some(&want)).unwrap(), (want, 5));
        assert!(store.has_blob(&want));
        assert_eq!(store.blob_size(&want).unwrap(), 5);
        assert_eq!(store.read_blob(&want).unwrap(), b"hello");
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn wrong_expected_digest_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.begin_blob().unwrap();
        w.write_all(b"hello").unwrap();
        let other = Digest::of(b"other");
        let err = w.commit(Some(&other)).unwrap_err();
        assert!(
            matches!(err, StoreError::DigestMismatch { size: 5, .. }),
            "{err}"
        );
        assert!(!store.has_blob(&Digest::of(b"hello")));
        assert!(!store.has_blob(&other));
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn dropped_writer_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.begin_blob().unwrap();
        w.write_all(&[7u8; 1 << 20]).unwrap();
        w.flush().unwrap();
        assert_eq!(tmp_count(&store), 1);
        drop(w);
        assert_eq!(tmp_count(&store), 0);
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn missing_blob_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"absent");
        assert!(matches!(store.open_blob(&d), Err(StoreError::BlobNotFound(x)) if x == d));
    }

    #[test]
    fn concurrent_writers_of_one_blob_end_with_one_whole_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let want = Digest::of(&data);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut w = store.begin_blob().unwrap();
                    for chunk in data.chunks(8192) {
                        w.write_all(chunk).unwrap();
                    }
                    assert_eq!(w.commit(Some(&want)).unwrap().0, want);
                });
            }
        });
        assert_eq!(store.read_blob(&want).unwrap(), data);
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(tmp_count(&store), 0);
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_download_under_the_digest_lock_can_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let want = Digest::of(b"layer bytes");
        let lock = store.lock_digest(&want).unwrap();
        assert!(!store.has_blob(&want));
        let mut w = store.begin_blob().unwrap();
        w.write_all(b"layer bytes").unwrap();
        assert_eq!(w.commit(Some(&want)).unwrap().0, want);
        drop(lock);
        // The lock excludes a second holder until released.
        let first = store.lock_digest(&want).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _second = store.lock_digest(&want).unwrap();
                tx.send(()).unwrap();
            });
            assert!(
                rx.recv_timeout(std::time::Duration::from_millis(200))
                    .is_err()
            );
            drop(first);
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        });
    }
}
