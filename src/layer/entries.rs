//! Layers assembled from entries the caller chooses (COPY/ADD): the caller decides where each
//! file lands in the image and with which owner, mode and mtime; file content streams from
//! host files, so nothing is staged or copied first.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use tar::EntryType;

use super::tarball::{self, EntryHeader, Exact};
use super::write::write_blob;
use super::{LayerBlob, LayerError, LayerOptions};

/// What one caller-chosen layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    Dir,
    /// A regular file whose content is read from `path` (it must still be `size` bytes long).
    File {
        path: PathBuf,
        size: u64,
    },
    /// A regular file at a host path its caller resolved inside a tree (the build context,
    /// a stage's files), so that no component of it is a symlink. It is opened with
    /// `RESOLVE_NO_SYMLINKS`: a component swapped for a symlink after that resolution fails
    /// the layer instead of leading the read out of the tree.
    ResolvedFile {
        path: PathBuf,
        size: u64,
    },
    /// A small file given in memory (heredoc COPY sources).
    Inline(Vec<u8>),
    Symlink {
        target: String,
    },
    /// A hard link to an earlier entry of the same layer.
    Hardlink {
        target: String,
    },
}

/// One entry of a layer built with [`write_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Path inside the image, `/`-separated, without a leading `/`.
    pub path: String,
    pub source: EntrySource,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (clamped to `SOURCE_DATE_EPOCH` when that is set).
    pub mtime: u64,
}

/// Writes `entries` as one layer blob to `out`, through the same pipeline as
/// [`super::write_layer`]. Entries are put in layer order (parents first, siblings by name),
/// so the caller's order does not change the bytes. A later entry for the same path wins.
pub fn write_entries(
    entries: Vec<LayerEntry>,
    opts: &LayerOptions,
    out: impl Write,
) -> Result<LayerBlob, LayerError> {
    let entries = in_layer_order(entries)?;
    write_blob(opts, out, |w| tar_entries(&entries, opts, w))
}

/// `entries` checked (clean relative paths) and in layer order, the last of equal paths kept.
fn in_layer_order(mut entries: Vec<LayerEntry>) -> Result<Vec<LayerEntry>, LayerError> {
    for e in &mut entries {
        e.path = e.path.trim_matches('/').to_string();
        if e.path.is_empty()
            || e.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(LayerError::BadPath {
                path: e.path.clone().into(),
                reason: "not a clean relative path".into(),
            });
        }
    }
    // Stable sort then keep the last of equal paths: later COPY sources overwrite earlier ones.
    entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    entries.reverse();
    entries.dedup_by(|later, earlier| later.path == earlier.path);
    entries.reverse();
    Ok(entries)
}

/// The uncompressed tar of `entries` (already in layer order) to `w`.
fn tar_entries(
    entries: &[LayerEntry],
    opts: &LayerOptions,
    w: &mut dyn Write,
) -> Result<(), LayerError> {
    let mut b = tar::Builder::new(w);
    let mut dirs = ResolvedDirs::default();
    for e in entries {
        append(&mut b, e, opts.source_date_epoch, &mut dirs)?;
    }
    b.finish().map_err(LayerError::Output)
}

