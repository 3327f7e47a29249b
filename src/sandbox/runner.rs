//! The parent side of one step: validates the spec, prepares a state dir beside the upper
//! dir, re-executes kiln as the step's init, writes its id maps, streams its output as
//! progress events, and cleans up (mountpoint stubs out of the diff, state dir removed).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cache::CacheLock;
use super::idmap;
use super::output::StepLog;
use super::pidfd::PidFd;
use super::protocol::{
    FileId, GO, InitMount, InitSpec, OVERLAY_FAILED, Status, spawn_with_status_pipe,
};
use super::rootfs::overlay_safe;
use super::{
    Force, Isolation, MountSpec, Probe, Sandbox, SandboxError, Security, StepOutcome, StepSpec,
};
use crate::layer::LayerIdMap;
use crate::progress::Progress;

/// Kills running steps: every process of each step dies (its pid 1 is killed, which ends the
/// pid namespace) and `run_step` returns [`SandboxError::Interrupted`]. Steps started after
/// a cancel fail at once. Signals go only through pidfds of processes kiln started: the
/// outer init (kiln's child) and the pid 1 it forked (checked to be its child).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Mutex<CancelState>>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: bool,
    next: u64,
    running: Vec<Running>,
}

#[derive(Debug)]
struct Running {
    token: u64,
    outer: Outer,
    pid1: Option<Pid1>,
}

/// The outer init: a pidfd, or its pid where pidfds are missing (kernels before 5.3; it is
/// kiln's unreaped child while registered, so the pid is still its own).
#[derive(Debug)]
enum Outer {
    Handle(PidFd),
    Pid(Pid),
}

impl Outer {
    fn kill(&self) {
        match self {
            Outer::Handle(h) => h.kill(),
            Outer::Pid(p) => {
                let _ = kill(*p, Signal::SIGKILL);
            }
        }
    }
}

#[derive(Debug)]
struct Pid1 {
    handle: PidFd,
    /// Plain chroot: no pid namespace; pid 1 leads the process group the command is in.
    group: bool,
}

impl Pid1 {
    fn kill(&self) {
        if self.group {
            // Pid 1 is unreaped while the step is registered: its pid still names its own
            // group (outer kills the group before reaping it).
            let _ = kill(Pid::from_raw(-self.handle.pid().as_raw()), Signal::SIGKILL);
        }
        self.handle.kill();
    }
}

impl Cancel {
    pub fn cancel(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.cancelled = true;
        for running in &state.running {
            if let Some(pid1) = &running.pid1 {
                pid1.kill();
            }
            running.outer.kill();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).cancelled
    }

    fn register(&self, outer: Pid) -> u64 {
        let outer = PidFd::open(outer).map_or(Outer::Pid(outer), Outer::Handle);
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.next += 1;
        let token = state.next;
        if state.cancelled {
            outer.kill();
        }
        state.running.push(Running {
            token,
            outer,
            pid1: None,
        });
        token
    }

    /// Records the step's pid 1, once.
    fn set_pid1(&self, token: u64, pid1: Pid1) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let cancelled = state.cancelled;
        if let Some(entry) = state.running.iter_mut().find(|e| e.token == token)
            && entry.pid1.is_none()
        {
            if cancelled {
                pid1.kill();
            }
            entry.pid1 = Some(pid1);
        }
    }

    fn unregister(&self, token: u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.running.retain(|e| e.token != token);
    }
}

