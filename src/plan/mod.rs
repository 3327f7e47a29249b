//! Build planning: stages, ARG/ENV scoping, the stage DAG, `--target`, `.dockerignore`,
//! validation errors and warnings.
//!
//! Public API:
//! - [`plan`]`(source, &PlanOptions)` parses a Dockerfile and returns a [`Plan`]: every
//!   [`Stage`] with its [`Base`] (image, scratch or an earlier stage), its [`Step`]s with fully
//!   expanded typed arguments ([`StepKind`]), the ARG values each step uses (cache keys) and its
//!   span; the build `order` (dependencies first, target last), skipped stages (`needed ==
//!   false`) and BuildKit-style [`Warning`]s.
//! - [`PlanOptions`]: build args, target, platforms, and optionally the ENV of base images
//!   (the build knows them after pulling; `kiln plan` does not, so `$PATH`-style references to
//!   image ENV expand empty there and UndefinedVar is not reported for such stages).
//! - [`PlanError`] names the place ([`PlanError::render`] → `Dockerfile:12:5: ...`).
//! - [`Plan::outline`] renders the plan as text (what `kiln plan` prints).

mod args;
mod error;
pub mod glob;
pub mod ignore;
mod lint;
mod model;
mod mount;
mod outline;
mod planner;
mod size;

use std::collections::BTreeMap;

pub use args::{BuildArgError, PROXY_ARGS, Platform, parse_build_args, platform_args};
pub use error::{PlanError, PlanErrorKind};
pub use model::*;
pub use mount::{Mount, MountError, MountKind, Sharing, parse_mount};
pub use planner::plan;
pub use size::{SizeError, parse_size};

/// What a plan depends on besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target` stage name; the last stage when `None`.
    pub target: Option<String>,
    pub build_platform: Platform,
    pub target_platform: Platform,
    /// ENV of base images by reference as written after expansion (from their configs).
    pub base_env: BTreeMap<String, Vec<(String, String)>>,
    /// `--allow security.insecure`: `RUN --security=insecure` is planned, not refused.
    pub allow_insecure: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            // BuildKit's spelling for build args: `linux/arm64`, not `linux/arm64/v8`.
            build_platform: Platform::host().normalized(),
            target_platform: Platform::host().normalized(),
            base_env: BTreeMap::new(),
            allow_insecure: false,
        }
    }
}
