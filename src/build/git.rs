//! ADD of git repositories, as BuildKit's dockerfile frontend takes them:
//! `ADD https://host/repo.git#ref:subdir /dst`, `ADD git@host:repo.git /dst`, `git://…`,
//! `ssh://…`. An http(s) URL counts as git only when its path ends in `.git`. The fragment is
//! `#ref`, `#ref:subdir` or `#ref=…,subdir=…`; no ref means the remote's HEAD.
//!
//! The cache key is the commit the ref resolves to (`git ls-remote`), so a rebuild hits the
//! cache while the branch or tag stays put and misses after a new commit. The step fetches
//! that one commit (`--depth=1`) into a fresh repository in the store's scratch space and
//! checks it out; `.git` is dropped unless `--keep-git-dir`. Files are then copied from the
//! checkout as from any source tree, so a subdir or symlink in a hostile repository resolves
//! inside the checkout.
//!
//! The real `git` binary does the work, with a configuration of kiln's own: no system or
//! user config, no prompts, and only the http(s), git and ssh transports (never `ext::` or
//! local files). The URL comes after `--`, so it is never taken for an option. For ssh
//! remotes, the `--ssh default` agent (if any) is the only agent git sees, and the host key
//! must be in the user's or the system's known hosts (BuildKit trusts any host key when given
//! none; kiln refuses).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A git source of an ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GitSource {
    /// What git fetches from (the source without its fragment).
    pub remote: String,
    /// A branch, tag, full ref name or commit; `None` is HEAD.
    pub reference: Option<String>,
    /// The directory of the repository to copy (clean, relative); empty is the whole tree.
    pub subdir: String,
}

/// A ref resolved to the commit it names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub commit: String,
    /// The full ref name to fetch (`refs/tags/v1`), or the commit itself.
    pub fetch: String,
}

/// Why a git source could not be read; messages name the source (without credentials).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error(
        "ADD {source_name}: git sources need the git command: install git (apt-get install git)"
    )]
    NoGit {
        source_name: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("ADD {source_name}: git {action} failed: {stderr}")]
    Failed {
        source_name: String,
        action: &'static str,
        stderr: String,
    },
    #[error(
        "ADD {source_name}: the repository has no ref {reference:?}; check the branch, tag or commit after '#'"
    )]
    NoSuchRef {
        source_name: String,
        reference: String,
    },
    #[error(
        "ADD {source_name}: invalid fragment {fragment:?}: use #REF, #REF:SUBDIR or #ref=REF,subdir=DIR"
    )]
    BadFragment {
        source_name: String,
        fragment: String,
    },
    #[error("ADD {source_name}: {action} in {}", path.display())]
    Io {
        source_name: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
}

/// Whether ADD takes `src` as a git repository (BuildKit's `ParseGitRef` rules).
pub(crate) fn is_git(src: &str) -> bool {
    let base = src.split('#').next().unwrap_or(src);
    if let Some((scheme, rest)) = base.split_once("://") {
        return match scheme {
            "git" | "ssh" => !rest.is_empty(),
            "http" | "https" => {
                let path = rest.split('?').next().unwrap_or(rest);
                path.ends_with(".git") || path.ends_with(".git/")
            }
            _ => false,
        };
    }
    is_scp_like(base)
}

/// `user@host:path`, the scp-like syntax git takes for ssh.
fn is_scp_like(s: &str) -> bool {
    let Some((user, rest)) = s.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    let name = |t: &str, extra: &str| {
        !t.is_empty()
            && !t.starts_with('-')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(c))
    };
    name(user, "") && name(host, "") && !path.is_empty()
}

/// Splits a git source into remote, ref and subdir.
pub(crate) fn parse(src: &str) -> Result<GitSource, GitError> {
    let (remote, fragment) = match src.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (src, None),
    };
    let bad = || GitError::BadFragment {
        source_name: super::add::redact(src),
        fragment: fragment.unwrap_or("").to_string(),
    };
    let (reference, subdir) = match fragment {
        None | Some("") => (None, String::new()),
        Some(f) if f.contains('=') => {
            let (mut r, mut d) = (None, String::new());
            for kv in f.split(',') {
                match kv.split_once('=') {
                    Some(("ref", v)) => r = Some(v.to_string()),
                    Some(("subdir", v)) => d = v.to_string(),
                    _ => return Err(bad()),
                }
            }
            (r, d)
        }
        Some(f) => match f.split_once(':') {
            Some((r, d)) => (Some(r.to_string()), d.to_string()),
            None => (Some(f.to_string()), String::new()),
        },
    };
    let reference = reference.filter(|r| !r.is_empty());
    if reference.as_deref().is_some_and(|r| r.starts_with('-')) {
        return Err(bad());
    }
    Ok(GitSource {
        remote: remote.to_string(),
        reference,
        subdir: crate::lexical_path::in_root(&subdir),
    })
}

/// Runs git with kiln's configuration; `agent` is the `--ssh default` socket.
fn git(agent: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    c.env_clear();
    // Proxies and CA settings are the user's; nothing else of the environment is.
    for (k, v) in std::env::vars_os() {
        let k_str = k.to_string_lossy().to_ascii_lowercase();
        if k_str == "path" || k_str.ends_with("_proxy") || k_str.starts_with("ssl_cert_") {
            c.env(k, v);
        }
    }
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", "/nonexistent")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .env("LC_ALL", "C")
        .env("GIT_SSH_COMMAND", ssh_command());
    if let Some(a) = agent {
        c.env("SSH_AUTH_SOCK", a);
    }
    c.args([
        "-c",
        "protocol.allow=never",
        "-c",
        "protocol.https.allow=always",
        "-c",
        "protocol.http.allow=always",
        "-c",
        "protocol.git.allow=always",
        "-c",
        "protocol.ssh.allow=always",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "init.defaultBranch=kiln",
    ]);
    c.stdin(Stdio::null());
    c
}

