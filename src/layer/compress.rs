//! Block-parallel gzip and zstd writers whose output never depends on the thread count.
//!
//! The input is cut into FIXED blocks; each block is compressed on the rayon pool as a pure
//! function of (block bytes, level, previous block's tail) and written out in order. The
//! number of threads only changes how many blocks are in flight, never the bytes.
//!
//! - gzip (pigz style): one gzip member; every block is raw deflate primed with the last
//!   32 KiB of the previous block and ended with a sync flush (byte aligned), so blocks
//!   concatenate into one deflate stream. An empty final block, the CRC-32 (computed on the
//!   writer thread, in order) and the length close the member. Any gzip reader reads it.
//! - zstd: every block is an independent frame; frames concatenate (RFC 8878 §3.1).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, mpsc};

use flate2::{Compress, Crc, FlushCompress, Status};

use super::hash_thread::HashThread;
use crate::digest::Digest;

/// Input bytes per gzip block: big enough that the per-block flush costs < 0.1 % of the ratio.
const GZIP_BLOCK: usize = 1 << 20;
/// Input bytes per zstd frame: zstd's window benefits from larger blocks.
const ZSTD_BLOCK: usize = 4 << 20;
/// Upper bound on the input bytes queued or being compressed at once.
const IN_FLIGHT_BYTES: usize = 32 << 20;
/// Blocks queued for each hash thread. sha256 runs at ~1.3 GB/s here, faster than any codec
/// but stored blocks, so a short queue keeps it fed; every queued zstd block is 4 MiB of RSS.
const HASH_QUEUE: usize = 2;
/// Deflate's window: how much of the previous block primes the next one.
const DEFLATE_DICT: usize = 32 * 1024;

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty, fixed-Huffman deflate block: ends the deflate stream after sync flushes.
const DEFLATE_EMPTY_FINAL: [u8; 2] = [0x03, 0x00];

#[derive(Debug, Clone, Copy)]
pub(crate) enum Codec {
    Gzip(u32),
    Zstd(i32),
}

impl Codec {
    fn block_size(self) -> usize {
        match self {
            Codec::Gzip(_) => GZIP_BLOCK,
            Codec::Zstd(_) => ZSTD_BLOCK,
        }
    }
}

/// A compressed block and, for gzip, the CRC-32 of its input (computed by the worker and
/// combined in order: on the writer thread it cost as much as the compression of random data).
type Block = (Vec<u8>, Option<Crc>);
type Pending = mpsc::Receiver<io::Result<Block>>;

/// What [`BlockCompressor::finish`] returns besides the inner writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compressed {
    /// sha256 of the input (a layer's diffID).
    pub input: Digest,
    /// sha256 and length of the output (a layer blob's digest and size).
    pub output: Digest,
    pub size: u64,
}

/// A `Write` that compresses in parallel fixed blocks into `out` and hashes both its input and
/// its output on threads of their own: sha256 is sequential, and done on the writing thread it
/// left the compressors idle whenever the data compressed fast (random or stored blocks).
pub(crate) struct BlockCompressor<W: Write> {
    out: W,
    codec: Codec,
    block: Vec<u8>,
    /// Tail of the previous gzip block, the preset dictionary for the next one.
    dict: Vec<u8>,
    crc: Crc,
    pending: VecDeque<Pending>,
    max_in_flight: usize,
    blocks_sent: u64,
    input_hash: HashThread,
    output_hash: HashThread,
}

impl<W: Write> BlockCompressor<W> {
    pub(crate) fn new(out: W, codec: Codec) -> io::Result<Self> {
        // Enough blocks to keep every thread busy, but never more than IN_FLIGHT_BYTES
        // of input (plus as much output) whatever the core count: memory stays flat.
        let max_in_flight = (2 * rayon::current_num_threads() + 1)
            .min(IN_FLIGHT_BYTES / codec.block_size())
            .max(1);
        let mut c = BlockCompressor {
            out,
            codec,
            block: Vec::with_capacity(codec.block_size()),
            dict: Vec::new(),
            crc: Crc::new(),
            pending: VecDeque::new(),
            max_in_flight,
            blocks_sent: 0,
            input_hash: HashThread::spawn(HASH_QUEUE)?,
            output_hash: HashThread::spawn(HASH_QUEUE)?,
        };
        if let Codec::Gzip(_) = codec {
            c.emit(GZIP_HEADER.to_vec())?;
        }
        Ok(c)
    }

