//! `unpack_layer`: safe extraction of a (gzip/zstd/plain) layer tar into a directory: the
//! decompressing, hashing and writing threads. The entries are written by
//! [`extract`](super::extract).

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, mpsc};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::extract::Unpacker;
use super::hash_thread::HashThread;
use super::{LayerError, UnpackOptions, UnpackReport};
use crate::digest::{Digest, HashingReader};

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
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = open(dest, flags, Mode::empty()).map_err(|e| bad_dest(e.to_string()))?;
    // Three threads, so a big layer unpacks at the speed of its slowest stage rather than of
    // all of them in a row: one decompresses, one hashes (the diffID), this one writes files.
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(CHUNKS_AHEAD);
        let hash = HashThread::spawn(CHUNKS_AHEAD).map_err(LayerError::Input)?;
        let inflate = s.spawn(move || inflate_into(blob, tx, hash));
        let mut u = Unpacker::new(root, dest.to_path_buf(), opts);
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
pub(super) const CHUNKS_AHEAD: usize = 4;
pub(super) const CHUNK: usize = 1 << 20;

pub(super) type Chunk = io::Result<Arc<Vec<u8>>>;

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
pub(super) struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    chunk: Arc<Vec<u8>>,
    at: usize,
}

impl ChunkReader {
    pub(super) fn new(rx: mpsc::Receiver<Chunk>) -> ChunkReader {
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
            ownership: crate::layer::Ownership::Preserve,
            ..Default::default()
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
