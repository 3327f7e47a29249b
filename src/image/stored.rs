//! [`StoredImage`]: an image read back from the store.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::media::{Compression, DOCKER_LIST, ImageFormat, Layer, OCI_INDEX, Platform};
use super::{ImageError, Result};
use crate::digest::Digest;
use crate::store::Store;

/// A single-platform image in the store: manifest and config bytes, and its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub manifest_digest: Digest,
    pub manifest: Vec<u8>,
    pub format: ImageFormat,
    /// The image ID.
    pub config_digest: Digest,
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: Digest,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestIn {
    media_type: Option<String>,
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ConfigIn {
    created: Option<DateTime<Utc>>,
    rootfs: RootFsIn,
}

#[derive(Deserialize)]
struct RootFsIn {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct IndexIn {
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: Digest,
    platform: Option<PlatformIn>,
}

#[derive(Deserialize)]
struct PlatformIn {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl StoredImage {
    /// Like [`StoredImage::load`], but when `digest` is a multi-platform index, loads the
    /// manifest for `platform` from it (the child must be in the store).
    pub fn load_for(store: &Store, digest: &Digest, platform: &Platform) -> Result<StoredImage> {
        let bytes = store.read_blob(digest)?;
        let Ok(index) = serde_json::from_slice::<IndexIn>(&bytes) else {
            return StoredImage::load(store, digest);
        };
        let matches = |p: &PlatformIn| {
            p.os == platform.os
                && p.architecture == platform.architecture
                && (p.variant.is_none()
                    || platform.variant.is_none()
                    || p.variant == platform.variant)
        };
        match index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(matches))
        {
            Some(m) => StoredImage::load(store, &m.digest),
            None => {
                let have: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                Err(ImageError::NotAnImage {
                    digest: *digest,
                    reason: format!(
                        "the index has no manifest for {}/{} (it has: {})",
                        platform.os,
                        platform.architecture,
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ),
                })
            }
        }
    }

    /// Reads the manifest `digest` and its config from the store.
    pub fn load(store: &Store, digest: &Digest) -> Result<StoredImage> {
        let not_image = |reason: String| ImageError::NotAnImage {
            digest: *digest,
            reason,
        };
        let manifest = store.read_blob(digest)?;
        let m: ManifestIn =
            serde_json::from_slice(&manifest).map_err(|e| not_image(e.to_string()))?;
        let media_type = m.media_type.as_deref();
        if m.manifests.is_some() || matches!(media_type, Some(OCI_INDEX | DOCKER_LIST)) {
            return Err(not_image(
                "it is a multi-platform index; pick one platform's manifest".into(),
            ));
        }
        let format = match media_type {
            None => ImageFormat::Oci,
            Some(t) => ImageFormat::of_manifest(t)
                .ok_or_else(|| not_image(format!("unknown manifest media type {t:?}")))?,
        };
        let config_desc = m
            .config
            .ok_or_else(|| not_image("it has no config descriptor".into()))?;
        let config = store.read_blob(&config_desc.digest)?;
        let parsed: ConfigIn =
            serde_json::from_slice(&config).map_err(|e| ImageError::BadConfig {
                digest: config_desc.digest,
                reason: e.to_string(),
            })?;
        let diff_ids = parsed.rootfs.diff_ids;
        if diff_ids.len() != m.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                layers: m.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let layers = m
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| {
                Ok(Layer {
                    digest: d.digest,
                    size: d.size,
                    diff_id,
                    compression: Compression::of_layer(&d.media_type, &d.digest)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StoredImage {
            manifest_digest: *digest,
            manifest,
            format,
            config_digest: config_desc.digest,
            config,
            layers,
        })
    }

    /// This image's manifest in `format`: the stored bytes when it already is in that format,
    /// else a converted manifest (same config and layers, so the same image ID).
    pub fn manifest_in(&self, format: ImageFormat) -> Result<(Vec<u8>, Digest)> {
        if format == self.format {
            return Ok((self.manifest.clone(), self.manifest_digest));
        }
        let bytes = super::manifest::manifest_json(
            format,
            self.config.len() as u64,
            &self.config_digest,
            &self.layers,
        )?;
        let digest = Digest::of(&bytes);
        Ok((bytes, digest))
    }

    /// Bytes of the config and the (compressed) layer blobs.
    pub fn size(&self) -> u64 {
        self.config.len() as u64 + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// The `created` time in the config, if any.
    pub fn created(&self) -> Option<DateTime<Utc>> {
        serde_json::from_slice::<ConfigIn>(&self.config)
            .ok()
            .and_then(|c| c.created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_json(store: &Store, v: serde_json::Value) -> Digest {
        store.put_blob(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn load_reads_docker_manifests_and_refuses_indexes_and_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff = Digest::of(b"tar");
        let config = put_json(
            &store,
            serde_json::json!({"created": "2024-01-02T03:04:05Z", "rootfs": {"type": "layers", "diff_ids": [diff]}}),
        );
        let layer = Digest::of(b"gz");
        let manifest = |layers: serde_json::Value| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 10},
                "layers": layers,
            })
        };
        let good = put_json(
            &store,
            manifest(
                serde_json::json!([{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 2}]),
            ),
        );
        let img = StoredImage::load(&store, &good).unwrap();
        assert_eq!(img.format, ImageFormat::Docker);
        assert_eq!(img.layers[0].diff_id, diff);
        assert_eq!(img.layers[0].compression, Compression::Gzip);
        assert_eq!(
            img.created().unwrap().to_rfc3339(),
            "2024-01-02T03:04:05+00:00"
        );
        // Converting to OCI keeps the config, so the image ID.
        let (oci, oci_digest) = img.manifest_in(ImageFormat::Oci).unwrap();
        assert_ne!(oci_digest, good);
        let v: serde_json::Value = serde_json::from_slice(&oci).unwrap();
        assert_eq!(v["config"]["digest"], config.to_string());
        assert_eq!(
            v["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );

        let two = put_json(&store, manifest(serde_json::json!([])));
        assert!(matches!(
            StoredImage::load(&store, &two),
            Err(ImageError::LayerCountMismatch {
                layers: 0,
                diff_ids: 1
            })
        ));
        let index = put_json(
            &store,
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}),
        );
        let err = StoredImage::load(&store, &index).unwrap_err();
        assert!(err.to_string().contains("multi-platform"), "{err}");

        // load_for picks the platform's manifest from an index, or says what there is.
        let index = put_json(
            &store,
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": two, "size": 1,
                 "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": good, "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
            ]}),
        );
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert_eq!(
            StoredImage::load_for(&store, &index, &arm)
                .unwrap()
                .manifest_digest,
            good
        );
        let riscv = Platform {
            os: "linux".into(),
            architecture: "riscv64".into(),
            variant: None,
        };
        let err = StoredImage::load_for(&store, &index, &riscv).unwrap_err();
        assert!(
            err.to_string().contains("linux/s390x, linux/arm64/v8"),
            "{err}"
        );
        assert_eq!(
            StoredImage::load_for(&store, &good, &riscv)
                .unwrap()
                .manifest_digest,
            good
        );
    }
}