    fn submit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(self.codec.block_size()));
        let data = Arc::new(data);
        self.input_hash.send(Arc::clone(&data))?;
        let codec = self.codec;
        let dict = match codec {
            Codec::Gzip(_) => {
                let tail = data[data.len().saturating_sub(DEFLATE_DICT)..].to_vec();
                std::mem::replace(&mut self.dict, tail)
            }
            Codec::Zstd(_) => Vec::new(),
        };
        let (tx, rx) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            let _ = tx.send(compress_block(codec, &data, &dict));
        });
        self.pending.push_back(rx);
        self.blocks_sent += 1;
        while self.pending.len() > self.max_in_flight {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let (bytes, crc) = wait(&rx)?;
            if let Some(crc) = crc {
                self.crc.combine(&crc);
            }
            self.emit(bytes)?;
        }
        Ok(())
    }

    /// Writes output bytes and hands them to the output hash.
    fn emit(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.out.write_all(&bytes)?;
        self.output_hash.send(Arc::new(bytes))
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<(W, Compressed)> {
        if !self.block.is_empty() || self.blocks_sent == 0 {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        if let Codec::Gzip(_) = self.codec {
            let mut trailer = DEFLATE_EMPTY_FINAL.to_vec();
            trailer.extend_from_slice(&self.crc.sum().to_le_bytes());
            trailer.extend_from_slice(&self.crc.amount().to_le_bytes());
            self.emit(trailer)?;
        }
        self.out.flush()?;
        let (input, _) = self.input_hash.finish()?;
        let (output, size) = self.output_hash.finish()?;
        let done = Compressed {
            input,
            output,
            size,
        };
        Ok((self.out, done))
    }
}

impl<W: Write> Write for BlockCompressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.codec.block_size() - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.codec.block_size() {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits for a block. On a rayon worker (when layers are written in parallel on the pool)
/// it runs other pool jobs meanwhile: blocking there could starve the pool of the very job
/// being waited for.
fn wait(rx: &Pending) -> io::Result<Block> {
    let gone = || io::Error::other("compression worker panicked");
    if rayon::current_thread_index().is_some() {
        loop {
            match rx.try_recv() {
                Ok(r) => return r,
                Err(mpsc::TryRecvError::Disconnected) => return Err(gone()),
                Err(mpsc::TryRecvError::Empty) => {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        break;
                    }
                }
            }
        }
    }
    rx.recv().map_err(|_| gone())?
}

fn compress_block(codec: Codec, data: &[u8], dict: &[u8]) -> io::Result<Block> {
    match codec {
        Codec::Gzip(level) => {
            let mut crc = Crc::new();
            crc.update(data);
            Ok((deflate_block(level, data, dict)?, Some(crc)))
        }
        Codec::Zstd(level) => Ok((zstd::bulk::compress(data, level)?, None)),
    }
}

/// Raw deflate of one block, primed with `dict`, ended by a sync flush (not final).
///
/// A block that looks incompressible is written as stored deflate blocks (level 0) instead:
/// deflate at level 6 spends most of its time searching for matches in random data only to
/// store it anyway (half of a cold w2 build's CPU). The choice depends on the block's bytes
/// alone, so the output stays the same for any thread count or write pattern.
fn deflate_block(level: u32, data: &[u8], dict: &[u8]) -> io::Result<Vec<u8>> {
    let level = if level > 0 && looks_incompressible(data) {
        0
    } else {
        level
    };
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if level > 0 && !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 16 * 1024 {
            out.reserve(64 * 1024);
        }
        let done = c.total_in() as usize;
        let status = c
            .compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let input_done = c.total_in() as usize == data.len();
        // The flush is complete once all input is taken and the output was not filled up.
        if input_done && out.len() < out.capacity() {
            return Ok(out);
        }
        if status == Status::StreamEnd {
            return Ok(out);
        }
    }
}

