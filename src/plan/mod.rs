//! Build planning: stages, ARG/ENV scoping, the stage DAG, `--target`, `.dockerignore`,
//! validation errors and warnings.

pub mod ignore;
