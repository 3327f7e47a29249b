//! Tests against a loopback registry (`docker-registry`, started by `tests/scripts/registry.sh`),
//! no root needed: pull, push, cross-repository mounts, faults injected by a proxy, and the
//! registry commands of the CLI.
//!
//! One binary per group of prerequisites, each feature a module; the shared helpers are
//! compiled once per binary. `cargo test --test registry NAME` runs the tests whose path
//! (`feature::test`) contains NAME.

#[path = "../common/mod.rs"]
mod common;
#[path = "../registry_support/mod.rs"]
mod registry_support;

mod registry_cli;
mod registry_faults;
mod registry_mount;
mod registry_pull_push;
