//! Image assembly (config, manifest, index) and outputs (OCI layout, docker archive).
//!
//! Public API:
//! - [`ImageBuilder`]: the config state a build fills instruction by instruction (Docker
//!   semantics for ENV, CMD/ENTRYPOINT, …), plus layers and history; [`ImageBuilder::finish`]
//!   gives the config and manifest bytes ([`ImageBlobs`]), [`ImageBuilder::commit`] writes them
//!   to a [`Store`](crate::store::Store) and names the image.
//! - [`StoredImage::load`]: an image already in the store (manifest, config, layer list, read
//!   by [`crate::manifest`], the reader pull and GC share), the
//!   starting point for `FROM`, `save`, `inspect` and `push`.
//! - Outputs: [`write_oci_layout`] (directory or tar, [`LayoutKind`]) and
//!   [`write_docker_archive`] (what `docker load` / `podman load` accept). Blobs stream from
//!   the store; nothing half-written is left at the destination. [`Output`] parses and writes
//!   `--output type=oci|docker,dest=…`.
//! - Multi-platform images: [`StoredIndex::create`] writes the index (OCI, or a Docker
//!   manifest list) of single-platform images; [`Stored::load`] reads what a name points at,
//!   an image or an index with its members; [`write_oci_index_layout`] exports an index.
//! - Layer glue: [`commit_layer`] (directory → layer blob in the store, compression cache
//!   recorded), [`ensure_blob`] (a layer kept only unpacked → its blob, made from the
//!   store's directory when something needs it: the image named, pushed, written out or
//!   exported to a registry cache) and [`unpacked_layer`] (stored layer → cached overlay
//!   lower dir).
//! - [`ImageFormat`] (OCI by default, Docker v2 schema 2 as buildah's `--format docker`),
//!   [`Compression`], [`Layer`] (a layer with its blob), [`BuildLayer`] (a build's layer:
//!   with its blob or only unpacked), [`Platform`], [`Healthcheck`]. An [`ImageBuilder`]
//!   holds [`BuildLayer`]s; only an image whose layers all have blobs can be finished.
//!
//! Config JSON is canonical (keys sorted, compact) so the same input gives the same digest.

mod builder;
mod docker_archive;
mod index;
mod layer_glue;
mod manifest;
mod media;
mod oci_layout;
mod output;
mod sink;
mod stored;

use std::path::PathBuf;

use crate::digest::Digest;
use crate::store::StoreError;

pub use builder::{Healthcheck, ImageBlobs, ImageBuilder, RunConfig};
pub use docker_archive::write_docker_archive;
pub use index::{IndexMember, Stored, StoredIndex};
pub use layer_glue::{commit_layer, ensure_blob, unpacked_layer};
pub use media::{BuildLayer, Compression, ImageFormat, Layer, Platform};
pub use oci_layout::{LayoutKind, write_oci_index_layout, write_oci_layout};
pub use output::{Output, OutputSpecError};
pub use stored::StoredImage;

/// What can go wrong assembling or exporting an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{digest} cannot be read as an image manifest")]
    BadManifest {
        digest: Digest,
        #[source]
        source: crate::manifest::ManifestError,
    },
    #[error("{0} is a multi-platform index; pick one platform's manifest")]
    IsAnIndex(Digest),
    #[error("{digest}: the index has no manifest for {wanted} (it has: {available})")]
    NoPlatform {
        digest: Digest,
        /// `os/arch[/variant]` (a `String` keeps the error small).
        wanted: String,
        available: String,
    },
    #[error("layer {digest} has media type {media_type:?}, which kiln cannot read")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error(
        "zstd layers cannot be written in Docker format (v2 schema 2 has no zstd media type); \
         use --format oci or --compression gzip"
    )]
    ZstdInDockerFormat,
    #[error("image config {digest} cannot be read")]
    BadConfig {
        digest: Digest,
        #[source]
        source: crate::manifest::ConfigError,
    },
    #[error(
        "layer {digest} does not match its diffID: config says {expected}, content is {actual}"
    )]
    DiffIdMismatch {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("the image has {layers} layers but its config lists {diff_ids} diffIDs")]
    LayerCountMismatch { layers: usize, diff_ids: usize },
    #[error(
        "a docker archive holds one platform's image, and {digest} is a multi-platform index \
         ({platforms}): pick one with --platform, or write an OCI layout (type=oci / --format oci)"
    )]
    IndexInDockerArchive { digest: Digest, platforms: String },
    #[error(
        "{0} already exists and is not an empty directory; remove it or pick another destination"
    )]
    DestinationExists(PathBuf),
    #[error(
        "layer {0} has no blob yet and its unpacked directory is gone from the store \
         (pruned?); build again"
    )]
    LayerDirGone(Digest),
    #[error(
        "the unpacked layer {diff_id} in the store changed since its step made it (its tar is \
         now {actual}); build with --no-cache to make it again"
    )]
    LayerDirChanged { diff_id: Digest, actual: Digest },
    #[error("writing the blob of unpacked layer {diff_id}")]
    LayerDirTar {
        diff_id: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "layer {0} of the image has no blob: its blob must be made before the image is finished"
    )]
    NoBlob(Digest),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| ImageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};

    #[test]
    fn no_image_error_repeats_its_cause() {
        let d = Digest::of(b"x");
        assert_each_cause_once(
            &ImageError::Io {
                action: "read",
                path: PathBuf::from("/some/path"),
                source: io(),
            },
            CAUSE,
        );
        assert_each_cause_once(
            &ImageError::Store(StoreError::Io {
                action: "read",
                path: PathBuf::from("/some/path"),
                source: io(),
            }),
            CAUSE,
        );
        assert_each_cause_once(
            &ImageError::LayerDirTar {
                diff_id: d,
                source: Box::new(io()),
            },
            CAUSE,
        );
        let json = || serde_json::from_slice::<u8>(b"{").unwrap_err();
        let text = json().to_string();
        assert_each_cause_once(
            &ImageError::BadConfig {
                digest: d,
                source: crate::manifest::ConfigError(json()),
            },
            &text,
        );
        let manifest = crate::manifest::read(b"{", None).unwrap_err();
        let text = std::error::Error::source(&manifest).unwrap().to_string();
        assert_each_cause_once(
            &ImageError::BadManifest {
                digest: d,
                source: manifest,
            },
            &text,
        );
    }
}
