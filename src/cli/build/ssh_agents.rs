//! `--ssh default|ID[=SOCKET|KEY[,KEY…]]`, as `docker build` takes it: an agent socket to
//! forward, or private key files, which kiln loads into an `ssh-agent` of its own (OpenSSH's,
//! started for this build and killed when it ends).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// The agents of one build; the ones kiln started stop when this is dropped.
#[derive(Default)]
pub(super) struct SshAgents {
    pub sockets: BTreeMap<String, PathBuf>,
    started: Vec<StartedAgent>,
}

struct StartedAgent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for StartedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resolves every `--ssh` value; `env` reads `SSH_AUTH_SOCK`.
pub(super) fn start(
    specs: &[String],
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> anyhow::Result<SshAgents> {
    let mut out = SshAgents::default();
    for spec in specs {
        let (id, paths) = parse(spec)?;
        let socket = match paths.as_slice() {
            [] => env("SSH_AUTH_SOCK").map(PathBuf::from).with_context(|| {
                format!("--ssh {spec}: SSH_AUTH_SOCK is not set; start ssh-agent or give --ssh {id}=SOCKET_OR_KEY")
            })?,
            [one] if is_socket(one) => one.clone(),
            keys => {
                let agent = agent_with_keys(spec, keys)?;
                let socket = agent._dir.path().join("agent.sock");
                out.started.push(agent);
                socket
            }
        };
        if out.sockets.insert(id.clone(), socket).is_some() {
            anyhow::bail!("--ssh {spec}: id {id:?} was given twice");
        }
    }
    Ok(out)
}

/// `ID[=PATH[,PATH…]]`.
fn parse(spec: &str) -> anyhow::Result<(String, Vec<PathBuf>)> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, p)) => (id, p.split(',').map(PathBuf::from).collect()),
        None => (spec, Vec::new()),
    };
    if id.is_empty() || id.contains(',') {
        anyhow::bail!("--ssh {spec:?}: expected default or ID[=SOCKET|KEY[,KEY]]");
    }
    Ok((id.to_string(), paths))
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Starts `ssh-agent` on a socket in a private temp dir and adds `keys` to it.
fn agent_with_keys(spec: &str, keys: &[PathBuf]) -> anyhow::Result<StartedAgent> {
    for k in keys {
        std::fs::metadata(k).with_context(|| format!("--ssh {spec}: {}", k.display()))?;
    }
    let dir = tempfile::Builder::new().prefix("kiln-agent-").tempdir()?;
    let socket = dir.path().join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("--ssh {spec}: starting ssh-agent for the keys (install openssh-client, or pass an agent socket)")
        })?;
    let agent = StartedAgent { child, _dir: dir };
    // The agent creates its socket before it serves; give it a few seconds.
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        is_socket(&socket)
    });
    if !ready {
        anyhow::bail!("--ssh {spec}: ssh-agent did not create its socket");
    }
    let out = Command::new("ssh-add")
        .args(keys)
        .env("SSH_AUTH_SOCK", &socket)
        // A key with a passphrase cannot be asked for here.
        .env("SSH_ASKPASS_REQUIRE", "never")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("--ssh {spec}: running ssh-add"))?;
    if !out.status.success() {
        anyhow::bail!(
            "--ssh {spec}: ssh-add could not load the key(s) ({}: {}); a key with a passphrase must be added to your agent, then pass --ssh {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            spec.split('=').next().unwrap_or("default")
        );
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_docker() {
        assert_eq!(parse("default").unwrap(), ("default".into(), vec![]));
        assert_eq!(
            parse("gh=/k/a,/k/b").unwrap(),
            (
                "gh".into(),
                vec![PathBuf::from("/k/a"), PathBuf::from("/k/b")]
            )
        );
        assert!(parse("=/x").is_err());
        let err = start(&["default".into()], |_| None).err().unwrap();
        assert!(err.to_string().contains("SSH_AUTH_SOCK"), "{err}");
        let got = start(&["default".into()], |_| Some("/s.sock".into())).unwrap();
        assert_eq!(got.sockets["default"], PathBuf::from("/s.sock"));
    }
}
