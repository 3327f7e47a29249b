//! `kiln login` / `kiln logout`: check credentials against a registry, then store or remove
//! them in docker's config.json (where docker, podman and skopeo also look).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use crate::Reference;
use crate::registry::{Credential, creds};
use anyhow::{Context, bail};

use super::args::{GlobalArgs, RegistryArgs};
use super::env::runtime;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry (`ghcr.io`, `127.0.0.1:5000`; default Docker Hub).
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    registry: String,
    /// The user name (asked for when missing and stdin is a terminal).
    #[arg(short, long)]
    username: Option<String>,
    /// Read the password from stdin (one line), so it stays out of shell history.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    transport: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry whose stored credentials to remove (default Docker Hub).
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    registry: String,
}

/// `docker.io`, `index.docker.io` and `registry-1.docker.io` all mean Docker Hub; anything else
/// is a host as typed.
fn registry_of(input: &str) -> anyhow::Result<Reference> {
    let host = input
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2");
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    if host.is_empty() || host.contains('/') {
        bail!("{input:?} is not a registry host; give e.g. ghcr.io or 127.0.0.1:5000");
    }
    // A reference in that registry gives its API host and config.json key.
    format!("{host}/kiln-login-probe")
        .parse()
        .with_context(|| format!("{input:?} is not a registry host"))
}

fn read_line(prompt: &str, secret: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
    }
    let restore = if tty && secret { echo_off() } else { None };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = restore {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    read.context("reading stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns terminal echo off; returns the settings to restore.
fn echo_off() -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let old = tcgetattr(std::io::stdin()).ok()?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(std::io::stdin(), SetArg::TCSANOW, &quiet).ok()?;
    Some(old)
}

pub fn login(_g: &GlobalArgs, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let target = registry_of(&a.registry)?;
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin || !std::io::stdin().is_terminal() => {
            bail!("give the user name with -u USER when the password comes from stdin")
        }
        None => read_line("Username: ", false)?,
    };
    if !a.password_stdin && !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password; pipe it in with --password-stdin");
    }
    let password = read_line("Password: ", true)?;
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let cred = Credential::Basic { username, password };
    let registry = a.transport.client(target.api_host(), Some(cred.clone()))?;
    runtime()?
        .block_on(registry.check_login())
        .with_context(|| format!("logging in to {}", target.registry()))?;
    let path = creds::docker_config_path()
        .context("neither $DOCKER_CONFIG nor $HOME is set; cannot find docker's config.json")?;
    creds::store(&path, target.auth_key(), &cred)?;
    println!(
        "Login Succeeded ({} → {})",
        target.registry(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn logout(_g: &GlobalArgs, a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let target = registry_of(&a.registry)?;
    let path = creds::docker_config_path()
        .context("neither $DOCKER_CONFIG nor $HOME is set; cannot find docker's config.json")?;
    if creds::erase(&path, target.auth_key())? {
        println!("Removed login credentials for {}", target.registry());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "Not logged in to {} ({})",
            target.registry(),
            path.display()
        );
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_normalise() {
        let hub = registry_of("https://index.docker.io/v1/").unwrap();
        assert_eq!(hub.auth_key(), "https://index.docker.io/v1/");
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(
            registry_of("127.0.0.1:5000").unwrap().auth_key(),
            "127.0.0.1:5000"
        );
        assert!(registry_of("ghcr.io/acme").is_err());
    }
}
