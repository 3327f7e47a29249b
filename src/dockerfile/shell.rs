//! Docker's shell-word lexer and variable expansion (a port of BuildKit's `shell/lex.go`).
