//! Garbage collection: everything reachable from an image name or a pin stays; the rest goes.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layers::{remove_tree, write_atomically};
use super::{IoContext, Result, Store, StoreError};
use crate::digest::Digest;
use crate::manifest::{ImageConfig, MAX_MANIFEST, Parsed};

/// Content a build-cache entry keeps alive through `prune`: blobs (manifests are followed to
/// their config and layers) and unpacked layer dirs by diffID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub blobs: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
}

/// What `prune` freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub blobs: usize,
    pub layer_dirs: usize,
    pub cache_entries: usize,
    pub temp_files: usize,
    /// Scratch dirs of builds that were killed (see [`Store::scratch_dir`]).
    pub scratch_dirs: usize,
    pub bytes: u64,
}

/// The digests a manifest or index points at.
#[derive(Debug, Default)]
pub(crate) struct ManifestRefs {
    pub config: Option<Digest>,
    pub layers: Vec<Digest>,
    /// Child manifests of an index / manifest list.
    pub children: Vec<Digest>,
}

/// The descriptors of a manifest or index, read by the same reader as pull and
/// [`crate::image::StoredImage`]; anything it does not read as one (a layer, a config, junk)
/// references nothing.
pub(crate) fn manifest_refs(bytes: &[u8]) -> ManifestRefs {
    match crate::manifest::read(bytes, None).map(|d| d.parsed) {
        Ok(Parsed::Image { config, layers }) => ManifestRefs {
            config: Some(config.digest),
            layers: layers.into_iter().map(|d| d.digest).collect(),
            children: Vec::new(),
        },
        Ok(Parsed::Index { manifests }) => ManifestRefs {
            children: manifests.into_iter().map(|d| d.digest).collect(),
            ..ManifestRefs::default()
        },
        Err(_) => ManifestRefs::default(),
    }
}

