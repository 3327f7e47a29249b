//! Helpers for the sandbox tests: a busybox rootfs (from Debian's `busybox-static`), step
//! specs, running a step as the unprivileged `kilntest` user when the tests run as root, and
//! checks on what a step left behind.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use kiln::progress::Event;
use kiln::sandbox::{StepOutcome, StepSpec};

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// The user steps run as: `None` when the tests already run unprivileged.
#[derive(Debug, Clone)]
pub struct Runner {
    pub user: Option<(String, u32, u32)>,
}

/// How rootless steps are run: directly when not root, else as `kilntest`, created by
/// `tests/scripts/unprivileged-user.sh` (idempotent).
pub fn runner() -> Runner {
    static USER: OnceLock<Runner> = OnceLock::new();
    USER.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Runner { user: None };
        }
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/unprivileged-user.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run unprivileged-user.sh");
        assert!(
            out.status.success(),
            "unprivileged-user.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "kilntest"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        Runner {
            user: Some(("kilntest".into(), id("-u"), id("-g"))),
        }
    })
    .clone()
}

impl Runner {
    /// A scratch dir the step's user owns.
    pub fn tempdir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("kiln-sandbox-test-")
            .tempdir_in("/tmp")
            .unwrap();
        self.give(dir.path());
        dir
    }

    /// [`spec`] with the upper dir owned by the step's user.
    pub fn spec(&self, id: &str, dir: &Path, lower: &Path, script: &str) -> StepSpec {
        let s = spec(id, dir, lower, script);
        self.give(&s.upper_dir);
        s
    }

    /// Makes `path` (recursively) belong to the step's user.
    pub fn give(&self, path: &Path) {
        if let Some((_, uid, gid)) = &self.user {
            for entry in walkdir::WalkDir::new(path) {
                let entry = entry.unwrap();
                std::os::unix::fs::lchown(entry.path(), Some(*uid), Some(*gid)).unwrap();
            }
        }
    }

    /// `kiln __sandbox-run <spec> rootless` as the step's user (setpriv execs in place, so
    /// the child's pid is kiln's own: signals reach it directly).
    pub fn command(&self, spec: &StepSpec, dir: &Path) -> Command {
        let path = dir.join(format!("{}.json", spec.id));
        std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
        self.give(&path);
        let mut cmd = match &self.user {
            None => Command::new(KILN),
            Some((_, uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                ]);
                c.arg(kiln_for(*uid, *gid));
                c
            }
        };
        cmd.arg("__sandbox-run")
            .arg(&path)
            .arg("rootless")
            .current_dir("/");
        cmd.env("XDG_RUNTIME_DIR", "/tmp");
        cmd
    }

    /// Runs the step to completion: its outcome and the progress events it sent.
    pub fn run(&self, spec: &StepSpec, dir: &Path) -> (StepOutcome, Vec<serde_json::Value>) {
        let out = self
            .command(spec, dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let events = events(&out);
        assert!(
            out.status.success(),
            "kiln __sandbox-run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: StepOutcome = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "outcome JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (outcome, events)
    }
}

/// The kiln binary as the step's user can execute it: the build's own when its directories
/// are open to that user, else a copy in /tmp (a checkout under /root is not).
pub fn kiln_for(uid: u32, gid: u32) -> PathBuf {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let probe = Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
            ])
            .args(["test", "-x", KILN])
            .status()
            .unwrap();
        if probe.success() {
            return PathBuf::from(KILN);
        }
        let dir = PathBuf::from(format!("/tmp/kiln-sandbox-test-bin-{uid}"));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("kiln.{}", std::process::id()));
        std::fs::copy(KILN, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("kiln")).unwrap();
        dir.join("kiln")
    })
    .clone()
}

