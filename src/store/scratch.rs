//! Scratch directories of build steps (a RUN's upper dir and sandbox state, ADD's spool, a
//! `COPY --from` tree): `scratch/<name>/`, each with a lock file `scratch/<name>.lock` that the
//! process using the dir holds (flock) for as long as it lives. The kernel drops the lock when
//! that process dies, however it dies, so a later build (or `prune`) can tell a killed build's
//! dir (lock free) from a running one's (lock held) and remove only the first.
//!
//! Order of operations, which keeps the check race-free:
//! - create: lock file (`O_EXCL`), flock it, check the path still names that file (a cleaner
//!   may have unlinked it in between), then the dir. A dir therefore never exists without a
//!   locked lock file while its creator lives.
//! - remove (owner on drop, or a cleaner holding the lock): the dir, then the lock file.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use super::layers::remove_tree;
use super::{IoContext, Lease, Result, Store};

const LOCK_SUFFIX: &str = ".lock";

/// A step's scratch dir in the store, removed on drop (as root of the user's id map when it
/// holds files of sub-uids). Its lock tells other kiln processes it is in use.
#[derive(Debug)]
pub struct ScratchDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
    // `prune` removes every scratch dir: it must wait until this one is dropped.
    _lease: Lease,
    /// For its sub-id remover.
    store: Store,
}

/// What removing abandoned scratch dirs freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScratchFreed {
    pub dirs: usize,
    pub bytes: u64,
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Lock file last, and only once the dir is gone: a dir that could not be removed keeps
        // its lock file, so the next build or `prune` finds and retries it.
        if remove_tree(&self.dir, self.store.sub_id_remover()).is_ok() {
            let _ = fs::remove_file(&self.lock_path);
        }
    }
}

impl Store {
    pub(super) fn scratch_root(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// A new, empty, `0700` scratch dir named `<prefix><random>`, locked by this process.
    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir> {
        let lease = self.lease()?;
        let parent = self.scratch_root();
        loop {
            let (file, lock_path) = tempfile::Builder::new()
                .prefix(prefix)
                .suffix(LOCK_SUFFIX)
                .tempfile_in(&parent)
                .ctx("create a scratch lock file in", &parent)?
                .keep()
                .map_err(|e| e.error)
                .ctx("keep scratch lock file", &parent)?;
            if !FileExt::try_lock_exclusive(&file).ctx("lock", &lock_path)?
                || !still_named(&file, &lock_path)
            {
                // A cleaner took it between create and lock; it unlinks it. Try another name.
                continue;
            }
            let dir = dir_of(&lock_path);
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    return Ok(ScratchDir {
                        dir,
                        lock_path,
                        _lock: file,
                        _lease: lease,
                        store: self.clone(),
                    });
                }
                // A dir without a lock file (never made by a live kiln): `prune` removes it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(&lock_path);
                }
                Err(e) => {
                    let _ = fs::remove_file(&lock_path);
                    return Err(e).ctx("create scratch dir", &dir);
                }
            }
        }
    }

    /// Removes the scratch dirs of kiln processes that died without cleaning up (their lock is
    /// free); dirs of running builds, in this process or others, are left alone.
    pub fn remove_abandoned_scratch(&self) -> Result<ScratchFreed> {
        let parent = self.scratch_root();
        let mut freed = ScratchFreed::default();
        for entry in fs::read_dir(&parent).ctx("list", &parent)? {
            let lock_path = entry.ctx("list", &parent)?.path();
            if !lock_path
                .as_os_str()
                .as_bytes()
                .ends_with(LOCK_SUFFIX.as_bytes())
            {
                continue;
            }
            let file = match File::open(&lock_path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("open lock file", &lock_path),
            };
            if !FileExt::try_lock_exclusive(&file).ctx("lock", &lock_path)?
                || !still_named(&file, &lock_path)
            {
                continue;
            }
            let dir = dir_of(&lock_path);
            if fs::symlink_metadata(&dir).is_ok() {
                freed.bytes += super::gc::tree_size(&dir);
                remove_tree(&dir, self.sub_id_remover())?;
                freed.dirs += 1;
            }
            match fs::remove_file(&lock_path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(e).ctx("remove", &lock_path);
                }
                _ => {}
            }
        }
        Ok(freed)
    }

    /// Everything in `scratch/`, and the scratch dirs older kilns made at the store root.
    /// Only for `prune`, which holds the GC lock: no build is running, so nothing is in use.
    pub(super) fn remove_all_scratch(&self) -> Result<ScratchFreed> {
        let mut freed = self.remove_abandoned_scratch()?;
        let mut remove = |path: &Path| -> Result<()> {
            freed.bytes += super::gc::tree_size(path);
            freed.dirs += 1;
            remove_tree(path, self.sub_id_remover())
        };
        let parent = self.scratch_root();
        for entry in fs::read_dir(&parent).ctx("list", &parent)? {
            let path = entry.ctx("list", &parent)?.path();
            if path.is_dir() {
                remove(&path)?;
            } else {
                fs::remove_file(&path).ctx("remove", &path)?;
            }
        }
        // Only in kiln's own root: a `--root` shared with other files could hold a `run-…` of
        // the user's.
        if !self.root.join(super::STORE_MARKER).is_file() {
            return Ok(freed);
        }
        for entry in fs::read_dir(&self.root).ctx("list", &self.root)? {
            let entry = entry.ctx("list", &self.root)?;
            if is_legacy_scratch(&entry.file_name()) && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                remove(&entry.path())?;
            }
        }
        Ok(freed)
    }
}

