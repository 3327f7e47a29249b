//! sha256 off the thread that moves the bytes: the layer writer and the unpacker each
//! stream a layer once, and hashing it in line took as much CPU as the rest of their work.

use std::io::{self, Write};
use std::sync::{Arc, mpsc};

use crate::digest::{Digest, HashingWriter};

/// sha256 of a sequence of blocks, computed in order on a thread of its own. The channel is
/// bounded, so a slow hash holds the writer back instead of queueing memory. Dropped without
/// [`HashThread::finish`] (an error mid-layer), the channel closes and the thread ends.
pub(super) struct HashThread {
    tx: mpsc::SyncSender<Arc<Vec<u8>>>,
    thread: std::thread::JoinHandle<(Digest, u64)>,
}

impl HashThread {
    pub(super) fn spawn(bound: usize) -> io::Result<HashThread> {
        let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(bound);
        let thread = std::thread::Builder::new()
            .name("kiln-sha256".into())
            .spawn(move || {
                let mut h = HashingWriter::new(io::sink());
                for block in rx {
                    // Writing to a sink cannot fail.
                    let _ = h.write_all(&block);
                }
                let (_, digest, len) = h.finish();
                (digest, len)
            })?;
        Ok(HashThread { tx, thread })
    }

    pub(super) fn send(&self, block: Arc<Vec<u8>>) -> io::Result<()> {
        self.tx
            .send(block)
            .map_err(|_| io::Error::other("the sha256 thread stopped"))
    }

    pub(super) fn finish(self) -> io::Result<(Digest, u64)> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the sha256 thread panicked"))
    }
}
