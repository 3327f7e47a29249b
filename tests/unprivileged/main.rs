//! Tests that need nothing but the build: no root, no tools, no network. The Dockerfile parser
//! and shell lexer (BuildKit's vectors when `KILN_CONFORMANCE_DIR` or `../shared/conformance`
//! has them), planning, `.dockerignore`, the store from the command line, the command-line
//! reference in docs/cli.md, and the module graph of `src/`.
//!
//! One binary per group of prerequisites, each feature a module; the shared helpers are
//! compiled once per binary. `cargo test --test unprivileged NAME` runs the tests whose path
//! (`feature::test`) contains NAME.

#[path = "../common/mod.rs"]
mod common;

mod cli_reference;
mod conformance_parser;
mod conformance_shell;
mod dockerfile_dump_ast;
mod dockerfile_fuzz;
mod dockerfile_parse;
mod dockerignore;
mod module_cycles;
mod plan_cli;
mod plan_scoping;
mod plan_stages;
mod real_world;
mod shell_proptest;
mod store_cli;
mod store_concurrency;
