//! Where credentials come from, in order: explicit (`--creds`), `$REGISTRY_AUTH_FILE`, podman's
//! `$XDG_RUNTIME_DIR/containers/auth.json`, docker's `config.json` (`auths`, `credHelpers`,
//! `credsStore`). `kiln login` stores into docker's `config.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};

use super::auth::Credential;
use super::error::RegistryError;

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// The auth files to consult before docker's, in order.
fn podman_auth_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        out.push(Path::new(&d).join("containers/auth.json"));
    }
    out
}

/// Finds stored credentials for `auth_key` (see [`crate::Reference::auth_key`]); `None` means
/// anonymous. A broken helper or file is an error, not silently anonymous.
pub fn lookup(auth_key: &str) -> Result<Option<Credential>, RegistryError> {
    let files: Vec<PathBuf> = podman_auth_files()
        .into_iter()
        .chain(docker_config_path())
        .collect();
    lookup_in(&files, auth_key)
}

/// The first of `files` (missing ones skipped) that has credentials for `auth_key` wins.
fn lookup_in(files: &[PathBuf], auth_key: &str) -> Result<Option<Credential>, RegistryError> {
    for path in files.iter().filter(|p| p.is_file()) {
        let file = std::fs::File::open(path).map_err(|source| RegistryError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), auth_key)
        {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Some(Credential::Basic { username, password }));
            }
            Ok(DockerCredential::IdentityToken(t)) => {
                return Ok(Some(Credential::IdentityToken(t)));
            }
            Err(CredentialRetrievalError::NoCredentialConfigured) => continue,
            Err(source) => {
                return Err(RegistryError::CredentialEntry {
                    path: path.clone(),
                    key: auth_key.to_string(),
                    source,
                });
            }
        }
    }
    Ok(None)
}

/// Stores `user:password` for `auth_key` in docker's config.json (created 0600 if missing;
/// other entries are kept). Written to a temporary file and renamed, so a crash never leaves a
/// half-written config.
pub fn store(path: &Path, auth_key: &str, cred: &Credential) -> Result<(), RegistryError> {
    let Credential::Basic { username, password } = cred else {
        return Err(RegistryError::Credentials(
            "only user/password credentials can be stored".into(),
        ));
    };
    let mut config = read_config(path)?;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths = config
        .as_object_mut()
        .ok_or_else(|| not_object(path))?
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    auths
        .as_object_mut()
        .ok_or_else(|| not_object(path))?
        .insert(auth_key.to_string(), serde_json::json!({ "auth": encoded }));
    write_config(path, &config)
}

/// Removes the entry for `auth_key`; `Ok(false)` when there was none.
pub fn erase(path: &Path, auth_key: &str) -> Result<bool, RegistryError> {
    if !path.is_file() {
        return Ok(false);
    }
    let mut config = read_config(path)?;
    let removed = config
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(auth_key))
        .is_some();
    if removed {
        write_config(path, &config)?;
    }
    Ok(removed)
}

fn not_object(path: &Path) -> RegistryError {
    RegistryError::Credentials(format!(
        "{} is not a JSON object; fix or move it away",
        path.display()
    ))
}

fn read_config(path: &Path) -> Result<serde_json::Value, RegistryError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::CredentialsFile {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(source) => Err(RegistryError::Io {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

fn write_config(path: &Path, config: &serde_json::Value) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    // NamedTempFile is created 0600, which is what a file holding passwords needs.
    serde_json::to_writer_pretty(&mut tmp, config).map_err(|e| io(e.into()))?;
    tmp.write_all(b"\n").map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_takes_the_first_file_with_an_entry_and_reports_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, missing) = (
            dir.path().join("auth.json"),
            dir.path().join("config.json"),
            dir.path().join("nope.json"),
        );
        // "YTph" = a:a, "Yjpi" = b:b
        std::fs::write(&a, r#"{"auths":{"only-a.io":{"auth":"YTph"}}}"#).unwrap();
        std::fs::write(
            &b,
            r#"{"auths":{"only-a.io":{"auth":"Yjpi"},"r.io":{"auth":"Yjpi"}}}"#,
        )
        .unwrap();
        let files = [missing, a.clone(), b.clone()];
        let user = |c: Option<Credential>| match c {
            Some(Credential::Basic { username, .. }) => username,
            other => format!("{other:?}"),
        };
        assert_eq!(user(lookup_in(&files, "only-a.io").unwrap()), "a");
        assert_eq!(user(lookup_in(&files, "r.io").unwrap()), "b");
        assert_eq!(lookup_in(&files, "none.io").unwrap(), None);
        std::fs::write(&a, r#"{"auths":{"r.io":{"auth":"!!notbase64"}}}"#).unwrap();
        let err = lookup_in(&files, "r.io").unwrap_err().to_string();
        assert!(err.contains("auth.json") && err.contains("r.io"), "{err}");
    }

    #[test]
    fn store_then_read_back_then_erase_keeps_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"credsStore":""}"#,
        )
        .unwrap();
        let cred = Credential::parse_user_pass("alice:pw:with:colons").unwrap();
        store(&path, "127.0.0.1:5000", &cred).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let got = docker_credential::get_credential_from_reader(f, "127.0.0.1:5000").unwrap();
        assert_eq!(
            got,
            DockerCredential::UsernamePassword("alice".into(), "pw:with:colons".into())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "config.json must not be readable by others"
        );
        assert!(erase(&path, "127.0.0.1:5000").unwrap());
        assert!(!erase(&path, "127.0.0.1:5000").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("other.io") && !text.contains("127.0.0.1:5000"));
    }
}
