//! The one reader of image documents: manifests, indexes (Docker's manifest lists) and image
//! configs, in OCI and Docker v2 schema 2 media types. Pull and push (`registry`), garbage
//! collection (`store`), stored images and their outputs (`image`) and the build all read these
//! documents here, so they accept the same media types, fields and nulls, and GC can never see
//! different references in some bytes than the pull that stored them.
//!
//! Public API:
//! - [`read`]`(bytes, hint)` → [`Document`]: the media type ([`DocumentType`]) and what the
//!   document references ([`Parsed`]: a config and layers, or child manifests); or a
//!   [`ManifestError`]. [`media_type_of`]: the type to record for bytes served with a
//!   `Content-Type`. [`select_platform`] picks an index entry (Docker's rule: the first match).
//! - [`ImageConfig::read`]: the fields of an image config kiln uses (platform, author, created,
//!   the runtime [`ContainerConfig`] with Docker's [`Healthcheck`], history, diffIDs).
//! - The media type constants and [`ImageFormat`] (OCI or Docker).
//!
//! Tolerant as Go's decoder is: a missing field, `null` and an empty list or map read the same
//! (Docker writes `"Env": null`, `"layers": null`, no `history`); unknown fields are ignored
//! (OCI's rule). Strict where a misreading would matter: `schemaVersion` 2 only, the four
//! manifest/index media types only, and, as containerd checks, a body is refused when its
//! `mediaType` disagrees with the type it was served or referenced as, or when it carries the
//! other kind's fields (`manifests` in a manifest, `config`/`layers` in an index).
//!
//! Built on `oci-spec` where its types fit (history entries). Its manifest, descriptor and
//! config types do not: they refuse `"layers": null` and configs without `os`, keep diffIDs as
//! strings, and have no place for Docker's `Healthcheck`, `OnBuild` and `Shell`.
//!
//! Depends on `digest` and `platform` only: it is the bottom of the module graph.

mod config;
mod document;

pub use config::{ContainerConfig, Healthcheck, ImageConfig};
pub use document::{
    Descriptor, Document, DocumentType, Parsed, available_platforms, media_type_of, read,
    select_platform,
};

use serde::{Deserialize, Deserializer, Serialize};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header for manifest requests: every type [`read`] accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (the distribution spec's own limit is 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// Manifest flavour: OCI (default) or Docker v2 schema 2 (for old registries, like buildah's
/// `--format docker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Oci,
    Docker,
}

impl ImageFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_MANIFEST,
            ImageFormat::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_CONFIG,
            ImageFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// The format a manifest media type belongs to.
    pub fn of_manifest(media_type: &str) -> Option<ImageFormat> {
        match media_type {
            OCI_MANIFEST => Some(ImageFormat::Oci),
            DOCKER_MANIFEST => Some(ImageFormat::Docker),
            _ => None,
        }
    }
}

/// Why bytes are not a manifest or index kiln can read. Says what is wrong with the document;
/// the caller adds which document it is (registry and reference, or digest in the store).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid manifest JSON")]
    Json(#[source] serde_json::Error),
    #[error(
        "schema version {0} is not supported (only schema 2 / OCI); re-push the image with a \
         current client"
    )]
    SchemaVersion(u32),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("the document says it is {body:?} but was served or referenced as {given:?}")]
    MediaTypeMismatch { body: String, given: String },
    #[error("{media_type} document carries {field:?}, which belongs to the other kind")]
    WrongFields {
        media_type: &'static str,
        field: &'static str,
    },
    #[error("neither a manifest nor an index: it has no mediaType, config or manifests")]
    UnknownKind,
    #[error("manifest without \"config\"")]
    MissingConfig,
}

