//! RUN: the step's command in the sandbox, its upper dir turned into a layer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::context::{Context, ContextError};
use super::ssh::AgentProxy;
use crate::plan::{Mount, MountKind, RunProgram, Sharing};
use crate::sandbox::{self, CacheSharing, MountSpec, SecretBytes, StepOutcome, StepSpec};

/// Where heredoc scripts (`RUN <<EOF` with a shebang) appear inside the step.
const SCRIPT_DIR: &str = "/.kiln-run";

/// A RUN step's arguments, as the plan typed them.
pub(crate) struct RunArgs<'a> {
    pub program: &'a RunProgram,
    pub mounts: &'a [Mount],
    /// RUN `--network`; `None` is the build's default.
    pub network: Option<sandbox::Network>,
    /// `--security=insecure` (the planner refused it unless the user allowed it).
    pub insecure: bool,
    pub proxy_env: &'a [(String, String)],
}

/// What the runner needs to know to turn RUN arguments into a sandbox spec.
pub(crate) struct RunEnv<'a> {
    pub id: String,
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    /// A scratch dir that outlives the step (heredoc scripts are written here).
    pub scratch: &'a Path,
    pub config_env: &'a [String],
    pub args_used: &'a BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub default_network: sandbox::Network,
    pub context: Option<&'a Context>,
    /// The trees `--mount=type=bind,from=X` mounts from, by the `from` value.
    pub from_trees: &'a HashMap<String, &'a Context>,
    pub cache_root: PathBuf,
    /// `--secret` values by id.
    pub secrets: &'a BTreeMap<String, SecretBytes>,
    /// `--ssh` agent sockets by id.
    pub ssh: &'a BTreeMap<String, PathBuf>,
}

/// Where the `n`th ssh mount without a target appears (BuildKit's default).
const SSH_TARGET: &str = "/run/buildkit/ssh_agent.";

/// Why a RUN step could not be set up, or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("writing the heredoc script {path}")]
    Script {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("RUN --mount=type=bind needs a build context: give kiln build a context directory")]
    NoContext,
    #[error("RUN --mount=type=cache with from= is not supported by kiln yet")]
    CacheFrom,
    #[error("RUN --mount=type=bind: source {path:?} is not in {what}")]
    BindOutside { path: String, what: String },
    #[error("RUN --mount=type=bind: source {path:?}")]
    BindSource {
        path: String,
        #[source]
        source: ContextError,
    },
    #[error(
        "RUN --mount=type=ssh,id={id} is required but kiln build was given no such agent: pass {flag}"
    )]
    SshMissing { id: String, flag: String },
    #[error("RUN --mount=type=ssh,id={id}: starting the agent relay")]
    SshRelay {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret {id:?} is required but was not given: pass --secret id={id},src=FILE (or env=VAR)"
    )]
    SecretMissing { id: String },
    #[error(
        "secret {id:?} is not NUL-free UTF-8 text, so it cannot be the environment variable {var}: mount it as a file"
    )]
    SecretNotText { id: String, var: String },
    /// The command ran and exited non-zero; `last_output` is its last lines, indented.
    #[error("{command} exited with code {code}{last_output}")]
    Exited {
        command: String,
        code: i32,
        last_output: String,
    },
}

/// The sandbox spec for a RUN step, or why it cannot be made. The relays
/// of its ssh mounts are pushed to `agents`, which must outlive the step.
pub(crate) fn spec(
    args: &RunArgs,
    env: &RunEnv,
    agents: &mut Vec<AgentProxy>,
) -> Result<StepSpec, RunError> {
    let mut mounts = Vec::new();
    let mut ssh_n = 0;
    let mut ssh_sock = None;
    for m in args.mounts {
        match m.kind {
            MountKind::Secret => mounts.extend(secret_mount(m, env.secrets)?),
            MountKind::Ssh => {
                let target = ssh_target(m, &mut ssh_n);
                ssh_sock.get_or_insert_with(|| target.clone());
                mounts.extend(ssh_mount(m, target, env.ssh, agents)?);
            }
            _ => mounts.push(mount(m, env)?),
        }
    }
    let argv = match args.program {
        RunProgram::Argv { argv } => argv.clone(),
        RunProgram::Script { name, content } => {
            let host = env.scratch.join(name);
            write_script(&host, content).map_err(|source| RunError::Script {
                path: host.clone(),
                source,
            })?;
            let target = PathBuf::from(SCRIPT_DIR).join(name);
            mounts.push(MountSpec::Bind {
                source: host,
                target: target.clone(),
                readonly: true,
            });
            vec![target.to_string_lossy().into_owned()]
        }
    };
    // ARG values are environment for RUN (not persisted); ENV wins over an ARG of the same name,
    // so ARGs come first and the image's ENV is appended after them.
    let mut step_env: Vec<String> = env
        .args_used
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    step_env.extend(args.proxy_env.iter().map(|(k, v)| format!("{k}={v}")));
    step_env.extend(env.config_env.iter().cloned());
    // `env=` secrets come last: the step asked for them by name.
    step_env.extend(secret_env(args.mounts, env.secrets)?);
    // BuildKit points SSH_AUTH_SOCK at the first ssh mount unless the step already sets it.
    if let Some(sock) = ssh_sock
        && !step_env.iter().any(|kv| kv.starts_with("SSH_AUTH_SOCK="))
    {
        step_env.push(format!("SSH_AUTH_SOCK={sock}"));
    }
    let network = args.network.unwrap_or(env.default_network);
    Ok(StepSpec {
        id: env.id.clone(),
        lower_dirs: env.lower_dirs.clone(),
        upper_dir: env.upper_dir.clone(),
        argv,
        env: dedup_env(step_env),
        user: env.user.clone(),
        workdir: env.workdir.clone().map(PathBuf::from),
        network,
        hostname: None,
        mounts,
        security: if args.insecure {
            sandbox::Security::Insecure
        } else {
            sandbox::Security::Sandbox
        },
    })
}