pub(crate) fn run_step(
    sandbox: &Sandbox,
    probe: &Probe,
    spec: &StepSpec,
    progress: &Progress,
) -> Result<StepOutcome, SandboxError> {
    validate(spec)?;
    let interrupted = || SandboxError::Interrupted {
        step: spec.id.clone(),
    };
    if sandbox.cancel.is_cancelled() {
        return Err(interrupted());
    }
    let id_map = match probe.isolation {
        Isolation::Rootless => {
            let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
            let (map, warning) = if probe.own_ids {
                idmap::plan(uid.as_raw(), gid.as_raw())
            } else {
                idmap::plan_rootless(uid.as_raw(), gid.as_raw())
            };
            if let Some(w) = warning
                && !sandbox.warned_single_map.swap(true, Ordering::Relaxed)
            {
                progress.warn(w);
            }
            map
        }
        _ => LayerIdMap::default(),
    };
    if !probe.mount_namespace {
        refuse_without_mounts(spec)?;
        // No pid or user namespace stands between the step (root, with the default
        // capabilities) and this process: non-dumpable, so it cannot ptrace kiln or read
        // its memory (that needs CAP_SYS_PTRACE then, which steps never get).
        nix::sys::prctl::set_dumpable(false).map_err(|e| SandboxError::Setup {
            step: spec.id.clone(),
            message: format!("making kiln non-dumpable (PR_SET_DUMPABLE): {e}"),
        })?;
    }
    report_protections(spec, progress);
    let (mounts, _cache_locks) = resolve_mounts(spec)?;
    let (exit_code, tail, created) = attempt(sandbox, probe, spec, &id_map, mounts, progress)?;
    remove_stubs(&spec.upper_dir, &created);
    if sandbox.cancel.is_cancelled() {
        return Err(interrupted());
    }
    Ok(StepOutcome {
        exit_code,
        tail,
        isolation: probe.isolation,
        id_map,
    })
}

/// Runs the step on overlay, or on a copy when overlay is off or refuses to mount (then the
/// command had not started: it is run again on a copy, and later steps go there directly).
fn attempt(
    sandbox: &Sandbox,
    probe: &Probe,
    spec: &StepSpec,
    id_map: &LayerIdMap,
    mounts: Vec<InitMount>,
    progress: &Progress,
) -> Result<Executed, SandboxError> {
    let mut copy = !probe.mount_namespace || sandbox.no_overlay.load(Ordering::Relaxed);
    loop {
        if copy && !sandbox.warned_copy.swap(true, Ordering::Relaxed) {
            progress.warn(copy_warning(probe, sandbox.force));
        }
        let state = StateDir::create(spec)?;
        let mut init = state.init_spec(spec, id_map, probe.isolation, mounts.clone());
        init.mount_namespace = probe.mount_namespace;
        init.copy = copy;
        let result = execute(sandbox, &init, id_map, spec, progress);
        if let Err(e) = state.remove() {
            progress.warn(format!(
                "step {}: could not remove its scratch dir: {e}",
                spec.id
            ));
        }
        match result {
            Err(SandboxError::Setup { message, .. })
                if !copy && message.contains(OVERLAY_FAILED) =>
            {
                sandbox.no_overlay.store(true, Ordering::Relaxed);
                sandbox.warned_copy.store(true, Ordering::Relaxed);
                progress.warn(format!(
                    "{message}; falling back to a copy of the root and a snapshot diff \
                     (slower: every step copies its base)"
                ));
                copy = true;
            }
            Ok(done) if !copy && trusted_overlay(probe) => {
                crate::layer::drop_user_overlay_xattrs(&spec.upper_dir)
                    .map_err(|e| SandboxError::io(&spec.upper_dir, e))?;
                return Ok(done);
            }
            other => return other,
        }
    }
}

/// Whether the step's overlay was mounted by real root without `userxattr`: its marks are
/// `trusted.`, and the `user.overlay.*` that root's store also carries for rootless steps
/// may have been copied up (see `layer/whiteouts.rs`).
fn trusted_overlay(probe: &Probe) -> bool {
    probe.isolation == Isolation::Chroot
        && crate::layer::OpaqueXattr::for_this_process() == crate::layer::OpaqueXattr::Trusted
}

/// Says, for each insecure step, that it runs unconfined (what plain chroot cannot apply
/// is said once, with its copy warning).
fn report_protections(spec: &StepSpec, progress: &Progress) {
    if spec.security == Security::Insecure {
        progress.warn(format!(
            "step {}: RUN --security=insecure: the command runs with every capability, \
             no seccomp filter and an unmasked /proc",
            spec.id
        ));
    }
}

fn copy_warning(probe: &Probe, force: Force) -> String {
    if !probe.mount_namespace {
        format!(
            "no mount namespace: steps run by plain chroot into a copy of their root, \
             without a fresh /proc ({}). Protections in force: the default capabilities \
             less CAP_SYS_CHROOT (it would leave a plain chroot), no_new_privs, the seccomp \
             filter; missing: masked /proc paths, a nodev root (device nodes in the image \
             can be opened), a pid namespace (host processes can be seen and signalled)",
            probe.reason
        )
    } else if force.no_overlay {
        "overlay disabled: steps run in a copy of their root, diffed by a snapshot walk".into()
    } else {
        "overlay could not be mounted before: steps run in a copy of their root".into()
    }
}

