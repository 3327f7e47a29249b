//! The child side: the kiln binary re-executed as a step's init. `main` calls
//! [`enter_if_requested`] before parsing its command line.
//!
//! Process shape: the re-executed kiln ("outer", single-threaded) unshares the namespaces,
//! waits for the parent to write its id maps, then forks the step's pid 1. Pid 1 builds the
//! root (overlay, /proc, /dev…), pivots into it and forks the command; it reaps orphans and
//! exits with the command's status, which tears the pid namespace (every process of the step)
//! and the mount namespace (every mount) down.

use std::ffi::{CString, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::fcntl::{AtFlags, OFlag};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use super::protocol::{GO, InitSpec, STATUS_FD, Status, StatusPipe};
use super::security::{Security, caps, seccomp};
use super::{Network, snapshot, user};
use crate::fs_root::{Create, Leaf, Walk};

/// Exit code of the init when the sandbox itself failed (not the command).
const SETUP_FAILED: u8 = 125;

/// Runs a hidden sandbox entry when argv[1] names one; `None` means "not for us".
pub fn enter_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first = args.next()?;
    match first.to_str()? {
        "__sandbox-init" => Some(outer_main()),
        "__sandbox-probe" => Some(probe_main()),
        "__sandbox-run" => Some(super::entry::run_main(args.collect::<Vec<OsString>>())),
        "__sandbox-mapped" => Some(super::mapped::child_main(args.collect::<Vec<OsString>>())),
        _ => None,
    }
}

/// Tries what a rootless step needs first: a user namespace with a mount namespace in it,
/// and this process's own id mapped to root there (the least any map holds). With the
/// argument `mountns` (chroot mode, root): a mount namespace alone.
fn probe_main() -> ExitCode {
    let user = std::env::args().nth(2).as_deref() != Some("mountns");
    let flags = if user {
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS
    } else {
        CloneFlags::CLONE_NEWNS
    };
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    if let Err(e) = unshare(flags) {
        eprintln!("unshare({flags:?}): {e}");
        return ExitCode::from(1);
    }
    if !user {
        return ExitCode::SUCCESS;
    }
    let maps = [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ];
    for (file, text) in maps {
        if let Err(e) = std::fs::write(file, &text) {
            eprintln!("writing {text:?} to {file}: {e}");
            return ExitCode::from(super::protocol::PROBE_MAP_REFUSED);
        }
    }
    ExitCode::SUCCESS
}

