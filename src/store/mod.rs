//! The local content store: content-addressed blobs, image records, unpacked layer cache, GC.
//!
//! Layout under the root (see [`Store::default_root`]):
//!
//! ```text
//! blobs/sha256/<hex>          content-addressed blobs (layers, configs, manifests)
//! images.json                 image name → manifest digest (replaced atomically)
//! layers/<diffid-hex>/        unpacked layers, used as overlay lower dirs (whiteouts kept); a
//!                             layer a build kept without a blob has only this form
//! layers/<diffid-hex>.complete  marker: the directory beside it is whole; its first word is
//!                             the dir format (`kiln-layer-dir/2`), an older one is redone
//! cache/compressed/<diffid-hex>.<compression>  diffID → compressed blob digest
//! cache/blob-locations.json   blob → registry repositories known to hold it (mount hints)
//! pins/<key>.json             content a build-cache entry keeps alive through `prune` (blobs,
//!                             and unpacked dirs by diffID: all a layer without a blob has)
//! tmp/                        temp files and dirs, renamed into place when complete
//! scratch/<name>/ + <name>.lock  a build step's scratch dir and the lock its process holds
//! locks/                      per-digest lock files; `gc.lock` for prune vs. users
//! kiln-store                  marker: this directory is a kiln store (see below)
//! ```
//!
//! Privacy: unpacked layers keep their setuid bits and owners, so another local user who could
//! reach them could run a setuid-root binary of a pulled image. The root and every directory
//! of the store is therefore `0700` (like containers-storage). Opening an older kiln's store
//! tightens it. A `--root` that is not kiln's (not empty, no marker, no store layout) keeps its
//! own mode: the store's own directories inside it are `0700`, which suffices.
//!
//! Public API:
//! - [`Store::open`], [`Store::default_root`], [`Store::lease`] (hold while building so a
//!   concurrent `prune` cannot delete fresh, not yet named content);
//!   [`Store::with_sub_id_remover`]: how to remove trees of sub-uids a plain remove cannot
//!   (the CLI passes the sandbox's id-mapped helper; the store depends on nothing above it).
//! - Manifests and configs are read by [`crate::manifest`], as pull reads them (GC follows
//!   exactly the references pull stored).
//! - Blobs: [`Store::begin_blob`] → [`BlobWriter`] → [`BlobWriter::commit`]; [`Store::put_blob`],
//!   [`Store::has_blob`], [`Store::open_blob`], [`Store::blob_size`], [`Store::lock_digest`];
//!   [`Store::begin_unhashed_blob`] → [`UnhashedBlobWriter`] for a writer that computes the
//!   digest itself (the layer writer).
//! - Names: [`Store::tag`], [`Store::untag`], [`Store::list_images`], [`Store::resolve`].
//! - Layers: [`Store::layer_dir`], [`Store::ensure_unpacked`], [`Store::adopt_layer_dir`],
//!   [`Store::cached_compressed`], [`Store::record_compressed`], [`Store::lock_layer_blob`]
//!   (making the blob of a layer kept only unpacked, once: `image::ensure_blob`).
//! - Mount hints: [`Store::blob_locations`], [`Store::record_blob_locations`].
//! - GC: [`Store::pin`], [`Store::unpin`], [`Store::prune`] → [`PruneReport`].
//! - Scratch: [`Store::scratch_dir`] → [`ScratchDir`]; [`Store::remove_abandoned_scratch`]
//!   (what killed builds left; `prune` removes it too).

mod blobs;
mod gc;
mod layers;
mod locations;
mod lock;
mod records;
mod scratch;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;

pub use blobs::{BlobWriter, UnhashedBlobWriter};
/// For the registry's test that GC reads every manifest as pull reads it.
#[cfg(test)]
pub(crate) use gc::manifest_refs;
pub use gc::{Pin, PruneReport};
pub use locations::BlobLocation;
pub use lock::{DigestLock, Lease};
pub use records::ImageRecord;
pub use scratch::{ScratchDir, ScratchFreed};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}")]
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
    #[error("unpacking layer {diff_id} failed")]
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
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    sub_id_remover: Option<Arc<SubIdRemover>>,
}

