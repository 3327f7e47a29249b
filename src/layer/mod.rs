//! Layers: a directory diff becomes a deterministic tar, hashed and compressed in one stream;
//! and the safe unpacker that turns a layer back into a directory.
//!
//! # Writing
//! [`write_layer`]`(root, kind, &opts, out)` walks `root` and streams one layer blob into `out`:
//! tar → sha256 (the diffID) → compressor → sha256 (the digest) → `out`, in a single pass with
//! flat memory. It returns a [`LayerBlob`] (diffID, digest, compressed size, compression).
//!
//! - The tar is deterministic: entries in path order (parents first, siblings by the byte
//!   order of their source names; a whiteout sits where the deleted name sorts, as in
//!   docker's and containerd's differs; an opaque marker right after its directory),
//!   numeric uid/gid without names, no atime/ctime, PAX records for long names, big sizes/ids
//!   and xattrs, hardlinks written as links to the first occurrence, and mtimes clamped to
//!   [`LayerOptions::source_date_epoch`].
//! - [`DiffKind::OverlayUpper`] translates overlayfs whiteouts (0/0 char devices or
//!   `*.overlay.whiteout` xattrs) into `.wh.<name>` and opaque directories into `.wh..wh..opq`.
//!   Overlay xattrs (`trusted.overlay.*`, `user.overlay.*`) are never written.
//! - [`Compression::Gzip`] and [`Compression::Zstd`] (at an [`Encoding`]'s level) compress fixed 1 MiB blocks in parallel on
//!   the rayon pool; the bytes never depend on the number of threads.
//!
//! # Unpacking
//! [`unpack_layer`]`(blob, dest, &opts)` detects gzip/zstd/plain by magic number and extracts
//! into `dest` so that nothing outside `dest` is ever touched: every operation is made by
//! descriptor, relative to a directory resolved inside the root by [`crate::fs_root`] (the way
//! `openat2(RESOLVE_IN_ROOT)` does it (absolute paths, `..` and symlinks cannot leave the
//! root)), the final component is never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and
//! the deferred directory modes and times re-open each directory without following any
//! symlink (one a later entry put there is skipped). Device nodes the process may not create
//! are skipped with a warning in the [`UnpackReport`], and ownership follows [`Ownership`].
//! OCI whiteouts are applied to the tree ([`Deletions::Apply`], merging layers into one root)
//! or kept in overlay's form ([`Deletions::Overlay`]: a 0/0 character device, an
//! `overlay.opaque=y` directory) so unpacked layers stacked as overlay lower dirs are exactly
//! the image. [`is_whiteout`], [`is_opaque_dir`] and [`visible_layers`] read that form back.

mod compress;
mod compression;
mod entries;
mod extract;
mod hash_thread;
mod idmap;
pub mod name;
mod owners;
mod tarball;
mod unpack;
mod walk;
mod whiteouts;
mod write;

use std::path::PathBuf;

pub use crate::digest::Digest;
pub use compression::{Compression, Encoding};
pub use entries::{EntrySource, LayerEntry, write_entries, write_entries_teed};
pub use idmap::{IdMap, IdMapError, IdRange, LayerIdMap};
pub use owners::{Owners, apply_layer_owners};
pub use unpack::{diff_id, unpack_layer};
pub use whiteouts::{
    drop_user_overlay_xattrs, hides_lower_layers, is_opaque_dir, is_whiteout, is_whiteout_at,
    visible_layers,
};
pub use write::write_layer;

/// What the directory given to [`write_layer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffKind {
    /// A plain directory: every file is content (COPY, `FROM scratch`).
    Directory,
    /// An overlayfs upper directory: whiteouts and opaque markers are translated to OCI form.
    OverlayUpper,
}

/// Options for [`write_layer`].
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// The algorithm and level of the new blob.
    pub encoding: Encoding,
    /// `SOURCE_DATE_EPOCH`: no mtime in the layer is later than this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
    /// Maps host uid/gid (as seen on the upper dir of a rootless build) to image uid/gid.
    /// `None` writes the host ids unchanged.
    pub id_map: Option<LayerIdMap>,
}