fn config_diff_ids(bytes: &[u8]) -> Vec<Digest> {
    ImageConfig::read(bytes)
        .map(|c| c.rootfs.diff_ids)
        .unwrap_or_default()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

impl Store {
    /// Keeps `pin`'s content alive under `key` (replacing an earlier pin with that key).
    pub fn pin(&self, key: &str, pin: &Pin) -> Result<()> {
        if !valid_key(key) {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        let path = self.root.join("pins").join(format!("{key}.json"));
        write_atomically(
            self,
            &path,
            &serde_json::to_vec(pin).expect("pin serialises"),
        )
    }

    /// Drops a pin; returns whether it existed.
    pub fn unpin(&self, key: &str) -> Result<bool> {
        if !valid_key(key) {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        let path = self.root.join("pins").join(format!("{key}.json"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx("remove", &path),
        }
    }

    fn read_pins(&self) -> Result<Vec<Pin>> {
        let dir = self.root.join("pins");
        let mut pins = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let path = entry.ctx("list", &dir)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).ctx("read", &path)?;
                pins.push(
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                );
            }
        }
        Ok(pins)
    }

    /// Blobs and diffIDs reachable from image names and pins.
    fn live_set(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let mut blobs = BTreeSet::new();
        let mut diff_ids = BTreeSet::new();
        let mut todo: Vec<Digest> = self
            .list_images()?
            .into_iter()
            .map(|r| r.manifest)
            .collect();
        for pin in self.read_pins()? {
            todo.extend(pin.blobs);
            diff_ids.extend(pin.diff_ids);
        }
        while let Some(d) = todo.pop() {
            if !blobs.insert(d) {
                continue;
            }
            // Only small JSON blobs are worth parsing; layers are never JSON.
            let Ok(size) = self.blob_size(&d) else {
                continue;
            };
            if size > MAX_MANIFEST as u64 {
                continue;
            }
            let bytes = self.read_blob(&d)?;
            let refs = manifest_refs(&bytes);
            if let Some(config) = refs.config {
                blobs.insert(config);
                if let Ok(cfg) = self.read_blob(&config) {
                    diff_ids.extend(config_diff_ids(&cfg));
                }
            }
            blobs.extend(refs.layers);
            todo.extend(refs.children);
        }
        Ok((blobs, diff_ids))
    }

    /// Removes every blob, unpacked layer and cache entry that no image name and no pin
    /// references, plus leftovers of interrupted writes. Refuses ([`StoreError::Busy`]) while
    /// another process holds a [`Store::lease`].
    pub fn prune(&self) -> Result<PruneReport> {
        let _gc = self.gc_lock()?;
        let (live_blobs, live_diffs) = self.live_set()?;
        let mut report = PruneReport::default();
        self.prune_blobs(&live_blobs, &mut report)?;
        self.prune_layer_dirs(&live_diffs, &mut report)?;
        self.prune_compressed_cache(&live_blobs, &mut report)?;
        self.prune_leftovers(&mut report)?;
        let scratch = self.remove_all_scratch()?;
        report.scratch_dirs = scratch.dirs;
        report.bytes += scratch.bytes;
        Ok(report)
    }

    fn prune_blobs(&self, live: &BTreeSet<Digest>, report: &mut PruneReport) -> Result<()> {
        let blob_dir = self.root.join("blobs/sha256");
        for (path, digest) in digest_named_entries(&blob_dir, "")? {
            if !live.contains(&digest) {
                report.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).ctx("remove", &path)?;
                report.blobs += 1;
            }
        }
        Ok(())
    }

    fn prune_layer_dirs(&self, live: &BTreeSet<Digest>, report: &mut PruneReport) -> Result<()> {
        let layer_dir = self.root.join("layers");
        for (path, digest) in digest_named_entries(&layer_dir, "")? {
            if !live.contains(&digest) {
                report.bytes += tree_size(&path);
                // Marker first: a dir without marker is treated as incomplete, never used.
                let marker = self.layer_marker(&digest);
                match fs::remove_file(&marker) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(e).ctx("remove", &marker);
                    }
                    _ => {}
                }
                remove_tree(&path, self.sub_id_remover())?;
                report.layer_dirs += 1;
            }
        }
        for (path, digest) in digest_named_entries(&layer_dir, ".complete")? {
            if !live.contains(&digest) || !self.layer_dir(&digest).is_dir() {
                fs::remove_file(&path).ctx("remove", &path)?;
            }
        }
        Ok(())
    }

    /// Compression cache entries are derived data: they go with the blob they name.
    fn prune_compressed_cache(
        &self,
        live: &BTreeSet<Digest>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let cache_dir = self.root.join("cache/compressed");
        for entry in fs::read_dir(&cache_dir).ctx("list", &cache_dir)? {
            let path = entry.ctx("list", &cache_dir)?.path();
            let target = fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<Digest>().ok());
            if !target.is_some_and(|d| live.contains(&d)) {
                fs::remove_file(&path).ctx("remove", &path)?;
                report.cache_entries += 1;
            }
        }
        Ok(())
    }

    /// Nobody holds a lease (every lock holder does), so whatever is in tmp/ was left by an
    /// interrupted process, and no lock file is in use.
    fn prune_leftovers(&self, report: &mut PruneReport) -> Result<()> {
        for (dir, counted) in [("tmp", true), ("locks", false)] {
            let dir = self.root.join(dir);
            for entry in fs::read_dir(&dir).ctx("list", &dir)? {
                let path = entry.ctx("list", &dir)?.path();
                if path.file_name().is_some_and(|n| n == "gc.lock") {
                    continue;
                }
                if counted {
                    report.bytes += tree_size(&path);
                    report.temp_files += 1;
                }
                if path.is_dir() {
                    remove_tree(&path, self.sub_id_remover())?;
                } else {
                    fs::remove_file(&path).ctx("remove", &path)?;
                }
            }
        }
        Ok(())
    }
}

