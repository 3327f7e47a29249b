//! `kiln __sandbox-run <step.json> [auto|rootless|chroot]`: runs one [`StepSpec`] outside
//! any build. The integration tests use it to run a step as an unprivileged user
//! (`runuser -u kilntest -- kiln __sandbox-run …`); it is also a debugging aid.
//! Progress events go to stderr and the [`StepOutcome`] to stdout, one JSON document each;
//! SIGINT/SIGTERM cancel the step (exit 130).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use super::{Isolation, Sandbox, SandboxError, StepSpec};
use crate::progress::Progress;

pub(crate) fn run_main(args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(SandboxError::Interrupted { step }) => {
            let _ = writeln!(std::io::stderr(), "error: step {step} interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), SandboxError> {
    let usage = || SandboxError::InvalidSpec {
        step: "-".into(),
        message: "usage: kiln __sandbox-run <step.json> [auto|rootless|chroot]".into(),
    };
    let path = PathBuf::from(args.first().ok_or_else(usage)?);
    let isolation = match args.get(1).and_then(|a| a.to_str()) {
        None | Some("auto") => Isolation::Auto,
        Some("rootless") => Isolation::Rootless,
        Some("chroot") => Isolation::Chroot,
        Some(_) => return Err(usage()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| SandboxError::io(&path, e))?;
    let spec: StepSpec = serde_json::from_str(&text).map_err(|source| SandboxError::Spec {
        path: path.clone(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(|e| SandboxError::io("/proc/self/exe", e))?;
    let sandbox = Sandbox::new(exe, isolation).forcing(super::Force::from_env());
    watch_signals(sandbox.cancel_handle());
    let (progress, events) = Progress::channel();
    let printer = std::thread::spawn(move || {
        for event in events {
            let _ = writeln!(
                std::io::stderr(),
                "{}",
                serde_json::to_string(&event).unwrap_or_default()
            );
        }
    });
    let outcome = sandbox.run_step(&spec, &progress);
    drop(progress);
    let _ = printer.join();
    let outcome = outcome?;
    let json = serde_json::to_string(&outcome).expect("outcome serializes");
    let _ = writeln!(std::io::stdout(), "{json}");
    Ok(())
}

/// Blocks SIGINT/SIGTERM in every thread and turns them into a cancel from one thread.
fn watch_signals(cancel: super::Cancel) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            cancel.cancel();
        }
    });
}
