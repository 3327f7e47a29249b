//! Blob locations: which repositories of which registry are known to hold a blob (seen on pull
//! or push), so a push to another repository of the same registry can mount instead of upload.
//! One small JSON file, bounded (a few repositories per blob, most recent first; a capped
//! number of blobs), replaced atomically under a lock. It is only a hint: a damaged file reads
//! as empty, and a stale entry merely costs a refused mount. So it is never fsynced (a crash
//! may lose or empty it, which costs one upload instead of a mount), and not rewritten when
//! nothing in it changes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{IoContext, Result, Store};
use crate::digest::Digest;

/// Repositories remembered per blob.
pub const MAX_REPOS_PER_BLOB: usize = 4;
/// Blobs remembered; the least recently seen are forgotten first.
pub const MAX_BLOBS: usize = 8192;

/// A repository on a registry host known to hold a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub host: String,
    pub repo: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Most recent first.
    locations: Vec<BlobLocation>,
    /// When last seen, as a counter of updates (orders eviction).
    seen: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct LocationFile {
    version: u32,
    counter: u64,
    blobs: BTreeMap<Digest, Entry>,
}

impl LocationFile {
    /// Whether `repo` on `host` is already the most recent location of every one of
    /// `digests` (recording them again would change only the eviction order).
    fn knows_first(&self, host: &str, repo: &str, digests: &[Digest]) -> bool {
        digests.iter().all(|d| {
            self.blobs
                .get(d)
                .and_then(|e| e.locations.first())
                .is_some_and(|l| l.host == host && l.repo == repo)
        })
    }

    fn record(&mut self, host: &str, repo: &str, digests: &[Digest]) {
        self.counter += 1;
        let here = BlobLocation {
            host: host.to_string(),
            repo: repo.to_string(),
        };
        for d in digests {
            let entry = self.blobs.entry(*d).or_insert_with(|| Entry {
                locations: Vec::new(),
                seen: 0,
            });
            entry.locations.retain(|l| *l != here);
            entry.locations.insert(0, here.clone());
            entry.locations.truncate(MAX_REPOS_PER_BLOB);
            entry.seen = self.counter;
        }
        if self.blobs.len() > MAX_BLOBS {
            let mut seen: Vec<u64> = self.blobs.values().map(|e| e.seen).collect();
            seen.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = seen[MAX_BLOBS - 1];
            self.blobs.retain(|_, e| e.seen >= cutoff);
            // Ties at the cutoff could keep a few too many: drop arbitrary ones among them.
            while self.blobs.len() > MAX_BLOBS {
                let victim = self.blobs.iter().find(|(_, e)| e.seen == cutoff);
                let Some((d, _)) = victim.map(|(d, e)| (*d, e.seen)) else {
                    break;
                };
                self.blobs.remove(&d);
            }
        }
    }
}

impl Store {
    fn locations_path(&self) -> PathBuf {
        self.root.join("cache/blob-locations.json")
    }

    /// A missing or damaged file is an empty record: it is only a hint.
    fn read_locations(&self) -> LocationFile {
        fs::read(self.locations_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(LocationFile {
                version: 1,
                ..Default::default()
            })
    }

    /// Repositories known to hold `digest` on registry `host`, most recent first.
    pub fn blob_locations(&self, host: &str, digest: &Digest) -> Vec<String> {
        self.read_locations()
            .blobs
            .get(digest)
            .map(|e| {
                e.locations
                    .iter()
                    .filter(|l| l.host == host)
                    .map(|l| l.repo.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers that `repo` on `host` holds every blob in `digests` (most recent first).
    pub fn record_blob_locations(&self, host: &str, repo: &str, digests: &[Digest]) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let _lock = self.lock_named("blob-locations")?;
        let mut file = self.read_locations();
        if file.knows_first(host, repo, digests) {
            return Ok(());
        }
        file.record(host, repo, digests);
        let dir = self.tmp_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix("blob-locations-")
            .tempfile_in(&dir)
            .ctx("create temp file in", &dir)?;
        let json = serde_json::to_vec(&file).expect("locations serialise");
        tmp.write_all(&json).ctx("write", tmp.path())?;
        let path = self.locations_path();
        tmp.persist(&path)
            .map_err(|e| e.error)
            .ctx("replace", &path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: usize) -> Digest {
        Digest::of(n.to_string().as_bytes())
    }

    #[test]
    fn most_recent_first_per_host_and_bounded_per_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = digest(1);
        for i in 0..6 {
            store
                .record_blob_locations("r1:5000", &format!("repo{i}"), &[d])
                .unwrap();
        }
        store.record_blob_locations("r2", "other", &[d]).unwrap();
        store
            .record_blob_locations("r1:5000", "repo3", &[d])
            .unwrap();
        assert_eq!(
            store.blob_locations("r1:5000", &d),
            ["repo3", "repo5", "repo4"]
        );
        assert_eq!(store.blob_locations("r2", &d), ["other"]);
        assert!(store.blob_locations("r3", &d).is_empty());
        assert!(store.blob_locations("r1:5000", &digest(2)).is_empty());
    }

    #[test]
    fn bounded_number_of_blobs_keeps_the_most_recent() {
        let mut file = LocationFile::default();
        for i in 0..MAX_BLOBS + 10 {
            file.record("h", "r", &[digest(i)]);
        }
        assert_eq!(file.blobs.len(), MAX_BLOBS);
        assert!(!file.blobs.contains_key(&digest(0)));
        assert!(file.blobs.contains_key(&digest(MAX_BLOBS + 9)));
        // One update with more blobs than the cap keeps exactly the cap.
        let many: Vec<_> = (0..MAX_BLOBS + 5).map(|i| digest(i + 100_000)).collect();
        file.record("h", "r2", &many);
        assert_eq!(file.blobs.len(), MAX_BLOBS);
    }

    #[test]
    fn recording_what_is_already_first_does_not_rewrite_the_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let inode = || fs::metadata(store.locations_path()).unwrap().ino();
        store
            .record_blob_locations("h", "r", &[digest(1), digest(2)])
            .unwrap();
        let first = inode();
        store
            .record_blob_locations("h", "r", &[digest(2), digest(1)])
            .unwrap();
        assert_eq!(inode(), first, "nothing new: not replaced");
        store.record_blob_locations("h", "r", &[digest(3)]).unwrap();
        assert_ne!(inode(), first, "a new blob is written");
        store.record_blob_locations("h", "s", &[digest(1)]).unwrap();
        assert_eq!(store.blob_locations("h", &digest(1)), ["s", "r"]);
    }

    #[test]
    fn damaged_file_reads_as_empty_and_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = store.locations_path();
        fs::write(&path, b"{\"version\":1,\"blo").unwrap();
        assert!(store.blob_locations("h", &digest(1)).is_empty());
        store.record_blob_locations("h", "r", &[digest(1)]).unwrap();
        assert_eq!(store.blob_locations("h", &digest(1)), ["r"]);
        // Written via a temp file in tmp/ and renamed: nothing is left behind.
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        let parsed: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(parsed["version"], 1);
    }
}