/// Later `KEY=` entries win, each key once, in first-seen order.
fn dedup_env(env: Vec<String>) -> Vec<String> {
    let key = |kv: &String| {
        kv.split_once('=')
            .map_or(kv.clone(), |(k, _)| k.to_string())
    };
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    for kv in env {
        match out.iter().position(|o| key(o) == key(&kv)) {
            Some(i) => out[i] = kv,
            None => out.push(kv),
        }
    }
    out
}

/// A heredoc script, executable by everyone (mode 0755).
fn write_script(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn mount(m: &Mount, env: &RunEnv) -> Result<MountSpec, RunError> {
    let target = PathBuf::from(&m.target);
    match m.kind {
        MountKind::Cache if m.from.is_none() => Ok(MountSpec::Cache {
            id: m.id.clone().unwrap_or_else(|| m.target.clone()),
            target,
            cache_root: env.cache_root.clone(),
            sharing: match m.sharing {
                Sharing::Shared => CacheSharing::Shared,
                Sharing::Private => CacheSharing::Private,
                Sharing::Locked => CacheSharing::Locked,
            },
            readonly: m.readonly,
        }),
        MountKind::Tmpfs => Ok(MountSpec::Tmpfs {
            target,
            size_bytes: m.size,
        }),
        MountKind::Bind => {
            let (ctx, what) = match &m.from {
                None => (
                    env.context.ok_or(RunError::NoContext)?,
                    "the build context".to_string(),
                ),
                Some(from) => (
                    *env.from_trees
                        .get(from)
                        .expect("run_step prepares every from= tree"),
                    format!("{from:?}"),
                ),
            };
            let source = bind_source(ctx, m.source.as_deref().unwrap_or(""), &what)?;
            Ok(MountSpec::Bind {
                source,
                target,
                readonly: m.readonly,
            })
        }
        MountKind::Secret | MountKind::Ssh => {
            unreachable!("spec hands secret and ssh mounts to secret_mount and ssh_mount")
        }
        MountKind::Cache => Err(RunError::CacheFrom),
    }
}

/// The host path of a bind mount's `source` in `ctx` (the context, or the stage or image
/// `from=` names, called `what`): cleaned against `/` as BuildKit does (`../../..` is the
/// tree itself) and every symlink in it resolved with the tree as `/`, so no source names a
/// file outside it, read-only or not.
fn bind_source(ctx: &Context, source: &str, what: &str) -> Result<PathBuf, RunError> {
    let real = bind_path(ctx, source, what)?;
    ctx.host_path(&real).map_err(|e| RunError::BindSource {
        path: source.to_string(),
        source: e,
    })
}

/// A bind mount's `source` as a path of `ctx` (see [`bind_source`]); the cache key reads the
/// same files the step mounts.
pub(super) fn bind_path(ctx: &Context, source: &str, what: &str) -> Result<String, RunError> {
    let rel = crate::lexical_path::in_root(source);
    let missing = || RunError::BindOutside {
        path: source.to_string(),
        what: what.to_string(),
    };
    let real = ctx.resolve(&rel, true).map_err(|e| match e {
        ContextError::NotFound(_) => missing(),
        other => RunError::BindSource {
            path: source.to_string(),
            source: other,
        },
    })?;
    if !ctx.contains(&real) {
        return Err(missing());
    }
    Ok(real)
}

/// A `type=secret` mount's file, or nothing when the secret is exposed only as an
/// environment variable or is missing and not required (Docker skips those).
fn secret_mount(
    m: &Mount,
    secrets: &BTreeMap<String, SecretBytes>,
) -> Result<Option<MountSpec>, RunError> {
    let Some(data) = secret(m, secrets)? else {
        return Ok(None);
    };
    if m.target.is_empty() {
        return Ok(None);
    }
    Ok(Some(MountSpec::Secret {
        target: PathBuf::from(&m.target),
        data: data.clone(),
        mode: m.mode.unwrap_or(0o400),
        uid: m.uid.unwrap_or(0),
        gid: m.gid.unwrap_or(0),
    }))
}

/// An ssh mount's target: its own, else the next `/run/buildkit/ssh_agent.N`.
fn ssh_target(m: &Mount, n: &mut usize) -> String {
    let target = if m.target.is_empty() {
        format!("{SSH_TARGET}{n}")
    } else {
        m.target.clone()
    };
    *n += 1;
    target
}

/// A `type=ssh` mount: a relay to the `--ssh` agent of its id, or nothing when that id was
/// not given and the mount is not `required=true` (BuildKit skips those).
fn ssh_mount(
    m: &Mount,
    target: String,
    agents_by_id: &BTreeMap<String, PathBuf>,
    agents: &mut Vec<AgentProxy>,
) -> Result<Option<MountSpec>, RunError> {
    let id = m.id.as_deref().unwrap_or("default");
    let Some(upstream) = agents_by_id.get(id) else {
        if !m.required {
            return Ok(None);
        }
        let flag = if id == "default" {
            "--ssh default".to_string()
        } else {
            format!("--ssh {id}=SOCKET_OR_KEY")
        };
        return Err(RunError::SshMissing {
            id: id.to_string(),
            flag,
        });
    };
    let relay = AgentProxy::start(upstream).map_err(|source| RunError::SshRelay {
        id: id.to_string(),
        source,
    })?;
    let spec = MountSpec::Ssh {
        socket: relay.socket().to_path_buf(),
        target: PathBuf::from(target),
        mode: m.mode.unwrap_or(0o600),
        uid: m.uid.unwrap_or(0),
        gid: m.gid.unwrap_or(0),
    };
    agents.push(relay);
    Ok(Some(spec))
}

/// `KEY=VALUE` for each secret mount with `env=`.
fn secret_env(
    mounts: &[Mount],
    secrets: &BTreeMap<String, SecretBytes>,
) -> Result<Vec<String>, RunError> {
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| m.kind == MountKind::Secret) {
        let (Some(var), Some(data)) = (&m.env, secret(m, secrets)?) else {
            continue;
        };
        let value = std::str::from_utf8(&data.0)
            .ok()
            .filter(|v| !v.contains('\0'))
            .ok_or_else(|| RunError::SecretNotText {
                id: m.id.clone().unwrap_or_default(),
                var: var.clone(),
            })?;
        out.push(format!("{var}={value}"));
    }
    Ok(out)
}

