//! What the parent tells the re-executed init (one JSON line on its stdin, then `go`), and
//! what the init reports back (JSON lines on fd 3). Host paths are resolved by the parent.
//! The `__sandbox-mapped` helper speaks the same way: [`MappedStatus`] lines on fd 3
//! ([`spawn_with_status_pipe`], [`StatusPipe`]), `go` on its stdin.
//!
//! The parent believes a status line only as far as it can check it: pid 1 closes the pipe
//! before the command starts (the command never holds it), `Created` and `Unshared` after
//! `Running` are ignored, a `Created` path must be `/` and normal components whose parents
//! are real directories of the upper dir, and a `Pid1` must be a child of the outer init
//! (see `runner.rs`).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use super::security::Security;
use super::{Network, SecretBytes};

/// Exit code of `__sandbox-probe userns` when the namespace was made but the kernel refused
/// to map this process's own id into it (root without CAP_SETFCAP, Linux ≥ 5.12).
pub(crate) const PROBE_MAP_REFUSED: u8 = 2;

/// The fd the init reports [`Status`] lines on.
pub(crate) const STATUS_FD: i32 = 3;
/// The line the parent sends once the id maps are written.
pub(crate) const GO: &str = "go";
/// How a setup error that means "overlay cannot be mounted here" starts; the parent then
/// retries the step with the copy fallback (the command has not run).
pub(crate) const OVERLAY_FAILED: &str = "overlay cannot be mounted: ";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct InitSpec {
    pub step: String,
    pub user_namespace: bool,
    /// Only one id is mapped: `setgroups` is denied in the namespace.
    pub single_id: bool,
    /// The step may create a mount namespace; `false` is plain chroot(2) (implies `copy`).
    pub mount_namespace: bool,
    /// No overlay: `merged` is filled with a copy of the lowers and the diff is computed
    /// into `upper` after the step.
    pub copy: bool,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// Scratch dir (host path) for tmpfs staging of secrets and rw binds.
    pub scratch: PathBuf,
    /// Generated `hosts`, `resolv.conf`, `hostname` (host paths).
    pub etc_files: Vec<(PathBuf, String)>,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: PathBuf,
    pub network: Network,
    pub hostname: String,
    pub mounts: Vec<InitMount>,
    pub security: Security,
}

/// Which file a path named when the parent checked it: the init mounts a bind source only
/// through a descriptor of that same file (see `crate::fs_root::open_no_symlinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(st: &nix::sys::stat::FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum InitMount {
    Bind {
        source: PathBuf,
        source_id: FileId,
        target: PathBuf,
        readonly: bool,
    },
    /// A bind whose writes land in a throwaway tmpfs overlay.
    Overlay {
        source: PathBuf,
        source_id: FileId,
        target: PathBuf,
    },
    Tmpfs {
        target: PathBuf,
        size_bytes: Option<u64>,
    },
    Secret {
        target: PathBuf,
        data: SecretBytes,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A socket (host path) bound at `target` after its mode and owner are set.
    Ssh {
        socket: PathBuf,
        target: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Status {
    /// Namespaces unshared; the parent may write the id maps.
    Unshared,
    /// The host pid of the step's pid 1 (killing it tears the whole namespace down).
    Pid1(i32),
    /// A mountpoint the sandbox had to create (path inside the root).
    Created(PathBuf),
    /// The step got the container's /proc (bound), not a fresh one (`MountOp::Proc`).
    ProcBound,
    /// Setup failed; the command did not run.
    Error(String),
    /// The command is starting.
    Running,
}

/// What the `__sandbox-mapped` helper reports (see `mapped.rs`).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum MappedStatus {
    /// In its user namespace: the parent may write the id maps.
    Unshared,
    /// Something the unpacker skipped or neutralised.
    Warning(String),
    /// The layer written on stdout.
    Layer {
        diff_id: String,
        digest: String,
        size: u64,
    },
    /// The operation failed.
    Error(String),
}

/// The write end of a status pipe (fd [`STATUS_FD`] of a re-executed kiln): one JSON line
/// per report. The init's pid 1 closes it before the command starts.
pub(crate) struct StatusPipe(Option<std::fs::File>);

impl StatusPipe {
    /// Takes fd [`STATUS_FD`], made close-on-exec; `None` when it is not open (the hidden
    /// entry was run by hand).
    pub fn from_fd() -> Option<StatusPipe> {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0 {
            return None;
        }
        // SAFETY: F_SETFD on the descriptor checked open above; it was set up by the parent
        // for this process alone, so owning it here is sound.
        let file = unsafe {
            libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
            std::fs::File::from_raw_fd(STATUS_FD)
        };
        Some(StatusPipe(Some(file)))
    }

    pub fn send<T: serde::Serialize>(&mut self, status: &T) {
        let mut line = serde_json::to_vec(status).expect("status serializes");
        line.push(b'\n');
        // A parent gone away is handled by PDEATHSIG; nothing useful to do here.
        if let Some(file) = &mut self.0 {
            let _ = file.write_all(&line);
        }
    }

    pub fn close(&mut self) {
        self.0 = None;
    }
}

/// Spawns `cmd` with the write end of a new pipe as its fd [`STATUS_FD`]; returns the child
/// and the read end, which reaches EOF once every process holding the write end is gone.
pub(crate) fn spawn_with_status_pipe(cmd: &mut Command) -> std::io::Result<(Child, std::fs::File)> {
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let w = status_w.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // dup2/fcntl on fds that stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if w == STATUS_FD {
                libc::fcntl(w, libc::F_SETFD, 0)
            } else {
                libc::dup2(w, STATUS_FD)
            };
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let child = cmd.spawn()?;
    drop(status_w);
    Ok((child, std::fs::File::from(status_r)))
}
