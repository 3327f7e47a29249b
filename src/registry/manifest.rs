//! Manifests and indexes as the registry serves them: media types, the descriptors we need, and
//! platform selection.

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests: every type we can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (the distribution spec's own limit is 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// Raw manifest bytes with their digest and media type; the bytes are what the digest covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A content descriptor, reduced to what transfers need.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// What a manifest's bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Wraps bytes, computing their digest; the media type comes from the body when `given` is
    /// missing or generic (some registries answer `application/json`).
    pub fn from_bytes(bytes: Vec<u8>, given: Option<&str>) -> Manifest {
        let given = given
            .map(|g| g.split(';').next().unwrap_or(g).trim().to_string())
            .filter(|g| g.starts_with("application/vnd."));
        let media_type = given
            .or_else(|| {
                serde_json::from_slice::<Raw>(&bytes)
                    .ok()
                    .and_then(|r| r.media_type.clone().or_else(|| infer_type(&r)))
            })
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        Manifest {
            digest: Digest::of(&bytes),
            media_type,
            bytes,
        }
    }

    /// Parses the body as an image manifest or an index; schema 1 and unknown types are refused.
    pub fn parse(&self) -> Result<Parsed, String> {
        let raw: Raw = serde_json::from_slice(&self.bytes)
            .map_err(|e| format!("invalid manifest JSON: {e}"))?;
        if raw.schema_version != 2 {
            return Err(format!(
                "schema version {} is not supported (only schema 2 / OCI); re-push the image with a current client",
                raw.schema_version
            ));
        }
        match self.media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index {
                manifests: raw.manifests.ok_or("index without \"manifests\"")?,
            }),
            OCI_MANIFEST | DOCKER_MANIFEST => Ok(Parsed::Image {
                config: raw.config.ok_or("manifest without \"config\"")?,
                layers: raw.layers.unwrap_or_default(),
            }),
            other => Err(format!("unsupported manifest media type {other:?}")),
        }
    }
}

fn infer_type(r: &Raw) -> Option<String> {
    if r.manifests.is_some() {
        Some(OCI_INDEX.into())
    } else if r.config.is_some() {
        Some(OCI_MANIFEST.into())
    } else {
        None
    }
}

pub use crate::platform::Platform;

/// Picks the entry for `wanted` from an index; the first match wins, as in Docker.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    wanted: &Platform,
) -> Result<&'a Descriptor, String> {
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .ok_or_else(|| {
            let avail: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            avail.join(", ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(platform: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(platform.parse().unwrap()),
        }
    }

    #[test]
    fn platform_parse_and_match() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert!(p.matches(&"linux/arm64/v8".parse().unwrap()));
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches(&"linux/arm64".parse().unwrap()));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&"linux/arm/v6".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn selects_platform_or_lists_what_exists() {
        let m = vec![
            desc("linux/amd64", 1),
            desc("linux/arm/v6", 2),
            desc("linux/arm/v7", 3),
        ];
        let got = select_platform(&m, &"linux/arm/v7".parse().unwrap()).unwrap();
        assert_eq!(got.digest, Digest::of(&[3]));
        let err = select_platform(&m, &"windows/amd64".parse().unwrap()).unwrap_err();
        assert_eq!(err, "linux/amd64, linux/arm/v6, linux/arm/v7");
    }

    #[test]
    fn parses_docker_manifest_and_refuses_schema1() {
        let d = Digest::of(b"x");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"a","digest":"{d}","size":1}},"layers":[{{"mediaType":"b","digest":"{d}","size":1}}]}}"#
        );
        let m = Manifest::from_bytes(body.into_bytes(), Some("application/json"));
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        match m.parse().unwrap() {
            Parsed::Image { layers, .. } => assert_eq!(layers.len(), 1),
            other => panic!("{other:?}"),
        }
        let s1 = Manifest::from_bytes(br#"{"schemaVersion":1}"#.to_vec(), Some(DOCKER_MANIFEST));
        assert!(s1.parse().unwrap_err().contains("schema version 1"));
    }
}
