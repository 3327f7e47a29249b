//! OCI image layout output (`oci-layout`, `index.json`, `blobs/sha256/…`), as a directory or a
//! tar (what `skopeo … oci:DIR` / `oci-archive:FILE` and `umoci` read).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use super::Result;
use super::index::StoredIndex;
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
    let mut w = LayoutWriter::start(dest, kind)?;
    let (manifest, manifest_digest) = w.image(store, image)?;
    let index = index_json(OCI_MANIFEST, &manifest, &manifest_digest, name);
    w.sink
        .add_file("index.json", index.len() as u64, &index[..])?;
    w.sink.finish()
}

/// Writes a multi-platform image as an OCI image layout: `index.json` names the image index
/// (OCI media types throughout, as [`write_oci_layout`]), which lists every member, as
/// BuildKit's `type=oci` output of a multi-platform build does.
pub fn write_oci_index_layout(
    store: &Store,
    index: &StoredIndex,
    name: Option<&Reference>,
    dest: &Path,
    kind: LayoutKind,
) -> Result<()> {
    let mut w = LayoutWriter::start(dest, kind)?;
    for m in &index.members {
        w.image(store, &m.image)?;
    }
    let (bytes, digest, _) = index.in_format(ImageFormat::Oci)?;
    w.add_bytes(&bytes, &digest)?;
    let top = index_json(OCI_INDEX, &bytes, &digest, name);
    w.sink.add_file("index.json", top.len() as u64, &top[..])?;
    w.sink.finish()
}

/// A layout being written: each blob once.
struct LayoutWriter {
    sink: Sink,
    seen: BTreeSet<Digest>,
}

impl LayoutWriter {
    fn start(dest: &Path, kind: LayoutKind) -> Result<LayoutWriter> {
        let mut sink = match kind {
            LayoutKind::Dir => Sink::dir(dest)?,
            LayoutKind::Tar => Sink::tar(dest)?,
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        sink.add_file("oci-layout", layout.len() as u64, &layout[..])?;
        sink.add_dir("blobs")?;
        sink.add_dir("blobs/sha256")?;
        Ok(LayoutWriter {
            sink,
            seen: BTreeSet::new(),
        })
    }

    /// Adds the image's config, layers and OCI manifest; returns the manifest.
    fn image(&mut self, store: &Store, image: &StoredImage) -> Result<(Vec<u8>, Digest)> {
        let mut blobs: Vec<Digest> = vec![image.config_digest];
        blobs.extend(image.layers.iter().map(|l| l.digest));
        for d in blobs {
            if self.seen.insert(d) {
                let size = store.blob_size(&d)?;
                self.sink.add_file(
                    &format!("blobs/sha256/{}", d.hex()),
                    size,
                    store.open_blob(&d)?,
                )?;
            }
        }
        let (manifest, manifest_digest) = image.manifest_in(ImageFormat::Oci)?;
        self.add_bytes(&manifest, &manifest_digest)?;
        Ok((manifest, manifest_digest))
    }

    fn add_bytes(&mut self, bytes: &[u8], digest: &Digest) -> Result<()> {
        if self.seen.insert(*digest) {
            let path = format!("blobs/sha256/{}", digest.hex());
            self.sink.add_file(&path, bytes.len() as u64, bytes)?;
        }
        Ok(())
    }
}

fn index_json(
    media_type: &str,
    manifest: &[u8],
    digest: &Digest,
    name: Option<&Reference>,
) -> Vec<u8> {
    let mut desc = descriptor(media_type, manifest.len() as u64, digest);
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
