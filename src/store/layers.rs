//! The unpacked-layer cache (overlay lower dirs, keyed by diffID) and the
//! (diffID, compression) → blob digest cache that keeps a layer from being compressed twice.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{IoContext, Result, Store, StoreError, SubIdRemover, sync_dir};
use crate::digest::Digest;

/// The format of unpacked layer directories, first word of their `.complete` marker:
/// version 2 keeps the layer's deletions in overlay form (whiteout devices, opaque xattrs).
const LAYER_FORMAT: &str = "kiln-layer-dir/2";

impl Store {
    /// Where the layer with this diffID is (or will be) unpacked. Only use it after
    /// [`Store::ensure_unpacked`] returned, which guarantees it is complete.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    pub(super) fn layer_marker(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(format!("{}.complete", diff_id.hex()))
    }

    /// Whether the layer is unpacked and complete, in the current format: a directory a
    /// kiln before [`LAYER_FORMAT`] unpacked lacks its whiteouts, so it is unpacked again.
    pub fn is_unpacked(&self, diff_id: &Digest) -> bool {
        let marker = fs::read_to_string(self.layer_marker(diff_id)).unwrap_or_default();
        marker.split_whitespace().next() == Some(LAYER_FORMAT) && self.layer_dir(diff_id).is_dir()
    }

    /// Returns the unpacked layer directory, calling `unpack(tmp_dir)` first if it is not there
    /// yet. `unpack` fills an empty temp directory; it is renamed into place and marked complete
    /// only when `unpack` succeeds, all under the diffID's lock, so concurrent builds unpack a
    /// layer once and nobody ever sees a partial directory.
    pub fn ensure_unpacked<E>(
        &self,
        diff_id: &Digest,
        unpack: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<PathBuf>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let dir = self.layer_dir(diff_id);
        if self.is_unpacked(diff_id) {
            return Ok(dir);
        }
        let _lock = self.lock_layer(diff_id)?;
        if self.is_unpacked(diff_id) {
            return Ok(dir);
        }
        // A directory without its marker is what a crash mid-rename leaves: start over.
        if dir.exists() {
            remove_tree(&dir, self.sub_id_remover())?;
        }
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.tmp_dir())
            .ctx("create temp dir in", &self.tmp_dir())?;
        unpack(tmp.path()).map_err(|e| StoreError::Unpack {
            diff_id: *diff_id,
            source: Box::new(e),
        })?;
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &dir) {
            let _ = remove_tree(&tmp_path, self.sub_id_remover());
            return Err(e).ctx("rename unpacked layer to", &dir);
        }
        let layers = self.root.join("layers");
        sync_dir(&layers)?;
        write_atomically(
            self,
            &self.layer_marker(diff_id),
            format!("{LAYER_FORMAT} {diff_id}\n").as_bytes(),
        )?;
        Ok(dir)
    }

    /// Makes `dir`, a finished tree in the unpacked-layer format (deletions in overlay form),
    /// the unpacked layer `diff_id` by renaming it into place: a step's result is kept as
    /// the directory it was made in (a RUN's upper dir, a COPY's tree), never unpacked again
    /// from its blob. `dir` must be in this store (a scratch dir), so the rename stays on one
    /// filesystem. False when `dir` stays where it was: the layer is unpacked already, or the
    /// rename was refused (a RUN that gave its root dir to a sub-uid, say); the caller's
    /// scratch dir then removes it, and the layer is unpacked from its blob when needed.
    pub fn adopt_layer_dir(&self, diff_id: &Digest, dir: &Path) -> Result<bool> {
        if self.is_unpacked(diff_id) {
            return Ok(false);
        }
        let _lock = self.lock_layer(diff_id)?;
        if self.is_unpacked(diff_id) {
            return Ok(false);
        }
        let dest = self.layer_dir(diff_id);
        if dest.exists() {
            remove_tree(&dest, self.sub_id_remover())?;
        }
        if fs::rename(dir, &dest).is_err() {
            return Ok(false);
        }
        sync_dir(&self.root.join("layers"))?;
        write_atomically(
            self,
            &self.layer_marker(diff_id),
            format!("{LAYER_FORMAT} {diff_id}\n").as_bytes(),
        )?;
        Ok(true)
    }

    /// The lock that makes the blob of an unpacked layer once (see
    /// `image::ensure_blob`): a name space of its own, apart from blob and unpack locks.
    pub fn lock_layer_blob(&self, diff_id: &Digest) -> Result<super::DigestLock> {
        self.lock_named(&format!("layer-blob-{}", diff_id.hex()))
    }

    fn compressed_entry(&self, diff_id: &Digest, compression: &str) -> Result<PathBuf> {
        let valid = !compression.is_empty()
            && compression
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if !valid {
            return Err(StoreError::InvalidKey(compression.to_string()));
        }
        Ok(self
            .root
            .join("cache/compressed")
            .join(format!("{}.{compression}", diff_id.hex())))
    }

    /// The blob digest this diffID was compressed to with `compression` (e.g. `gzip`, `zstd`),
    /// if recorded and the blob is still in the store.
    pub fn cached_compressed(&self, diff_id: &Digest, compression: &str) -> Result<Option<Digest>> {
        let path = self.compressed_entry(diff_id, compression)?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("read", &path),
        };
        let digest: Digest = text.trim().parse().map_err(|e| StoreError::Corrupt {
            path,
            reason: format!("{e}"),
        })?;
        Ok(self.has_blob(&digest).then_some(digest))
    }

    /// Records that `diff_id` compressed with `compression` is the blob `digest`.
    pub fn record_compressed(
        &self,
        diff_id: &Digest,
        compression: &str,
        digest: &Digest,
    ) -> Result<()> {
        let path = self.compressed_entry(diff_id, compression)?;
        write_atomically(self, &path, digest.to_string().as_bytes())
    }
}

