//! The line-level parser: directives, logical lines, comments, heredoc bodies, and the
//! per-instruction argument splitting of BuildKit's `frontend/dockerfile/parser`.

use super::ast::{Ast, Body, Directives, Node, ParserWarning};
use super::error::{ParseError, ParseErrorKind};
use super::span::{Span, first_column};
use super::words::{extract_flags, heredocs_in_line, parse_words};

/// Parses a Dockerfile into its raw syntax tree. Words stay unexpanded.
pub fn parse(source: &str) -> Result<Ast, ParseError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut p = Parser {
        lines: source.split_inclusive('\n'),
        line_no: 0,
        directives: DirectiveState::default(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    while let Some(raw) = p.next_line() {
        let start_line = p.line_no;
        let first = p.process_line(raw, true)?;
        let (mut line, mut end) = trim_continuation(&first, p.escape());
        if end && line.is_empty() {
            continue;
        }
        let column = first_column(trim_newline(raw));
        let mut empty_continuation = false;
        while !end {
            let Some(raw) = p.next_line() else { break };
            let processed = p.process_line(raw, false)?;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (more, e) = trim_continuation(&processed, p.escape());
            line.push_str(&more);
            end = e;
        }
        let span = |end_line| Span::new(start_line, column, end_line);
        if empty_continuation {
            warnings.push(ParserWarning {
                span: span(p.line_no),
                rule: "NoEmptyContinuation",
                message: "Empty continuation line found; it will become an error in a future \
                          release (remove the blank line or the trailing escape)"
                    .to_string(),
            });
        }
        let mut node = node_from_line(&line, p.escape())
            .map_err(|kind| ParseError::new(span(p.line_no), kind))?;
        if can_contain_heredoc(&node) {
            p.read_heredocs(&mut node, &line, start_line, column)?;
        }
        set_span(&mut node, span(p.line_no));
        nodes.push(node);
    }
    if nodes.is_empty() {
        let line = p.line_no.max(1);
        return Err(ParseError::new(
            Span::new(line, 1, line),
            ParseErrorKind::NoInstructions,
        ));
    }
    Ok(Ast {
        directives: p.directives.finish(),
        nodes,
        warnings,
    })
}

struct Parser<'a> {
    lines: std::str::SplitInclusive<'a, char>,
    line_no: usize,
    directives: DirectiveState,
}

impl<'a> Parser<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        let line = self.lines.next()?;
        self.line_no += 1;
        Some(line)
    }

    fn escape(&self) -> char {
        self.directives.escape
    }

    /// Drops the line ending (and leading blanks on a first line), looks for a parser
    /// directive, and blanks a comment line.
    fn process_line(&mut self, raw: &str, strip_left: bool) -> Result<String, ParseError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let line = self.line_no;
        self.directives
            .look_at(token)
            .map_err(|kind| ParseError::new(Span::new(line, first_column(token), line), kind))?;
        Ok(if token.starts_with('#') {
            String::new()
        } else {
            token.to_string()
        })
    }

    /// Reads the body of every heredoc marker of `line`, one after the other.
    fn read_heredocs(
        &mut self,
        node: &mut Node,
        line: &str,
        start_line: usize,
        column: usize,
    ) -> Result<(), ParseError> {
        for mut doc in heredocs_in_line(line) {
            let mut terminated = false;
            while let Some(raw) = self.next_line() {
                let mut candidate = trim_newline(raw);
                if doc.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == doc.name {
                    terminated = true;
                    break;
                }
                doc.content.push_str(raw);
            }
            if !terminated {
                return Err(ParseError::new(
                    Span::new(start_line, column, self.line_no),
                    ParseErrorKind::UnterminatedHeredoc(doc.name),
                ));
            }
            node.heredocs.push(doc);
        }
        Ok(())
    }
}

fn set_span(node: &mut Node, span: Span) {
    node.span = span;
    if let Body::Trigger(child) = &mut node.body {
        set_span(child, span);
    }
}

/// Directive recognition state: directives count only until the first line that is not one.
struct DirectiveState {
    escape: char,
    syntax: Option<String>,
    check: Option<String>,
    escape_seen: bool,
    done: bool,
}

impl Default for DirectiveState {
    fn default() -> Self {
        DirectiveState {
            escape: '\\',
            syntax: None,
            check: None,
            escape_seen: false,
            done: false,
        }
    }
}

impl DirectiveState {
    fn look_at(&mut self, line: &str) -> Result<(), ParseErrorKind> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        let seen = match key.as_str() {
            "escape" => self.escape_seen,
            "syntax" => self.syntax.is_some(),
            "check" => self.check.is_some(),
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if seen {
            return Err(ParseErrorKind::DuplicateDirective(key));
        }
        match key.as_str() {
            "escape" => {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(ParseErrorKind::InvalidEscape(value.to_string())),
                };
                self.escape_seen = true;
            }
            "syntax" => self.syntax = Some(value.to_string()),
            _ => self.check = Some(value.to_string()),
        }
        Ok(())
    }

    fn finish(self) -> Directives {
        Directives {
            escape: self.escape,
            syntax: self.syntax,
            check: self.check,
        }
    }
}

/// `#\s*key\s*=\s*value\s*` with a key of `[a-zA-Z][a-zA-Z0-9]*`; `\s` is ASCII as in Go.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let rest = rest.trim_start_matches(is_space).strip_prefix('=')?;
    let value = rest.trim_matches(is_space);
    (!value.is_empty()).then_some((key, value))
}

