//! The OCI distribution client: auth, pull and push, on `reqwest` + `tokio`.
//!
//! Public API:
//! - [`Registry::new`]`(api_host, `[`ClientConfig`]`, Option<`[`Credential`]`>)`: one client
//!   per registry host (TLS verified by default; HTTP only for loopback/insecure hosts).
//! - Pull: [`Registry::pull_image`] into any [`BlobSink`] (verified blobs only are committed),
//!   or the parts: [`Registry::resolve`], [`Registry::get_manifest`], [`Registry::pull_blob`].
//! - Push: [`Registry::push_image`] from any [`BlobSource`] (blobs in parallel, manifests last;
//!   or its halves [`Registry::push_image_blobs`] and [`Registry::push_image_manifests`]),
//!   or the parts: [`Registry::blob_exists`], [`Registry::push_blob`] (or
//!   [`Registry::push_blob_mounting`], which picks a mount source), [`Registry::put_manifest`].
//! - Credentials: [`creds::lookup`], [`creds::store`], [`creds::erase`].
//!
//! Nothing here prints; progress goes through [`crate::progress::Progress`]. Credentials and
//! tokens never appear in errors, logs or `Debug` output.

mod auth;
mod client;
pub mod creds;
mod error;
mod manifest;
mod pull;
mod push;
mod store_blobs;

pub use auth::{Challenge, Credential, Scopes};
pub use client::{ClientConfig, Registry, is_loopback};
pub use error::{BodyError, RegistryError};
pub use manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, MANIFEST_ACCEPT, Manifest, OCI_INDEX, OCI_MANIFEST,
    Parsed, Platform, available_platforms, select_platform,
};
pub use pull::{BlobSink, Pulled};
pub use push::{BlobPushed, BlobSource, PushSummary, PushedBlobs};
pub use store_blobs::StoreBlobs;
