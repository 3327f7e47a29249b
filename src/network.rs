//! [`Network`]: the network a RUN step sees — one type for RUN `--network` in the plan, the
//! build's `--network` default and the sandbox's step spec. It sits at the bottom of the graph
//! because `plan` and `sandbox` both speak it and neither may depend on the other.

/// The network a step sees. The plan's RUN `--network=default` (or no flag) is `None` in an
/// `Option<Network>`: the build's default, chosen when the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network namespace (the default, like buildah rootless and kaniko).
    #[default]
    Host,
    /// A fresh network namespace with only loopback.
    None,
}

impl Network {
    /// The `--network` value that names it.
    pub fn name(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
        }
    }
}
