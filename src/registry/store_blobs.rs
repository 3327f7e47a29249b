//! The local store as the registry client's blob sink (pull) and source (push), and the
//! keeper of where blobs were seen on registries (mount hints).

use crate::digest::Digest;
use crate::store::{BlobWriter, Store};

use super::{BlobSink, BlobSource};

/// Pull into the store: a blob is committed only once the registry client verified it, and
/// the store checks the digest again on commit.
pub struct StoreBlobs<'a>(pub &'a Store);

impl BlobSink for StoreBlobs<'_> {
    type Writer = BlobWriter;
    fn has_blob(&self, digest: &Digest) -> bool {
        self.0.has_blob(digest)
    }
    fn begin(&self) -> std::io::Result<BlobWriter> {
        self.0.begin_blob().map_err(std::io::Error::other)
    }
    fn commit(&self, w: BlobWriter, digest: &Digest) -> std::io::Result<()> {
        w.commit(Some(digest))
            .map(drop)
            .map_err(std::io::Error::other)
    }
    fn record_pulled(&self, host: &str, repo: &str, digests: &[Digest]) -> std::io::Result<()> {
        self.0
            .record_blob_locations(host, repo, digests)
            .map_err(std::io::Error::other)
    }
}

impl BlobSource for StoreBlobs<'_> {
    fn open_blob(&self, digest: &Digest) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let f = self.0.open_blob(digest).map_err(std::io::Error::other)?;
        Ok(Box::new(f))
    }
    fn mount_candidates(&self, host: &str, digest: &Digest) -> Vec<String> {
        self.0.blob_locations(host, digest)
    }
    fn record_pushed(&self, host: &str, repo: &str, digests: &[Digest]) -> std::io::Result<()> {
        self.0
            .record_blob_locations(host, repo, digests)
            .map_err(std::io::Error::other)
    }
}
