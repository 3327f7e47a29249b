//! The argument groups several commands share, declared once so their flags, help texts and
//! checks cannot drift apart, and the value parsers of flags. Each group parses its raw flag
//! values into the library's types (`build_args`, `platform`, `client`, `resolve`): commands
//! read typed values, not strings. Commands import this module and [`super::env`] (and the
//! progress renderer), never each other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{ClientConfig, Credential, Registry, creds};

/// Options every subcommand understands.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Where kiln keeps its store (default: $KILN_ROOT, else $XDG_DATA_HOME/kiln, or
    /// /var/lib/kiln for root).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log filter for diagnostics on stderr (e.g. `debug`, `kiln::registry=trace`).
    #[arg(long, global = true, env = "KILN_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

// ---- the Dockerfile and its arguments (build, plan) ------------------------------------------

/// Which Dockerfile, with which arguments, for which stage and platform: `kiln build` and
/// `kiln plan` take the same four flags.
#[derive(Debug, clap::Args)]
pub struct DockerfileArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/Containerfile); `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (`NAME=VALUE`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform(s), os/arch[/variant] (default: this machine's): picks base images
    /// from multi-platform indexes and sets the image's os/architecture. A comma-separated
    /// list (`linux/amd64,linux/arm64`) builds one image per platform and names their index.
    /// RUN for another architecture needs qemu-user-static + binfmt-support.
    #[arg(long, value_name = "PLATFORM[,…]")]
    pub platform: Option<String>,
}

impl DockerfileArgs {
    /// `--build-arg` values; a bare `NAME` takes its value from kiln's environment.
    pub fn build_args(&self) -> anyhow::Result<BTreeMap<String, String>> {
        crate::plan::parse_build_args(&self.build_args, |k| std::env::var(k).ok())
            .map_err(|e| FlagValueError::BuildArg(e).into())
    }

    /// `--platform`: every platform of the list, each checked, duplicates dropped (the
    /// first spelling wins); empty when not given.
    pub fn platforms(&self) -> anyhow::Result<Vec<Platform>> {
        let Some(list) = self.platform.as_deref() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Platform> = Vec::new();
        for word in list.split(',').map(str::trim) {
            let p = Platform::parse(word).context("--platform")?;
            p.check_known().context("--platform")?;
            if !out.iter().any(|q| q.normalized() == p.normalized()) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// `--platform` for a command that plans for one platform, when given.
    pub fn platform(&self) -> anyhow::Result<Option<Platform>> {
        let mut all = self.platforms()?;
        anyhow::ensure!(
            all.len() <= 1,
            "--platform {}: give one platform here (kiln build takes a list)",
            self.platform.as_deref().unwrap_or_default()
        );
        Ok(all.pop())
    }
}

// ---- registries (build, pull, push, login) ---------------------------------------------------

/// How to reach registries (pull, push and login): the connection, and how many blobs move at
/// once.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Blobs transferred in parallel.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOB_JOBS)]
    jobs: usize,
}

/// Blobs moved in parallel when the command has no `--jobs` for it (`kiln build`'s `--jobs`
/// means parallel stages, as in buildah).
const DEFAULT_BLOB_JOBS: usize = 4;

impl RegistryArgs {
    pub fn config(&self) -> ClientConfig {
        self.connection.config_with(self.jobs)
    }

    pub fn client(&self, api_host: &str, cred: Option<Credential>) -> anyhow::Result<Registry> {
        Ok(Registry::new(api_host, self.config(), cred)?)
    }
}

/// How to reach registries: TLS, trusted CAs, retries (also `kiln build`'s, without `--jobs`).
#[derive(Debug, clap::Args)]
pub struct ConnectionArgs {
    /// Require HTTPS with a verified certificate (`--tls-verify=false` allows HTTP and any
    /// certificate). Loopback registries may always use plain HTTP.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    tls_verify: bool,
    /// Allow plain HTTP and unverified TLS for this registry host (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Also trust the `*.crt` CA files in this directory (besides
    /// /etc/containers/certs.d/HOST/ and /etc/docker/certs.d/HOST/).
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Retries on connection errors, timeouts, 429 and 5xx (with exponential backoff).
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
}

impl ConnectionArgs {
    fn config_with(&self, blob_jobs: usize) -> ClientConfig {
        ClientConfig {
            tls_verify: self.tls_verify,
            insecure_registries: self.insecure_registries.clone(),
            cert_dir: self.cert_dir.clone(),
            concurrency: blob_jobs.max(1),
            retries: self.retries,
            ..ClientConfig::default()
        }
    }

    /// The client config with the default blob parallelism.
    pub fn config(&self) -> ClientConfig {
        self.config_with(DEFAULT_BLOB_JOBS)
    }

    pub fn client(&self, api_host: &str, cred: Option<Credential>) -> anyhow::Result<Registry> {
        Ok(Registry::new(api_host, self.config(), cred)?)
    }
}

/// Where credentials come from for build, pull and push.
#[derive(Debug, clap::Args)]
pub struct CredsArgs {
    /// `USER:PASSWORD` for the registry (prefer --creds-file: this stays in shell history).
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// Read `USER:PASSWORD` from this file (`-` for stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "creds")]
    creds_file: Option<PathBuf>,
}

impl CredsArgs {
    /// Explicit credentials first, then the auth files (see `crate::registry::creds`).
    pub fn resolve(&self, reference: &Reference) -> anyhow::Result<Option<Credential>> {
        let explicit = match (&self.creds, &self.creds_file) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(f)) if f.as_os_str() == "-" => {
                Some(std::io::read_to_string(std::io::stdin()).context("reading --creds-file -")?)
            }
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading --creds-file {}", f.display()))?,
            ),
            (None, None) => None,
        };
        match explicit {
            Some(text) => Ok(Some(Credential::parse_user_pass(text.trim()).context(
                "credentials must look like USER:PASSWORD (the user name must not be empty)",
            )?)),
            None => Ok(creds::lookup(reference.auth_key())?),
        }
    }
}

// ---- value parsers ---------------------------------------------------------------------------

/// Why a flag's value is refused (by a clap `value_parser` here, or when a group turns its
/// raw values into the library's types).
#[derive(Debug, thiserror::Error)]
pub enum FlagValueError {
    #[error(transparent)]
    Size(#[from] crate::plan::SizeError),
    #[error("{0:?} is not a usable size: it must be more than 0 bytes")]
    ZeroSize(String),
    #[error("{0:?} is not a duration like 90s, 30m, 36h or 7d")]
    Duration(String),
    #[error("invalid --build-arg")]
    BuildArg(#[source] crate::plan::BuildArgError),
}

/// A byte count of more than 0: `4194304`, `4MiB`, `512k`, `10GB` (`push --chunk-size`,
/// `images prune --keep-bytes`), with Docker's binary units ([`crate::plan::parse_size`]).
pub fn parse_size(s: &str) -> Result<u64, FlagValueError> {
    match crate::plan::parse_size(s.trim())? {
        0 => Err(FlagValueError::ZeroSize(s.to_string())),
        n => Ok(n),
    }
}

/// `90s`, `30m`, `36h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, FlagValueError> {
    let bad = || FlagValueError::Duration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        // Docker's (and `docker builder prune --keep-storage`'s) meaning: binary.
        assert_eq!(parse_size("5MB").unwrap(), 5 << 20);
        assert_eq!(parse_size(" 1048576 ").unwrap(), 1 << 20);
        assert!(matches!(parse_size("0"), Err(FlagValueError::ZeroSize(_))));
        assert!(matches!(parse_size("4XB"), Err(FlagValueError::Size(_))));
    }

    #[test]
    fn durations_take_s_m_h_d() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(parse_duration("90").unwrap(), secs(90));
        assert_eq!(parse_duration("36h").unwrap(), secs(36 * 3600));
        assert_eq!(parse_duration("7d").unwrap(), secs(7 * 86_400));
        for bad in ["7w", "h", "99999999999999999d"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