fn outer_main() -> ExitCode {
    // The parent may have had signals blocked for its own handler thread; the mask survives
    // exec, and the step must see SIGINT/SIGTERM normally.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Close-on-exec from here on: no exec of this process tree may inherit it.
    let Some(mut status) = StatusPipe::from_fd() else {
        eprintln!("__sandbox-init is internal to kiln: it needs the status pipe on fd {STATUS_FD}");
        return ExitCode::from(SETUP_FAILED);
    };
    // Whatever else kiln's caller leaked into this process (a jobserver pipe…) is closed:
    // pid 1 must hold nothing a command could reach through /proc/1/fd.
    // SAFETY: close_range only closes descriptors, and none above the status pipe is used
    // by this process.
    unsafe {
        libc::syscall(libc::SYS_close_range, STATUS_FD as u32 + 1, u32::MAX, 0u32);
    }
    let mut stdin = BufReader::new(std::io::stdin());
    match outer(&mut stdin, &mut status) {
        Ok(code) => code,
        Err(message) => {
            status.send(&Status::Error(message));
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn outer(stdin: &mut impl BufRead, status: &mut StatusPipe) -> Result<ExitCode, String> {
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| format!("reading the step spec: {e}"))?;
    let spec: InitSpec = serde_json::from_str(&line).map_err(|e| format!("bad step spec: {e}"))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if spec.user_namespace {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if !spec.mount_namespace {
        // Plain chroot: no namespace at all (the container forbids them, and its seccomp
        // profile may refuse unshare(2) itself). The command runs as root beside this
        // process and pid 1 (forked from it, inheriting the flag): non-dumpable, they
        // cannot be ptraced by it without CAP_SYS_PTRACE.
        flags = CloneFlags::empty();
        nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    }
    let unshared = if flags.is_empty() {
        Ok(())
    } else {
        unshare(flags)
    };
    unshared.map_err(|e| {
        let hint = if spec.user_namespace {
            "user namespaces are forbidden here; run kiln as root for chroot isolation"
        } else {
            "this container forbids namespaces (no CAP_SYS_ADMIN); the probe should have \
             chosen plain chroot"
        };
        format!("unshare({flags:?}): {e} ({hint})")
    })?;
    status.send(&Status::Unshared);
    line.clear();
    stdin
        .read_line(&mut line)
        .map_err(|e| format!("waiting for the id maps: {e}"))?;
    if line.trim() != GO {
        return Err("the parent did not confirm the id maps".into());
    }
    redirect_stdin_to_null()?;
    let before = if spec.copy {
        let merged = &spec.merged;
        snapshot::populate(&spec.lowers, merged)
            .map_err(|e| format!("copying the lower dirs (overlay fallback): {e}"))?;
        Some(snapshot::Snapshot::take(merged).map_err(|e| format!("snapshot: {e}"))?)
    } else {
        None
    };
    // SAFETY: this process is single-threaded (a fresh exec of kiln that started no threads),
    // so the child may do anything after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = match pid1(&spec, status) {
                Ok(code) => code,
                Err(message) => {
                    status.send(&Status::Error(message));
                    SETUP_FAILED as i32
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            status.send(&Status::Pid1(child.as_raw()));
            let code = if spec.mount_namespace {
                wait_for(child)
            } else {
                kill_group_when_done(child)
            };
            if let Some(before) = before {
                finish_copy(&spec, before, code)?;
            }
            Ok(ExitCode::from(code as u8))
        }
    }
}

/// Copy fallback, after the step: its diff into the upper dir (only when the setup
/// succeeded), then the copy removed here, where every mapped id is ours to delete.
fn finish_copy(spec: &InitSpec, before: snapshot::Snapshot, code: i32) -> Result<(), String> {
    let markers = if spec.user_namespace {
        snapshot::Markers::User
    } else {
        snapshot::Markers::Trusted
    };
    let diff = if code == SETUP_FAILED as i32 {
        Ok(())
    } else {
        snapshot::write_diff(before, &spec.merged, &spec.upper, markers)
            .map_err(|e| format!("writing the step's diff (overlay fallback): {e}"))
    };
    if let Ok(entries) = std::fs::read_dir(&spec.merged) {
        for entry in entries.flatten() {
            let p = entry.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    diff
}

fn redirect_stdin_to_null() -> Result<(), String> {
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))
}

/// The step's pid 1: builds the root, runs the command, reaps everything, exits with the
/// command's status.
fn pid1(spec: &InitSpec, status: &mut StatusPipe) -> Result<i32, String> {
    // getppid() is 0 here (the parent is outside the pid namespace), so a parent that died
    // before this line cannot be detected; the outer process only dies by SIGKILL, and then
    // the caller kills pid 1 too (Cancel).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    if spec.mount_namespace {
        match nix::unistd::sethostname(&spec.hostname) {
            // Container seccomp profiles (podman's, Docker's) refuse sethostname without
            // CAP_SYS_ADMIN in the container, even in a UTS namespace of the step's own:
            // the step then keeps the container's name (its /etc/hostname is still ours).
            Err(nix::errno::Errno::EPERM) if spec.user_namespace => {}
            other => other.map_err(|e| format!("sethostname: {e}"))?,
        }
    }
    if spec.network == Network::None {
        loopback_up()?;
    }
    let bound = std::cell::Cell::new(false);
    let mut created = |p: &Path| status.send(&Status::Created(p.to_path_buf()));
    let mut proc_bound = || bound.set(true);
    if spec.mount_namespace && spec.copy {
        // The outer process walks the copy afterwards: pid 1's pivot_root must not move its
        // root too, so pid 1 gets a mount namespace of its own.
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    }
    // Plain chroot (no mount namespace) too: its plan makes /dev nodes and chroots.
    super::rootfs::prepare(spec, &mut created, &mut proc_bound)?;
    if bound.get() {
        status.send(&Status::ProcBound);
    }
    let creds = credentials(spec)?;
    let workdir = create_workdir(&spec.workdir, &creds)
        .map_err(|e| format!("WORKDIR {}: {e}", spec.workdir.display()))?;
    let exec = Exec::prepare(spec, &creds)?;
    if !spec.mount_namespace {
        // No pid namespace to tear down: the caller cancels by killing this process's
        // group, which the command joins (it does not call setsid itself then). Leaving the
        // terminal's group also keeps its Ctrl-C for kiln.
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    }
    status.send(&Status::Running);
    // The last status line: the command must not inherit (or find in /proc/1/fd) the pipe.
    status.close();
    // SAFETY: pid 1 is single-threaded (forked from the single-threaded outer process).
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => exec.run(&creds, &workdir),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            // The status pipe is closed: stderr is the only way left to say why.
            let _ = writeln!(std::io::stderr(), "kiln sandbox: fork: {e}");
            return Ok(SETUP_FAILED as i32);
        }
    };
    Ok(reap_until(child))
}