/// ssh for `git@`/`ssh://` remotes: no ssh config, never a prompt, and host keys checked
/// against the user's and the system's known hosts (an unknown host is refused, not trusted).
fn ssh_command() -> String {
    let mut known = vec!["/etc/ssh/ssh_known_hosts".to_string()];
    if let Some(home) = std::env::var_os("HOME") {
        let path = Path::new(&home).join(".ssh/known_hosts");
        let path = path.to_string_lossy();
        // The command goes through a shell: only paths that need no quoting.
        if path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c))
        {
            known.insert(0, path.into_owned());
        }
    }
    format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile='{}'",
        known.join(" ")
    )
}

/// Runs `cmd`, its stdout on success; a failure carries git's last stderr lines.
fn output(cmd: &mut Command, src: &GitSource, action: &'static str) -> Result<String, GitError> {
    let out = cmd.output().map_err(|cause| GitError::NoGit {
        source_name: src.shown(),
        cause,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(GitError::Failed {
            source_name: src.shown(),
            action,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("; "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl GitSource {
    /// The remote for messages: credentials left out.
    pub fn shown(&self) -> String {
        super::add::redact(&self.remote)
    }

    /// The commit the ref names now, asked of the remote.
    pub fn resolve(&self, agent: Option<&Path>) -> Result<Resolved, GitError> {
        if let Some(r) = &self.reference
            && is_commit(r)
        {
            return Ok(Resolved {
                commit: r.to_ascii_lowercase(),
                fetch: r.to_ascii_lowercase(),
            });
        }
        let listing = output(
            git(agent).args(["ls-remote", "--", &self.remote]),
            self,
            "ls-remote",
        )?;
        let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
        let want = self.reference.as_deref().unwrap_or("HEAD");
        // git's own order: an exact name, then a tag (peeled to its commit), then a branch.
        let candidates = [
            (want.to_string(), want.to_string()),
            (
                format!("refs/tags/{want}^{{}}"),
                format!("refs/tags/{want}"),
            ),
            (format!("refs/tags/{want}"), format!("refs/tags/{want}")),
            (format!("refs/heads/{want}"), format!("refs/heads/{want}")),
        ];
        for (name, fetch) in candidates {
            if let Some((commit, _)) = refs.iter().find(|(_, n)| *n == name) {
                return Ok(Resolved {
                    commit: commit.to_string(),
                    fetch,
                });
            }
        }
        Err(GitError::NoSuchRef {
            source_name: self.shown(),
            reference: want.to_string(),
        })
    }

    /// Fetches `at` into a new repository at `dir` and checks it out; drops `.git` unless
    /// `keep_git_dir`. Returns the directory to copy (the subdir, still unresolved).
    pub fn checkout(
        &self,
        at: &Resolved,
        dir: &Path,
        keep_git_dir: bool,
        agent: Option<&Path>,
    ) -> Result<(), GitError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |cause| GitError::Io {
                source_name: self.shown(),
                action,
                path,
                cause,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("creating the checkout directory", dir))?;
        let in_dir = |mut c: Command| {
            c.current_dir(dir);
            c
        };
        output(in_dir(git(agent)).args(["init", "-q"]), self, "init")?;
        output(
            in_dir(git(agent)).args([
                "fetch",
                "-q",
                "--depth=1",
                "--no-tags",
                "--",
                &self.remote,
                &at.fetch,
            ]),
            self,
            "fetch",
        )?;
        output(
            in_dir(git(agent)).args([
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "-q",
                "--detach",
                &at.commit,
            ]),
            self,
            "checkout",
        )?;
        if !keep_git_dir {
            let dot_git = dir.join(".git");
            std::fs::remove_dir_all(&dot_git).map_err(io("removing .git", &dot_git))?;
        }
        Ok(())
    }
}

/// A full commit id (sha1 or sha256), which needs no lookup.
fn is_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sources_are_recognised_as_buildkit_does() {
        for yes in [
            "git@github.com:moby/buildkit.git",
            "git@github.com:moby/buildkit",
            "https://github.com/moby/buildkit.git#v0.10.1",
            "https://github.com/moby/buildkit.git#main:docs",
            "git://host/repo",
            "git://127.0.0.1:9418/repo.git",
            "ssh://git@host/repo.git",
        ] {
            assert!(is_git(yes), "{yes}");
        }
        for no in [
            "https://example.com/file.tar.gz",
            "https://example.com/repo",
            "github.com/moby/buildkit",
            "./git@x:y",
            "file:///tmp/repo.git",
            "ext::sh -c touch% /tmp/pwned",
            "-u@host:path",
            "local/dir",
        ] {
            assert!(!is_git(no), "{no}");
        }
    }

    #[test]
    fn fragments_give_the_ref_and_subdir() {
        let p = parse("https://h/r.git#v1:docs/../site").unwrap();
        assert_eq!(
            (p.remote.as_str(), p.reference.as_deref(), p.subdir.as_str()),
            ("https://h/r.git", Some("v1"), "site")
        );
        let p = parse("git@h:r.git#ref=main,subdir=a/b").unwrap();
        assert_eq!(
            (p.reference.as_deref(), p.subdir.as_str()),
            (Some("main"), "a/b")
        );
        let p = parse("git://h/r").unwrap();
        assert_eq!((p.reference, p.subdir.as_str()), (None, ""));
        // A subdir cannot climb out of the checkout, and a ref is never an option.
        assert_eq!(parse("git://h/r#x:../../etc").unwrap().subdir, "etc");
        assert!(parse("git://h/r#--upload-pack=touch").is_err());
        assert!(parse("git://h/r#colour=red").is_err());
    }
}