/// Plain chroot cannot mount anything nor create a network namespace.
fn refuse_without_mounts(spec: &StepSpec) -> Result<(), SandboxError> {
    let what = if !spec.mounts.is_empty() {
        "RUN --mount"
    } else if spec.network == super::Network::None {
        "--network=none"
    } else {
        return Ok(());
    };
    Err(SandboxError::InvalidSpec {
        step: spec.id.clone(),
        message: format!(
            "{what} needs a mount namespace, which this container forbids (plain chroot mode); \
             run kiln where unshare(CLONE_NEWNS) is allowed (e.g. a privileged container)"
        ),
    })
}

fn validate(spec: &StepSpec) -> Result<(), SandboxError> {
    let bad = |message: String| SandboxError::InvalidSpec {
        step: spec.id.clone(),
        message,
    };
    if spec.argv.is_empty() {
        return Err(bad("empty command".into()));
    }
    for dir in spec.lower_dirs.iter().chain([&spec.upper_dir]) {
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(bad(format!(
                "{} must be an existing absolute directory",
                dir.display()
            )));
        }
        if !overlay_safe(dir) {
            return Err(bad(format!(
                "{}: overlay cannot take paths with ',', ':' or '\\'",
                dir.display()
            )));
        }
    }
    let mut upper =
        std::fs::read_dir(&spec.upper_dir).map_err(|e| SandboxError::io(&spec.upper_dir, e))?;
    if upper.next().is_some() {
        return Err(bad(format!(
            "upper dir {} must be empty",
            spec.upper_dir.display()
        )));
    }
    if spec.workdir.as_ref().is_some_and(|w| !w.is_absolute()) {
        return Err(bad("WORKDIR must be absolute".into()));
    }
    for m in &spec.mounts {
        let target = match m {
            MountSpec::Cache { target, .. }
            | MountSpec::Secret { target, .. }
            | MountSpec::Bind { target, .. }
            | MountSpec::Tmpfs { target, .. }
            | MountSpec::Ssh { target, .. } => target,
        };
        if !target.is_absolute() {
            return Err(bad(format!(
                "mount target {} must be absolute",
                target.display()
            )));
        }
        if let MountSpec::Bind {
            source,
            readonly: false,
            ..
        } = m
            && !overlay_safe(source)
        {
            return Err(bad(format!(
                "{}: overlay cannot take paths with ',', ':' or '\\'",
                source.display()
            )));
        }
    }
    Ok(())
}

fn resolve_mounts(spec: &StepSpec) -> Result<(Vec<InitMount>, Vec<CacheLock>), SandboxError> {
    let mut locks = Vec::new();
    let mut mounts = Vec::new();
    for m in &spec.mounts {
        mounts.push(match m.clone() {
            MountSpec::Cache {
                id,
                target,
                cache_root,
                sharing,
                readonly,
            } => {
                let lock = CacheLock::acquire(&cache_root, &id, sharing)?;
                let source = std::fs::canonicalize(lock.dir())
                    .map_err(|e| SandboxError::io(lock.dir(), e))?;
                locks.push(lock);
                InitMount::Bind {
                    source_id: source_id(spec, &source)?,
                    source,
                    target,
                    readonly,
                }
            }
            MountSpec::Secret {
                target,
                data,
                mode,
                uid,
                gid,
            } => InitMount::Secret {
                target,
                data,
                mode,
                uid,
                gid,
            },
            MountSpec::Bind {
                source,
                target,
                readonly: true,
            } => InitMount::Bind {
                source_id: source_id(spec, &source)?,
                source,
                target,
                readonly: true,
            },
            MountSpec::Bind {
                source,
                target,
                readonly: false,
            } => InitMount::Overlay {
                source_id: source_id(spec, &source)?,
                source,
                target,
            },
            MountSpec::Tmpfs { target, size_bytes } => InitMount::Tmpfs { target, size_bytes },
            MountSpec::Ssh {
                socket,
                target,
                mode,
                uid,
                gid,
            } => InitMount::Ssh {
                socket,
                target,
                mode,
                uid,
                gid,
            },
        });
    }
    Ok((mounts, locks))
}

