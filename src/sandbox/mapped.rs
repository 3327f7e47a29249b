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
//! user namespace while it is still single-threaded and reports `Unshared`; the parent
//! writes the full map with `newuidmap`/`newgidmap` and says `go`; the child, now uid 0 in
//! the namespace, does the work. Data streams through its stdin/stdout (never held whole);
//! reports (warnings, the written layer's digests, errors) are typed JSON lines on its fd 3,
//! the init's protocol ([`MappedStatus`]).
//! Without a subordinate range there are no other ids to hand out: callers keep the
//! single-id behaviour (files owned by the user) and [`MappedFs::detect`] returns `None`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::mpsc;

use nix::sched::{CloneFlags, unshare};

use super::SandboxError;
use super::idmap;
use super::protocol::{MappedStatus, StatusPipe, spawn_with_status_pipe};
use crate::error_chain::Causes;
use crate::layer::LayerIdMap;
use crate::layer::{
    self, Compression, Deletions, DiffKind, Encoding, LayerBlob, LayerOptions, OpaqueXattr,
    Ownership, UnpackOptions,
};

const ENTRY: &str = "__sandbox-mapped";
const GO: &str = "go";

/// Runs file operations as root of the caller's full subordinate id map.
#[derive(Debug, Clone)]
pub struct MappedFs {
    kiln_exe: PathBuf,
    map: LayerIdMap,
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
    pub fn id_map(&self) -> &LayerIdMap {
        &self.map
    }

