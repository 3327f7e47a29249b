//! The file work of a build that differs for an unprivileged user with a subordinate id
//! range: base layers are unpacked with their owners and RUN layers written as root of the
//! id map (through [`MappedFs`], a re-exec of kiln in a user namespace, like `buildah
//! unshare` but only for these operations; the store removes step scratch dirs holding
//! sub-uid files the same way, see `Store::scratch_dir`). Root, and a user without a range
//! (single-id map: files owned by the user, one warning from the sandbox), do the same work
//! in this process.
//!
//! [`MappedFs`]: crate::sandbox::MappedFs

use std::io::Write;
use std::path::Path;

use super::copy::DirMeta;
use crate::image::{self, BuildLayer, Layer};
use crate::layer::{self, DiffKind, LayerBlob, LayerOptions};
use crate::sandbox::{MappedFs, Sandbox, SandboxError, StepOutcome};
use crate::store::Store;

/// Unpacks one layer (a blob, or the tar a COPY is writing) into the store's temp dir `dest`.
pub(super) fn unpack(
    sandbox: &Sandbox,
    mut blob: impl std::io::Read + Send,
    dest: &Path,
) -> std::io::Result<()> {
    match sandbox.mapped_fs() {
        Some(mapped) => mapped
            .unpack(&mut blob, dest)
            .map(|_warnings| ())
            .map_err(std::io::Error::other),
        None => layer::unpack_layer(blob, dest, &store_layer_options())
            .map(|_| ())
            .map_err(std::io::Error::other),
    }
}

/// How this process unpacks a layer into the store: its whiteouts kept in overlay form, for
/// the overlay that will stack it (`trusted.` xattrs for real root, `user.` otherwise).
fn store_layer_options() -> layer::UnpackOptions {
    layer::UnpackOptions {
        deletions: layer::Deletions::Overlay(layer::OpaqueXattr::for_this_process()),
        ..super::runner::unpack_options()
    }
}

/// Writes a finished RUN step's upper dir as a layer into `out`. `opts.id_map` is set here:
/// in process the upper dir's host ids are translated through the step's map; through
/// [`MappedFs`](crate::sandbox::MappedFs) the files already show container ids.
pub(super) fn write_run_layer(
    sandbox: &Sandbox,
    upper: &Path,
    outcome: &StepOutcome,
    mut opts: LayerOptions,
    out: &mut impl Write,
) -> Result<LayerBlob, RunLayerError> {
    match sandbox.mapped_fs() {
        Some(mapped) if !outcome.id_map.is_identity() => {
            opts.id_map = None;
            Ok(mapped.write_layer(upper, &opts, out)?)
        }
        _ => {
            opts.id_map = (!outcome.id_map.is_identity()).then(|| outcome.id_map.clone());
            Ok(layer::write_layer(
                upper,
                DiffKind::OverlayUpper,
                &opts,
                out,
            )?)
        }
    }
}

/// Writes a layer directory of the store (a RUN's upper dir or a COPY's tree, kept as the
/// unpacked layer) as a layer into `out`, the way this process writes the layers it keeps
/// only unpacked ([`run_dir_retars`], [`copy_dir_retars`]): as root of the id map through
/// [`MappedFs`], else here with the ids as they are. Its tar is the one the step wrote, so
/// the blob is the one the step would have made.
pub(super) fn write_layer_dir(
    sandbox: &Sandbox,
    dir: &Path,
    mut opts: LayerOptions,
    out: &mut dyn Write,
) -> Result<LayerBlob, RunLayerError> {
    opts.id_map = None;
    write_dir(sandbox.mapped_fs().as_ref(), dir, &opts, out)
}

fn write_dir(
    mapped: Option<&MappedFs>,
    dir: &Path,
    opts: &LayerOptions,
    mut out: &mut dyn Write,
) -> Result<LayerBlob, RunLayerError> {
    match mapped {
        Some(mapped) => Ok(mapped.write_layer(dir, opts, &mut out)?),
        None => Ok(layer::write_layer(dir, DiffKind::OverlayUpper, opts, out)?),
    }
}

/// The layer with its blob: made from its unpacked dir by [`write_layer_dir`] when it has
/// none (see [`image::ensure_blob`]). `opts` are the build's (its compression, level and
/// `SOURCE_DATE_EPOCH`, which the cache key of every step includes).
pub(super) fn ensure_blob(
    store: &Store,
    sandbox: &Sandbox,
    opts: LayerOptions,
    layer: &BuildLayer,
) -> Result<Layer, image::ImageError> {
    image::ensure_blob(store, layer, &opts, |dir, opts, out| {
        write_layer_dir(sandbox, dir, opts.clone(), out)
    })
}

/// Whether [`write_layer_dir`] gives a kept RUN upper dir the tar the step wrote, so its
/// layer may stay without a blob: the upper dir is a layer dir, and its ids are read as the
/// step's layer read them (as root of the id map, or unmapped for real root). Not for an
/// unprivileged user without a subordinate range, whose single-id map the dir does not keep.
pub(super) fn run_dir_retars(sandbox: &Sandbox, outcome: &StepOutcome) -> bool {
    upper_is_a_layer_dir(outcome) && sandbox.mapped_fs().is_some() != outcome.id_map.is_identity()
}

/// Whether a COPY's tree unpacked by [`unpack`] keeps the owners its tar gives (root, or
/// root of the id map), so that [`write_layer_dir`] gives its tar back.
pub(super) fn copy_dir_retars(sandbox: &Sandbox) -> bool {
    sandbox.mapped_fs().is_some() || nix::unistd::geteuid().is_root()
}

/// Why a RUN step's layer could not be written: by the mapped helper, or in this process.
#[derive(Debug, thiserror::Error)]
pub(super) enum RunLayerError {
    #[error(transparent)]
    Mapped(#[from] SandboxError),
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
}

/// Whether a finished step's upper dir is what unpacking its layer into the store would
/// make, so that it can be kept as the unpacked layer: its deletions are marked in the
/// xattr namespace this process gives the store's layers (`user.` for a step in a user
/// namespace, `trusted.` for real root's), and its files carry the host ids the store's
/// layers do (the step's id map is the one [`unpack`] uses, or identity).
pub(super) fn upper_is_a_layer_dir(outcome: &StepOutcome) -> bool {
    let in_userns = outcome.isolation == crate::sandbox::Isolation::Rootless;
    let user_marks = layer::OpaqueXattr::for_this_process() == layer::OpaqueXattr::User;
    in_userns == user_marks
}

/// A directory's metadata from an unpacked base layer with the owner an image sees: the
/// store holds host ids (sub-uids through [`MappedFs`](crate::sandbox::MappedFs); the user's
/// own id for everything when an unprivileged user unpacked without a range, which is root
/// in the image).
pub(super) fn image_owner(sandbox: &Sandbox, mut meta: DirMeta) -> DirMeta {
    let to_image = |host: u64, f: &dyn Fn(u32) -> Option<u32>| {
        u32::try_from(host).ok().and_then(f).map_or(0, u64::from)
    };
    if let Some(mapped) = sandbox.mapped_fs() {
        let map = mapped.id_map();
        meta.uid = to_image(meta.uid, &|h| map.image_uid(h));
        meta.gid = to_image(meta.gid, &|h| map.image_gid(h));
    } else if !nix::unistd::geteuid().is_root() {
        (meta.uid, meta.gid) = (0, 0);
    }
    meta
}
