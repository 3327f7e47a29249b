//! The Dockerfile front end: parser directives, logical lines, heredocs, instructions with
//! source spans, and Docker's shell-word expansion.
//!
//! Public API:
//! - [`parse`] turns source text into an [`Ast`]: directives plus one raw [`Node`] per
//!   instruction (keyword, flags, arguments split as BuildKit splits them, heredoc bodies,
//!   [`Span`]). [`Ast::dump`] prints BuildKit's parser-dump format.
//! - [`Instruction::from_node`] / [`parse_instructions`] type the nodes: one [`Command`]
//!   variant per instruction, flags validated. Words stay unexpanded: the plan expands them
//!   with the values in force before each instruction.
//! - [`ParseError`] carries the [`Span`]; [`ParseError::render`] gives
//!   `Dockerfile:12:5: message`, the source line and a caret.

mod ast;
mod dump;
mod error;
mod flags;
mod instruction;
mod parser;
pub mod shell;
mod span;
mod words;

pub use ast::{Ast, Body, Directives, Heredoc, Node, ParserWarning};
pub use dump::go_quote;
pub use error::{ParseError, ParseErrorKind};
pub use instruction::*;
pub use parser::parse;
pub use span::{Span, render_at, source_line};
pub use words::parse_heredoc_marker;