/// [`write_entries`], with a copy of the uncompressed tar streamed to `consume` on a thread
/// of its own as it is written: a COPY's layer is unpacked into the store (for the steps
/// that stack it) from the tar it is made of, instead of being inflated again from its blob.
/// The layer is written whatever `consume` does; its result comes back beside the blob's.
pub fn write_entries_teed<T: Send>(
    entries: Vec<LayerEntry>,
    opts: &LayerOptions,
    out: impl Write,
    consume: impl FnOnce(&mut (dyn Read + Send)) -> T + Send,
) -> Result<(LayerBlob, T), LayerError> {
    let entries = in_layer_order(entries)?;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(super::unpack::CHUNKS_AHEAD);
        let reader = s.spawn(move || consume(&mut super::unpack::ChunkReader::new(rx)));
        // The tee sits between the tar and the compressor: the consumer reads the tar itself,
        // never a gzip stream it would have to inflate again.
        let blob = write_blob(opts, out, |w| {
            let mut tee = Tee {
                out: w,
                buf: Vec::with_capacity(super::unpack::CHUNK),
                tx: Some(tx),
            };
            let tarred = tar_entries(&entries, opts, &mut tee);
            tee.send();
            // A failed layer must not read as a complete tar.
            if let (Err(_), Some(tx)) = (&tarred, tee.tx.take()) {
                let _ = tx.send(Err(io::Error::other("the layer was not written")));
            }
            tarred
        });
        let consumed = reader.join().expect("the tar consumer does not panic");
        Ok((blob?, consumed))
    })
}

/// Writes to `out` and queues a copy, in chunks, for the consumer of [`write_entries_teed`].
struct Tee<W> {
    out: W,
    buf: Vec<u8>,
    /// Gone once the consumer stopped reading (its result says why).
    tx: Option<std::sync::mpsc::SyncSender<super::unpack::Chunk>>,
}

impl<W> Tee<W> {
    fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(super::unpack::CHUNK));
        if let Some(tx) = &self.tx {
            if tx.send(Ok(std::sync::Arc::new(chunk))).is_err() {
                self.tx = None;
            }
        }
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        if self.tx.is_some() {
            self.buf.extend_from_slice(&data[..n]);
            if self.buf.len() >= super::unpack::CHUNK {
                self.send();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn entry_header<'a>(
    e: &LayerEntry,
    path: &'a [u8],
    kind: EntryType,
    size: u64,
    link: Option<&'a [u8]>,
    mtime: u64,
) -> EntryHeader<'a> {
    EntryHeader {
        path,
        kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime,
        size,
        link,
        device: None,
        xattrs: &[],
    }
}

fn append(
    b: &mut tar::Builder<&mut dyn Write>,
    e: &LayerEntry,
    epoch: Option<i64>,
    dirs: &mut ResolvedDirs,
) -> Result<(), LayerError> {
    let mtime = match epoch {
        Some(sde) => e.mtime.min(u64::try_from(sde).unwrap_or(0)),
        None => e.mtime,
    };
    // Names and link targets are bytes carried in strings (see `name`).
    let path = super::name::decode(&e.path);
    let header = |kind, size, link| entry_header(e, &path, kind, size, link, mtime);
    let source_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| LayerError::Source { path, source }
    };
    let out = |r: io::Result<()>| r.map_err(LayerError::Output);
    match &e.source {
        EntrySource::Dir => out(tarball::append(
            b,
            &header(EntryType::Directory, 0, None),
            io::empty(),
        )),
        EntrySource::Symlink { target } => out(tarball::append(
            b,
            &header(EntryType::Symlink, 0, Some(&super::name::decode(target))),
            io::empty(),
        )),
        EntrySource::Hardlink { target } => out(tarball::append(
            b,
            &header(EntryType::Link, 0, Some(&super::name::decode(target))),
            io::empty(),
        )),
        EntrySource::Inline(bytes) => out(tarball::append(
            b,
            &header(EntryType::Regular, bytes.len() as u64, None),
            &bytes[..],
        )),
        EntrySource::File { path, size } | EntrySource::ResolvedFile { path, size } => {
            let file = match e.source {
                EntrySource::ResolvedFile { .. } => dirs.open(path),
                _ => File::open(path),
            }
            .map_err(source_err(path))?;
            let cap = usize::try_from(*size)
                .unwrap_or(usize::MAX)
                .clamp(512, 256 * 1024);
            let data: Box<dyn Read> =
                Box::new(BufReader::with_capacity(cap, Exact::new(file, *size)));
            let r = tarball::append(b, &header(EntryType::Regular, *size, None), data);
            // A file that shrank or grew while being copied is the source's fault, not the output's.
            r.map_err(|err| {
                if tarball::is_source_error(&err) {
                    LayerError::Source {
                        path: path.clone(),
                        source: err,
                    }
                } else {
                    LayerError::Output(err)
                }
            })
        }
    }
}