fn trim_newline(raw: &str) -> &str {
    raw.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// Removes a line-continuation escape (the escape character, then only blanks, at the end of
/// the line, not itself escaped). Returns the line and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line.to_string(), true);
    };
    match before.chars().next_back() {
        None => (String::new(), false),
        Some(c) if c == escape => (line.to_string(), true),
        Some(_) => (before.to_string(), false),
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.body {
        Body::Trigger(child) => child,
        Body::Words(_) => node,
    };
    matches!(node.command().as_str(), "run" | "copy" | "add") && !node.json
}

/// Splits one logical line into keyword, flags and arguments, then splits the arguments the
/// way the instruction wants them.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, ParseErrorKind> {
    let trimmed = line.trim();
    let (keyword, rest) = match trimmed.find(is_token_space) {
        Some(i) => (
            &trimmed[..i],
            trimmed[i..].trim_start_matches(is_token_space),
        ),
        None => (trimmed, ""),
    };
    let (args, flags) = extract_flags(rest);
    let args = args.trim();
    let (body, json) = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => maybe_json_list(args)?,
        "arg" => (Body::Words(parse_words(args, escape)), false),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(args)?,
        "env" => (name_values(args, "ENV", escape)?, false),
        "label" => (name_values(args, "LABEL", escape)?, false),
        "expose" | "from" => (whitespace_list(args), false),
        "healthcheck" => health_config(args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (single(args), false),
        "onbuild" if args.is_empty() => (Body::Words(Vec::new()), false),
        "onbuild" => (
            Body::Trigger(Box::new(node_from_line(args, escape)?)),
            false,
        ),
        // Unknown instructions parse (the typed layer rejects them), like BuildKit.
        _ => (Body::Words(vec![String::new()]), false),
    };
    Ok(Node {
        keyword: keyword.to_string(),
        flags,
        body,
        json,
        heredocs: Vec::new(),
        original: line.to_string(),
        span: Span::new(0, 0, 0),
    })
}

fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn whitespace_list(args: &str) -> Body {
    if args.is_empty() {
        return Body::Words(Vec::new());
    }
    Body::Words(
        args.split(is_token_space)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    )
}

fn single(args: &str) -> Body {
    Body::Words(if args.is_empty() {
        Vec::new()
    } else {
        vec![args.to_string()]
    })
}

/// A JSON array of strings; `None` when the text is not exactly one JSON array (so it is
/// shell form). Like BuildKit's `json.Unmarshal`, the whole text must be the array: `["a"] b`
/// is shell form, not exec form with the rest dropped. An array of non-strings is an error.
fn parse_json(args: &str) -> Result<Option<Vec<String>>, ParseErrorKind> {
    let args = args.trim_start();
    if !args.starts_with('[') {
        return Ok(None);
    }
    // `from_str` rejects trailing non-whitespace, as Go's decoder does.
    match serde_json::from_str::<Vec<serde_json::Value>>(args) {
        Ok(values) => values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(ParseErrorKind::JsonNotStrings),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Err(_) => Ok(None),
    }
}

fn maybe_json(args: &str) -> Result<(Body, bool), ParseErrorKind> {
    if args.is_empty() {
        return Ok((Body::Words(Vec::new()), false));
    }
    Ok(match parse_json(args)? {
        Some(words) => (Body::Words(words), true),
        None => (Body::Words(vec![args.to_string()]), false),
    })
}

fn maybe_json_list(args: &str) -> Result<(Body, bool), ParseErrorKind> {
    Ok(match parse_json(args)? {
        Some(words) => (Body::Words(words), true),
        None => (whitespace_list(args), false),
    })
}

/// ENV/LABEL: `k=v k2=v2` (sep `=`), or the legacy `k rest of line` (sep empty).
fn name_values(args: &str, keyword: &str, escape: char) -> Result<Body, ParseErrorKind> {
    let words = parse_words(args, escape);
    let Some(first) = words.first() else {
        return Ok(Body::Words(Vec::new()));
    };
    if !first.contains('=') {
        let mut parts = args.splitn(2, is_token_space);
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            return Err(ParseErrorKind::NeedsTwoArguments(keyword.to_string()));
        };
        let value = value.trim_start_matches(is_token_space);
        return Ok(Body::Words(vec![key.into(), value.into(), String::new()]));
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(Body::Words(out))
}

/// HEALTHCHECK: a type word (`CMD`, `NONE`, ...) then a command like CMD's.
fn health_config(args: &str) -> Result<(Body, bool), ParseErrorKind> {
    let Some(typ) = args
        .split(char::is_whitespace)
        .next()
        .filter(|t| !t.is_empty())
    else {
        return Ok((Body::Words(Vec::new()), false));
    };
    let rest = args[typ.len()..].trim_start();
    let (cmd, json) = maybe_json(rest)?;
    let mut words = vec![typ.to_string()];
    if let Body::Words(w) = cmd {
        words.extend(w);
    }
    Ok((Body::Words(words), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ".into(), false));
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ".into(), false));
        assert_eq!(trim_continuation("\\", '\\'), ("".into(), false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\".into(), true));
        assert_eq!(trim_continuation("a `", '`'), ("a ".into(), false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\".into(), true));
    }

    #[test]
    fn directive_syntax() {
        assert_eq!(match_directive("# escape = `"), Some(("escape", "`")));
        assert_eq!(
            match_directive("#syntax=docker/dockerfile:1 "),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# a comment"), None);
        assert_eq!(match_directive("# 1a=b"), None);
        assert_eq!(match_directive("# k="), None);
    }
}
