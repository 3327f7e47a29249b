//! `RUN --mount=` specs: `type=cache,target=/root/.cache,sharing=locked`, checked as BuildKit
//! checks them, so a bad value fails at plan time with its place.

use super::size::{SizeError, parse_size};

/// One RUN mount, typed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Where it appears in the RUN container (empty for a secret exposed only through `env=`).
    pub target: String,
    /// The path inside the source (bind/cache from a stage or image; secret file name).
    pub source: Option<String>,
    /// `from=`: a stage name/index or an image (bind and cache).
    pub from: Option<String>,
    /// The stage `from` names, resolved by the plan (None: an image, or no `from`).
    #[serde(skip)]
    pub from_stage: Option<usize>,
    pub readonly: bool,
    /// cache/secret/ssh id (cache ids default to the target).
    pub id: Option<String>,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    /// secret: expose as this environment variable instead of (or as well as) a file.
    pub env: Option<String>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// Why a `--mount` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("unsupported mount type {0:?} (use bind, cache, tmpfs, secret or ssh)")]
    Type(String),
    #[error("{key} needs a value in {field:?}")]
    NoValue { key: String, field: String },
    #[error("unexpected key {key:?} in {field:?}")]
    UnknownKey { key: String, field: String },
    #[error("unsupported sharing value {0:?} (shared, private or locked)")]
    Sharing(String),
    #[error("invalid mode {0:?} (octal, e.g. 0755)")]
    Mode(String),
    #[error("invalid {key} {value:?} (a number)")]
    Id { key: String, value: String },
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error("invalid boolean in {0:?} (true or false)")]
    Bool(String),
    #[error("secret mount needs id= or target=")]
    SecretId,
    #[error("from= is only valid for bind and cache mounts")]
    From,
}

/// Parses one `--mount` value (already expanded).
pub fn parse_mount(spec: &str) -> Result<Mount, MountError> {
    let fields: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let kind = match fields.iter().find_map(|f| f.strip_prefix("type=")) {
        None | Some("bind") => MountKind::Bind,
        Some("cache") => MountKind::Cache,
        Some("tmpfs") => MountKind::Tmpfs,
        Some("secret") => MountKind::Secret,
        Some("ssh") => MountKind::Ssh,
        Some(other) => return Err(MountError::Type(other.to_string())),
    };
    let mut m = Mount {
        kind,
        target: String::new(),
        source: None,
        from: None,
        from_stage: None,
        readonly: kind == MountKind::Bind,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
    };
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        apply_field(&mut m, &key, value, field)?;
    }
    finish(m)
}

fn apply_field(
    m: &mut Mount,
    key: &str,
    value: Option<&str>,
    field: &str,
) -> Result<(), MountError> {
    let need = || {
        value
            .map(str::to_string)
            .ok_or_else(|| MountError::NoValue {
                key: key.to_string(),
                field: field.to_string(),
            })
    };
    match key {
        "type" => {}
        "target" | "dst" | "destination" => m.target = need()?,
        "source" | "src" => m.source = Some(need()?),
        "from" => m.from = Some(need()?),
        "id" => m.id = Some(need()?),
        "env" => m.env = Some(need()?),
        "readonly" | "ro" => m.readonly = parse_bool(value, field)?,
        "readwrite" | "rw" => m.readonly = !parse_bool(value, field)?,
        "required" => m.required = parse_bool(value, field)?,
        "sharing" => {
            m.sharing = match need()?.as_str() {
                "shared" => Sharing::Shared,
                "private" => Sharing::Private,
                "locked" => Sharing::Locked,
                v => return Err(MountError::Sharing(v.to_string())),
            }
        }
        "mode" => {
            let v = need()?;
            m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| MountError::Mode(v.clone()))?);
        }
        "uid" | "gid" => {
            let v = need()?;
            let n = v.parse().map_err(|_| MountError::Id {
                key: key.to_string(),
                value: v.clone(),
            })?;
            if key == "uid" {
                m.uid = Some(n)
            } else {
                m.gid = Some(n)
            }
        }
        "size" => {
            let v = need()?;
            m.size = Some(parse_size(&v)?);
        }
        _ => {
            return Err(MountError::UnknownKey {
                key: key.to_string(),
                field: field.to_string(),
            });
        }
    }
    Ok(())
}

fn parse_bool(value: Option<&str>, field: &str) -> Result<bool, MountError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(MountError::Bool(field.to_string())),
    }
}

/// Defaults and required fields per type.
fn finish(mut m: Mount) -> Result<Mount, MountError> {
    match m.kind {
        MountKind::Secret => {
            let id = m.id.clone().or_else(|| {
                m.target
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            });
            let Some(id) = id else {
                return Err(MountError::SecretId);
            };
            if m.target.is_empty() && m.env.is_none() {
                m.target = format!("/run/secrets/{id}");
            }
            m.id = Some(id);
        }
        // An empty target stays empty: the step numbers its ssh mounts
        // (`/run/buildkit/ssh_agent.N`, as BuildKit does).
        MountKind::Ssh => {
            m.id.get_or_insert_with(|| "default".into());
        }
        // An empty or relative target is resolved against WORKDIR by the planner.
        MountKind::Cache => {
            m.id.get_or_insert_with(|| m.target.clone());
        }
        _ => {}
    }
    if m.from.is_some() && !matches!(m.kind, MountKind::Bind | MountKind::Cache) {
        return Err(MountError::From);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_mounts() {
        let m = parse_mount("type=cache,target=/root/.cache,sharing=locked,mode=0700").unwrap();
        assert_eq!(
            (m.kind, m.sharing, m.mode, m.id.as_deref()),
            (
                MountKind::Cache,
                Sharing::Locked,
                Some(0o700),
                Some("/root/.cache")
            )
        );
        let m = parse_mount("from=build,source=/out,target=/in").unwrap();
        assert_eq!(
            (m.kind, m.readonly, m.from.as_deref()),
            (MountKind::Bind, true, Some("build"))
        );
        let m = parse_mount("type=secret,id=tok").unwrap();
        assert_eq!(m.target, "/run/secrets/tok");
        let m = parse_mount("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn rejects_bad_mounts() {
        assert!(
            parse_mount("type=nfs,target=/x")
                .unwrap_err()
                .to_string()
                .contains("unsupported mount type")
        );
        assert!(
            parse_mount("type=cache,target")
                .unwrap_err()
                .to_string()
                .contains("target needs a value")
        );
        assert!(
            parse_mount("target=/x,colour=red")
                .unwrap_err()
                .to_string()
                .contains("unexpected key")
        );
        assert!(
            parse_mount("type=cache,target=/x,sharing=no")
                .unwrap_err()
                .to_string()
                .contains("sharing")
        );
        assert!(
            parse_mount("type=tmpfs,target=/x,from=a")
                .unwrap_err()
                .to_string()
                .contains("from=")
        );
    }
}