/// Entries of `dir` named `<64 hex><suffix>`, with the digest that name spells.
fn digest_named_entries(dir: &Path, suffix: &str) -> Result<Vec<(std::path::PathBuf, Digest)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_suffix(suffix) else {
            continue;
        };
        if let Ok(d) = Digest::from_hex(hex) {
            out.push((entry.path(), d));
        }
    }
    Ok(out)
}

/// Bytes used by the regular files under `path` (hard links counted once per name: close
/// enough for a report).
pub(super) fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;

    struct Img {
        manifest: Digest,
        config: Digest,
        layer: Digest,
        diff_id: Digest,
    }

    fn image(store: &Store, seed: &str) -> Img {
        let layer = store.put_blob(format!("layer-{seed}").as_bytes()).unwrap();
        let diff_id = Digest::of(format!("tar-{seed}").as_bytes());
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [diff_id]}});
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config = store.put_blob(&config_bytes).unwrap();
        let m = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 1}]
        });
        let manifest = store.put_blob(&serde_json::to_vec(&m).unwrap()).unwrap();
        store
            .ensure_unpacked(&diff_id, |d| fs::write(d.join("f"), seed))
            .unwrap();
        store.record_compressed(&diff_id, "gzip", &layer).unwrap();
        Img {
            manifest,
            config,
            layer,
            diff_id,
        }
    }

    #[test]
    fn prune_frees_exactly_the_unreferenced_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = image(&store, "kept");
        let gone = image(&store, "gone");
        let pinned = image(&store, "pinned");
        let name: Reference = "kept:1".parse().unwrap();
        store.tag(&name, &kept.manifest).unwrap();
        store
            .pin(
                "step-1",
                &Pin {
                    blobs: vec![pinned.manifest],
                    diff_ids: vec![],
                },
            )
            .unwrap();
        let stray = store.put_blob(b"stray").unwrap();
        // What a writer killed mid-blob leaves behind (its Drop never ran).
        fs::write(dir.path().join("tmp/blob-crashed"), b"half").unwrap();

        let report = store.prune().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.blobs, 4, "{report:?}"); // gone: manifest, config, layer; stray
        assert_eq!(report.layer_dirs, 1, "{report:?}");
        assert_eq!(report.cache_entries, 1, "{report:?}");
        assert_eq!(report.temp_files, 1, "{report:?}");
        let gone_bytes: u64 = [
            b"layer-gone".len(),
            b"stray".len(),
            b"gone".len(),
            b"half".len(),
        ]
        .iter()
        .map(|n| *n as u64)
        .sum();
        assert!(report.bytes > gone_bytes, "{report:?}");

        for d in [
            kept.manifest,
            kept.config,
            kept.layer,
            pinned.manifest,
            pinned.config,
            pinned.layer,
        ] {
            assert!(store.has_blob(&d), "{d} should stay");
        }
        for d in [gone.manifest, gone.config, gone.layer, stray] {
            assert!(!store.has_blob(&d), "{d} should go");
        }
        assert!(store.is_unpacked(&kept.diff_id));
        assert!(store.is_unpacked(&pinned.diff_id));
        assert!(!store.layer_dir(&gone.diff_id).exists());
        assert_eq!(
            store.cached_compressed(&kept.diff_id, "gzip").unwrap(),
            Some(kept.layer)
        );
        // A second prune finds nothing more.
        let again = store.prune().unwrap();
        assert_eq!(again, PruneReport::default());
        // After untag and unpin, everything goes.
        store.untag(&name).unwrap();
        assert!(store.unpin("step-1").unwrap());
        let last = store.prune().unwrap();
        assert_eq!((last.blobs, last.layer_dirs), (6, 2));
    }

    #[test]
    fn prune_refuses_while_a_lease_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease().unwrap();
        assert!(matches!(store.prune(), Err(StoreError::Busy(_))));
        drop(lease);
        store.prune().unwrap();
    }
}