/// Removes a tree holding files of ids this process does not own (the sub-uids a rootless
/// build unpacked), which a plain remove cannot; `Ok(false)` when it cannot either. Supplied
/// by the caller that knows how ([`Store::with_sub_id_remover`]; the CLI passes the sandbox's
/// id-mapped helper), so the store depends on no module above it.
pub type SubIdRemover = dyn Fn(&Path) -> io::Result<bool> + Send + Sync;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("sub_id_remover", &self.sub_id_remover.is_some())
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`, private to the user (see the module
    /// doc): the root when it is kiln's, and the store's directories, are `0700`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        // Absolute once, here: the store's paths are handed to the sandbox, which mounts them
        // after changing directory, and `--root ./store` must mean the same store there.
        let root = std::path::absolute(&root).ctx("make absolute", &root)?;
        let store = Store {
            root,
            sub_id_remover: None,
        };
        let ours = store.root_is_kilns()?;
        if ours {
            make_private_dir(&store.root, true)?;
        }
        for dir in STORE_DIRS
            .iter()
            .chain(["blobs/sha256", "cache/compressed"].iter())
        {
            // In a directory that is not kiln's, a `tmp/` of the user's keeps its mode.
            make_private_dir(&store.root.join(dir), ours)?;
        }
        if ours {
            let marker = store.root.join(STORE_MARKER);
            if !marker.is_file() {
                fs::write(&marker, b"kiln store\n").ctx("write", &marker)?;
            }
        }
        Ok(store)
    }

    /// This store, removing trees of other ids (left by rootless builds) with `remover` when a
    /// plain remove is refused.
    pub fn with_sub_id_remover(mut self, remover: Arc<SubIdRemover>) -> Store {
        self.sub_id_remover = Some(remover);
        self
    }

    pub(crate) fn sub_id_remover(&self) -> Option<&SubIdRemover> {
        self.sub_id_remover.as_deref()
    }

    /// Whether the root is kiln's to make private: missing, marked, or holding nothing but
    /// what kiln puts there (an empty directory, or an older kiln's store, which had no
    /// marker). A `--root $HOME` is not.
    fn root_is_kilns(&self) -> Result<bool> {
        if self.root.join(STORE_MARKER).is_file() {
            return Ok(true);
        }
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e).ctx("list", &self.root),
        };
        for entry in entries {
            let name = entry.ctx("list", &self.root)?.file_name();
            let known = STORE_DIRS.iter().any(|d| name == *d)
                || name == "images.json"
                || scratch::is_legacy_scratch(&name);
            if !known {
                return Ok(false);
            }
        }
        Ok(true)
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

/// The file that marks a directory as a kiln store.
const STORE_MARKER: &str = "kiln-store";

/// The directories at the store's root.
const STORE_DIRS: [&str; 7] = [
    "blobs", "layers", "cache", "pins", "tmp", "scratch", "locks",
];

/// Creates `dir` (and missing parents) `0700`; with `tighten`, makes an existing one `0700`
/// if it is more open than that.
fn make_private_dir(dir: &Path, tighten: bool) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx("create store directory", dir)?;
    let mode = fs::metadata(dir).ctx("stat", dir)?.permissions().mode();
    if tighten && mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .ctx("make private (chmod 0700)", dir)?;
    }
    Ok(())
}

/// fsyncs a directory so a rename inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}

#[cfg(test)]
mod tests {

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_new_store_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/store");
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        for sub in [
            "blobs",
            "blobs/sha256",
            "layers",
            "cache",
            "tmp",
            "scratch",
            "locks",
        ] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
        }
        assert!(root.join(STORE_MARKER).is_file());
    }

    #[test]
    fn an_older_kilns_store_is_tightened_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        for sub in ["blobs/sha256", "layers/abc", "locks", "run-a1B2c3"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join("locks/gc.lock"), b"").unwrap();
        fs::write(root.join("images.json"), b"{}").unwrap();
        for d in [&root, &root.join("layers"), &root.join("layers/abc")] {
            chmod(d, 0o755);
        }
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("layers")), 0o700);
        // Image content keeps its own modes: the directories above it close it off.
        assert_eq!(mode(&root.join("layers/abc")), 0o755);
        // The marker makes it kiln's from now on, whatever else comes to be in it.
        chmod(&root, 0o755);
        fs::write(root.join("notes.txt"), b"").unwrap();
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
    }

    #[test]
    fn a_directory_that_is_not_kilns_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("home");
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::write(root.join(".profile"), b"").unwrap();
        chmod(&root, 0o755);
        chmod(&root.join("tmp"), 0o755);
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&root.join("tmp")), 0o755, "the user's own");
        assert!(!root.join(STORE_MARKER).exists());
        assert_eq!(mode(&root.join("layers")), 0o700);
        assert_eq!(mode(&root.join("scratch")), 0o700);
        // Nor does prune take a dir of the user's for an older kiln's scratch dir.
        fs::create_dir(root.join("run-abc123")).unwrap();
        Store::open(&root).unwrap().prune().unwrap();
        assert!(root.join("run-abc123").is_dir());
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};

    #[test]
    fn no_store_error_repeats_its_cause() {
        let path = PathBuf::from("/some/path");
        assert_each_cause_once(
            &StoreError::Io {
                action: "create",
                path,
                source: io(),
            },
            CAUSE,
        );
        assert_each_cause_once(
            &StoreError::Unpack {
                diff_id: Digest::of(b"x"),
                source: Box::new(io()),
            },
            CAUSE,
        );
    }
}
