//! Process handles that cannot name another process: a pidfd keeps referring to the process
//! it was opened for, even after that process dies and its pid is reused. kiln signals the
//! steps' processes only through these.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;

#[derive(Debug)]
pub(crate) struct PidFd {
    fd: OwnedFd,
    pid: Pid,
}

impl PidFd {
    /// Opens a pidfd for `pid`. Only sound for a pid that cannot have been reused yet: a
    /// child not reaped, or a pid checked afterwards ([`PidFd::child_of`]).
    pub(crate) fn open(pid: Pid) -> std::io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd (O_CLOEXEC by default).
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(PidFd { fd, pid })
    }

    /// A pidfd for `pid` only when that process is `parent`'s child: checked after the
    /// pidfd is open, so a pid that a child of the step wrote (or that was reused) is refused.
    pub(crate) fn child_of(pid: Pid, parent: Pid) -> Option<PidFd> {
        if pid.as_raw() <= 0 {
            return None;
        }
        let handle = PidFd::open(pid).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())?;
        // The process may have died between open and read: then its pidfd names a dead
        // process, and the status read above was of a new one; a live check settles it.
        (ppid == parent.as_raw() && handle.alive()).then_some(handle)
    }

    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// SIGKILL to exactly this process (a no-op once it has exited).
    pub(crate) fn kill(&self) {
        // SAFETY: pidfd_send_signal with a null siginfo sends a plain signal; the fd is ours.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            );
        }
    }

    /// Signal 0 through the pidfd: `false` once the process has exited.
    fn alive(&self) -> bool {
        // SAFETY: as in `kill`, with signal 0 (permission and existence check only).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        rc == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_child_of_the_given_parent_is_accepted() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let me = nix::unistd::getpid();
        assert!(PidFd::child_of(pid, me).is_some());
        // A process that is not the parent's child (a pid a step wrote): refused.
        assert!(PidFd::child_of(pid, Pid::from_raw(1)).is_none());
        assert!(PidFd::child_of(me, me).is_none());
        assert!(PidFd::child_of(Pid::from_raw(-1), me).is_none());
        let handle = PidFd::child_of(pid, me).unwrap();
        handle.kill();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        handle.kill(); // reaped: a no-op, never another process
    }
}
