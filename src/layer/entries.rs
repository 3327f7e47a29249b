//! Layers assembled from entries the caller chooses (COPY/ADD): the caller decides where each
//! file lands in the image and with which owner, mode and mtime; file content streams from
//! host files, so nothing is staged or copied first.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

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
    mut entries: Vec<LayerEntry>,
    opts: &LayerOptions,
    out: impl Write,
) -> Result<LayerBlob, LayerError> {
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
    write_blob(opts, out, |w| {
        let mut b = tar::Builder::new(w);
        for e in &entries {
            append(&mut b, e, opts.source_date_epoch)?;
        }
        b.finish().map_err(LayerError::Output)
    })
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
                EntrySource::ResolvedFile { .. } => open_without_symlinks(path),
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

/// Opens `path` for reading, refusing any symlink on the way (see
/// [`EntrySource::ResolvedFile`]).
fn open_without_symlinks(path: &std::path::Path) -> io::Result<File> {
    use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, openat, openat2};
    use nix::sys::stat::Mode;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(AT_FDCWD, path, how) {
        Err(nix::Error::ENOSYS) => {}
        other => return Ok(File::from(other?)),
    }
    // No openat2 (Linux before 5.6): one component at a time, none of them followed.
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((file, dirs)) = names.split_last() else {
        return Err(io::Error::from(io::ErrorKind::IsADirectory));
    };
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = openat(AT_FDCWD, "/", dir_flags, Mode::empty())?;
    for name in dirs {
        dir = openat(&dir, *name, dir_flags, Mode::empty())?;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(openat(&dir, *file, flags, Mode::empty())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Compression;

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
            compression: Compression::None,
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
        // A component that became a symlink after the caller resolved the path.
        match write(root.join("swapped/f")) {
            Err(LayerError::Source { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ELOOP))
            }
            other => panic!("expected a source error, got {other:?}"),
        }
    }
}
