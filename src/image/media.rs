//! Media types, layer descriptors and platforms.

use serde::{Deserialize, Serialize};

use super::{ImageError, Result};
use crate::digest::Digest;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub use crate::manifest::ImageFormat;
pub(crate) use crate::manifest::{OCI_INDEX, OCI_MANIFEST};

impl ImageFormat {
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
