//! Glue between the layer engine and the store: a directory becomes a stored layer blob, and a
//! stored layer becomes a cached unpacked directory.

use std::path::{Path, PathBuf};

use super::media::Layer;
use super::{ImageError, Result};
use crate::layer::{self, DiffKind, LayerBlob, LayerOptions, UnpackOptions};
use crate::store::Store;

impl From<LayerBlob> for Layer {
    fn from(b: LayerBlob) -> Layer {
        Layer {
            digest: b.digest,
            size: b.size,
            diff_id: b.diff_id,
            compression: b.compression,
        }
    }
}

/// Turns `root` into a layer blob in the store (streamed: tar, hash, compress, hash, write in
/// one pass) and records the (diffID, compression) → digest mapping.
pub fn commit_layer(
    store: &Store,
    root: &Path,
    kind: DiffKind,
    opts: &LayerOptions,
) -> Result<Layer> {
    let mut w = store.begin_unhashed_blob()?;
    let blob = layer::write_layer(root, kind, opts, &mut w)?;
    w.commit(&blob.digest)?;
    let layer = Layer::from(blob);
    store.record_compressed(&layer.diff_id, layer.compression.name(), &layer.digest)?;
    Ok(layer)
}

/// The unpacked directory of a stored layer (an overlay lower dir), unpacking it once into
/// the store's layer cache. The unpacked tar must match the layer's diffID.
///
/// The store's layer dirs are overlay lower dirs: whiteouts are kept in overlay form whatever
/// `opts.deletions` says ([`layer::Deletions::Apply`] would lose them).
pub fn unpacked_layer(store: &Store, l: &Layer, opts: &UnpackOptions) -> Result<PathBuf> {
    let mut opts = opts.clone();
    if opts.deletions == layer::Deletions::Apply {
        opts.deletions = layer::Deletions::Overlay(layer::OpaqueXattr::for_this_process());
    }
    let opts = &opts;
    let blob = store.open_blob(&l.digest)?;
    let dir = store.ensure_unpacked(&l.diff_id, |tmp| {
        let report = layer::unpack_layer(std::io::BufReader::new(blob), tmp, opts)
            .map_err(UnpackError::Layer)?;
        if report.diff_id != l.diff_id {
            return Err(UnpackError::DiffId(report.diff_id));
        }
        Ok(())
    });
    dir.map_err(ImageError::from)
}

#[derive(Debug, thiserror::Error)]
enum UnpackError {
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    #[error("the layer's tar has diffID {0}, not the one its image config names")]
    DiffId(crate::digest::Digest),
}
