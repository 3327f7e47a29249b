//! kiln: a daemonless, rootless container image builder.
//!
//! The crate is laid out by pipeline stage; dependencies point one way, down the flow:
//!
//! `dockerfile` (parse, expand) → `plan` (stages, scoping, DAG) → `sandbox` (RUN steps) →
//! `layer` (diff → tar → compressed blob) → `store` / `registry` → `image` (config, manifest,
//! outputs) → `build` (wires them) → `cli` (the only place that prints).
//!
//! `manifest` (with `digest` and `platform`) is the bottom of the graph: the one reader of
//! manifests, indexes and image configs, used by every stage that reads them. `network` (the
//! one `Network` of RUN steps, spoken by `plan` and `sandbox`) sits there too. `lexical_path`
//! (Go's `path.Clean`) sits beside it, used by `plan` and `layer`, and so does `fs_root`: the one
//! resolver of paths inside a root directory (an image root, a build context) by descriptor,
//! used by `layer`, `build`, `plan`, `cli` and `sandbox`.
//!
//! Nothing below `cli` prints: it reports through return values and [`progress`] events.

pub mod digest;
pub mod error_chain;
pub mod fs_root;
pub mod lexical_path;
pub mod manifest;
pub mod network;
pub mod platform;
pub mod progress;
pub mod reference;

pub mod build;
pub mod cli;
pub mod dockerfile;
pub mod image;
pub mod layer;
pub mod plan;
pub mod registry;
pub mod sandbox;
pub mod store;

pub use digest::Digest;
pub use reference::Reference;