/// Whether fast deflate saves less than 2% on each of three samples of `data` (its start,
/// middle and end), as on random, encrypted or already-compressed bytes. A block is judged
/// incompressible only when every sample is, so a block mixing text and random data is
/// still compressed.
fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 16 * 1024;
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let starts = [0, data.len() / 2 - SAMPLE / 2, data.len() - SAMPLE];
    starts.iter().all(|&at| {
        let sample = &data[at..at + SAMPLE];
        let mut c = Compress::new(flate2::Compression::fast(), false);
        let mut out = Vec::with_capacity(SAMPLE + 1024);
        match c.compress_vec(sample, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => out.len() * 100 >= sample.len() * 98,
            // Output did not fit in input + 1 KiB: certainly incompressible.
            Ok(_) => true,
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Mixed: compressible text and pseudo-random bytes.
        let mut v = Vec::with_capacity(len);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        while v.len() < len {
            if (v.len() / 70_000) % 2 == 0 {
                v.extend_from_slice(b"the quick brown fox jumps over the lazy dog\n");
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(len);
        v
    }

    fn compress_all(codec: Codec, data: &[u8], piece: usize) -> Vec<u8> {
        let mut w = BlockCompressor::new(Vec::new(), codec).unwrap();
        for chunk in data.chunks(piece) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap().0
    }

    #[test]
    fn gzip_blocks_decode_with_single_and_multi_member_readers() {
        for len in [0, 1, GZIP_BLOCK - 1, GZIP_BLOCK, 3 * GZIP_BLOCK + 12345] {
            let data = sample(len);
            let gz = compress_all(Codec::Gzip(6), &data, 7777);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "GzDecoder, len {len}");
            back.clear();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "MultiGzDecoder, len {len}");
        }
    }

    #[test]
    fn zstd_frames_decode_as_one_stream() {
        let data = sample(2 * ZSTD_BLOCK + 99);
        let z = compress_all(Codec::Zstd(3), &data, 100_000);
        let back = zstd::stream::decode_all(&z[..]).unwrap();
        assert_eq!(back, data);
        let empty = compress_all(Codec::Zstd(3), &[], 1);
        assert!(zstd::stream::decode_all(&empty[..]).unwrap().is_empty());
    }

    #[test]
    fn output_does_not_depend_on_write_sizes_or_thread_count() {
        let data = sample(5 * GZIP_BLOCK / 2);
        let a = compress_all(Codec::Gzip(6), &data, 1000);
        let b = compress_all(Codec::Gzip(6), &data, 1 << 20);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let c = one.install(|| compress_all(Codec::Gzip(6), &data, 4096));
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let d = three.install(|| compress_all(Codec::Gzip(6), &data, 4096));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        let z1 = one.install(|| compress_all(Codec::Zstd(3), &data, 4096));
        let z3 = three.install(|| compress_all(Codec::Zstd(3), &data, 4096));
        assert_eq!(z1, z3);
    }

    #[test]
    fn priming_with_the_previous_block_keeps_the_ratio() {
        // Repetitive data across blocks: the dictionary must let block 2 refer back.
        let data: Vec<u8> = b"0123456789abcdef".repeat(GZIP_BLOCK / 8);
        let gz = compress_all(Codec::Gzip(6), &data, 65536);
        assert!(gz.len() < data.len() / 50, "{} bytes", gz.len());
    }

    #[test]
    fn random_blocks_are_stored_and_mixed_or_text_blocks_compressed() {
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        let stored = compress_all(Codec::Gzip(6), &random, 100_000);
        // Stored deflate blocks cost 5 bytes per 64 KiB, plus the gzip header and trailer.
        assert!(
            stored.len() < random.len() + random.len() / 1000,
            "{}",
            stored.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&stored[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, random);

        let text = sample(1 << 20);
        assert!(!looks_incompressible(&text));
        let mut mixed = random.clone();
        mixed[..64 * 1024].copy_from_slice(&text[..64 * 1024]);
        assert!(
            !looks_incompressible(&mixed),
            "a text sample keeps compression on"
        );
    }
}
