//! Tests that run RUN steps without privileges: as the invoking user, or as root through the
//! unprivileged `kilntest` user (`tests/scripts/unprivileged-user.sh`, `setpriv`, `newuidmap`),
//! in user namespaces: the rootless sandbox, its containment, snapshots, the private store,
//! and rootless `kiln build`s FROM the test base images.
//!
//! One binary per group of prerequisites, each feature a module; the shared helpers are
//! compiled once per binary. `cargo test --test rootless NAME` runs the tests whose path
//! (`feature::test`) contains NAME.

#[path = "../build_support/mod.rs"]
mod build_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../registry_support/mod.rs"]
mod registry_support;
#[path = "../sandbox_support/mod.rs"]
mod sandbox_support;

mod build_git_ssh;
mod build_interrupt;
mod build_many_layers;
mod build_rootless;
mod containment_more;
mod copy_from_layers;
mod foreign_arch;
mod lazy_blobs;
mod mount;
mod sandbox_containment;
mod sandbox_rootless;
mod snapshot_deletions;
mod store_private;
