//! Image references (`alpine`, `ghcr.io/acme/app:1.4`, `host:5000/x@sha256:…`), normalised the way
//! Docker does: a missing registry means Docker Hub, a one-component Hub name gets `library/`, and a
//! reference with neither tag nor digest means `:latest`.
//!
//! Shared by the store (image names) and the registry client (where to talk to), so it lives at the
//! crate root beside [`crate::Digest`].

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry name Docker Hub references normalise to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key Docker Hub credentials have in `~/.docker/config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

const MAX_TAG_LEN: usize = 128;

/// A normalised image reference. Always has a tag or a digest (or both).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference {input:?}: {reason}")]
    Invalid { input: String, reason: &'static str },
}

impl Reference {
    /// The registry host (and port), e.g. `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => unreachable!("a Reference always has a tag or a digest"),
        }
    }

    /// The host the registry API is served from (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The key credentials for this registry have in docker's `config.json`.
    pub fn auth_key(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_AUTH_KEY
        } else {
            &self.registry
        }
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(tag, tag)?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form users type: `alpine:3.20` for `docker.io/library/alpine:3.20`.
    pub fn familiar(&self) -> String {
        let name = match (
            self.registry.as_str(),
            self.repository.strip_prefix("library/"),
        ) {
            (DOCKER_HUB, Some(short)) if !short.contains('/') => short.to_string(),
            (DOCKER_HUB, _) => self.repository.clone(),
            _ => self.name(),
        };
        self.with_suffix(name)
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason| ReferenceError::Invalid {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("the digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t, input)?;
        }
        let (registry, repository) = split_registry(name);
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        validate_registry(registry, input)?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        validate_repository(&repository, input)?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }
}

/// Docker's rule: the first component is a registry if it has a `.` or `:`, or is `localhost`.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    }
}

fn validate_registry(registry: &str, input: &str) -> Result<(), ReferenceError> {
    let ok = !registry.is_empty()
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Invalid {
            input: input.into(),
            reason: "the registry host is malformed",
        })
    }
}

/// Path components: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repo: &str, input: &str) -> Result<(), ReferenceError> {
    let bad = |reason| {
        Err(ReferenceError::Invalid {
            input: input.into(),
            reason,
        })
    };
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("repository names must be lowercase");
    }
    for comp in repo.split('/') {
        let valid_chars = comp
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        let starts_ends_alnum = comp.starts_with(|c: char| c.is_ascii_alphanumeric())
            && comp.ends_with(|c: char| c.is_ascii_alphanumeric());
        let separators_ok = !comp.contains("..")
            && !comp.contains("___")
            && !comp.contains("._")
            && !comp.contains("_.");
        if comp.is_empty() || !valid_chars || !starts_ends_alnum || !separators_ok {
            return bad(
                "a repository path component must be lowercase letters and digits, separated by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

fn validate_tag(tag: &str, input: &str) -> Result<(), ReferenceError> {
    let first_ok = tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if tag.len() <= MAX_TAG_LEN && first_ok && rest_ok {
        Ok(())
    } else {
        Err(ReferenceError::Invalid {
            input: input.into(),
            reason: "a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(r("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r("user/app:1").to_string(), "docker.io/user/app:1");
        assert_eq!(
            r("index.docker.io/library/alpine:3").to_string(),
            "docker.io/library/alpine:3"
        );
        assert_eq!(r("alpine").api_host(), "registry-1.docker.io");
        assert_eq!(r("alpine").auth_key(), "https://index.docker.io/v1/");
        assert_eq!(r("alpine:3.20").familiar(), "alpine:3.20");
        assert_eq!(r("user/app").familiar(), "user/app:latest");
    }

    #[test]
    fn registries_with_ports_tags_and_digests() {
        let d = Digest::of(b"x");
        let x = r(&format!("127.0.0.1:5000/a/b:v1@{d}"));
        assert_eq!(
            (x.registry(), x.repository(), x.tag()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
        assert_eq!(x.digest(), Some(&d));
        assert_eq!(x.manifest_selector(), d.to_string());
        let y = r("localhost:5000/app");
        assert_eq!((y.registry(), y.tag()), ("localhost:5000", Some("latest")));
        assert_eq!(r("localhost/app").registry(), "localhost");
        let z = r(&format!("ghcr.io/acme/app@{d}"));
        assert_eq!(z.tag(), None);
        assert_eq!(z.familiar(), format!("ghcr.io/acme/app@{d}"));
    }

    #[test]
    fn invalid_references_say_why() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "a//b",
            "alpine@sha256:12",
            "a/-b",
            "host:5000/",
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad:?} should be rejected"
            );
        }
        let e = "Ubuntu".parse::<Reference>().unwrap_err().to_string();
        assert!(e.contains("lowercase"), "{e}");
    }

    #[test]
    fn with_tag_replaces_tag_and_drops_digest() {
        let x = r(&format!("alpine@{}", Digest::of(b"y")))
            .with_tag("edge")
            .unwrap();
        assert_eq!(x.to_string(), "docker.io/library/alpine:edge");
        assert!(x.with_tag("bad tag").is_err());
    }
}
