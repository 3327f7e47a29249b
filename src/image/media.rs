//! Media types, layer descriptors and platforms.

use serde::{Deserialize, Serialize};

use super::{ImageError, Result};
use crate::digest::Digest;

/// Manifest flavour: OCI (default) or Docker v2 schema 2 (for old registries, like buildah's
/// `--format docker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Oci,
    Docker,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

impl ImageFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_MANIFEST,
            ImageFormat::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_CONFIG,
            ImageFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// The media type of a layer blob with this compression in this format.
    pub fn layer_media_type(self, c: Compression) -> Result<&'static str> {
        Ok(match (self, c) {
            (ImageFormat::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (ImageFormat::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (ImageFormat::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (ImageFormat::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (ImageFormat::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (ImageFormat::Docker, Compression::Zstd) => return Err(ImageError::ZstdInDockerFormat),
        })
    }

    /// The format a manifest media type belongs to.
    pub fn of_manifest(media_type: &str) -> Option<ImageFormat> {
        match media_type {
            OCI_MANIFEST => Some(ImageFormat::Oci),
            DOCKER_MANIFEST => Some(ImageFormat::Docker),
            _ => None,
        }
    }
}

impl Compression {
    /// Reads the compression from a layer media type of either format.
    pub fn of_layer(media_type: &str, digest: &Digest) -> Result<Compression> {
        let unsupported = || ImageError::UnsupportedMediaType {
            digest: *digest,
            media_type: media_type.to_string(),
        };
        let is_layer = media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.");
        if !is_layer {
            return Err(unsupported());
        }
        if media_type.ends_with("gzip") {
            Ok(Compression::Gzip)
        } else if media_type.ends_with("zstd") {
            Ok(Compression::Zstd)
        } else if media_type.ends_with(".tar") {
            Ok(Compression::None)
        } else {
            Err(unsupported())
        }
    }

    /// The name used in cache keys and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// One layer of an image: the blob as stored and the diffID of its uncompressed tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub compression: Compression,
}

pub use crate::platform::Platform;
