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

/// A layer as a build holds it: with its blob, or only unpacked. A layer kiln made on this
/// machine that nothing outside the build needs yet (a stage that only feeds `COPY --from`)
/// is never compressed: it is its diffID and its directory `layers/<diffID>` in the store,
/// until [`ensure_blob`](super::ensure_blob) makes its blob from that directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildLayer {
    /// The blob is in the store (or, for a registry cache hit, in the registry until a step
    /// needs it).
    Blob(Layer),
    /// Only the unpacked directory holds the layer.
    Unpacked {
        diff_id: Digest,
        /// Bytes of its uncompressed tar (what `kiln prune --keep-bytes` counts).
        size: u64,
    },
}

impl BuildLayer {
    /// The digest of the layer's uncompressed tar, whichever form it is in.
    pub fn diff_id(&self) -> Digest {
        match self {
            BuildLayer::Blob(l) => l.diff_id,
            BuildLayer::Unpacked { diff_id, .. } => *diff_id,
        }
    }

    /// The layer with its blob, if it has one.
    pub fn blob(&self) -> Option<&Layer> {
        match self {
            BuildLayer::Blob(l) => Some(l),
            BuildLayer::Unpacked { .. } => None,
        }
    }
}

impl From<Layer> for BuildLayer {
    fn from(l: Layer) -> BuildLayer {
        BuildLayer::Blob(l)
    }
}
