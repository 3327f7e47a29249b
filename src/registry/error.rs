//! What can go wrong talking to a registry, always naming the registry and what to do.

use crate::digest::Digest;

/// Every failure of the registry client. Messages name the registry, the HTTP status where there
/// is one, and what the user can do. No message ever contains a credential or a token.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: {what}: HTTP {status}{detail}; {hint}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "{registry}: {what}: {message}; check the address and the network, or pass \
         --tls-verify=false / --insecure-registry {registry} for a registry without valid TLS"
    )]
    Transport {
        registry: String,
        what: String,
        message: String,
    },
    #[error("{registry}: authentication failed: {message}")]
    Auth { registry: String, message: String },
    #[error(
        "{registry}: {what}: content does not match its digest (expected {expected}, got {actual}); \
         nothing was stored — the registry or a proxy served corrupt data, retry or report it"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "{registry}: {what}: size does not match (expected {expected} bytes, got {actual}); \
         nothing was stored"
    )]
    SizeMismatch {
        registry: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{registry}: {what}: {message}")]
    Manifest {
        registry: String,
        what: String,
        message: String,
    },
    #[error("{registry}: {what}")]
    Body {
        registry: String,
        what: String,
        #[source]
        source: BodyError,
    },
    #[error("{registry}: {what}: not a manifest or index kiln can read")]
    UnreadableManifest {
        registry: String,
        what: String,
        #[source]
        source: crate::manifest::ManifestError,
    },
    #[error(
        "{reference}: no image for platform {wanted} (available: {available}); pass --platform"
    )]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error(
        "credentials: {}: the entry for {key} could not be read; fix or remove it",
        path.display()
    )]
    CredentialEntry {
        path: std::path::PathBuf,
        key: String,
        #[source]
        source: docker_credential::CredentialRetrievalError,
    },
    #[error("credentials: {} is not valid JSON; fix or move it away", path.display())]
    CredentialsFile {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("CA file {} cannot be used", path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: reqwest::Error,
    },
}

/// Why a small response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the response body")]
    Read(#[source] reqwest::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl RegistryError {
    /// Whether trying again (with a fresh upload session) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }
}

pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status)
}

/// What a user can do about an HTTP status.
pub(crate) fn hint_for(status: u16) -> &'static str {
    match status {
        401 => "check the credentials (kiln login REGISTRY, or --creds user:pass)",
        403 => "the account has no access to this repository; check its permissions",
        404 => "check the repository name, tag or digest",
        413 => "the registry or a proxy rejected the request size; try --chunk-size 4MiB",
        416 => "the registry rejected the chunk; try a smaller --chunk-size",
        429 => "the registry is rate-limiting; wait and retry",
        400 | 405 | 415 => "the registry rejected the request as invalid",
        s if s >= 500 => "the registry failed; retry later",
        _ => "unexpected answer from the registry",
    }
}

/// The `code: message` pairs of a distribution error body, shortened; bodies that are not JSON
/// are left out (they can be whole HTML pages).
pub(crate) fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        return String::new();
    };
    let parts: Vec<String> = b
        .errors
        .iter()
        .take(3)
        .map(|e| {
            let mut s = format!("{}: {}", e.code, e.message);
            s.truncate(200);
            s
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_reads_distribution_errors_and_ignores_html() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        assert_eq!(
            error_detail(body),
            " (BLOB_UNKNOWN: blob unknown to registry)"
        );
        assert_eq!(error_detail(b"<html>oops</html>"), "");
    }

    #[test]
    fn transient_statuses() {
        assert!(is_transient_status(429));
        assert!(is_transient_status(503));
        assert!(!is_transient_status(404));
        assert!(!is_transient_status(401));
    }

    #[test]
    fn no_registry_error_repeats_its_cause() {
        use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};
        assert_each_cause_once(
            &RegistryError::Io {
                what: "reading x".into(),
                source: io(),
            },
            CAUSE,
        );
        let json = || serde_json::from_slice::<u8>(b"{").unwrap_err();
        let text = json().to_string();
        assert_each_cause_once(
            &RegistryError::CredentialsFile {
                path: "/a/auth.json".into(),
                source: json(),
            },
            &text,
        );
        let manifest = crate::manifest::read(b"{", None).unwrap_err();
        let text = std::error::Error::source(&manifest).unwrap().to_string();
        assert_each_cause_once(
            &RegistryError::UnreadableManifest {
                registry: "r.io".into(),
                what: "manifest r.io/a:1".into(),
                source: manifest,
            },
            &text,
        );
    }
}
