//! `kiln build`: executes a plan with the store, layer engine, sandbox and registry.
pub mod context;
