//! Errors of the sandbox: each names the path, the program or the step it is about.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    #[error("step {step}: {message}")]
    InvalidSpec { step: String, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("cannot start the sandbox init {exe}: {message}")]
    Spawn { exe: PathBuf, message: String },
    #[error("cannot map ids for the user namespace: {0}")]
    IdMap(String),
    #[error("isolation {requested} is not available here: {reason}")]
    Unavailable { requested: String, reason: String },
    #[error("step {step}: sandbox setup failed: {message}")]
    Setup { step: String, message: String },
    #[error("{action} as root of the rootless id map failed: {message}")]
    Mapped { action: String, message: String },
    #[error("step {step}: interrupted; its processes were killed")]
    Interrupted { step: String },
}

impl SandboxError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> SandboxError {
        SandboxError::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }
}
