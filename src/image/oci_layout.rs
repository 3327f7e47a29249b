//! OCI image layout output (`oci-layout`, `index.json`, `blobs/sha256/…`), as a directory or a
//! tar (what `skopeo … oci:DIR` / `oci-archive:FILE` and `umoci` read).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use super::Result;
use super::manifest::descriptor;
use super::media::{ImageFormat, OCI_INDEX, OCI_MANIFEST};
use super::sink::Sink;
use super::stored::StoredImage;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::Store;

/// Whether the layout is written as a directory or a single tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    Dir,
    Tar,
}

/// The annotation OCI tools read the image's tag from.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (`ctr import`) reads the full image name from.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Writes `image` as an OCI image layout at `dest`. A Docker-format image gets an OCI manifest
/// (same config and layers): OCI tools only look for OCI media types in a layout's index. With `name`, the index entry carries its tag
/// as `org.opencontainers.image.ref.name` (and the full name for containerd).
pub fn write_oci_layout(
    store: &Store,
    image: &StoredImage,
    name: Option<&Reference>,
    dest: &Path,
    kind: LayoutKind,
) -> Result<()> {
    let mut sink = match kind {
        LayoutKind::Dir => Sink::dir(dest)?,
        LayoutKind::Tar => Sink::tar(dest)?,
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    sink.add_file("oci-layout", layout.len() as u64, &layout[..])?;
    sink.add_dir("blobs")?;
    sink.add_dir("blobs/sha256")?;
    let mut blobs: Vec<Digest> = vec![image.config_digest];
    blobs.extend(image.layers.iter().map(|l| l.digest));
    let mut seen = BTreeSet::new();
    for d in blobs.into_iter().filter(|d| seen.insert(*d)) {
        let size = store.blob_size(&d)?;
        sink.add_file(
            &format!("blobs/sha256/{}", d.hex()),
            size,
            store.open_blob(&d)?,
        )?;
    }
    let (manifest, manifest_digest) = image.manifest_in(ImageFormat::Oci)?;
    if seen.insert(manifest_digest) {
        let path = format!("blobs/sha256/{}", manifest_digest.hex());
        sink.add_file(&path, manifest.len() as u64, &manifest[..])?;
    }
    let index = index_json(&manifest, &manifest_digest, name);
    sink.add_file("index.json", index.len() as u64, &index[..])?;
    sink.finish()
}

fn index_json(manifest: &[u8], digest: &Digest, name: Option<&Reference>) -> Vec<u8> {
    let mut desc = descriptor(OCI_MANIFEST, manifest.len() as u64, digest);
    if let Some(name) = name {
        let mut ann = HashMap::new();
        if let Some(tag) = name.tag() {
            ann.insert(REF_NAME.to_string(), tag.to_string());
        }
        ann.insert(CONTAINERD_NAME.to_string(), name.to_string());
        desc.set_annotations(Some(ann));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(OCI_INDEX))
        .manifests(vec![desc])
        .build()
        .expect("index has every required field");
    // Through Value so the annotation map comes out sorted: same input, same bytes.
    serde_json::to_vec(&serde_json::to_value(&index).expect("index serialises"))
        .expect("JSON values serialise")
}
