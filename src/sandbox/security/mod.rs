//! What a RUN command may do: the capability sets it starts with ([`caps`]) and the seccomp
//! filter it runs under ([`seccomp`]), both applied by the command's own process between
//! fork and exec (see `init.rs`). `RUN --security=insecure` skips both.
//!
//! The masked and read-only `/proc` paths and the `nodev` root are mounts: `rootfs.rs`.

pub(crate) mod caps;
pub(crate) mod seccomp;

/// How much a RUN step is confined (`RUN --security=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// containers-common's default capabilities, the seccomp filter, masked `/proc` paths.
    #[default]
    Sandbox,
    /// Every capability of the sandbox's root, no seccomp filter, an unmasked `/proc`
    /// (BuildKit's `security.insecure`; the caller checks the user allowed it).
    Insecure,
}

/// Why a command could not be confined (the step does not run then).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfineError {
    #[error("dropping capability {cap} from the bounding set")]
    BoundingSet {
        cap: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("setting the permitted, effective and inheritable capabilities (capset)")]
    Capset(#[source] std::io::Error),
    #[error("clearing the ambient capabilities")]
    Ambient(#[source] std::io::Error),
    #[error("kiln has no seccomp filter for the {0} architecture")]
    Arch(&'static str),
    #[error("building the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    #[error("installing the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

impl ConfineError {
    /// The error and its causes in one line, for the init's status pipe (text only).
    pub(crate) fn chain(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        message
    }
}