/// Which file a bind source is: the caller resolved it (a context path with every symlink
/// resolved inside the context), so a symlink on its path now is a component swapped since,
/// and the step is refused. The init mounts that same file or nothing (`rootfs::open_checked`).
fn source_id(spec: &StepSpec, source: &Path) -> Result<FileId, SandboxError> {
    let (_fd, st) = crate::fs_root::open_no_symlinks(source).map_err(|source_err| {
        SandboxError::BindSource {
            step: spec.id.clone(),
            path: source.to_path_buf(),
            source: source_err,
        }
    })?;
    Ok(FileId::of(&st))
}

/// The step's scratch space, beside the upper dir (overlay needs upper and work on one
/// file system): `work/`, `merged/`, `scratch/`, `empty/`, generated `/etc` files.
struct StateDir(tempfile::TempDir);

impl StateDir {
    fn create(spec: &StepSpec) -> Result<StateDir, SandboxError> {
        let parent = spec.upper_dir.parent().unwrap_or(Path::new("/"));
        let dir = tempfile::Builder::new()
            .prefix(".kiln-step-")
            .tempdir_in(parent)
            .map_err(|e| SandboxError::io(parent, e))?;
        let hostname = spec.hostname.clone().unwrap_or_else(|| "kiln".into());
        let files = [
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
                ),
            ),
            ("resolv.conf", host_resolv_conf()),
            ("hostname", format!("{hostname}\n")),
        ];
        for sub in ["work", "merged", "scratch", "empty", "etc"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).map_err(|e| SandboxError::io(&p, e))?;
        }
        for (name, text) in files {
            let p = dir.path().join("etc").join(name);
            std::fs::write(&p, text).map_err(|e| SandboxError::io(&p, e))?;
        }
        Ok(StateDir(dir))
    }

    fn init_spec(
        &self,
        spec: &StepSpec,
        map: &LayerIdMap,
        isolation: Isolation,
        mounts: Vec<InitMount>,
    ) -> InitSpec {
        let d = self.0.path();
        let mut lowers = spec.lower_dirs.clone();
        if lowers.is_empty() {
            lowers.push(d.join("empty")); // overlay needs at least one lower dir
        }
        InitSpec {
            step: spec.id.clone(),
            user_namespace: isolation == Isolation::Rootless,
            mount_namespace: true,
            copy: false,
            single_id: map.is_single(),
            lowers,
            upper: spec.upper_dir.clone(),
            work: d.join("work"),
            merged: d.join("merged"),
            scratch: d.join("scratch"),
            etc_files: ["hosts", "resolv.conf", "hostname"]
                .map(|n| (d.join("etc").join(n), n.to_string()))
                .into(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            user: spec.user.clone(),
            workdir: spec.workdir.clone().unwrap_or_else(|| "/".into()),
            network: spec.network,
            hostname: spec.hostname.clone().unwrap_or_else(|| "kiln".into()),
            mounts,
            security: spec.security,
        }
    }

    /// Removes the state dir. Overlay makes its own dirs in the work dir with mode 000
    /// (`work/work`, and `work/incompat/volatile` for a volatile mount): opened up first, or
    /// a rootless kiln, without CAP_DAC_OVERRIDE, could not remove what is inside them.
    fn remove(self) -> std::io::Result<()> {
        open_up_dirs(&self.0.path().join("work"));
        self.0.close()
    }
}

/// Gives every directory from `dir` down mode 0700 (the work dir of kiln's own overlay: no
/// step ever sees it, so nothing in it is a step's symlink).
fn open_up_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up_dirs(&entry.path());
        }
    }
}

/// The host's resolver config, skipping systemd-resolved's stub (unreachable from a netns).
fn host_resolv_conf() -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if text.contains("127.0.0.53")
        && let Ok(real) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return real;
    }
    text
}

type Executed = (i32, Vec<String>, Vec<PathBuf>);

