//! File work done as root of the rootless id map, for an unprivileged caller with a
//! subordinate id range: what `buildah unshare` does for the whole of buildah, narrowed to
//! the three operations that touch files owned by sub-uids:
//!
//! - unpacking a base layer *with its owners* (so `/home/app` is app's inside RUN),
//! - writing a RUN step's layer from its upper dir (files a step made `0600`/`0700` as a
//!   sub-uid are unreadable to the host user; inside the namespace stat already shows
//!   container ids, so no id translation is needed),
//! - removing trees that hold such files (step scratch dirs, unpacked layers on `rmi`/`prune`).
//!
//! Each operation is a re-exec of kiln as `__sandbox-mapped <op> …`: the child unshares a
//! user namespace while it is still single-threaded and says `ready`; the parent writes the
//! full map with `newuidmap`/`newgidmap` and says `go`; the child, now uid 0 in the
//! namespace, does the work. Data streams through its stdin/stdout (never held whole).
//! Without a subordinate range there are no other ids to hand out: callers keep the
//! single-id behaviour (files owned by the user) and [`MappedFs::detect`] returns `None`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};

use nix::sched::{CloneFlags, unshare};

use super::SandboxError;
use super::idmap::{self, IdMap};
use crate::error_chain::Causes;
use crate::layer::{
    self, Compression, Deletions, DiffKind, LayerBlob, LayerOptions, OpaqueXattr, Ownership,
    UnpackOptions,
};

const ENTRY: &str = "__sandbox-mapped";
const READY: &str = "ready";
const GO: &str = "go";
/// Prefix of the child's stderr line that carries a written layer's identity.
const LAYER_LINE: &str = "kiln-layer ";
/// Prefix of the child's stderr lines that carry unpack warnings.
const WARNING_LINE: &str = "kiln-warning ";

/// Runs file operations as root of the caller's full subordinate id map.
#[derive(Debug, Clone)]
pub struct MappedFs {
    kiln_exe: PathBuf,
    map: IdMap,
}

impl MappedFs {
    /// `Some` for an unprivileged caller with a `/etc/subuid`+`/etc/subgid` range and
    /// `newuidmap`/`newgidmap`; `None` for root (already owns every id) or a single-id map.
    pub fn detect(kiln_exe: impl Into<PathBuf>) -> Option<MappedFs> {
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        if uid.is_root() {
            return None;
        }
        let (map, warning) = idmap::plan_rootless(uid.as_raw(), gid.as_raw());
        warning.is_none().then(|| MappedFs {
            kiln_exe: kiln_exe.into(),
            map,
        })
    }

    /// The map the operations run with (container id → host id).
    pub fn id_map(&self) -> &IdMap {
        &self.map
    }

    /// Unpacks a layer blob (any compression) into `dest` keeping the recorded owners.
    /// Returns the unpacker's warnings (e.g. device nodes skipped).
    pub fn unpack(&self, blob: &mut impl Read, dest: &Path) -> Result<Vec<String>, SandboxError> {
        let mut helper = self.start("unpack", &[dest.as_os_str().into()])?;
        let mut stdin = helper.child.stdin.take().expect("stdin is piped");
        let copied = std::io::copy(blob, &mut stdin);
        drop(stdin);
        let stderr = helper.finish("unpacking a layer")?;
        // A child that failed reports why above; a copy error alone means our reader failed.
        copied.map_err(|e| SandboxError::io(dest, format!("reading the layer blob: {e}")))?;
        Ok(stderr
            .lines()
            .filter_map(|l| l.strip_prefix(WARNING_LINE))
            .map(str::to_string)
            .collect())
    }