/// The bytes of a secret mount's id; an error when it is missing but `required=true`.
fn secret<'s>(
    m: &Mount,
    secrets: &'s BTreeMap<String, SecretBytes>,
) -> Result<Option<&'s SecretBytes>, RunError> {
    let id = m.id.as_deref().unwrap_or("");
    match secrets.get(id) {
        Some(data) => Ok(Some(data)),
        None if m.required => Err(RunError::SecretMissing { id: id.to_string() }),
        None => Ok(None),
    }
}

/// The error of a step that exited non-zero, with the last lines of its output.
pub(crate) fn failure(original: &str, outcome: &StepOutcome) -> RunError {
    let mut last_output = String::new();
    if !outcome.tail.is_empty() {
        last_output.push_str("; last output:\n");
        last_output.push_str(
            &outcome
                .tail
                .iter()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    RunError::Exited {
        command: original.trim().to_string(),
        code: outcome.exit_code,
        last_output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_mount_spec(spec: &str) -> Mount {
        crate::plan::parse_mount(spec).unwrap()
    }

    #[test]
    fn secrets_become_files_or_env_and_missing_ones_are_skipped_unless_required() {
        let secrets = BTreeMap::from([("tok".to_string(), SecretBytes(b"s3cret".to_vec()))]);
        let file = secret_mount_spec("type=secret,id=tok,mode=0440,uid=5");
        match secret_mount(&file, &secrets).unwrap() {
            Some(MountSpec::Secret {
                target,
                data,
                mode,
                uid,
                gid,
            }) => {
                assert_eq!(target, PathBuf::from("/run/secrets/tok"));
                assert_eq!(data.0, b"s3cret");
                assert_eq!((mode, uid, gid), (0o440, 5, 0));
            }
            other => panic!("expected a secret mount, got {other:?}"),
        }
        let mut env_only = secret_mount_spec("type=secret,id=tok,env=TOK");
        env_only.target.clear();
        assert!(secret_mount(&env_only, &secrets).unwrap().is_none());
        assert_eq!(secret_env(&[env_only], &secrets).unwrap(), ["TOK=s3cret"]);
        let optional = secret_mount_spec("type=secret,id=other");
        assert!(secret_mount(&optional, &secrets).unwrap().is_none());
        let required = secret_mount_spec("type=secret,id=other,required=true");
        let err = secret_mount(&required, &secrets).unwrap_err().to_string();
        assert!(err.contains("--secret id=other"), "{err}");
    }

    #[test]
    fn secret_debug_output_never_shows_the_bytes() {
        let m = MountSpec::Secret {
            target: "/run/secrets/x".into(),
            data: SecretBytes(b"s3cret".to_vec()),
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        assert!(!format!("{m:?}").contains("s3cret"));
    }

    #[test]
    fn env_entries_are_deduplicated_with_the_last_value_winning() {
        let env = vec!["A=arg".to_string(), "B=1".into(), "A=env".into()];
        assert_eq!(dedup_env(env), ["A=env", "B=1"]);
    }
}
