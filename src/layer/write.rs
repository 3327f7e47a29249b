//! `write_layer`: walk → deterministic tar → sha256 (diffID) → compressor → sha256 → out.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;
use walkdir::WalkDir;

use super::compress::{BlockCompressor, Codec};
use super::tarball::{self, EntryHeader, Exact};
use super::walk;
use super::{Compression, DiffKind, Encoding, LayerBlob, LayerError, LayerOptions};
use crate::digest::HashingWriter;

/// Turns the directory `root` into one layer blob written to `out`, in one streaming pass.
///
/// `out` receives exactly the blob bytes (the caller verifies and names them); nothing is
/// buffered whole. See the module docs for the tar rules.
pub fn write_layer(
    root: &Path,
    kind: DiffKind,
    opts: &LayerOptions,
    out: impl Write,
) -> Result<LayerBlob, LayerError> {
    let source = |source| LayerError::Source {
        path: root.to_path_buf(),
        source,
    };
    if !std::fs::symlink_metadata(root).map_err(source)?.is_dir() {
        return Err(source(io::Error::new(
            io::ErrorKind::NotADirectory,
            "a layer source must be a directory",
        )));
    }
    write_blob(opts, out, |w| write_tar(root, kind, opts, w).map(|_| ()))
}

/// The one streaming pipeline every layer goes through: `tar` writes the uncompressed tar into
/// the writer it is given; its bytes are hashed (diffID), compressed, hashed again (digest)
/// and written to `out`.
pub(crate) fn write_blob(
    opts: &LayerOptions,
    out: impl Write,
    tar: impl FnOnce(&mut dyn Write) -> Result<(), LayerError>,
) -> Result<LayerBlob, LayerError> {
    let Some(codec) = codec(opts.encoding) else {
        let blob_w = HashingWriter::new(out);
        let mut tar_w = HashingWriter::new(BufWriter::with_capacity(1 << 16, blob_w));
        tar(&mut tar_w)?;
        let (buf, diff_id, _) = tar_w.finish();
        let blob_w = buf
            .into_inner()
            .map_err(|e| LayerError::Output(e.into_error()))?;
        let (_, digest, size) = blob_w.finish();
        return Ok(LayerBlob {
            diff_id,
            digest,
            size,
            compression: opts.encoding.compression(),
        });
    };
    // The compressor hashes its input (diffID) and output (digest) on threads of its own.
    let mut comp = BlockCompressor::new(out, codec).map_err(LayerError::Output)?;
    tar(&mut comp)?;
    let (_, done) = comp.finish().map_err(LayerError::Output)?;
    Ok(LayerBlob {
        diff_id: done.input,
        digest: done.output,
        size: done.size,
        compression: opts.encoding.compression(),
    })
}

/// The block compressor of an encoding (its level was checked when it was made).
fn codec(e: Encoding) -> Option<Codec> {
    match e.compression() {
        Compression::Gzip => Some(Codec::Gzip(e.level().unsigned_abs())),
        Compression::Zstd => Some(Codec::Zstd(e.level())),
        Compression::None => None,
    }
}

/// Walk state: the first path seen for each multiply-linked inode.
struct TarState<'a, W: Write> {
    b: tar::Builder<W>,
    kind: DiffKind,
    opts: &'a LayerOptions,
    first_link: HashMap<(u64, u64), Vec<u8>>,
}

fn write_tar<W: Write>(
    root: &Path,
    kind: DiffKind,
    opts: &LayerOptions,
    w: W,
) -> Result<W, LayerError> {
    let mut st = TarState {
        b: tar::Builder::new(w),
        kind,
        opts,
        first_link: HashMap::new(),
    };
    // Depth first with siblings in byte order: parents always precede their children.
    let walker = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for item in walker {
        if crate::progress::interrupted() {
            return Err(LayerError::Interrupted);
        }
        let item = item.map_err(|e| LayerError::Source {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into(),
        })?;
        let rel = item
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under root");
        st.node(item.path(), rel.as_os_str().as_bytes())?;
    }
    st.b.into_inner().map_err(LayerError::Output)
}