    /// Writes the layer of an overlay upper dir into `out` as [`layer::write_layer`] does,
    /// reading the files as root of the map. `opts.id_map` is ignored: inside the namespace
    /// the files already show container ids.
    pub fn write_layer(
        &self,
        upper: &Path,
        opts: &LayerOptions,
        out: &mut impl Write,
    ) -> Result<LayerBlob, SandboxError> {
        let (kind, level) = match opts.compression {
            Compression::Gzip { level } => ("gzip", level.to_string()),
            Compression::Zstd { level } => ("zstd", level.to_string()),
            Compression::None => ("none", "0".into()),
        };
        let epoch = opts
            .source_date_epoch
            .map_or("-".to_string(), |t| t.to_string());
        let args = [
            upper.as_os_str(),
            kind.as_ref(),
            level.as_ref(),
            epoch.as_ref(),
        ];
        let mut helper = self.start("write-layer", &args.map(OsString::from))?;
        let copied = std::io::copy(&mut helper.stdout, out);
        let stderr = helper.finish("writing a RUN layer")?;
        copied.map_err(|e| SandboxError::io(upper, format!("storing the layer: {e}")))?;
        parse_layer_line(&stderr, opts.compression).ok_or_else(|| {
            SandboxError::io(upper, "the layer helper did not report the layer's digests")
        })
    }

    /// Removes `path` (a file or a whole tree) as root of the map; a missing path is fine.
    pub fn remove_tree(&self, path: &Path) -> Result<(), SandboxError> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        self.start("rm", &[path.as_os_str().into()])?
            .finish("removing a tree")
            .map(|_| ())
    }

    /// Spawns the helper and completes the handshake (map written, child told to go on).
    fn start(&self, op: &str, args: &[OsString]) -> Result<Helper, SandboxError> {
        let spawn_err = |e: std::io::Error| SandboxError::Spawn {
            exe: self.kiln_exe.clone(),
            message: e.to_string(),
        };
        let mut child = Command::new(&self.kiln_exe)
            .arg(ENTRY)
            .arg(op)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut helper = Helper {
            child,
            stdout,
            stderr: Some(stderr),
            mapped_ids: self.map.uids.iter().map(|r| u64::from(r.count)).sum(),
        };
        let mut line = String::new();
        let _ = helper.stdout.read_line(&mut line);
        if line.trim() != READY {
            return Err(helper.failed("entering a user namespace"));
        }
        if let Err(e) = idmap::apply(helper.child.id(), &self.map) {
            let _ = helper.child.kill();
            let _ = helper.child.wait();
            return Err(e);
        }
        let stdin = helper.child.stdin.as_mut().expect("stdin is piped");
        if stdin.write_all(format!("{GO}\n").as_bytes()).is_err() {
            return Err(helper.failed("entering a user namespace"));
        }
        Ok(helper)
    }
}

struct Helper {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// How many container ids the map has (for the hint on ids beyond it).
    mapped_ids: u64,
}

impl Helper {
    /// Waits for the child; its stderr on success, an error naming `action` otherwise.
    fn finish(mut self, action: &str) -> Result<String, SandboxError> {
        drop(self.child.stdin.take());
        let status = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let stderr = stderr.unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(stderr),
            Ok(s) => Err(SandboxError::Mapped {
                action: action.into(),
                message: format!("{} ({s}){}", error_text(&stderr), self.hint(&stderr)),
            }),
            Err(e) => Err(SandboxError::io("kiln __sandbox-mapped", e)),
        }
    }

    fn failed(mut self, action: &str) -> SandboxError {
        let _ = self.child.kill();
        match self.finish(action) {
            Err(e) => e,
            Ok(stderr) => SandboxError::Mapped {
                action: action.into(),
                message: format!("the helper stopped early: {}", error_text(&stderr)),
            },
        }
    }
}

impl Helper {
    /// chown to an id the map lacks fails with EINVAL (buildah fails the same way).
    fn hint(&self, stderr: &str) -> String {
        if !stderr.contains("os error 22") {
            return String::new();
        }
        format!(
            "; an owner id is probably beyond the {} ids of the rootless map (0..={}): give \
             the user a larger range in /etc/subuid and /etc/subgid",
            self.mapped_ids,
            self.mapped_ids.saturating_sub(1)
        )
    }
}

fn error_text(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with(WARNING_LINE) && !l.starts_with(LAYER_LINE))
        .collect();
    if lines.is_empty() {
        "no message".into()
    } else {
        lines.join("; ")
    }
}

fn parse_layer_line(stderr: &str, compression: Compression) -> Option<LayerBlob> {
    let line = stderr.lines().find_map(|l| l.strip_prefix(LAYER_LINE))?;
    let mut f = line.split(' ');
    Some(LayerBlob {
        diff_id: f.next()?.parse().ok()?,
        digest: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        compression,
    })
}

