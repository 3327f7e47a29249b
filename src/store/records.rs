//! Image records: name → manifest digest, kept in one JSON file that is replaced atomically
//! (write temp, fsync, rename) under an exclusive lock. A name promises every blob of its
//! image, so the blob directory is fsynced first (blob renames are not durable one by one:
//! see `blobs.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::gc::manifest_refs;
use super::{IoContext, Result, Store, StoreError, sync_dir};
use crate::digest::Digest;
use crate::reference::Reference;

/// One named image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: Reference,
    pub manifest: Digest,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct RecordFile {
    version: u32,
    images: BTreeMap<String, Digest>,
}

impl Store {
    fn records_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_records(&self) -> Result<RecordFile> {
        let path = self.records_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RecordFile {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(e).ctx("read", &path),
        }
    }

    /// Applies `change` to the records under the records lock and replaces the file atomically.
    fn update_records<T>(&self, change: impl FnOnce(&mut RecordFile) -> T) -> Result<T> {
        // The lock's lease also keeps prune from computing what is live while a name changes.
        let _lock = self.lock_records()?;
        let mut records = self.read_records()?;
        let before = records.clone();
        let out = change(&mut records);
        if records == before {
            // Re-tagging an unchanged image (every no-change rebuild) costs no fsync.
            return Ok(out);
        }
        self.sync_blob_names()?;
        let dir = self.tmp_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix("images-")
            .tempfile_in(&dir)
            .ctx("create temp file in", &dir)?;
        let json = serde_json::to_vec_pretty(&records).expect("records serialise");
        tmp.write_all(&json).ctx("write", tmp.path())?;
        tmp.as_file().sync_all().ctx("sync", tmp.path())?;
        let path = self.records_path();
        tmp.persist(&path)
            .map_err(|e| e.error)
            .ctx("replace", &path)?;
        sync_dir(&self.root)?;
        Ok(out)
    }

    /// Names `manifest` as `name` (replacing what the name pointed at before).
    /// The manifest blob must already be in the store.
    pub fn tag(&self, name: &Reference, manifest: &Digest) -> Result<()> {
        if !self.has_blob(manifest) {
            return Err(StoreError::BlobNotFound(*manifest));
        }
        self.update_records(|r| {
            r.images.insert(name.to_string(), *manifest);
        })
    }

    /// Removes a name; returns whether it existed. Content goes on the next `prune`.
    pub fn untag(&self, name: &Reference) -> Result<bool> {
        self.update_records(|r| r.images.remove(&name.to_string()).is_some())
    }

    /// Every named image, sorted by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let path = self.records_path();
        self.read_records()?
            .images
            .into_iter()
            .map(|(name, manifest)| {
                let name = name.parse().map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("{e}"),
                })?;
                Ok(ImageRecord { name, manifest })
            })
            .collect()
    }

    /// Finds an image's manifest digest by name (`alpine`, `host:5000/app:1`), by pinned
    /// digest (`name@sha256:…`), or by a full or unique short image ID / manifest digest
    /// (`3f2a…`, `sha256:3f2a…`), as `docker` accepts them.
    pub fn resolve(&self, input: &str) -> Result<Digest> {
        let records = self.list_images()?;
        if let Ok(reference) = input.parse::<Reference>() {
            if let Some(d) = reference.digest()
                && self.has_blob(d)
            {
                return Ok(*d);
            }
            if let Some(r) = records.iter().find(|r| r.name == reference) {
                return Ok(r.manifest);
            }
        }
        let prefix = input.strip_prefix("sha256:").unwrap_or(input);
        let is_id = (3..=64).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_id {
            return Err(StoreError::ImageNotFound(input.to_string()));
        }
        let mut found = BTreeSet::new();
        for r in &records {
            let id = self.image_id(&r.manifest).ok();
            if r.manifest.hex().starts_with(prefix)
                || id.is_some_and(|id| id.hex().starts_with(prefix))
            {
                found.insert(r.manifest);
            }
        }
        match found.len() {
            0 => Err(StoreError::ImageNotFound(input.to_string())),
            1 => Ok(found.into_iter().next().expect("one element")),
            _ => Err(StoreError::Ambiguous {
                prefix: input.to_string(),
                candidates: found
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The image ID (config digest) of a stored manifest, as `docker images` shows it.
    pub fn image_id(&self, manifest: &Digest) -> Result<Digest> {
        let bytes = self.read_blob(manifest)?;
        manifest_refs(&bytes)
            .config
            .ok_or_else(|| StoreError::Corrupt {
                path: self.blob_path(manifest),
                reason: "not an image manifest (no config descriptor)".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(store: &Store, config: &[u8]) -> Digest {
        let cfg = store.put_blob(config).unwrap();
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cfg.to_string(), "size": config.len()},
            "layers": []
        });
        store.put_blob(&serde_json::to_vec(&m).unwrap()).unwrap()
    }

    #[test]
    fn tag_resolve_untag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let m = manifest_for(&store, b"{\"a\":1}");
        let name: Reference = "example.com/app:1".parse().unwrap();
        store.tag(&name, &m).unwrap();
        assert_eq!(store.resolve("example.com/app:1").unwrap(), m);
        assert_eq!(store.resolve(&m.to_string()).unwrap(), m);
        let id = store.image_id(&m).unwrap();
        assert_eq!(store.resolve(&id.hex()[..12]).unwrap(), m);
        assert!(matches!(
            store.resolve("example.com/app:2"),
            Err(StoreError::ImageNotFound(_))
        ));
        assert_eq!(store.list_images().unwrap().len(), 1);
        assert!(store.untag(&name).unwrap());
        assert!(!store.untag(&name).unwrap());
        assert!(store.list_images().unwrap().is_empty());
    }

    #[test]
    fn tagging_the_same_image_again_leaves_the_records_file_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let m = manifest_for(&store, b"{\"a\":2}");
        let name: Reference = "example.com/app:1".parse().unwrap();
        store.tag(&name, &m).unwrap();
        let ino = fs::metadata(store.records_path()).unwrap().ino();
        store.tag(&name, &m).unwrap();
        // The file is replaced by rename on every write, so the same inode means no write.
        assert_eq!(fs::metadata(store.records_path()).unwrap().ino(), ino);
        let other = manifest_for(&store, b"{\"a\":3}");
        store.tag(&name, &other).unwrap();
        assert_ne!(fs::metadata(store.records_path()).unwrap().ino(), ino);
        assert_eq!(store.resolve("example.com/app:1").unwrap(), other);
    }

    #[test]
    fn short_ids_that_match_two_images_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Make configs until two image IDs share their first three hex characters
        // (a birthday collision among 4096 prefixes: about 80 tries).
        let mut by_prefix: BTreeMap<String, Digest> = BTreeMap::new();
        let (a, b) = (0..)
            .find_map(|i| {
                let m = manifest_for(&store, format!("{{\"n\":{i}}}").as_bytes());
                let p = store.image_id(&m).unwrap().hex()[..3].to_string();
                by_prefix.insert(p, m).map(|prev| (prev, m))
            })
            .unwrap();
        store.tag(&"a".parse().unwrap(), &a).unwrap();
        store.tag(&"b".parse().unwrap(), &b).unwrap();
        let ida = store.image_id(&a).unwrap().hex();
        let idb = store.image_id(&b).unwrap().hex();
        assert!(matches!(
            store.resolve(&ida[..3]),
            Err(StoreError::Ambiguous { .. })
        ));
        assert_eq!(store.resolve(&ida).unwrap(), a);
        assert_eq!(store.resolve(&format!("sha256:{idb}")).unwrap(), b);
    }
}