impl<W: Write> TarState<'_, W> {
    fn node(&mut self, path: &Path, rel: &[u8]) -> Result<(), LayerError> {
        let source = |source| LayerError::Source {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::symlink_metadata(path).map_err(source)?;
        let xattrs = walk::read_xattrs(path).map_err(source)?;
        let overlay = self.kind == DiffKind::OverlayUpper;
        if overlay && walk::is_whiteout(&meta, &xattrs) {
            let name = whiteout_name(rel, None);
            let e = EntryHeader {
                mode: 0o600,
                ..self.header(path, &meta, &name, &[])?
            };
            return self.append(path, &e, io::empty());
        }
        let opaque = overlay && walk::is_opaque(&meta, &xattrs);
        let kept = walk::kept(xattrs);
        let base = self.header(path, &meta, rel, &kept)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            self.append(
                path,
                &EntryHeader {
                    kind: EntryType::Directory,
                    ..base.clone()
                },
                io::empty(),
            )?;
            if opaque {
                let name = whiteout_name(rel, Some(b".wh..wh..opq"));
                let e = EntryHeader {
                    path: &name,
                    mode: base.mode & 0o777,
                    xattrs: &[],
                    ..base
                };
                self.append(path, &e, io::empty())?;
            }
            Ok(())
        } else if ft.is_file() {
            self.file(path, &meta, base)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(source)?;
            let link = target.as_os_str().as_bytes();
            let e = EntryHeader {
                kind: EntryType::Symlink,
                link: Some(link),
                ..base
            };
            self.append(path, &e, io::empty())
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let rdev = meta.rdev();
            // fifos get 0/0 too: readers parse the fields of every entry with a ustar magic.
            let device = Some(if ft.is_fifo() {
                (0, 0)
            } else {
                (
                    nix::sys::stat::major(rdev) as u32,
                    nix::sys::stat::minor(rdev) as u32,
                )
            });
            self.append(
                path,
                &EntryHeader {
                    kind,
                    device,
                    ..base
                },
                io::empty(),
            )
        } else {
            // Sockets have no tar representation; like docker and buildah, leave them out.
            Ok(())
        }
    }

    fn file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        base: EntryHeader<'_>,
    ) -> Result<(), LayerError> {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.first_link.get(&key).cloned() {
                let e = EntryHeader {
                    kind: EntryType::Link,
                    link: Some(&first),
                    xattrs: &[],
                    ..base
                };
                return self.append(path, &e, io::empty());
            }
            self.first_link.insert(key, base.path.to_vec());
        }
        let file = File::open(path).map_err(|source| LayerError::Source {
            path: path.to_path_buf(),
            source,
        })?;
        let size = meta.len();
        // Small files get small buffers: 50,000 files must not mean 50,000 big allocations.
        let cap = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .clamp(512, 256 * 1024);
        let data = BufReader::with_capacity(
            cap,
            Exact::new(crate::progress::StopOnInterrupt(file), size),
        );
        self.append(path, &EntryHeader { size, ..base }, data)
    }

    /// The fields every entry kind shares, with ids mapped and mtime clamped.
    fn header<'p>(
        &self,
        path: &Path,
        meta: &Metadata,
        rel: &'p [u8],
        xattrs: &'p [(String, Vec<u8>)],
    ) -> Result<EntryHeader<'p>, LayerError> {
        let (uid, gid) = match &self.opts.id_map {
            None => (u64::from(meta.uid()), u64::from(meta.gid())),
            Some(m) => {
                let unmapped = |kind, id| LayerError::UnmappedId {
                    path: path.to_path_buf(),
                    kind,
                    id,
                };
                let uid = m.uids.host_to_image(meta.uid().into());
                let gid = m.gids.host_to_image(meta.gid().into());
                (
                    uid.ok_or_else(|| unmapped("uid", meta.uid().into()))?,
                    gid.ok_or_else(|| unmapped("gid", meta.gid().into()))?,
                )
            }
        };
        let mut mtime = meta.mtime();
        if let Some(epoch) = self.opts.source_date_epoch {
            mtime = mtime.min(epoch);
        }
        Ok(EntryHeader {
            path: rel,
            kind: EntryType::Regular,
            mode: meta.mode() & 0o7777,
            uid,
            gid,
            mtime: mtime.max(0) as u64,
            size: 0,
            link: None,
            device: None,
            xattrs,
        })
    }

    fn append(
        &mut self,
        path: &Path,
        e: &EntryHeader<'_>,
        data: impl io::Read,
    ) -> Result<(), LayerError> {
        tarball::append(&mut self.b, e, data).map_err(|err| {
            if tarball::is_source_error(&err) {
                LayerError::Source {
                    path: path.to_path_buf(),
                    source: err,
                }
            } else {
                LayerError::Output(err)
            }
        })
    }
}

/// `dir/.wh.name` for a whiteout of `dir/name`, or `dir/name/<marker>` for an opaque dir.
fn whiteout_name(rel: &[u8], opaque_marker: Option<&[u8]>) -> Vec<u8> {
    if let Some(marker) = opaque_marker {
        let mut v = rel.to_vec();
        v.push(b'/');
        v.extend_from_slice(marker);
        return v;
    }
    let split = rel.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let mut v = rel[..split].to_vec();
    v.extend_from_slice(b".wh.");
    v.extend_from_slice(&rel[split..]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_name(b"a/b/c", None), b"a/b/.wh.c");
        assert_eq!(whiteout_name(b"c", None), b".wh.c");
        assert_eq!(
            whiteout_name(b"a/d", Some(b".wh..wh..opq")),
            b"a/d/.wh..wh..opq"
        );
    }
}
