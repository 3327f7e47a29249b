//! Media types, layer descriptors and platforms.

use super::{ImageError, Result};
use crate::digest::Digest;

pub use crate::layer::Compression;
pub use crate::manifest::ImageFormat;
pub(crate) use crate::manifest::{OCI_INDEX, OCI_MANIFEST};

impl ImageFormat {
    /// The media type of a layer blob with this compression in this format.
    pub fn layer_media_type(self, c: Compression) -> Result<&'static str> {
        match self {
            ImageFormat::Oci => Ok(c.oci_media_type()),
            ImageFormat::Docker => c.docker_media_type().ok_or(ImageError::ZstdInDockerFormat),
        }
    }
}

/// The compression of a layer descriptor, refusing a media type that is not a layer's.
pub fn layer_compression(media_type: &str, digest: &Digest) -> Result<Compression> {
    Compression::of_media_type(media_type).ok_or_else(|| ImageError::UnsupportedMediaType {
        digest: *digest,
        media_type: media_type.to_string(),
    })
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