    /// Unpacks a layer blob (any compression) into `dest` keeping the recorded owners.
    /// Returns the unpacker's warnings (e.g. device nodes skipped).
    pub fn unpack(&self, blob: &mut impl Read, dest: &Path) -> Result<Vec<String>, SandboxError> {
        let mut helper = self.start("unpack", &[dest.as_os_str().into()])?;
        let mut stdin = helper.child.stdin.take().expect("stdin is piped");
        let copied = std::io::copy(blob, &mut stdin);
        drop(stdin);
        let reports = helper.finish("unpacking a layer")?;
        // A child that failed reports why above; a copy error alone means our reader failed.
        copied.map_err(|source| SandboxError::Stream {
            what: "reading the layer blob into",
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(reports
            .into_iter()
            .filter_map(|r| match r {
                MappedStatus::Warning(w) => Some(w),
                _ => None,
            })
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
        let kind = opts.encoding.compression().name();
        let level = opts.encoding.level().to_string();
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
        let reports = helper.finish("writing a RUN layer")?;
        copied.map_err(|source| SandboxError::Stream {
            what: "storing the layer of",
            path: upper.to_path_buf(),
            source,
        })?;
        layer_of(&reports, opts.encoding.compression()).ok_or_else(|| SandboxError::NoLayerReport {
            path: upper.to_path_buf(),
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
        let spawn_err = |source: std::io::Error| SandboxError::Spawn {
            exe: self.kiln_exe.clone(),
            source,
        };
        let mut cmd = Command::new(&self.kiln_exe);
        cmd.arg(ENTRY)
            .arg(op)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, status) = spawn_with_status_pipe(&mut cmd).map_err(spawn_err)?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        // Read as they come (a long list of warnings must not fill the pipe and stall the
        // child while the parent still streams its stdin).
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(status).lines() {
                let Ok(line) = line else { break };
                let report = serde_json::from_str(&line).unwrap_or_else(|e| {
                    MappedStatus::Error(format!("unreadable report from the helper ({e}): {line}"))
                });
                if tx.send(report).is_err() {
                    break;
                }
            }
        });
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let helper = Helper {
            child,
            stdout,
            stderr: Some(stderr),
            reports,
            mapped_ids: self
                .map
                .uids
                .ranges()
                .iter()
                .map(|r| u64::from(r.count))
                .sum(),
        };
        let mut helper = match helper.reports.recv() {
            Ok(MappedStatus::Unshared) => helper,
            Ok(MappedStatus::Error(e)) => {
                let mut helper = helper;
                let _ = helper.child.wait(); // it exits after saying why
                return Err(SandboxError::Mapped {
                    action: "entering a user namespace".into(),
                    message: e,
                });
            }
            _ => return Err(helper.failed("entering a user namespace")),
        };
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
    /// The child's reports, in order; ends when its status pipe closes.
    reports: mpsc::Receiver<MappedStatus>,
    /// How many container ids the map has (for the hint on ids beyond it).
    mapped_ids: u64,
}

impl Helper {
    /// Waits for the child; its reports on success, an error naming `action` otherwise.
    fn finish(mut self, action: &str) -> Result<Vec<MappedStatus>, SandboxError> {
        drop(self.child.stdin.take());
        let status = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let stderr = stderr.unwrap_or_default();
        let reports: Vec<MappedStatus> = self.reports.iter().collect();
        match status {
            Ok(s) if s.success() => Ok(reports),
            Ok(s) => {
                let text = error_text(&reports, &stderr);
                Err(SandboxError::Mapped {
                    action: action.into(),
                    message: format!("{text} ({s}){}", self.hint(&text)),
                })
            }
            Err(e) => Err(SandboxError::io("kiln __sandbox-mapped", e)),
        }
    }

    fn failed(mut self, action: &str) -> SandboxError {
        let _ = self.child.kill();
        match self.finish(action) {
            Err(e) => e,
            Ok(reports) => SandboxError::Mapped {
                action: action.into(),
                message: format!("the helper stopped early: {}", error_text(&reports, "")),
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

/// The child's own error reports, else what it printed (a panic), else "no message".
fn error_text(reports: &[MappedStatus], stderr: &str) -> String {
    let errors: Vec<&str> = reports
        .iter()
        .filter_map(|r| match r {
            MappedStatus::Error(e) => Some(e.as_str()),
            _ => None,
        })
        .chain(stderr.lines().filter(|l| !l.trim().is_empty()))
        .collect();
    if errors.is_empty() {
        "no message".into()
    } else {
        errors.join("; ")
    }
}

fn layer_of(reports: &[MappedStatus], compression: Compression) -> Option<LayerBlob> {
    reports.iter().find_map(|r| match r {
        MappedStatus::Layer {
            diff_id,
            digest,
            size,
        } => Some(LayerBlob {
            diff_id: diff_id.parse().ok()?,
            digest: digest.parse().ok()?,
            size: *size,
            compression,
        }),
        _ => None,
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
    let Some(mut status) = StatusPipe::from_fd() else {
        eprintln!("{ENTRY} is internal to kiln: it needs the status pipe on fd 3");
        return ExitCode::from(1);
    };
    match child(args, &mut status) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            status.send(&MappedStatus::Error(message));
            ExitCode::from(1)
        }
    }
}

fn child(args: Vec<OsString>, status: &mut StatusPipe) -> Result<(), String> {
    if args.is_empty() {
        return Err(format!("{ENTRY} is internal to kiln"));
    }
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
    status.send(&MappedStatus::Unshared);
    let mut stdout = std::io::stdout().lock();
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
        "unpack" => child_unpack(&mut stdin, &path(1)?, status),
        "write-layer" => child_write_layer(&args[1..], &mut stdout, status),
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

fn child_unpack(
    stdin: &mut (impl Read + Send),
    dest: &Path,
    status: &mut StatusPipe,
) -> Result<(), String> {
    // Kept as overlay whiteouts: the dir is a lower dir of `userxattr` overlays.
    let opts = UnpackOptions {
        ownership: Ownership::Preserve,
        xattrs: false,
        deletions: Deletions::Overlay(OpaqueXattr::User),
    };
    let report = layer::unpack_layer(stdin, dest, &opts)
        .map_err(|e| format!("unpacking into {}: {}", dest.display(), Causes(&e)))?;
    for w in report.warnings {
        status.send(&MappedStatus::Warning(w));
    }
    Ok(())
}

fn child_write_layer(
    args: &[OsString],
    out: &mut impl Write,
    status: &mut StatusPipe,
) -> Result<(), String> {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or_default();
    let bad = || format!("{ENTRY} write-layer: bad arguments {args:?}");
    let compression = Compression::from_name(arg(1)).ok_or_else(bad)?;
    let level = arg(2).parse().map_err(|_| bad())?;
    let encoding = Encoding::new(compression, Some(level)).map_err(|_| bad())?;
    let source_date_epoch = match arg(3) {
        "-" => None,
        t => Some(t.parse().map_err(|_| bad())?),
    };
    let opts = LayerOptions {
        encoding,
        source_date_epoch,
        id_map: None,
    };
    let upper = PathBuf::from(args.first().ok_or_else(bad)?);
    let blob = layer::write_layer(&upper, DiffKind::OverlayUpper, &opts, &mut *out)
        .map_err(|e| format!("writing the layer of {}: {}", upper.display(), Causes(&e)))?;
    out.flush().map_err(|e| format!("writing the layer: {e}"))?;
    status.send(&MappedStatus::Layer {
        diff_id: blob.diff_id.to_string(),
        digest: blob.digest.to_string(),
        size: blob.size,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_report_and_errors_are_read_from_typed_reports() {
        let d = format!("sha256:{}", "a".repeat(64));
        let line = format!(r#"{{"Layer":{{"diff_id":"{d}","digest":"{d}","size":42}}}}"#);
        let layer: MappedStatus = serde_json::from_str(&line).unwrap();
        let reports = vec![MappedStatus::Warning("skipped".into()), layer];
        let blob = layer_of(&reports, Compression::None).unwrap();
        assert_eq!(blob.size, 42);
        assert_eq!(blob.diff_id.to_string(), d);
        assert!(layer_of(&reports[..1], Compression::None).is_none());
        let bad = vec![MappedStatus::Layer {
            diff_id: "nonsense".into(),
            digest: d.clone(),
            size: 1,
        }];
        assert!(layer_of(&bad, Compression::None).is_none());
        let failed = vec![
            MappedStatus::Unshared,
            MappedStatus::Error("no room".into()),
        ];
        assert_eq!(error_text(&failed, "panicked\n"), "no room; panicked");
        assert_eq!(error_text(&[], ""), "no message");
    }
}