/// A scratch dir name of older kilns, made at the store root: a prefix and tempfile's six
/// random letters and digits.
pub(super) fn is_legacy_scratch(name: &OsStr) -> bool {
    let name = name.as_bytes();
    ["run-", "add-", "rootfs-", "fetch-"].iter().any(|p| {
        name.strip_prefix(p.as_bytes())
            .is_some_and(|rest| rest.len() == 6 && rest.iter().all(u8::is_ascii_alphanumeric))
    })
}

/// `scratch/<name>.lock` → `scratch/<name>`.
fn dir_of(lock_path: &Path) -> PathBuf {
    let bytes = lock_path.as_os_str().as_bytes();
    let stem = bytes.strip_suffix(LOCK_SUFFIX.as_bytes()).unwrap_or(bytes);
    PathBuf::from(OsStr::from_bytes(stem))
}

/// Whether `path` still names the open `file` (flock locks the file, not the name).
fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_scratch_dirs_whose_lock_is_free_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let held = store.scratch_dir("run-").unwrap();
        fs::write(held.path().join("f"), b"in use").unwrap();
        let mode = fs::metadata(held.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // What a killed process leaves: its dir and its lock file, nobody holding the lock.
        let dead = store.scratch_root().join("run-dead");
        fs::create_dir_all(dead.join("upper/sub")).unwrap();
        fs::write(dead.join("upper/sub/big"), vec![0u8; 1000]).unwrap();
        fs::set_permissions(dead.join("upper/sub"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::write(store.scratch_root().join("run-dead.lock"), b"").unwrap();
        // A lock file alone (its owner died between lock file and dir).
        fs::write(store.scratch_root().join("add-x.lock"), b"").unwrap();

        let freed = store.remove_abandoned_scratch().unwrap();
        assert_eq!(
            freed,
            ScratchFreed {
                dirs: 1,
                bytes: 1000
            }
        );
        assert!(!dead.exists());
        assert!(held.path().join("f").is_file(), "a held dir stays");
        let names: Vec<_> = fs::read_dir(store.scratch_root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "the held dir and its lock: {names:?}");

        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(store.scratch_root()).unwrap().count(), 0);
    }

    #[test]
    fn prune_removes_old_kilns_scratch_at_the_root_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("run-abc123/upper")).unwrap();
        fs::write(dir.path().join("run-abc123/upper/f"), b"12345").unwrap();
        fs::create_dir(store.scratch_root().join("rootfs-orphan")).unwrap();
        let report = store.prune().unwrap();
        assert_eq!((report.scratch_dirs, report.bytes), (2, 5), "{report:?}");
        assert!(!dir.path().join("run-abc123").exists());
        assert!(dir.path().join("blobs").is_dir());
        assert_eq!(fs::read_dir(store.scratch_root()).unwrap().count(), 0);
    }
}
