//! `unpack_layer`: safe extraction of a (gzip/zstd/plain) layer tar into a directory.
//!
//! Every entry's parent is resolved inside the root ([`resolve`](super::resolve)); the final
//! component is never followed, so an existing symlink is replaced, not written through.
//! Directory modes and mtimes are applied at the end, deepest first, so a read-only
//! directory in the layer does not stop its own children from being written.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag};
use tar::EntryType;

use super::hash_thread::HashThread;
use super::resolve::{resolve_dir, split_entry};
use super::{LayerError, Ownership, UnpackOptions, UnpackReport};
use crate::digest::{Digest, HashingReader};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Extracts the layer read from `blob` into the existing directory `dest`.
///
/// Detects gzip, zstd or a plain tar by magic number. Nothing outside `dest` is created,
/// changed or removed, whatever the layer contains. On error `dest` holds a partial tree:
/// unpack into a scratch directory and rename it into place on success.
pub fn unpack_layer(
    blob: impl Read + Send,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    let bad_dest = |reason: String| LayerError::Destination {
        path: dest.to_path_buf(),
        reason,
    };
    let root = dest.canonicalize().map_err(|e| bad_dest(e.to_string()))?;
    if !root.is_dir() {
        return Err(bad_dest("not a directory".into()));
    }
    // Three threads, so a big layer unpacks at the speed of its slowest stage rather than of
    // all of them in a row: one decompresses, one hashes (the diffID), this one writes files.
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(CHUNKS_AHEAD);
        let hash = HashThread::spawn(CHUNKS_AHEAD).map_err(LayerError::Input)?;
        let inflate = s.spawn(move || inflate_into(blob, tx, hash));
        let mut u = Unpacker {
            root,
            opts,
            written: HashSet::new(),
            dirs: Vec::new(),
            last_parent: None,
            entries: 0,
            whiteouts: 0,
            warnings: Vec::new(),
        };
        let unpacked = u.all(ChunkReader::new(rx));
        // On an error here the receiver is gone, so the inflating thread stops at its next send.
        let diff_id = inflate.join().expect("the inflating thread does not panic");
        unpacked?;
        Ok(UnpackReport {
            diff_id: diff_id?,
            entries: u.entries,
            whiteouts: u.whiteouts,
            warnings: u.warnings,
        })
    })
}

/// Decompressed chunks queued between the inflating thread and the unpacker.
const CHUNKS_AHEAD: usize = 4;
const CHUNK: usize = 1 << 20;

type Chunk = io::Result<Arc<Vec<u8>>>;

/// Decompresses `blob` into `tx` in chunks, each also sent to `hash`; returns the diffID, or
/// the decompression error (also sent on, so the unpacker stops at the same point).
fn inflate_into(
    blob: impl Read,
    tx: mpsc::SyncSender<Chunk>,
    hash: HashThread,
) -> Result<Digest, LayerError> {
    let mut r = decompressor(blob)?;
    loop {
        let mut chunk = vec![0; CHUNK];
        let n = match read_full(&mut r, &mut chunk) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(LayerError::Input(e));
            }
        };
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        let chunk = Arc::new(chunk);
        hash.send(Arc::clone(&chunk)).map_err(LayerError::Input)?;
        if tx.send(Ok(chunk)).is_err() {
            // The unpacker failed; its error is the one reported.
            return Err(LayerError::Input(io::Error::other("unpacking stopped")));
        }
    }
    drop(tx);
    Ok(hash.finish().map_err(LayerError::Input)?.0)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `Read` over the chunks the inflating thread sends.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    chunk: Arc<Vec<u8>>,
    at: usize,
}

impl ChunkReader {
    fn new(rx: mpsc::Receiver<Chunk>) -> ChunkReader {
        ChunkReader {
            rx,
            chunk: Arc::new(Vec::new()),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk?;
                    self.at = 0;
                }
                // The sender is done: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The diffID of the layer read from `blob` (gzip, zstd or plain tar): the digest of the
/// uncompressed stream, computed while streaming, for checking a diffID someone else claims
/// without unpacking the layer.
pub fn diff_id(blob: impl Read) -> Result<Digest, LayerError> {
    let mut hashed = HashingReader::new(decompressor(blob)?);
    io::copy(&mut hashed, &mut io::sink()).map_err(LayerError::Input)?;
    Ok(hashed.finish().1)
}

/// Picks the decoder from the first bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, else plain tar.
pub(super) fn decompressor<'a>(blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut r = BufReader::with_capacity(256 * 1024, blob);
    let head = r.fill_buf().map_err(LayerError::Input)?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(LayerError::Input)?)
    } else {
        Box::new(r)
    })
}

