//! The JSON kiln writes for an image: the manifest of a config and its layers, the
//! descriptors that point at blobs, and canonical bytes (the same value always gives the same
//! digest). Used by the builder, by stored images converting their manifest, and by the OCI
//! layout.

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde_json::Value;

use super::Result;
use super::media::{ImageFormat, Layer};
use crate::digest::Digest;

/// The manifest for a config and layers, in `format`'s media types.
pub(super) fn manifest_json(
    format: ImageFormat,
    config_size: u64,
    config_digest: &Digest,
    layers: &[Layer],
) -> Result<Vec<u8>> {
    let mut descs = Vec::with_capacity(layers.len());
    for l in layers {
        descs.push(descriptor(
            format.layer_media_type(l.compression)?,
            l.size,
            &l.digest,
        ));
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(format.manifest_media_type()))
        .config(descriptor(
            format.config_media_type(),
            config_size,
            config_digest,
        ))
        .layers(descs)
        .build()
        .expect("manifest has every required field");
    Ok(canonical(
        &serde_json::to_value(&manifest).expect("manifest serialises"),
    ))
}

/// Compact JSON with object keys sorted (serde_json's map is a BTreeMap here), so equal
/// values always give equal bytes whatever HashMap order oci-spec used.
pub(super) fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values serialise")
}

pub(super) fn descriptor(media_type: &str, size: u64, digest: &Digest) -> Descriptor {
    let d: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .expect("a kiln Digest is a valid OCI digest");
    Descriptor::new(MediaType::from(media_type), size, d)
}
