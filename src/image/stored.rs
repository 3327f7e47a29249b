//! [`StoredImage`]: an image read back from the store.

use chrono::{DateTime, Utc};

use super::media::{ImageFormat, Layer, Platform, layer_compression};
use super::{ImageError, Result};
use crate::digest::Digest;
use crate::manifest::{self, ImageConfig, Parsed};
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

impl StoredImage {
    /// Like [`StoredImage::load`], but when `digest` is a multi-platform index, loads the
    /// manifest for `platform` from it (the child must be in the store).
    pub fn load_for(store: &Store, digest: &Digest, platform: &Platform) -> Result<StoredImage> {
        let bytes = store.read_blob(digest)?;
        let Ok(Parsed::Index { manifests }) = manifest::read(&bytes, None).map(|d| d.parsed) else {
            return StoredImage::load(store, digest);
        };
        match manifest::select_platform(&manifests, platform) {
            Some(m) => StoredImage::load(store, &m.digest),
            None => Err(ImageError::NoPlatform {
                digest: *digest,
                wanted: platform.to_string(),
                available: manifest::available_platforms(&manifests),
            }),
        }
    }

    /// Reads the manifest `digest` and its config from the store.
    pub fn load(store: &Store, digest: &Digest) -> Result<StoredImage> {
        let manifest = store.read_blob(digest)?;
        let doc = manifest::read(&manifest, None).map_err(|source| ImageError::BadManifest {
            digest: *digest,
            source,
        })?;
        let Parsed::Image {
            config: config_desc,
            layers: descs,
        } = doc.parsed
        else {
            return Err(ImageError::IsAnIndex(*digest));
        };
        let config = store.read_blob(&config_desc.digest)?;
        let parsed = ImageConfig::read(&config).map_err(|source| ImageError::BadConfig {
            digest: config_desc.digest,
            source,
        })?;
        let diff_ids = parsed.rootfs.diff_ids;
        if diff_ids.len() != descs.len() {
            return Err(ImageError::LayerCountMismatch {
                layers: descs.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let layers = descs
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| {
                Ok(Layer {
                    digest: d.digest,
                    size: d.size,
                    diff_id,
                    compression: layer_compression(&d.media_type, &d.digest)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StoredImage {
            manifest_digest: *digest,
            manifest,
            format: doc.media_type.format(),
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
        ImageConfig::read(&self.config)
            .ok()
            .and_then(|c| c.created_at())
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
        assert_eq!(img.layers[0].compression, crate::image::Compression::Gzip);
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
