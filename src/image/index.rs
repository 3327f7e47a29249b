//! Multi-platform images: [`StoredIndex`] (an OCI image index, or a Docker manifest list with
//! `--format docker`, whose entries are single-platform images in the store) and [`Stored`],
//! what a name in the store points at: one image or an index.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::manifest::canonical;
use super::media::{ImageFormat, Platform};
use super::stored::StoredImage;
use super::{ImageError, Result};
use crate::digest::Digest;
use crate::manifest::{self, DOCKER_LIST, ImageConfig, OCI_INDEX, Parsed};
use crate::store::Store;

/// One entry of an index: the platform it serves and its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMember {
    pub platform: Platform,
    pub image: StoredImage,
}

/// An index in the store, with every member image read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIndex {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub format: ImageFormat,
    pub members: Vec<IndexMember>,
}

impl StoredIndex {
    /// Writes the index of `images` (each already in the store, all in `format`) to the
    /// store, unnamed. Each entry's platform is the one its config names, else `wanted`'s.
    pub fn create(
        store: &Store,
        format: ImageFormat,
        images: Vec<(Platform, StoredImage)>,
    ) -> Result<StoredIndex> {
        let members: Vec<IndexMember> = images
            .into_iter()
            .map(|(wanted, image)| IndexMember {
                platform: config_platform(&image).unwrap_or(wanted),
                image,
            })
            .collect();
        let bytes = index_json(format, &members)?;
        let digest = store.put_blob(&bytes)?;
        Ok(StoredIndex {
            digest,
            bytes,
            format,
            members,
        })
    }

    /// The OCI (or Docker) index of these members, with each member's manifest converted to
    /// `format`: the bytes and digest, and the member manifests (bytes, digest) in entry order.
    #[allow(clippy::type_complexity)]
    pub fn in_format(
        &self,
        format: ImageFormat,
    ) -> Result<(Vec<u8>, Digest, Vec<(Vec<u8>, Digest)>)> {
        let manifests = self
            .members
            .iter()
            .map(|m| m.image.manifest_in(format))
            .collect::<Result<Vec<_>>>()?;
        if format == self.format {
            return Ok((self.bytes.clone(), self.digest, manifests));
        }
        let converted: Vec<IndexMember> = self
            .members
            .iter()
            .zip(&manifests)
            .map(|(m, (bytes, digest))| IndexMember {
                platform: m.platform.clone(),
                image: StoredImage {
                    manifest_digest: *digest,
                    manifest: bytes.clone(),
                    format,
                    ..m.image.clone()
                },
            })
            .collect();
        let bytes = index_json(format, &converted)?;
        let digest = Digest::of(&bytes);
        Ok((bytes, digest, manifests))
    }

    /// The member for `platform`, or an error naming the platforms the index has.
    pub fn member_for(&self, platform: &Platform) -> Result<&StoredImage> {
        self.members
            .iter()
            .find(|m| platform.matches(&m.platform))
            .map(|m| &m.image)
            .ok_or_else(|| ImageError::NoPlatform {
                digest: self.digest,
                wanted: platform.to_string(),
                available: self.platforms(),
            })
    }

    /// `linux/amd64, linux/arm64`.
    pub fn platforms(&self) -> String {
        let list: Vec<String> = self
            .members
            .iter()
            .map(|m| m.platform.to_string())
            .collect();
        list.join(", ")
    }

    /// Bytes of every distinct config and layer blob of the members.
    pub fn size(&self) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for m in &self.members {
            let i = &m.image;
            if seen.insert(i.config_digest) {
                total += i.config.len() as u64;
            }
            for l in &i.layers {
                if seen.insert(l.digest) {
                    total += l.size;
                }
            }
        }
        total
    }

    /// The newest member's `created` time.
    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.members.iter().filter_map(|m| m.image.created()).max()
    }
}

/// What a name in the store points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Image(StoredImage),
    Index(StoredIndex),
}