/// Said once when a step gets the container's /proc (`MountOp::Proc`).
const PROC_BOUND: &str = "protections in force: this container refuses a fresh /proc (it masks \
    parts of its own), so steps see the container's /proc with its masks and kiln's: its \
    processes are listed (their command lines are readable) but live in a parent user and pid \
    namespace, out of the step's reach (no signals, no ptrace, no environment)";

fn execute(
    sandbox: &Sandbox,
    init: &InitSpec,
    map: &LayerIdMap,
    spec: &StepSpec,
    progress: &Progress,
) -> Result<Executed, SandboxError> {
    let (mut child, status_file) = spawn_init(&sandbox.kiln_exe)?;
    // Before the init reads its spec, so before it forks anything; removed (after killing
    // what is left in it) when this function returns.
    let _pids = limit_pids(sandbox, child.id(), &spec.id, progress);
    let token = sandbox.cancel.register(Pid::from_raw(child.id() as i32));
    let log = StepLog::new(&spec.id, progress);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let talk = std::thread::scope(|s| {
        if let Some(out) = stdout {
            s.spawn(|| log.read(out));
        }
        if let Some(err) = stderr {
            s.spawn(|| log.read(err));
        }
        let proc_bound = || {
            if !sandbox.warned_proc.swap(true, Ordering::Relaxed) {
                progress.info(PROC_BOUND.to_string());
            }
        };
        let talk = converse(
            &mut child,
            status_file,
            init,
            map,
            (&sandbox.cancel, token),
            &proc_bound,
        );
        let status = child.wait();
        (talk, status)
    });
    sandbox.cancel.unregister(token);
    let tail = log.finish();
    let (talk, status) = talk;
    let (created, setup_error) = talk?;
    let status = status.map_err(|e| SandboxError::io(&sandbox.kiln_exe, e))?;
    if let Some(message) = setup_error {
        return Err(SandboxError::Setup {
            step: spec.id.clone(),
            message,
        });
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok((code, tail, created))
}

/// Puts the just-spawned init in a fresh cgroup with the sandbox's pids limit, when there is
/// one and cgroups allow; says once (info) when they do not, and warns when a step's cgroup
/// cannot be made where others could.
fn limit_pids(
    sandbox: &Sandbox,
    init_pid: u32,
    step: &str,
    progress: &Progress,
) -> Option<super::cgroup::StepCgroup> {
    if sandbox.pids_limit == 0 {
        return None;
    }
    let parent = sandbox
        .pids_parent
        .get_or_init(super::cgroup::PidsParent::find);
    match parent {
        Ok(parent) => match parent.add(init_pid, sandbox.pids_limit) {
            Ok(cgroup) => Some(cgroup),
            Err(e) => {
                progress.warn(format!(
                    "step {step}: pids limit {} not applied: cgroup: {e}",
                    sandbox.pids_limit
                ));
                None
            }
        },
        Err(why) => {
            if !sandbox.warned_pids.swap(true, Ordering::Relaxed) {
                progress.info(format!(
                    "protections in force: no pids limit per step ({why})"
                ));
            }
            None
        }
    }
}

fn spawn_init(exe: &Path) -> Result<(Child, std::fs::File), SandboxError> {
    let mut cmd = Command::new(exe);
    cmd.arg("__sandbox-init")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Only the init's processes hold the write end, so EOF means the step is over.
    spawn_with_status_pipe(&mut cmd).map_err(|source| SandboxError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })
}

