//! Manifests and indexes: which media types are read, and what they reference.

use serde::Deserialize;

use super::{
    DOCKER_LIST, DOCKER_MANIFEST, ImageFormat, ManifestError, OCI_INDEX, OCI_MANIFEST, null_default,
};
use crate::digest::Digest;
use crate::platform::Platform;

/// A content descriptor, reduced to what kiln uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default, deserialize_with = "null_default")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// What a manifest or index references.
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

/// The four document types kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    OciManifest,
    DockerManifest,
    OciIndex,
    DockerList,
}

impl DocumentType {
    const ALL: [DocumentType; 4] = [
        DocumentType::OciManifest,
        DocumentType::DockerManifest,
        DocumentType::OciIndex,
        DocumentType::DockerList,
    ];

    pub fn parse(media_type: &str) -> Option<DocumentType> {
        DocumentType::ALL
            .into_iter()
            .find(|t| t.as_str() == media_type)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocumentType::OciManifest => OCI_MANIFEST,
            DocumentType::DockerManifest => DOCKER_MANIFEST,
            DocumentType::OciIndex => OCI_INDEX,
            DocumentType::DockerList => DOCKER_LIST,
        }
    }

    pub fn format(self) -> ImageFormat {
        match self {
            DocumentType::OciManifest | DocumentType::OciIndex => ImageFormat::Oci,
            DocumentType::DockerManifest | DocumentType::DockerList => ImageFormat::Docker,
        }
    }

    pub fn is_index(self) -> bool {
        matches!(self, DocumentType::OciIndex | DocumentType::DockerList)
    }
}

/// A manifest or index as read: its type and what it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub media_type: DocumentType,
    pub parsed: Parsed,
}

/// The fields of either kind; `Option` so that missing and `null` read alike.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// Only `application/vnd.…` types say anything: registries also answer `application/json`
/// or `text/plain`, and index entries may have no media type at all.
fn meaningful(media_type: Option<&str>) -> Option<&str> {
    media_type
        .map(|t| t.split(';').next().unwrap_or(t).trim())
        .filter(|t| t.starts_with("application/vnd."))
}

impl Raw {
    /// The body's own type, else the one it was served or referenced as, else what its
    /// fields say.
    fn media_type(&self, hint: Option<&str>) -> Result<String, ManifestError> {
        let body = self.media_type.as_deref().filter(|t| !t.is_empty());
        match (body, meaningful(hint)) {
            (Some(body), Some(given)) if body != given => Err(ManifestError::MediaTypeMismatch {
                body: body.to_string(),
                given: given.to_string(),
            }),
            (Some(t), _) | (None, Some(t)) => Ok(t.to_string()),
            // An empty `manifests` says nothing (Go writes `[]` for a nil slice too).
            (None, None) => match (&self.manifests, &self.config) {
                (Some(_), None) => Ok(OCI_INDEX.to_string()),
                (m, Some(_)) if m.as_ref().is_none_or(Vec::is_empty) => {
                    Ok(OCI_MANIFEST.to_string())
                }
                _ => Err(ManifestError::UnknownKind),
            },
        }
    }
}

/// The media type to record for manifest bytes served as `given` (a `Content-Type`, or an
/// index entry's type): `given` when it is specific, else the body's, else what the fields say,
/// else OCI's manifest type (and [`read`] will say what is wrong).
pub fn media_type_of(bytes: &[u8], given: Option<&str>) -> String {
    if let Some(given) = meaningful(given) {
        return given.to_string();
    }
    serde_json::from_slice::<Raw>(bytes)
        .ok()
        .and_then(|raw| raw.media_type(None).ok())
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}

/// Reads a manifest or index. `hint` is the type it was served or referenced as, if any.
pub fn read(bytes: &[u8], hint: Option<&str>) -> Result<Document, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
    let version = raw.schema_version.unwrap_or(0);
    if version != 2 {
        return Err(ManifestError::SchemaVersion(version));
    }
    let name = raw.media_type(hint)?;
    let media_type = DocumentType::parse(&name).ok_or(ManifestError::UnsupportedMediaType(name))?;
    let wrong = |field| ManifestError::WrongFields {
        media_type: media_type.as_str(),
        field,
    };
    let parsed = if media_type.is_index() {
        if raw.config.is_some() {
            return Err(wrong("config"));
        }
        if raw.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(wrong("layers"));
        }
        Parsed::Index {
            manifests: raw.manifests.unwrap_or_default(),
        }
    } else {
        if raw.manifests.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(wrong("manifests"));
        }
        Parsed::Image {
            config: raw.config.ok_or(ManifestError::MissingConfig)?,
            layers: raw.layers.unwrap_or_default(),
        }
    };
    Ok(Document { media_type, parsed })
}

/// Picks the entry for `wanted` from an index; the first match wins, as in Docker.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    wanted: &Platform,
) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
}

/// The platforms an index has entries for, for an error message (`none` when it names none).
pub fn available_platforms(manifests: &[Descriptor]) -> String {
    let have: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if have.is_empty() {
        "none".to_string()
    } else {
        have.join(", ")
    }
}