/// Why bytes are not an image config kiln can read.
#[derive(Debug, thiserror::Error)]
#[error("not a valid image config")]
pub struct ConfigError(#[source] pub serde_json::Error);

/// For `#[serde(default, deserialize_with = "null_default")]`: `null` reads as the default,
/// as Go reads a `nil` slice or map.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use serde_json::{Value, json};

    fn desc(media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": Digest::of(media_type.as_bytes()), "size": 1})
    }

    /// Which kind a read gave, or the name of the error variant.
    fn outcome(body: &Value, hint: Option<&str>) -> String {
        match read(&serde_json::to_vec(body).unwrap(), hint) {
            Ok(doc) => match doc.parsed {
                Parsed::Image { layers, .. } => {
                    format!(
                        "image {} ({} layers)",
                        doc.media_type.as_str(),
                        layers.len()
                    )
                }
                Parsed::Index { manifests } => {
                    format!(
                        "index {} ({} entries)",
                        doc.media_type.as_str(),
                        manifests.len()
                    )
                }
            },
            Err(e) => format!("{e:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap()
                .to_string(),
        }
    }

    #[test]
    fn accepts_the_four_document_types_and_refuses_the_rest() {
        let cfg = desc(OCI_CONFIG);
        let layer = desc("application/vnd.oci.image.layer.v1.tar+gzip");
        let entry = desc(OCI_MANIFEST);
        let manifest = |mt: Option<&str>| {
            let mut v = json!({"schemaVersion": 2, "config": cfg, "layers": [layer]});
            if let Some(mt) = mt {
                v["mediaType"] = json!(mt);
            }
            v
        };
        let index = |mt: Option<&str>| {
            let mut v = json!({"schemaVersion": 2, "manifests": [entry]});
            if let Some(mt) = mt {
                v["mediaType"] = json!(mt);
            }
            v
        };
        let schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        let artifact = "application/vnd.oci.artifact.manifest.v1+json";
        #[rustfmt::skip]
        let cases: Vec<(&str, Value, Option<&str>, String)> = vec![
            ("OCI manifest", manifest(Some(OCI_MANIFEST)), None, format!("image {OCI_MANIFEST} (1 layers)")),
            ("Docker manifest", manifest(Some(DOCKER_MANIFEST)), None, format!("image {DOCKER_MANIFEST} (1 layers)")),
            ("OCI index", index(Some(OCI_INDEX)), None, format!("index {OCI_INDEX} (1 entries)")),
            ("Docker list", index(Some(DOCKER_LIST)), None, format!("index {DOCKER_LIST} (1 entries)")),
            ("type from the header", manifest(None), Some(DOCKER_MANIFEST), format!("image {DOCKER_MANIFEST} (1 layers)")),
            ("header with parameters", index(None), Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"), format!("index {DOCKER_LIST} (1 entries)")),
            ("generic header ignored", manifest(Some(DOCKER_MANIFEST)), Some("application/json"), format!("image {DOCKER_MANIFEST} (1 layers)")),
            ("untyped manifest", manifest(None), None, format!("image {OCI_MANIFEST} (1 layers)")),
            ("untyped index", index(None), None, format!("index {OCI_INDEX} (1 entries)")),
            ("null layers", json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": cfg, "layers": null}), None, format!("image {DOCKER_MANIFEST} (0 layers)")),
            ("missing layers", json!({"schemaVersion": 2, "config": cfg}), None, format!("image {OCI_MANIFEST} (0 layers)")),
            ("null manifests", json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": null}), None, format!("index {OCI_INDEX} (0 entries)")),
            ("null descriptor type", json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": null, "digest": Digest::of(b""), "size": 0}}), None, format!("image {OCI_MANIFEST} (0 layers)")),
            ("schema 1", json!({"schemaVersion": 1, "name": "x", "fsLayers": []}), Some(schema1), "SchemaVersion".into()),
            ("no schema version", json!({"mediaType": OCI_MANIFEST, "config": cfg}), None, "SchemaVersion".into()),
            ("null schema version", json!({"schemaVersion": null, "mediaType": OCI_MANIFEST, "config": cfg}), None, "SchemaVersion".into()),
            ("OCI artifact manifest", manifest(Some(artifact)), None, "UnsupportedMediaType".into()),
            ("image config as a manifest", json!({"schemaVersion": 2, "mediaType": OCI_CONFIG, "config": cfg}), None, "UnsupportedMediaType".into()),
            ("served as schema 1", manifest(None), Some(schema1), "UnsupportedMediaType".into()),
            ("body and header disagree", manifest(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST), "MediaTypeMismatch".into()),
            ("index served as a manifest", index(Some(OCI_INDEX)), Some(OCI_MANIFEST), "MediaTypeMismatch".into()),
            ("index typed as a manifest", index(None), Some(OCI_MANIFEST), "WrongFields".into()),
            ("manifest typed as an index", manifest(None), Some(OCI_INDEX), "WrongFields".into()),
            ("both kinds' fields", json!({"schemaVersion": 2, "config": cfg, "manifests": [entry]}), None, "UnknownKind".into()),
            ("neither kind's fields", json!({"schemaVersion": 2}), None, "UnknownKind".into()),
            ("manifest without config", json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "layers": [layer]}), None, "MissingConfig".into()),
            ("sha512 descriptor", json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG, "digest": format!("sha512:{}", "a".repeat(128)), "size": 1}}), None, "Json".into()),
            ("not JSON", json!("a string"), None, "Json".into()),
        ];
        for (name, body, hint, want) in cases {
            assert_eq!(outcome(&body, hint), want, "{name}");
        }
    }

    #[test]
    fn media_type_of_prefers_a_specific_header_then_the_body_then_the_fields() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            media_type_of(body, Some("application/json")),
            DOCKER_MANIFEST
        );
        assert_eq!(media_type_of(body, Some(OCI_MANIFEST)), OCI_MANIFEST);
        assert_eq!(media_type_of(br#"{"manifests":[]}"#, None), OCI_INDEX);
        assert_eq!(media_type_of(b"junk", None), OCI_MANIFEST);
    }

    #[test]
    fn configs_read_dockers_nulls_as_empty() {
        let d = Digest::of(b"tar");
        let docker = json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05.123456789Z",
            "config": {"Env": null, "Cmd": null, "Labels": null, "ExposedPorts": null,
                       "Volumes": {"/data": {}}, "OnBuild": null, "Healthcheck": {"Test": null, "Retries": null},
                       "Hostname": "", "AttachStdin": false},
            "history": null,
            "rootfs": {"type": "layers", "diff_ids": [d]},
        });
        let c = ImageConfig::read(&serde_json::to_vec(&docker).unwrap()).unwrap();
        let run = c.config.as_ref().unwrap();
        assert_eq!(run.env, None);
        assert_eq!(run.volumes.as_ref().unwrap().len(), 1);
        assert_eq!(run.healthcheck, Some(Healthcheck::default()));
        assert!(c.history.is_empty());
        assert_eq!(c.rootfs.diff_ids, vec![d]);
        assert_eq!(c.created_at().unwrap().timestamp(), 1_704_164_645);

        let bare =
            ImageConfig::read(br#"{"rootfs": null, "config": null, "created": "yesterday"}"#)
                .unwrap();
        assert!(bare.rootfs.diff_ids.is_empty() && bare.config.is_none());
        assert_eq!(bare.created_at(), None);
        assert!(ImageConfig::read(br#"{"rootfs": {"diff_ids": ["md5:x"]}}"#).is_err());
    }
}