/// Metadata of one entry, gathered from the header and its PAX records.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: PathBuf,
    opts: &'a UnpackOptions,
    /// Host paths this layer created (and their ancestors): an opaque marker keeps them.
    written: HashSet<PathBuf>,
    /// Directories whose mode and mtime are applied at the end.
    dirs: Vec<(PathBuf, u32, i64)>,
    /// The parent (entry components, resolved path) of the previous entry when it was a plain
    /// file: the next file in the same directory skips resolving and creating it again. Any
    /// other kind of entry clears it, since only a file there cannot change the parent's path.
    last_parent: Option<(Vec<Vec<u8>>, PathBuf)>,
    entries: u64,
    whiteouts: u64,
    warnings: Vec<String>,
}

impl Unpacker<'_> {
    /// Unpacks every entry of the tar read from `r`, then applies directory modes and times
    /// and reads `r` to its end (the diffID covers any padding after the end marker).
    fn all(&mut self, r: impl Read) -> Result<(), LayerError> {
        let mut archive = tar::Archive::new(r);
        for entry in archive.entries().map_err(LayerError::Input)? {
            self.entry(entry.map_err(LayerError::Input)?)?;
        }
        self.finish_dirs()?;
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(LayerError::Input)?;
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let name = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let Some((parents, last)) = split_entry(&name) else {
            if e.header().entry_type() != EntryType::Directory {
                self.warnings.push(format!(
                    "skipped entry {shown:?}: it names no file inside the layer"
                ));
            }
            return Ok(());
        };
        let io_err = |dest: &Path, source| LayerError::Unpack {
            entry: shown.clone(),
            dest: dest.to_path_buf(),
            source,
        };
        let is_file = is_file_type(e.header().entry_type()) && !last.starts_with(WHITEOUT_PREFIX);
        let cached = match self.last_parent.take() {
            Some((comps, path))
                if is_file && comps.iter().map(Vec::as_slice).eq(parents.iter().copied()) =>
            {
                Some(path)
            }
            _ => None,
        };
        let reused = cached.is_some();
        let parent = match cached {
            Some(path) => path,
            None => resolve_dir(&self.root, &parents).map_err(|err| io_err(&self.root, err))?,
        };

        if last == OPAQUE_MARKER {
            self.whiteouts += 1;
            return self.opaque(&parent).map_err(|err| io_err(&parent, err));
        }
        if let Some(victim) = last.strip_prefix(WHITEOUT_PREFIX) {
            self.whiteouts += 1;
            if victim.is_empty() || victim == b"." || victim == b".." {
                self.warnings
                    .push(format!("skipped malformed whiteout {shown:?}"));
                return Ok(());
            }
            let target = parent.join(OsStr::from_bytes(victim));
            return remove_any(&target).map_err(|err| io_err(&target, err));
        }

        if !reused {
            fs::create_dir_all(&parent).map_err(|err| io_err(&parent, err))?;
        }
        let target = parent.join(OsStr::from_bytes(last));
        let meta = read_meta(&mut e).map_err(LayerError::Input)?;
        let created = self
            .create(&mut e, &target, &meta, &shown)
            .map_err(|err| io_err(&target, err))?;
        if created {
            self.entries += 1;
            self.mark_written(&target);
        }
        if is_file {
            let comps = parents.iter().map(|c| c.to_vec()).collect();
            self.last_parent = Some((comps, parent));
        }
        Ok(())
    }

    /// Creates the entry at `target` (its parent exists). False when it was skipped.
    fn create<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        target: &Path,
        meta: &Meta,
        shown: &str,
    ) -> io::Result<bool> {
        let kind = e.header().entry_type();
        match kind {
            EntryType::Directory => {
                if !fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
                    remove_any(target)?;
                    fs::create_dir(target)?;
                }
                self.own(target, meta)?;
                self.set_xattrs(target, meta, shown);
                self.dirs
                    .push((target.to_path_buf(), meta.mode, meta.mtime));
                return Ok(true);
            }
            // The tar crate expands GNU sparse entries to their full contents on read.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.create_file(e, target, meta, shown)?;
                return Ok(true);
            }
            EntryType::Symlink => {
                let link = e.link_name_bytes().unwrap_or_default().into_owned();
                remove_any(target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), target)?;
            }
            EntryType::Link => return self.hardlink(e, target, shown),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.node(e, target, meta, shown)? {
                    return Ok(false);
                }
            }
            other => {
                self.warnings.push(format!(
                    "skipped entry {shown:?}: unsupported tar type {other:?}"
                ));
                return Ok(false);
            }
        }
        self.own(target, meta)?;
        if kind != EntryType::Symlink {
            // After chown: chown clears setuid/setgid bits.
            fs::set_permissions(target, fs::Permissions::from_mode(meta.mode & 0o7777))?;
        }
        self.set_xattrs(target, meta, shown);
        let t = FileTime::from_unix_time(meta.mtime, 0);
        filetime::set_symlink_file_times(target, t, t)?;
        Ok(true)
    }

    /// A regular file, owned, moded and timed through its open descriptor (one path lookup,
    /// not four). `O_EXCL | O_NOFOLLOW` fails on anything already there, symlinks included;
    /// only then is the old entry removed, so a fresh tree pays no extra lookup per file.
    fn create_file<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        target: &Path,
        meta: &Meta,
        shown: &str,
    ) -> io::Result<()> {
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(target)
        };
        let mut f = match open() {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                remove_any(target)?;
                open()?
            }
            other => other?,
        };
        io::copy(e, &mut f)?;
        if let Some((uid, gid)) = self.host_ids(meta)? {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        // After chown: chown clears setuid/setgid bits.
        f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))?;
        self.set_xattrs(target, meta, shown);
        let t = FileTime::from_unix_time(meta.mtime, 0);
        filetime::set_file_handle_times(&f, Some(t), Some(t))
    }

    /// A hardlink: its target is resolved inside the root too, and must be a non-directory.
    fn hardlink<R: Read>(
        &mut self,
        e: &tar::Entry<'_, R>,
        target: &Path,
        shown: &str,
    ) -> io::Result<bool> {
        let link = e.link_name_bytes().unwrap_or_default().into_owned();
        let Some((parents, last)) = split_entry(&link) else {
            self.warnings
                .push(format!("skipped hardlink {shown:?}: empty link target"));
            return Ok(false);
        };
        let source = resolve_dir(&self.root, &parents)?.join(OsStr::from_bytes(last));
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => {}
            _ => {
                let to = String::from_utf8_lossy(&link);
                self.warnings.push(format!(
                    "skipped hardlink {shown:?}: target {to:?} is not an existing file in the layer"
                ));
                return Ok(false);
            }
        }
        if source == target {
            return Ok(true);
        }
        remove_any(target)?;
        fs::hard_link(&source, target)?;
        Ok(true)
    }

    /// Device nodes and fifos; devices the process may not create are skipped with a warning.
    fn node<R: Read>(
        &mut self,
        e: &tar::Entry<'_, R>,
        target: &Path,
        meta: &Meta,
        shown: &str,
    ) -> io::Result<bool> {
        let h = e.header();
        let (kind, letter) = match h.entry_type() {
            EntryType::Char => (SFlag::S_IFCHR, 'c'),
            EntryType::Block => (SFlag::S_IFBLK, 'b'),
            _ => (SFlag::S_IFIFO, 'p'),
        };
        let (major, minor) = if kind == SFlag::S_IFIFO {
            (0, 0)
        } else {
            (
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            )
        };
        remove_any(target)?;
        let dev = nix::sys::stat::makedev(major.into(), minor.into());
        let mode = Mode::from_bits_truncate((meta.mode & 0o777) as libc::mode_t);
        match nix::sys::stat::mknod(target, kind, mode, dev) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EPERM) => {
                self.warnings.push(format!(
                    "skipped device node {shown:?} ({letter} {major}:{minor}): creating devices needs privileges"
                ));
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    fn own(&self, target: &Path, meta: &Meta) -> io::Result<()> {
        match self.host_ids(meta)? {
            Some((uid, gid)) => std::os::unix::fs::lchown(target, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// The host uid and gid an entry gets (None: ownership is left as created).
    fn host_ids(&self, meta: &Meta) -> io::Result<Option<(u32, u32)>> {
        let (uid, gid) = match &self.opts.ownership {
            Ownership::Ignore => return Ok(None),
            Ownership::Preserve => (meta.uid, meta.gid),
            Ownership::Map(m) => {
                let unmapped = |kind, id| {
                    io::Error::other(format!("image {kind} {id} has no host id in the id map"))
                };
                let uid = m
                    .uids
                    .image_to_host(meta.uid)
                    .ok_or_else(|| unmapped("uid", meta.uid))?;
                let gid = m
                    .gids
                    .image_to_host(meta.gid)
                    .ok_or_else(|| unmapped("gid", meta.gid))?;
                (uid, gid)
            }
        };
        let id =
            |v: u64| u32::try_from(v).map_err(|_| io::Error::other(format!("id {v} out of range")));
        Ok(Some((id(uid)?, id(gid)?)))
    }

    /// Restores xattrs where the kernel lets us; overlay's own are never restored (they would
    /// change how this directory behaves as an overlay lower layer).
    fn set_xattrs(&mut self, target: &Path, meta: &Meta, shown: &str) {
        if !self.opts.xattrs {
            return;
        }
        for (name, value) in &meta.xattrs {
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                continue;
            }
            if let Err(err) = xattr::set(target, name, value) {
                self.warnings
                    .push(format!("xattr {name} not restored on {shown:?}: {err}"));
            }
        }
    }

    /// `.wh..wh..opq`: everything in `dir` that this layer did not itself write goes.
    fn opaque(&self, dir: &Path) -> io::Result<()> {
        let Ok(list) = fs::read_dir(dir) else {
            return Ok(());
        };
        for child in list {
            let path = child?.path();
            if !self.written.contains(&path) {
                remove_any(&path)?;
            } else if fs::symlink_metadata(&path)?.is_dir() {
                self.opaque(&path)?;
            }
        }
        Ok(())
    }

    fn mark_written(&mut self, target: &Path) {
        let mut p = target.to_path_buf();
        while p != self.root && self.written.insert(p.clone()) {
            p.pop();
        }
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        // Deepest first: chmod 0555 on a parent must come after its children's mtimes.
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, mode, mtime) in &self.dirs {
            let fail = |source| LayerError::Unpack {
                entry: dir
                    .strip_prefix(&self.root)
                    .unwrap_or(dir)
                    .display()
                    .to_string(),
                dest: dir.clone(),
                source,
            };
            fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777)).map_err(fail)?;
            let t = FileTime::from_unix_time(*mtime, 0);
            filetime::set_symlink_file_times(dir, t, t).map_err(fail)?;
        }
        Ok(())
    }
}

