//! Glue between the layer engine and the store: a directory becomes a stored layer blob, a
//! layer kept only unpacked gets its blob when one is needed, and a stored layer becomes a
//! cached unpacked directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::media::{BuildLayer, Layer};
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

/// The layer with its blob, made if it has none ([`BuildLayer::Unpacked`]): the store's
/// unpacked directory `layers/<diffID>` is written as a tar again by `tar_dir` (with `opts`,
/// the encoding and `SOURCE_DATE_EPOCH` of the build that made it, and in the way that build
/// wrote it: the caller knows whether that was in this process or as root of an id map),
/// compressed and stored, and the (diffID, compression) → digest mapping recorded. The tar
/// must have the recorded diffID, so the blob is byte for byte the one the step would have
/// written at once; a directory that no longer gives it is [`ImageError::LayerDirChanged`].
/// A blob made earlier for the same diffID and compression is reused.
pub fn ensure_blob<E>(
    store: &Store,
    layer: &BuildLayer,
    opts: &LayerOptions,
    tar_dir: impl FnOnce(&Path, &LayerOptions, &mut dyn Write) -> std::result::Result<LayerBlob, E>,
) -> Result<Layer>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let diff_id = match layer {
        BuildLayer::Blob(l) => return Ok(*l),
        BuildLayer::Unpacked { diff_id, .. } => *diff_id,
    };
    let compression = opts.encoding.compression();
    let made = || -> Result<Option<Layer>> {
        match store.cached_compressed(&diff_id, compression.name())? {
            None => Ok(None),
            Some(digest) => Ok(Some(Layer {
                digest,
                size: store.blob_size(&digest)?,
                diff_id,
                compression,
            })),
        }
    };
    if let Some(l) = made()? {
        return Ok(l);
    }
    // Two stages or builds needing the blob make it once.
    let _lock = store.lock_layer_blob(&diff_id)?;
    if let Some(l) = made()? {
        return Ok(l);
    }
    if !store.is_unpacked(&diff_id) {
        return Err(ImageError::LayerDirGone(diff_id));
    }
    let mut w = store.begin_unhashed_blob()?;
    let blob =
        tar_dir(&store.layer_dir(&diff_id), opts, &mut w).map_err(|e| ImageError::LayerDirTar {
            diff_id,
            source: Box::new(e),
        })?;
    if blob.diff_id != diff_id {
        return Err(ImageError::LayerDirChanged {
            diff_id,
            actual: blob.diff_id,
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, Encoding};

    fn gzip() -> LayerOptions {
        LayerOptions {
            encoding: Encoding::new(Compression::Gzip, None).unwrap(),
            source_date_epoch: Some(1_700_000_000),
            id_map: None,
        }
    }

    fn in_process(
        dir: &Path,
        opts: &LayerOptions,
        out: &mut dyn Write,
    ) -> std::result::Result<LayerBlob, layer::LayerError> {
        layer::write_layer(dir, DiffKind::OverlayUpper, opts, out)
    }

    /// A layer made in a store scratch dir and kept only unpacked, as a build keeps it.
    fn unpacked(store: &Store, files: &[(&str, &str)]) -> BuildLayer {
        let scratch = store.scratch_dir("run-").unwrap();
        let dir = scratch.path().join("upper");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let plain = LayerOptions {
            encoding: Encoding::plain(),
            ..gzip()
        };
        let tar = in_process(&dir, &plain, &mut std::io::sink()).unwrap();
        assert!(store.adopt_layer_dir(&tar.diff_id, &dir).unwrap());
        BuildLayer::Unpacked {
            diff_id: tar.diff_id,
            size: tar.size,
        }
    }

    #[test]
    fn the_blob_made_from_the_dir_is_the_one_the_step_would_have_written() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let l = unpacked(&store, &[("sub/a", "alpha"), ("b", "beta")]);
        let made = ensure_blob(&store, &l, &gzip(), in_process).unwrap();
        assert_eq!(made.diff_id, l.diff_id());
        assert!(store.has_blob(&made.digest));
        // What writing the blob at once gives, from the same files.
        let eager = commit_layer(
            &store,
            &store.layer_dir(&l.diff_id()),
            DiffKind::OverlayUpper,
            &gzip(),
        )
        .unwrap();
        assert_eq!(made, eager);
        // Made once: the next call finds it recorded and writes nothing.
        let again = ensure_blob(&store, &l, &gzip(), |_, _, _| {
            Err::<LayerBlob, _>(std::io::Error::other("must not write"))
        });
        assert_eq!(again.unwrap(), made);
        // A layer with its blob is returned as it is.
        let blob = BuildLayer::Blob(made);
        let same = ensure_blob(&store, &blob, &gzip(), |_, _, _| {
            Err::<LayerBlob, _>(std::io::Error::other("must not write"))
        });
        assert_eq!(same.unwrap(), made);
    }

    #[test]
    fn a_changed_or_missing_dir_is_an_error_and_no_blob() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let l = unpacked(&store, &[("a", "alpha")]);
        std::fs::write(store.layer_dir(&l.diff_id()).join("sneaked"), "in").unwrap();
        let err = ensure_blob(&store, &l, &gzip(), in_process).unwrap_err();
        assert!(
            matches!(err, ImageError::LayerDirChanged { diff_id, .. } if diff_id == l.diff_id()),
            "{err}"
        );
        assert_eq!(store.cached_compressed(&l.diff_id(), "gzip").unwrap(), None);
        let blobs = std::fs::read_dir(root.path().join("blobs/sha256")).unwrap();
        assert_eq!(blobs.count(), 0, "the half-made blob is gone");

        let gone = BuildLayer::Unpacked {
            diff_id: crate::digest::Digest::of(b"never kept"),
            size: 0,
        };
        let err = ensure_blob(&store, &gone, &gzip(), in_process).unwrap_err();
        assert!(matches!(err, ImageError::LayerDirGone(_)), "{err}");
    }
}