/// Opens [`EntrySource::ResolvedFile`]s, refusing any symlink on the way, with one
/// resolution per directory rather than per file: entries come sorted, so the files of a
/// directory follow each other and share the descriptor of their parent. The parent is
/// opened with `RESOLVE_NO_SYMLINKS` and each file `O_NOFOLLOW` relative to it, which refuses
/// exactly what a whole-path `RESOLVE_NO_SYMLINKS` open refuses (a full resolution per file
/// was a third of a 50,000-file COPY's system time).
#[derive(Default)]
struct ResolvedDirs {
    last: Option<(PathBuf, OwnedFd)>,
}

impl ResolvedDirs {
    fn open(&mut self, path: &Path) -> io::Result<File> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        };
        // `..` would climb out of the directory the caller resolved the path in; no resolved
        // path has one.
        if path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let dir = match self.last.take() {
            Some((p, fd)) if p == parent => fd,
            _ => open_dir_without_symlinks(parent)?,
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let file = openat(&dir, name, flags, Mode::empty());
        self.last = Some((parent.to_path_buf(), dir));
        Ok(File::from(file?))
    }
}

/// Opens the directory `path` (absolute) as `O_PATH`, refusing any symlink on the way
/// (the last component included: ELOOP).
fn open_dir_without_symlinks(path: &Path) -> io::Result<OwnedFd> {
    let (fd, st) = crate::fs_root::open_no_symlinks(path)?;
    match crate::fs_root::kind(&st) == nix::sys::stat::SFlag::S_IFDIR {
        true => Ok(fd),
        false => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Encoding;

    fn entry(path: &str, source: EntrySource, mode: u32) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            source,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }

    fn listing(blob: &[u8]) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(blob);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                let h = e.header();
                let path = String::from_utf8(e.path_bytes().to_vec()).unwrap();
                (
                    path,
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    body,
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_ordered_deduplicated_and_streamed_from_host_files() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("f");
        std::fs::write(&host, b"from host").unwrap();
        let mut owned = entry(
            "app/bin/tool",
            EntrySource::File {
                path: host.clone(),
                size: 9,
            },
            0o755,
        );
        owned.uid = 1000;
        let entries = vec![
            owned,
            entry("app/x", EntrySource::Inline(b"first".to_vec()), 0o644),
            entry("app", EntrySource::Dir, 0o755),
            entry("app/bin", EntrySource::Dir, 0o755),
            entry("app/x", EntrySource::Inline(b"second".to_vec()), 0o600),
            entry(
                "app/link",
                EntrySource::Symlink {
                    target: "bin/tool".into(),
                },
                0o777,
            ),
        ];
        let opts = LayerOptions {
            encoding: Encoding::plain(),
            source_date_epoch: Some(1_600_000_000),
            id_map: None,
        };
        let mut blob = Vec::new();
        let info = write_entries(entries, &opts, &mut blob).unwrap();
        assert_eq!(info.diff_id, crate::Digest::of(&blob));
        let got = listing(&blob);
        let paths: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            paths,
            ["app/", "app/bin/", "app/bin/tool", "app/link", "app/x"]
        );
        assert_eq!(
            got[2],
            (
                "app/bin/tool".into(),
                0o755,
                1000,
                1_600_000_000,
                b"from host".to_vec()
            )
        );
        assert_eq!((got[4].1, got[4].4.as_slice()), (0o600, &b"second"[..]));
    }

    #[test]
    fn unclean_paths_are_refused_and_a_changed_source_is_named() {
        let mut blob = Vec::new();
        let bad = vec![entry("a/../b", EntrySource::Dir, 0o755)];
        assert!(matches!(
            write_entries(bad, &LayerOptions::default(), &mut blob),
            Err(LayerError::BadPath { .. })
        ));
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("short");
        std::fs::write(&host, b"abc").unwrap();
        let lying = vec![entry(
            "f",
            EntrySource::File {
                path: host.clone(),
                size: 10,
            },
            0o644,
        )];
        match write_entries(lying, &LayerOptions::default(), Vec::new()) {
            Err(LayerError::Source { path, .. }) => assert_eq!(path, host),
            other => panic!("expected a source error, got {other:?}"),
        }
    }

    #[test]
    fn resolved_files_of_one_directory_share_its_descriptor_and_are_each_checked() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/one"), b"1").unwrap();
        std::fs::write(root.join("a/b/two"), b"22").unwrap();
        std::os::unix::fs::symlink("one", root.join("a/b/three")).unwrap();
        let mut dirs = ResolvedDirs::default();
        let read = |dirs: &mut ResolvedDirs, name: &str| {
            dirs.open(&root.join("a/b").join(name))
                .and_then(io::read_to_string)
                .map_err(|e| e.raw_os_error())
        };
        assert_eq!(read(&mut dirs, "one"), Ok("1".into()));
        let held = dirs.last.as_ref().map(|(p, _)| p.clone());
        assert_eq!(read(&mut dirs, "two"), Ok("22".into()));
        assert_eq!(dirs.last.as_ref().map(|(p, _)| p.clone()), held);
        // Same directory, but the name is a link: refused, not followed.
        assert_eq!(read(&mut dirs, "three"), Err(Some(libc::ELOOP)));
    }

    #[test]
    fn a_resolved_file_behind_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/f"), b"abc").unwrap();
        std::os::unix::fs::symlink("real", root.join("swapped")).unwrap();
        let write = |path: PathBuf| {
            let source = EntrySource::ResolvedFile { path, size: 3 };
            write_entries(
                vec![entry("f", source, 0o644)],
                &LayerOptions::default(),
                Vec::new(),
            )
        };
        assert!(write(root.join("real/f")).is_ok());
        // The last component a symlink, and a path climbing out with `..`.
        std::os::unix::fs::symlink("f", root.join("real/link")).unwrap();
        for bad in [root.join("real/link"), root.join("real/../real/f")] {
            match write(bad.clone()) {
                Err(LayerError::Source { path, .. }) => assert_eq!(path, bad),
                other => panic!("expected a source error for {bad:?}, got {other:?}"),
            }
        }
        // A component that became a symlink after the caller resolved the path.
        match write(root.join("swapped/f")) {
            Err(LayerError::Source { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ELOOP))
            }
            other => panic!("expected a source error, got {other:?}"),
        }
    }

    /// The consumer of the tee reads the layer's tar (its sha256 is the diffID), not the
    /// compressed blob: unpacking a COPY's layer must not inflate what was just deflated.
    #[test]
    fn the_teed_copy_is_the_uncompressed_tar() {
        let entries = vec![
            entry("d", EntrySource::Dir, 0o755),
            entry("d/f", EntrySource::Inline(b"hello\n".repeat(1000)), 0o644),
        ];
        let opts = LayerOptions::default();
        assert_ne!(opts.encoding.compression(), crate::layer::Compression::None);
        let mut blob = Vec::new();
        let (written, teed) = write_entries_teed(entries, &opts, &mut blob, |tar| {
            let mut all = Vec::new();
            tar.read_to_end(&mut all).map(|_| all)
        })
        .unwrap();
        let teed = teed.unwrap();
        assert_eq!(crate::Digest::of(&teed), written.diff_id);
        assert_eq!(crate::Digest::of(&blob), written.digest);
        assert_ne!(&teed[..2], &[0x1f, 0x8b], "the tee saw gzip");
        assert_eq!(listing(&teed)[1].0, "d/f");
    }
}