fn read_meta<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = e.header();
    let mut m = Meta {
        mode: h.mode()?,
        uid: h.uid()?,
        gid: h.gid()?,
        mtime: h.mtime()? as i64,
        xattrs: Vec::new(),
    };
    if let Some(pax) = e.pax_extensions()? {
        for rec in pax {
            let rec = rec?;
            let Ok(key) = rec.key() else { continue };
            let num = || {
                std::str::from_utf8(rec.value_bytes())
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match key {
                "uid" => m.uid = num().unwrap_or(m.uid),
                "gid" => m.gid = num().unwrap_or(m.gid),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        m.xattrs
                            .push((name.to_string(), rec.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(m)
}

fn is_file_type(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
    )
}

/// Removes whatever is at `path` without following a symlink there; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn diff_id_is_the_digest_of_the_uncompressed_stream_whatever_the_compression() {
        let tar = b"not really a tar, but any byte stream has a diffID".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let want = Digest::of(&tar);
        assert_eq!(diff_id(&tar[..]).unwrap(), want);
        assert_eq!(diff_id(&gz[..]).unwrap(), want);
        assert_eq!(diff_id(&zst[..]).unwrap(), want);
        assert!(
            diff_id(&gz[..gz.len() / 2]).is_err(),
            "a truncated gzip stream"
        );
    }

    fn tar_of(entries: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, to) in symlinks {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_link(&mut h, name, to).unwrap();
        }
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn opts() -> UnpackOptions {
        UnpackOptions {
            ownership: Ownership::Preserve,
            xattrs: false,
        }
    }

    #[test]
    fn a_layer_bigger_than_the_queue_unpacks_whole_with_its_diff_id() {
        let big = vec![7u8; (CHUNKS_AHEAD + 3) * CHUNK + 12345];
        let tar = tar_of(&[("a/big", &big), ("a/small", b"s")], &[]);
        let d = tempfile::tempdir().unwrap();
        let report = unpack_layer(&gzip(&tar)[..], d.path(), &opts()).unwrap();
        assert_eq!(report.diff_id, Digest::of(&tar));
        assert_eq!(std::fs::read(d.path().join("a/big")).unwrap(), big);
        assert_eq!(std::fs::read(d.path().join("a/small")).unwrap(), b"s");
    }

    #[test]
    fn an_unpacking_error_early_in_a_long_stream_stops_both_threads() {
        // The loop is refused at the first file, with most of the stream still to inflate:
        // the inflating thread must notice and stop rather than wait on a full queue.
        let big = vec![1u8; (CHUNKS_AHEAD + 8) * CHUNK];
        let tar = tar_of(
            &[("l1/x", b"x"), ("big", &big)],
            &[("l1", "l2"), ("l2", "l1")],
        );
        let d = tempfile::tempdir().unwrap();
        let err = unpack_layer(&gzip(&tar)[..], d.path(), &opts()).unwrap_err();
        assert!(err.to_string().contains("l1/x"), "{err}");
    }

    #[test]
    fn a_truncated_layer_is_an_error_not_a_short_tree() {
        let big = vec![3u8; 3 * CHUNK];
        let tar = tar_of(&[("f", &big)], &[]);
        let gz = gzip(&tar);
        let d = tempfile::tempdir().unwrap();
        assert!(unpack_layer(&gz[..gz.len() - 100], d.path(), &opts()).is_err());
    }
}
