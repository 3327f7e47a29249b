//! `kiln build` end to end FROM the test base images of a loopback registry: root, `skopeo`,
//! `docker-registry` and `jq` (`tests/scripts/base-images.sh`); a test without them prints
//! `SKIPPED: why`. Tests that build FROM scratch run everywhere.
//!
//! One binary per group of prerequisites, each feature a module; the shared helpers are
//! compiled once per binary. `cargo test --test builds NAME` runs the tests whose path
//! (`feature::test`) contains NAME.

#[path = "../build_support/mod.rs"]
mod build_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../registry_support/mod.rs"]
mod registry_support;

mod build_bounds;
mod build_copy;
mod build_dockerfile_features;
mod build_inroot;
mod build_progress;
mod build_push_early;
mod build_rebuild;
mod build_registry_cache;
mod build_scratch;
mod build_stages;
mod conformance_fixes;
mod copy_source_names;
mod heredoc;
mod lazy_blobs;
mod multi_platform;
mod onbuild;
mod registry_cache_lazy;
mod registry_cache_requests;
mod secrets;
mod snapshot_kept;
mod store_root;
