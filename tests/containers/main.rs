//! kiln's images compared with what the reference tools make and run: buildah builds of the
//! examples and the conformance corpus, images run by podman, archives read by skopeo. Needs
//! root, buildah, podman and skopeo (`tests/scripts/install-deps.sh`).
//!
//! One binary per group of prerequisites, each feature a module; the shared helpers are
//! compiled once per binary. `cargo test --test containers NAME` runs the tests whose path
//! (`feature::test`) contains NAME.

#[path = "../build_support/mod.rs"]
mod build_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../registry_support/mod.rs"]
mod registry_support;

mod build_examples;
mod ci_containers;
mod conformance_corpus;
mod examples_buildah;
mod image_outputs;
mod kiln_image;
