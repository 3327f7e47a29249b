//! BuildKit's parser-dump format: one s-expression per instruction, strings quoted like Go's
//! `strconv.Quote`. `kiln debug dump-ast` prints it; the conformance vectors compare it.

use super::ast::{Ast, Body, Node};

impl Ast {
    /// The whole tree, one `(instruction ...)` per line, each line ending in `\n`.
    pub fn dump(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("({})\n", n.dump()))
            .collect()
    }
}

impl Node {
    /// This node without the outer parentheses, e.g. `copy ["--from=a"] "src" "dst"`.
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(&format!(" [{}]", flags.join(" ")));
        }
        match &self.body {
            Body::Words(words) => {
                for w in words {
                    out.push(' ');
                    out.push_str(&go_quote(w));
                }
            }
            Body::Trigger(child) => out.push_str(&format!(" ({})", child.dump())),
        }
        out.trim().to_string()
    }
}

/// Quotes `s` as Go's `strconv.Quote` does: `\"`, `\\`, C escapes, `\xNN` for other control
/// bytes, `\uNNNN`/`\UNNNNNNNN` for other non-printable characters; printable Unicode as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` without a Unicode table: control, separator
/// (other than ASCII space), format and private-use characters are not printable.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xFFFE | 0xFFFF | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\u{7f}\u{1b}"), r#""\x00\x7f\x1b""#);
        assert_eq!(go_quote("♥ é"), "\"♥ é\"");
        assert_eq!(go_quote("\u{200b}\u{a0}"), r#""\u200b\u00a0""#);
    }
}
