//! Errors of the sandbox: each names the path, the program or the step it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("step {step}: {message}")]
    InvalidSpec { step: String, message: String },
    #[error(
        "step {step}: bind source {}: it must be a resolved path, with no symlink in it",
        path.display()
    )]
    BindSource {
        step: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Moving a layer through the rootless id-map helper's pipe failed on kiln's side.
    #[error("{what} {}", path.display())]
    Stream {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the layer helper did not report the digests of the layer at {}", path.display())]
    NoLayerReport { path: PathBuf },
    #[error("reading the step spec {}", path.display())]
    Spec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot start the sandbox init {}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map ids for the user namespace")]
    IdMap(#[from] IdMapError),
    #[error(transparent)]
    Unavailable(#[from] IsolationUnavailable),
    #[error("step {step}: sandbox setup failed: {message}")]
    Setup { step: String, message: String },
    #[error("{action} as root of the rootless id map failed: {message}")]
    Mapped { action: String, message: String },
    #[error("step {step}: interrupted; its processes were killed")]
    Interrupted { step: String },
}

impl SandboxError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SandboxError {
        SandboxError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why the user namespace's id maps could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {helper}")]
    Run {
        helper: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{helper} {pid} failed ({status}): {stderr}")]
    Failed {
        helper: &'static str,
        pid: u32,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The isolation asked for cannot be had here: why, and what would allow it. Cloned out of
/// the sandbox's cached probe for every step that asks.
#[derive(Debug, Clone, thiserror::Error)]
#[error("isolation {requested} is not available here: {reason}")]
pub struct IsolationUnavailable {
    pub requested: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::testing::{CAUSE, assert_each_cause_once, io};

    #[test]
    fn no_message_repeats_its_cause() {
        let path = PathBuf::from("/x");
        let errors = [
            SandboxError::io(&path, io()),
            SandboxError::Stream {
                what: "storing the layer of",
                path: path.clone(),
                source: io(),
            },
            SandboxError::Spawn {
                exe: path.clone(),
                source: io(),
            },
            SandboxError::BindSource {
                step: "1".into(),
                path: path.clone(),
                source: io(),
            },
            IdMapError::Write {
                path: path.clone(),
                source: io(),
            }
            .into(),
            IdMapError::Run {
                helper: "newuidmap",
                source: io(),
            }
            .into(),
        ];
        for e in &errors {
            assert_each_cause_once(e, CAUSE);
        }
    }
}
