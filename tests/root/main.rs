//! Tests of the layer engine, image layers and the root-only sandbox modes: they run as any user
//! and do more as root (files of other owners, overlay mounts, chroot isolation, the copy
//! fallback), printing `SKIPPED: why` for each part they cannot do.
//!
//! One binary per group of prerequisites, each feature a module; the shared helpers are
//! compiled once per binary. `cargo test --test root NAME` runs the tests whose path
//! (`feature::test`) contains NAME.

#[path = "../common/mod.rs"]
mod common;
#[path = "../layer_fixture/mod.rs"]
mod layer_fixture;
#[path = "../sandbox_support/mod.rs"]
mod sandbox_support;

mod image_layers;
mod layer_hostile;
mod layer_unpack;
mod layer_write;
mod sandbox_chroot;
mod sandbox_fallback;
