//! A pids limit per step: as root, each step's outer init is put in a fresh cgroup with
//! `pids.max` before it forks anything, so a fork bomb in a RUN command stops at the limit
//! instead of exhausting the host's pids. The cgroup is removed after the step.
//!
//! Where: the `pids` controller of cgroup v2 when the unified hierarchy has it, else the v1
//! `pids` hierarchy (hybrid hosts); steps go in `kiln/step-<pid>` at its root (the root is
//! the only v2 cgroup that may both hold processes and enable controllers for children).
//! Dirs a killed kiln left there are removed by the next build when they are empty (a
//! cgroup with processes cannot be removed, so a running build's are safe).
//! Unprivileged kiln (rootless without a delegated cgroup) applies no limit and says so once.

use std::io;
use std::path::{Path, PathBuf};

/// Where step cgroups go, found once per sandbox.
#[derive(Debug, Clone)]
pub(crate) struct PidsParent {
    /// `<hierarchy>/kiln`.
    dir: PathBuf,
    v2: bool,
}

/// One step's cgroup; removed on drop (after its processes are killed).
#[derive(Debug)]
pub(crate) struct StepCgroup {
    dir: PathBuf,
    v2: bool,
}

/// Why no limit applies here (said once, in the progress warning).
pub(crate) type Unavailable = String;

impl PidsParent {
    /// The `kiln` cgroup of the pids hierarchy, created if missing; empty step cgroups left
    /// by a killed kiln are removed.
    pub fn find() -> Result<PidsParent, Unavailable> {
        if !nix::unistd::geteuid().is_root() {
            return Err("kiln runs unprivileged, without a delegated cgroup".into());
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("reading /proc/self/mounts: {e}"))?;
        let (hierarchy, v2) =
            pids_hierarchy(&mounts).ok_or("no cgroup hierarchy has the pids controller")?;
        let dir = hierarchy.join("kiln");
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
        if v2 {
            for d in [&hierarchy, &dir] {
                enable_pids(d).map_err(|e| format!("enabling pids in {}: {e}", d.display()))?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("step-") {
                    let _ = std::fs::remove_dir(e.path()); // busy (in use) or gone: kept
                }
            }
        }
        Ok(PidsParent { dir, v2 })
    }

    /// A fresh cgroup limited to `max` pids, holding `pid` (a child kiln just spawned that
    /// has not forked yet).
    pub fn add(&self, pid: u32, max: u32) -> io::Result<StepCgroup> {
        let dir = self.dir.join(format!("step-{pid}"));
        // A dir of a killed kiln whose pid was reused: empty, so it goes.
        let _ = std::fs::remove_dir(&dir);
        let mut tries = 0;
        loop {
            std::fs::create_dir(&dir)?;
            let cgroup = StepCgroup {
                dir: dir.clone(),
                v2: self.v2,
            };
            let filled = std::fs::write(dir.join("pids.max"), max.to_string())
                .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
            match filled {
                Ok(()) => return Ok(cgroup),
                // Another kiln's cleanup took it while it was still empty: once more.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries == 0 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The mount point of the hierarchy with the pids controller: cgroup v2 when its root
/// lists `pids`, else v1's `pids` hierarchy.
fn pids_hierarchy(mounts: &str) -> Option<(PathBuf, bool)> {
    let fields = |l: &str| -> Option<(String, String, String)> {
        let mut f = l.split(' ');
        let (_, dir, kind, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
        Some((dir.replace("\\040", " "), kind.into(), opts.into()))
    };
    let all: Vec<_> = mounts.lines().filter_map(fields).collect();
    for (dir, kind, _) in &all {
        let controllers = Path::new(dir).join("cgroup.controllers");
        if kind == "cgroup2"
            && std::fs::read_to_string(controllers)
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            return Some((dir.into(), true));
        }
    }
    all.into_iter()
        .find(|(_, kind, opts)| kind == "cgroup" && opts.split(',').any(|o| o == "pids"))
        .map(|(dir, _, _)| (dir.into(), false))
}

fn enable_pids(dir: &Path) -> io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    if std::fs::read_to_string(&control)?
        .split_whitespace()
        .any(|c| c == "pids")
    {
        return Ok(());
    }
    std::fs::write(control, "+pids")
}

impl StepCgroup {
    /// Kills what is left in the cgroup (the kernel's list: nothing a step says is read).
    fn kill_all(&self) {
        if self.v2 && std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for StepCgroup {
    /// The step is over: its pid namespace is gone, or plain chroot's process group was
    /// killed. Whatever is left is killed; the dir goes once the kernel has reaped it all
    /// (a bounded wait; a dir still busy then is removed by the next build).
    fn drop(&mut self) {
        for _ in 0..200 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => {
                    self.kill_all();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pids_hierarchy() {
        let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n";
        assert_eq!(
            pids_hierarchy(hybrid),
            Some((PathBuf::from("/sys/fs/cgroup/pids"), false))
        );
        assert_eq!(pids_hierarchy("proc /proc proc rw 0 0\n"), None);
    }
}