/// `kiln` run as `kilntest` (root's tests) with its store at `store`, from `/`, stdin closed,
/// `HOME` and `XDG_RUNTIME_DIR` at /tmp: add the subcommand and its arguments.
pub fn kiln_as_test_user(store: &Path) -> Command {
    let (_, uid, gid) = runner().user.expect("tests run as root here");
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
    ])
    .arg(kiln_for(uid, gid))
    .env("KILN_ROOT", store)
    .env("HOME", "/tmp")
    .env("XDG_RUNTIME_DIR", "/tmp")
    .current_dir("/")
    .stdin(Stdio::null());
    cmd
}

/// The JSON progress events on a runner's stderr.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The output lines of a step, from its events.
pub fn output_lines(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "step_output")
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect()
}

pub fn output_of(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepOutput { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// A busybox rootfs in `dir/lower`: `/bin/busybox` + applet links, passwd/group with `app`
/// (1000:1000), files to change (`/etc/motd`), delete (`/etc/gone`) and link (`/data/orig`).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let root = dir.join("lower");
    for d in ["bin", "etc", "tmp", "root", "data", "home/app"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n"),
        ("etc/motd", "old\n"),
        ("etc/gone", "bye\n"),
        ("data/orig", "linked\n"),
    ];
    for (path, text) in files {
        std::fs::write(root.join(path), text).unwrap();
    }
    root
}

/// A spec with the usual defaults; `dir/upper-<id>` is created empty.
pub fn spec(id: &str, dir: &Path, lower: &Path, script: &str) -> StepSpec {
    let upper = dir.join(format!("upper-{id}"));
    std::fs::create_dir(&upper).unwrap();
    StepSpec {
        id: id.into(),
        lower_dirs: vec![lower.to_path_buf()],
        upper_dir: upper,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        user: None,
        workdir: None,
        network: Default::default(),
        hostname: None,
        mounts: vec![],
        security: Default::default(),
    }
}

/// Every path in `upper`, relative, sorted.
pub fn tree(upper: &Path) -> Vec<String> {
    let mut paths: Vec<String> = walkdir::WalkDir::new(upper)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(upper)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    paths.sort();
    paths
}

/// True for an overlay whiteout: a 0/0 character device, or an empty file with an
/// `overlay.whiteout` xattr (the form the copy fallback writes in a user namespace).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let xattr_form = m.is_file()
        && m.len() == 0
        && ["user.overlay.whiteout", "trusted.overlay.whiteout"]
            .iter()
            .any(|n| xattr::get(path, n).is_ok_and(|v| v.is_some()));
    (m.file_type().is_char_device() && m.rdev() == 0) || xattr_form
}

/// Lines of this process's mountinfo that mention `needle`.
pub fn mounts_mentioning(needle: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = needle.display().to_string();
    info.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Pids of processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

/// Files under `dir` whose content contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// The state dirs (`.kiln-step-*`) left beside an upper dir.
pub fn leftover_state_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kiln-step-"))
        .map(|e| e.path())
        .collect()
}

/// Runs `spec` (which prints `ready` once its `sleep MARKER` processes run), cancels it from
/// another thread, and checks that the step returns `Interrupted` and that every `sleep MARKER`
/// process is gone within 5 s.
pub fn cancel_after_ready(sandbox: &kiln::sandbox::Sandbox, spec: &StepSpec, marker: &str) {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};
    let cancel = sandbox.cancel_handle();
    let (progress, rx) = kiln::progress::Progress::channel();
    let result = std::thread::scope(|s| {
        let step = s.spawn(|| sandbox.run_step(spec, &progress));
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Event::StepOutput { line, .. }) if line == "ready" => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("the step never got ready"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("step ended early: {:?}", step.join())
                }
            }
        }
        assert!(processes_with(&format!("sleep {marker}")).len() >= 2);
        cancel.cancel();
        step.join().unwrap()
    });
    assert!(
        matches!(result, Err(kiln::sandbox::SandboxError::Interrupted { .. })),
        "{result:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "step processes survived the cancel"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
