//! The Dockerfile front end: parser directives, logical lines, heredocs, instructions with
//! source spans, and Docker's shell-word expansion.

pub mod shell;