/// The handshake and status stream: spec, maps, `go`, then status lines until every
/// process of the step has closed the pipe. Returns the created mountpoints and any setup error.
fn converse(
    child: &mut Child,
    status_file: std::fs::File,
    init: &InitSpec,
    map: &LayerIdMap,
    (cancel, token): (&Cancel, u64),
    proc_bound: &dyn Fn(),
) -> Result<(Vec<PathBuf>, Option<String>), SandboxError> {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut line = serde_json::to_vec(init).expect("init spec serializes");
    line.push(b'\n');
    let pid = child.id();
    let io_err = |e: std::io::Error| SandboxError::io(format!("/proc/{pid}/fd/0"), e);
    // A dead child (EPIPE) shows up as a setup error or exit status below.
    let _ = stdin.write_all(&line);
    let (mut created, mut error) = (Vec::new(), None);
    // Nothing of the step's may speak after `Running` (pid 1 closed the pipe, the command
    // never had it); the outer's `Pid1` may still arrive then, and is checked anyway.
    let mut running = false;
    let outer = Pid::from_raw(pid as i32);
    for raw in BufReader::new(status_file).lines() {
        let raw = raw.map_err(io_err)?;
        match serde_json::from_str::<Status>(&raw) {
            Ok(Status::Unshared) if !running => {
                if !map.is_identity()
                    && let Err(e) = idmap::apply(pid, map)
                {
                    let _ = child.kill();
                    return Err(e);
                }
                let _ = writeln!(stdin, "{GO}");
            }
            Ok(Status::Pid1(p)) => {
                if let Some(handle) = PidFd::child_of(Pid::from_raw(p), outer) {
                    let group = !init.mount_namespace;
                    cancel.set_pid1(token, Pid1 { handle, group });
                }
            }
            Ok(Status::Created(p)) if !running => created.push(p),
            Ok(Status::ProcBound) if !running => proc_bound(),
            Ok(Status::Error(e)) => error = Some(e),
            Ok(Status::Running) => running = true,
            Ok(_) => {} // a line out of order: not from kiln's init, ignored
            Err(e) => error = Some(format!("unreadable status from the init ({e}): {raw}")),
        }
    }
    Ok((created, error))
}

/// Takes the mountpoints the sandbox created out of the diff, deepest first, when they are
/// still what the sandbox made (an empty file or an empty directory). A directory that was
/// only copied up to hold such a mountpoint (e.g. `/etc` for a missing `/etc/hosts`) goes
/// too, when it is empty and not opaque: the lower one shows through again. Paths come from
/// the init: each must be an absolute path of normal components whose parents are real
/// directories of the upper dir, or it is skipped.
fn remove_stubs(upper: &Path, created: &[PathBuf]) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let created: Vec<&Path> = created
        .iter()
        .filter(|p| in_upper(upper, p).is_some())
        .map(PathBuf::as_path)
        .collect();
    for inside in created.iter().rev() {
        let Some(path) = in_upper(upper, inside) else {
            continue;
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&path); // fails (kept) when not empty
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&path);
            }
            // A /dev node plain chroot made (never a 0/0 whiteout).
            Ok(m) if m.file_type().is_char_device() && m.rdev() != 0 => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    for inside in &created {
        let Some(parent) = inside.parent() else {
            continue;
        };
        if parent == Path::new("/") || created.contains(&parent) {
            continue;
        }
        let Some(dir) = in_upper(upper, parent) else {
            continue;
        };
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) && !is_opaque(&dir) {
            let _ = std::fs::remove_dir(&dir); // fails (kept) when not empty
        }
    }
}

/// The upper dir's path for `inside` (a path in the step's root), only when `inside` is
/// `/` followed by normal components (no `..`, `.` or second root) and every parent of it
/// in the upper dir is a real directory (not a symlink out of it).
fn in_upper(upper: &Path, inside: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut components = inside.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    let parts: Vec<_> = components.collect();
    if parts.is_empty() || !parts.iter().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut path = upper.to_path_buf();
    for (n, part) in parts.iter().enumerate() {
        path.push(part);
        let last = n + 1 == parts.len();
        if !last && !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    Some(path)
}

fn is_opaque(dir: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_paths_must_stay_in_the_upper_dir() {
        let upper = tempfile::tempdir().unwrap();
        let up = upper.path();
        std::fs::create_dir(up.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", up.join("link")).unwrap();
        assert_eq!(
            in_upper(up, Path::new("/etc/hosts")),
            Some(up.join("etc/hosts"))
        );
        assert_eq!(in_upper(up, Path::new("/link")), Some(up.join("link")));
        for bad in [
            "etc/hosts",
            "/../x",
            "/etc/../../x",
            "/",
            "/link/tmp",
            "//x/..",
        ] {
            assert_eq!(in_upper(up, Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn forged_created_paths_remove_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(dir.path().join("victim")).unwrap();
        std::os::unix::fs::symlink(dir.path(), upper.join("out")).unwrap();
        remove_stubs(&upper, &["/../victim", "/out/victim"].map(PathBuf::from));
        assert!(dir.path().join("victim").is_dir());
    }
}