/// Resolves the working directory in the step's root (now `/`) by descriptor, creating its
/// missing parts owned by the step's user (as BuildKit does) so `USER app` + `WORKDIR /app`
/// can write there. Returns its real path (no symlink in it).
fn create_workdir(dir: &Path, creds: &user::Credentials) -> std::io::Result<PathBuf> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = nix::fcntl::open("/", flags, nix::sys::stat::Mode::empty())?;
    let (uid, gid) = (
        Some(Uid::from_raw(creds.uid)),
        Some(Gid::from_raw(creds.gid)),
    );
    let mut own = |made: BorrowedFd<'_>, _: &[Vec<u8>]| {
        Ok(nix::unistd::fchownat(
            made,
            "",
            uid,
            gid,
            AtFlags::AT_EMPTY_PATH,
        )?)
    };
    let how = Walk {
        follow_last: true,
        create: Some(Create {
            leaf: Leaf::Dir,
            made: &mut own,
        }),
    };
    let dir = crate::fs_root::resolve(root.as_fd(), dir.as_os_str().as_bytes(), how)?;
    match dir.kind == nix::sys::stat::SFlag::S_IFDIR {
        true => Ok(dir.in_root_path()),
        false => Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
    }
}

fn credentials(spec: &InitSpec) -> Result<user::Credentials, String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    user::resolve(
        spec.user.as_deref(),
        &read("/etc/passwd"),
        &read("/etc/group"),
    )
}

/// Waits for `child`; 128+N when it was killed by signal N.
fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return SETUP_FAILED as i32,
        }
    }
}