/// Removes a tree that an unprivileged remove could not (files owned by sub-uids), through
/// the kiln executable `exe`; `Ok(false)` when there is no subordinate map to use.
pub fn remove_tree_as_mapped_root(exe: &Path, path: &Path) -> Result<bool, SandboxError> {
    match MappedFs::detect(exe.to_path_buf()) {
        Some(m) => m.remove_tree(path).map(|()| true),
        None => Ok(false),
    }
}

/// The child side; `args` follow `__sandbox-mapped`. Called while single-threaded.
pub(crate) fn child_main(args: Vec<OsString>) -> ExitCode {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    match child(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

fn child(args: Vec<OsString>) -> Result<(), String> {
    if args.is_empty() {
        return Err(format!("{ENTRY} is internal to kiln"));
    }
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("handshake: {e}"))?;
    // Not `lock()`ed: the unpacker reads it from another thread (a lock is not `Send`).
    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| format!("handshake: {e}"))?;
    if line.trim() != GO {
        return Err("the parent did not confirm the id maps".into());
    }
    if !nix::unistd::getuid().is_root() {
        return Err("not root in the user namespace after the id maps were written".into());
    }
    let op = args[0].to_str().unwrap_or_default();
    let path = |i: usize| -> Result<PathBuf, String> {
        args.get(i)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{ENTRY} {op}: missing argument {i}"))
    };
    match op {
        "unpack" => child_unpack(&mut stdin, &path(1)?),
        "write-layer" => child_write_layer(&args[1..], &mut stdout),
        "rm" => {
            let p = path(1)?;
            let r = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => Ok(()),
            };
            r.map_err(|e| format!("removing {}: {e}", p.display()))
        }
        _ => Err(format!("{ENTRY}: unknown operation {op:?}")),
    }
}

fn child_unpack(stdin: &mut (impl Read + Send), dest: &Path) -> Result<(), String> {
    // Kept as overlay whiteouts: the dir is a lower dir of `userxattr` overlays.
    let opts = UnpackOptions {
        ownership: Ownership::Preserve,
        xattrs: false,
        deletions: Deletions::Overlay(OpaqueXattr::User),
    };
    let report = layer::unpack_layer(stdin, dest, &opts)
        .map_err(|e| format!("unpacking into {}: {}", dest.display(), Causes(&e)))?;
    for w in &report.warnings {
        eprintln!("{WARNING_LINE}{w}");
    }
    Ok(())
}

fn child_write_layer(args: &[OsString], out: &mut impl Write) -> Result<(), String> {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or_default();
    let bad = || format!("{ENTRY} write-layer: bad arguments {args:?}");
    let compression = match (arg(1), arg(2)) {
        ("gzip", l) => Compression::Gzip {
            level: l.parse().map_err(|_| bad())?,
        },
        ("zstd", l) => Compression::Zstd {
            level: l.parse().map_err(|_| bad())?,
        },
        ("none", _) => Compression::None,
        _ => return Err(bad()),
    };
    let source_date_epoch = match arg(3) {
        "-" => None,
        t => Some(t.parse().map_err(|_| bad())?),
    };
    let opts = LayerOptions {
        compression,
        source_date_epoch,
        id_map: None,
    };
    let upper = PathBuf::from(args.first().ok_or_else(bad)?);
    let blob = layer::write_layer(&upper, DiffKind::OverlayUpper, &opts, &mut *out)
        .map_err(|e| format!("writing the layer of {}: {}", upper.display(), Causes(&e)))?;
    out.flush().map_err(|e| format!("writing the layer: {e}"))?;
    eprintln!("{LAYER_LINE}{} {} {}", blob.diff_id, blob.digest, blob.size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_line_is_found_among_other_stderr_lines() {
        let d = format!("sha256:{}", "a".repeat(64));
        let text = format!("noise\n{LAYER_LINE}{d} {d} 42\n");
        let blob = parse_layer_line(&text, Compression::None).unwrap();
        assert_eq!(blob.size, 42);
        assert_eq!(blob.diff_id.to_string(), d);
        assert!(parse_layer_line("noise\n", Compression::None).is_none());
        assert_eq!(error_text(&text), "noise");
    }
}