impl Stored {
    /// Reads the manifest or index `digest` from the store; an index with every member (a
    /// member missing from the store is an error: only built or fully pulled indexes are named).
    pub fn load(store: &Store, digest: &Digest) -> Result<Stored> {
        let bytes = store.read_blob(digest)?;
        let bad = |source| ImageError::BadManifest {
            digest: *digest,
            source,
        };
        let doc = manifest::read(&bytes, None).map_err(bad)?;
        let Parsed::Index { manifests } = doc.parsed else {
            return Ok(Stored::Image(StoredImage::load(store, digest)?));
        };
        let members = manifests
            .iter()
            .map(|d| {
                let image = StoredImage::load(store, &d.digest)?;
                let platform = d
                    .platform
                    .clone()
                    .or_else(|| config_platform(&image))
                    .unwrap_or_else(|| Platform {
                        os: "unknown".into(),
                        architecture: "unknown".into(),
                        variant: None,
                    });
                Ok(IndexMember { platform, image })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Stored::Index(StoredIndex {
            digest: *digest,
            format: doc.media_type.format(),
            bytes,
            members,
        }))
    }

    /// The manifest or index digest (what a registry and the store name it by).
    pub fn digest(&self) -> Digest {
        match self {
            Stored::Image(i) => i.manifest_digest,
            Stored::Index(i) => i.digest,
        }
    }

    /// The image ID, as `docker images` shows it: the config digest of an image, the index
    /// digest of an index (as docker's containerd store shows a multi-platform image).
    pub fn id(&self) -> Digest {
        match self {
            Stored::Image(i) => i.config_digest,
            Stored::Index(i) => i.digest,
        }
    }

    /// The manifest or index bytes as stored.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Stored::Image(i) => &i.manifest,
            Stored::Index(i) => &i.bytes,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Stored::Image(i) => i.size(),
            Stored::Index(i) => i.size(),
        }
    }

    pub fn created(&self) -> Option<DateTime<Utc>> {
        match self {
            Stored::Image(i) => i.created(),
            Stored::Index(i) => i.created(),
        }
    }

    /// The single-platform image for `platform`: the image itself, or the index's member
    /// (an error lists what the index has).
    pub fn for_platform(&self, platform: &Platform) -> Result<&StoredImage> {
        match self {
            Stored::Image(i) => Ok(i),
            Stored::Index(i) => i.member_for(platform),
        }
    }
}

/// The platform an image's config names, when it names os and architecture.
fn config_platform(image: &StoredImage) -> Option<Platform> {
    let c = ImageConfig::read(&image.config).ok()?;
    Some(Platform {
        os: c.os?,
        architecture: c.architecture?,
        variant: c.variant,
    })
}

/// The index of `members` in `format`'s media types: each entry a manifest descriptor with
/// the member's platform; canonical bytes.
fn index_json(format: ImageFormat, members: &[IndexMember]) -> Result<Vec<u8>> {
    let entries: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            json!({
                "mediaType": m.image.format.manifest_media_type(),
                "digest": m.image.manifest_digest.to_string(),
                "size": m.image.manifest.len(),
                "platform": m.platform,
            })
        })
        .collect();
    let media_type = match format {
        ImageFormat::Oci => OCI_INDEX,
        ImageFormat::Docker => DOCKER_LIST,
    };
    Ok(canonical(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageBuilder, Layer};

    fn image(store: &Store, arch: &str, format: ImageFormat) -> StoredImage {
        let p = Platform::parse(&format!("linux/{arch}")).unwrap();
        let mut b = ImageBuilder::new(p, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let blob = store.put_blob(arch.as_bytes()).unwrap();
        b.add_layer(
            Layer {
                digest: blob,
                size: arch.len() as u64,
                diff_id: Digest::of(arch.as_bytes()),
                compression: crate::image::Compression::Gzip,
            },
            "COPY",
        );
        let blobs = b.commit(store, format, &[]).unwrap();
        StoredImage::load(store, &blobs.manifest_digest).unwrap()
    }

    #[test]
    fn an_index_names_each_members_platform_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (format, media_type) in [
            (ImageFormat::Oci, OCI_INDEX),
            (ImageFormat::Docker, DOCKER_LIST),
        ] {
            let amd = image(&store, "amd64", format);
            let arm = image(&store, "arm64", format);
            let want = |s: &str| Platform::parse(s).unwrap();
            let index = StoredIndex::create(
                &store,
                format,
                vec![
                    (want("linux/amd64"), amd.clone()),
                    (want("linux/arm64"), arm.clone()),
                ],
            )
            .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
            assert_eq!(v["mediaType"], media_type);
            assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
            assert_eq!(v["manifests"][0]["digest"], amd.manifest_digest.to_string());
            assert_eq!(v["manifests"][0]["mediaType"], format.manifest_media_type());
            let Stored::Index(back) = Stored::load(&store, &index.digest).unwrap() else {
                panic!("an index reads back as an index");
            };
            assert_eq!(back, index);
            assert_eq!(back.member_for(&want("linux/arm64/v8")).unwrap(), &arm);
            let err = back
                .member_for(&want("linux/s390x"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
            // Converted, the members' manifests change and so does the index.
            let other = match format {
                ImageFormat::Oci => ImageFormat::Docker,
                ImageFormat::Docker => ImageFormat::Oci,
            };
            let (bytes, digest, manifests) = back.in_format(other).unwrap();
            assert_ne!(digest, index.digest);
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["manifests"][0]["digest"], manifests[0].1.to_string());
            assert_eq!(v["manifests"][0]["mediaType"], other.manifest_media_type());
        }
    }
}