/// Plain chroot: waits for pid 1 (the leader of the step's process group) to exit, kills
/// what the command left running in that group (it must not outlive the step nor write
/// into the copy while it is diffed), then reaps pid 1. Killing before reaping means the
/// group id is still pid 1's own and cannot name another process group.
fn kill_group_when_done(pid1: Pid) -> i32 {
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`; WNOWAIT leaves pid 1 a zombie.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid1.as_raw() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            break;
        }
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(-pid1.as_raw()), Signal::SIGKILL);
    wait_for(pid1)
}

/// Reaps every child (pid 1 inherits orphans) until `main` has exited.
fn reap_until(main: Pid) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return SETUP_FAILED as i32,
        }
    }
}

/// The command, resolved and converted before fork so the child only makes syscalls.
struct Exec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    single_id: bool,
    /// Plain chroot: the command stays in pid 1's process group (the cancel target)
    /// instead of starting a session of its own, and runs without CAP_SYS_CHROOT.
    plain_chroot: bool,
    /// `None` for `RUN --security=insecure`: full capabilities, no filter.
    confine: Option<seccomp::Filters>,
}

impl Exec {
    fn prepare(spec: &InitSpec, creds: &user::Credentials) -> Result<Exec, String> {
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let mut env = spec.env.clone();
        let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
        if !has(&env, "PATH") {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if !has(&env, "HOME") {
            env.push(format!("HOME={}", creds.home));
        }
        if !has(&env, "HOSTNAME") {
            env.push(format!("HOSTNAME={}", spec.hostname));
        }
        let first = spec.argv.first().ok_or("empty command")?;
        let program = find_program(first, &env)
            .ok_or_else(|| format!("{first}: command not found in PATH"))?;
        Ok(Exec {
            program: cstr(&program.to_string_lossy())?,
            argv: spec
                .argv
                .iter()
                .map(|a| cstr(a))
                .collect::<Result<_, _>>()?,
            env: env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?,
            single_id: spec.single_id,
            plain_chroot: !spec.mount_namespace,
            confine: match spec.security {
                Security::Sandbox => Some(seccomp::Filters::compile().map_err(|e| e.chain())?),
                Security::Insecure => None,
            },
        })
    }

    /// In the command's process: drop to the step's user and exec. Never returns.
    fn run(&self, creds: &user::Credentials, workdir: &Path) -> ! {
        if let Err(err) = self.drop_privileges(creds, workdir) {
            let _ = writeln!(std::io::stderr(), "kiln sandbox: {err}");
            std::process::exit(SETUP_FAILED as i32);
        }
        let Err(e) = nix::unistd::execve(&self.program, &self.argv, &self.env);
        let _ = writeln!(
            std::io::stderr(),
            "kiln sandbox: exec {:?}: {e}",
            self.program
        );
        std::process::exit(127)
    }

    /// Order matters: the bounding set needs CAP_SETPCAP (before the uid switch), the uid
    /// switch needs CAP_SETUID (kept in the default set), seccomp comes last (it forbids
    /// nothing execve needs, but would forbid the setup).
    fn drop_privileges(&self, creds: &user::Credentials, workdir: &Path) -> Result<(), String> {
        if !self.plain_chroot {
            // Its own session: a terminal's Ctrl-C reaches kiln, which then kills the step.
            let _ = nix::unistd::setsid();
        }
        reset_signals();
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        if self.confine.is_some() {
            let mut mask = caps::default_mask();
            if self.plain_chroot {
                mask &= !(1 << caps::SYS_CHROOT);
            }
            caps::restrict_to(mask).map_err(|e| e.chain())?;
        }
        if !self.single_id {
            let groups: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            nix::unistd::setgroups(&groups)
                .map_err(|e| format!("setgroups {:?}: {e}", creds.groups))?;
        }
        let (uid, gid) = (Uid::from_raw(creds.uid), Gid::from_raw(creds.gid));
        nix::unistd::setresgid(gid, gid, gid)
            .map_err(|e| unmapped("gid", creds.gid, e, self.single_id))?;
        nix::unistd::setresuid(uid, uid, uid)
            .map_err(|e| unmapped("uid", creds.uid, e, self.single_id))?;
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
        nix::unistd::chdir(workdir).map_err(|e| format!("chdir {}: {e}", workdir.display()))?;
        close_inherited_fds();
        if let Some(filters) = &self.confine {
            filters.apply().map_err(|e| e.chain())?;
        }
        Ok(())
    }
}

/// Every signal back to SIG_DFL and none blocked: exec keeps SIG_IGN (the Rust runtime
/// ignores SIGPIPE, so `yes | head -1` would never end; kiln's caller may ignore others) and
/// the blocked mask (the parent blocks SIGINT/SIGTERM for its handler thread).
fn reset_signals() {
    // The kernel's struct sigaction with handler SIG_DFL (0), no flags, no restorer and an
    // empty mask: all zero on x86_64 and aarch64.
    let default = [0u64; 4];
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction (32 bytes, `default`) and writes
        // nothing (null old action); the raw syscall also reaches the signals glibc reserves.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn unmapped(what: &str, id: u32, e: nix::errno::Errno, single_id: bool) -> String {
    let hint = if single_id && id != 0 {
        " (only root is mapped: give your user a /etc/subuid and /etc/subgid range)"
    } else {
        ""
    };
    format!("switching to {what} {id}: {e}{hint}")
}

/// Closes every fd above stderr (the status pipe and anything a caller leaked).
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; none of ours is used after this point.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// `argv[0]` looked up in the step's own PATH, inside the new root.
fn find_program(name: &str, env: &[String]) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH="))?;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A fresh network namespace has `lo` down; bring it up so localhost works.
fn loopback_up() -> Result<(), String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own; the fd is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!(
                "reading lo flags: {}",
                std::io::Error::last_os_error()
            ));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!(
                "bringing lo up: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