/// The result of [`write_layer`]: what the image manifest and config need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the uncompressed tar (goes into `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as written to `out` (the manifest descriptor digest).
    pub digest: Digest,
    /// Size in bytes of the blob as written to `out`.
    pub size: u64,
    pub compression: Compression,
}

/// How [`unpack_layer`] treats the uid/gid recorded in the layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ownership {
    /// chown to the recorded ids (needs root or a user namespace that maps them).
    Preserve,
    /// Leave files owned by the unpacking process.
    #[default]
    Ignore,
    /// Map image ids to host ids through the maps (image id → host id), then chown.
    Map(LayerIdMap),
}

/// Options for [`unpack_layer`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub ownership: Ownership,
    /// Restore xattrs from the layer where the kernel permits (failures become warnings).
    pub xattrs: bool,
    /// What the layer's whiteouts become.
    pub deletions: Deletions,
}

/// What [`unpack_layer`] does with a layer's whiteouts (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deletions {
    /// Delete from the tree in `dest` (layers unpacked one over another into one root).
    #[default]
    Apply,
    /// Keep them in overlayfs' form, for a directory used as an overlay lower dir: `.wh.NAME`
    /// becomes a 0/0 character device `NAME`, an opaque directory gets `overlay.opaque=y`
    /// (the layer root too: [`hides_lower_layers`]).
    Overlay(OpaqueXattr),
}

/// The xattr namespace of an opaque mark: the one the overlay that stacks the dir reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueXattr {
    /// `trusted.overlay.opaque` (real root, overlay mounted without `userxattr`); falls back
    /// to `user.` where `trusted.` is refused.
    Trusted,
    /// `user.overlay.opaque` (an unprivileged user or a user namespace: `userxattr` mounts).
    User,
}

impl OpaqueXattr {
    /// The namespace for a layer unpacked by this process: `trusted.` for real root.
    pub fn for_this_process() -> OpaqueXattr {
        if nix::unistd::geteuid().is_root() && !in_user_namespace() {
            OpaqueXattr::Trusted
        } else {
            OpaqueXattr::User
        }
    }
}

/// Whether this process runs in a user namespace other than the initial one (root there
/// cannot set `trusted.` xattrs).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

/// What [`unpack_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// sha256 of the uncompressed tar: the caller checks it against the expected diffID.
    pub diff_id: Digest,
    /// Entries written (files, dirs, links, nodes).
    pub entries: u64,
    /// Whiteouts applied (`.wh.<name>` and opaque markers).
    pub whiteouts: u64,
    /// Things skipped or neutralised, one sentence each (the caller turns them into
    /// `Progress` warnings).
    pub warnings: Vec<String>,
}

/// Everything that can go wrong writing or unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer source {}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: host {kind} {id} is not mapped into the image (check the id map / subuid range)",
        path.display()
    )]
    UnmappedId {
        path: PathBuf,
        kind: &'static str,
        id: u64,
    },
    #[error("{}: path is not valid for a tar entry: {reason}", path.display())]
    BadPath { path: PathBuf, reason: String },
    #[error("writing the layer blob")]
    Output(#[source] std::io::Error),
    #[error("reading the layer blob")]
    Input(#[source] std::io::Error),
    #[error("layer entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    /// Ctrl-C or SIGTERM ([`crate::progress::interrupt`]) between two entries.
    #[error("interrupted while writing or unpacking a layer")]
    Interrupted,
    #[error("unpacking layer entry {entry:?} to {}", dest.display())]
    Unpack {
        entry: String,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unpack destination {}: {reason}", path.display())]
    Destination { path: PathBuf, reason: String },
    #[error("invalid compression level {0}: gzip takes 0..=9, zstd 1..=22")]
    Level(i64),
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};

    #[test]
    fn no_layer_error_repeats_its_cause() {
        let path = || PathBuf::from("/some/path");
        for e in [
            LayerError::Source {
                path: path(),
                source: io(),
            },
            LayerError::Output(io()),
            LayerError::Input(io()),
            LayerError::Unpack {
                entry: "e".into(),
                dest: path(),
                source: io(),
            },
        ] {
            assert_each_cause_once(&e, CAUSE);
        }
    }
}
