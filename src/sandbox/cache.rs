//! `RUN --mount=type=cache`: one persistent directory per id under the caller's cache root,
//! shared between steps according to the mount's sharing mode (an flock on a lock file).

use std::fs::File;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use sha2::{Digest as _, Sha256};

use super::{CacheSharing, SandboxError};

/// A cache directory held for one step; the lock (if any) is released on drop.
#[derive(Debug)]
pub struct CacheLock {
    dir: PathBuf,
    _lock: Option<File>,
    // A private mount that found the shared directory busy gets a throwaway one.
    _scratch: Option<tempfile::TempDir>,
}

impl CacheLock {
    /// The directory to mount.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the cache directory for `id` under `root` (created if missing).
    pub fn acquire(
        root: &Path,
        id: &str,
        sharing: CacheSharing,
    ) -> Result<CacheLock, SandboxError> {
        // Hashing keeps ids like "a/b" and "a_b" apart and any id a valid file name.
        let name = hex::encode(&Sha256::digest(id.as_bytes())[..16]);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io(&dir, e))?;
        if sharing == CacheSharing::Shared {
            return Ok(CacheLock {
                dir,
                _lock: None,
                _scratch: None,
            });
        }
        let lock_path = root.join(format!("{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SandboxError::io(&lock_path, e))?;
        if sharing == CacheSharing::Locked {
            lock.lock_exclusive()
                .map_err(|e| SandboxError::io(&lock_path, e))?;
            return Ok(CacheLock {
                dir,
                _lock: Some(lock),
                _scratch: None,
            });
        }
        if lock
            .try_lock_exclusive()
            .map_err(|e| SandboxError::io(&lock_path, e))?
        {
            return Ok(CacheLock {
                dir,
                _lock: Some(lock),
                _scratch: None,
            });
        }
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{name}.private-"))
            .tempdir_in(root)
            .map_err(|e| SandboxError::io(root, e))?;
        Ok(CacheLock {
            dir: scratch.path().to_path_buf(),
            _lock: None,
            _scratch: Some(scratch),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_gets_a_fresh_dir_while_the_shared_one_is_held() {
        let root = tempfile::tempdir().unwrap();
        let first = CacheLock::acquire(root.path(), "apt", CacheSharing::Private).unwrap();
        std::fs::write(first.dir().join("pkg"), "x").unwrap();
        let second = CacheLock::acquire(root.path(), "apt", CacheSharing::Private).unwrap();
        assert_ne!(first.dir(), second.dir());
        assert!(!second.dir().join("pkg").exists());
        let shared = CacheLock::acquire(root.path(), "apt", CacheSharing::Shared).unwrap();
        assert_eq!(shared.dir(), first.dir());
        drop((first, second));
        let again = CacheLock::acquire(root.path(), "apt", CacheSharing::Locked).unwrap();
        assert!(again.dir().join("pkg").exists(), "the cache persists");
        let other = CacheLock::acquire(root.path(), "a/b", CacheSharing::Shared).unwrap();
        assert_ne!(other.dir(), again.dir());
    }
}
