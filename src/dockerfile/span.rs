//! Source positions: every node and every error points back at the Dockerfile.

use std::fmt;

/// Where an instruction (or a part of it) sits in the source. Lines and columns are 1-based;
/// the column counts characters on `line`. `end_line` is the last physical line the
/// instruction uses (continuations and heredoc bodies included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
}

impl Span {
    /// A span covering `line..=end_line`, starting at `column` on the first line.
    pub fn new(line: usize, column: usize, end_line: usize) -> Span {
        Span {
            line,
            column,
            end_line,
        }
    }

    /// The same start line, pointing at another column (e.g. a flag inside the instruction).
    pub fn at_column(self, column: usize) -> Span {
        Span { column, ..self }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Renders `file:line:col: message`, then the source line and a caret under the column, the
/// form every kiln error about a Dockerfile takes.
pub fn render_at(file_name: &str, source: &str, span: Span, message: &str) -> String {
    let mut out = format!("{file_name}:{span}: {message}");
    if let Some(text) = source_line(source, span.line) {
        let number = span.line.to_string();
        let pad = " ".repeat(number.len());
        let caret_pad: String = text
            .chars()
            .take(span.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("\n {number} | {text}\n {pad} | {caret_pad}^"));
    }
    out
}

/// The 1-based physical line `line` of `source`, without its line ending or a leading BOM.
pub fn source_line(source: &str, line: usize) -> Option<&str> {
    let text = source.split('\n').nth(line.checked_sub(1)?)?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    Some(if line == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    })
}

/// The 1-based column of the first non-blank character of `text`.
pub fn first_column(text: &str) -> usize {
    text.chars().take_while(|c| c.is_whitespace()).count() + 1
}
