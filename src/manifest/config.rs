//! Image configs (`application/vnd.oci.image.config.v1+json` and Docker's
//! `application/vnd.docker.container.image.v1+json`, one schema): the fields kiln uses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::{ConfigError, null_default};
use crate::digest::Digest;

/// An image config as read. Every field may be missing or `null`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub variant: Option<String>,
    pub author: Option<String>,
    /// As written; see [`ImageConfig::created_at`].
    pub created: Option<String>,
    pub config: Option<ContainerConfig>,
    #[serde(default, deserialize_with = "null_default")]
    pub history: Vec<oci_spec::image::History>,
    #[serde(default, deserialize_with = "null_default")]
    pub rootfs: RootFs,
}

/// The config's `rootfs`: the diffIDs of the layers, bottom first.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<Digest>,
}

/// The runtime part of a config (`config`), as Docker and OCI write it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub user: Option<String>,
    pub exposed_ports: Option<BTreeMap<String, IgnoredAny>>,
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: Option<BTreeMap<String, IgnoredAny>>,
    pub working_dir: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub on_build: Option<Vec<String>>,
    pub shell: Option<Vec<String>>,
}

/// Docker's HEALTHCHECK (no OCI equivalent), durations in nanoseconds as Docker stores them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(default, deserialize_with = "null_default")]
    pub test: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub interval: i64,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub timeout: i64,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub start_period: i64,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub start_interval: i64,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl ImageConfig {
    /// Reads a config blob.
    pub fn read(bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
        serde_json::from_slice(bytes).map_err(ConfigError)
    }

    /// The `created` time, when there is one and it is RFC 3339 (an unreadable time is not a
    /// reason to refuse an image).
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        let created = self.created.as_deref()?;
        DateTime::parse_from_rfc3339(created)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}
