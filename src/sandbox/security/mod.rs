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