/// Small-file write that is never seen half done: temp file, fsync, rename, fsync dir.
pub(super) fn write_atomically(store: &Store, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = store.tmp_dir();
    let mut tmp = tempfile::Builder::new()
        .prefix("small-")
        .tempfile_in(&dir)
        .ctx("create temp file in", &dir)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    tmp.as_file().sync_all().ctx("sync", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx("replace", path)?;
    sync_dir(path.parent().expect("store files have a parent"))
}

/// Removes a directory tree, first making read-only directories writable (layers contain
/// `0555` directories that would otherwise stop an unprivileged remove), then, for trees
/// holding files of sub-uids, through `sub_ids` (see [`super::SubIdRemover`]).
pub(super) fn remove_tree(path: &Path, sub_ids: Option<&SubIdRemover>) -> Result<()> {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    match fs::remove_dir_all(path) {
        // An unprivileged user's rootless builds leave files of its sub-uids (unpacked with
        // their owners): those go as root of the user's id map.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match sub_ids.map(|remove| remove(path)) {
                Some(Ok(true)) => Ok(()),
                _ => Err(e).ctx("remove", path),
            }
        }
        r => r.ctx("remove", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn unpack_runs_once_and_the_result_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"layer");
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let out = store
                        .ensure_unpacked(&diff_id, |tmp| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            fs::write(tmp.join("file"), b"x")
                        })
                        .unwrap();
                    assert_eq!(fs::read(out.join("file")).unwrap(), b"x");
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(store.is_unpacked(&diff_id));
    }

    #[test]
    fn failed_unpack_leaves_no_layer_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"bad");
        let err = store
            .ensure_unpacked(&diff_id, |tmp| {
                fs::write(tmp.join("partial"), b"x")?;
                Err(io::Error::other("corrupt tar"))
            })
            .unwrap_err();
        let shown = crate::error_chain::Causes(&err).to_string();
        assert!(shown.contains("corrupt tar"), "{shown}");
        assert!(!store.layer_dir(&diff_id).exists());
        assert!(!store.is_unpacked(&diff_id));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_dir_without_marker_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"l");
        fs::create_dir_all(store.layer_dir(&diff_id).join("stale")).unwrap();
        let out = store
            .ensure_unpacked(&diff_id, |tmp| fs::write(tmp.join("fresh"), b""))
            .unwrap();
        assert!(out.join("fresh").exists());
        assert!(!out.join("stale").exists());
    }

    #[test]
    fn a_layer_dir_of_the_old_format_is_unpacked_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"old");
        fs::create_dir_all(store.layer_dir(&diff_id).join("resurrected")).unwrap();
        // What kiln wrote before the format had a version: the diffID alone.
        fs::write(store.layer_marker(&diff_id), diff_id.to_string()).unwrap();
        assert!(!store.is_unpacked(&diff_id));
        let out = store
            .ensure_unpacked(&diff_id, |tmp| fs::write(tmp.join("fresh"), b""))
            .unwrap();
        assert!(out.join("fresh").exists());
        assert!(!out.join("resurrected").exists());
        assert!(store.is_unpacked(&diff_id));
    }

    #[test]
    fn an_adopted_dir_is_moved_into_place_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"made here");
        let scratch = store.scratch_dir("run-").unwrap();
        let made = scratch.path().join("upper");
        fs::create_dir(&made).unwrap();
        fs::write(made.join("f"), b"x").unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(made.join("f")).unwrap().ino();
        assert!(store.adopt_layer_dir(&diff_id, &made).unwrap());
        assert!(store.is_unpacked(&diff_id));
        let kept = store.layer_dir(&diff_id).join("f");
        assert_eq!(fs::metadata(&kept).unwrap().ino(), ino, "moved, not copied");
        assert!(!made.exists());
        // A second tree for the same layer is left to its scratch dir, and nothing unpacks.
        let again = scratch.path().join("again");
        fs::create_dir(&again).unwrap();
        assert!(!store.adopt_layer_dir(&diff_id, &again).unwrap());
        assert!(again.exists());
        let out = store
            .ensure_unpacked(&diff_id, |_| Err(io::Error::other("must not unpack")))
            .unwrap();
        assert_eq!(fs::metadata(out.join("f")).unwrap().ino(), ino);
    }

    #[test]
    fn compressed_cache_round_trips_only_while_the_blob_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"tar");
        let blob = store.put_blob(b"gz").unwrap();
        assert_eq!(store.cached_compressed(&diff_id, "gzip").unwrap(), None);
        store.record_compressed(&diff_id, "gzip", &blob).unwrap();
        assert_eq!(
            store.cached_compressed(&diff_id, "gzip").unwrap(),
            Some(blob)
        );
        assert_eq!(store.cached_compressed(&diff_id, "zstd").unwrap(), None);
        assert!(store.cached_compressed(&diff_id, "../x").is_err());
        fs::remove_file(store.blob_path(&blob)).unwrap();
        assert_eq!(store.cached_compressed(&diff_id, "gzip").unwrap(), None);
    }
}
